"""Tasks, base models, recipes and the training of one (N, s) point."""

from trainers.models import BASE_MODELS, load_tokenizer, model_summary, resolve_model, tokenize
from trainers.tasks import TASKS, TaskData, TaskSpec, load_task, task_names

__all__ = [
    "BASE_MODELS",
    "TASKS",
    "TaskData",
    "TaskSpec",
    "load_task",
    "load_tokenizer",
    "model_summary",
    "resolve_model",
    "task_names",
    "tokenize",
]
