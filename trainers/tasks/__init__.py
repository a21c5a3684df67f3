"""Classification tasks: offline ones packaged on PyPI, GLUE from the hub, and local files."""

from trainers.tasks.registry import (
    DEFAULT_TASK,
    TASKS,
    check_task,
    load_task,
    offline_alternatives,
    resolve_task,
    task_names,
)
from trainers.tasks.spec import TaskData, TaskSpec

__all__ = [
    "DEFAULT_TASK",
    "TASKS",
    "TaskData",
    "TaskSpec",
    "check_task",
    "load_task",
    "offline_alternatives",
    "resolve_task",
    "task_names",
]
