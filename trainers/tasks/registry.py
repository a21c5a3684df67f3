"""The task registry: names -> specs and loaders, and `load_task` for names and local paths."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from trainers.tasks.dialog import DIALOG_REPLY, load_dialog_reply
from trainers.tasks.glue import GLUE_TASKS, load_glue
from trainers.tasks.local import load_local, looks_like_path
from trainers.tasks.offline import RT_POLARITY, SMS_SPAM, TREC, load_rt_polarity, load_sms_spam, load_trec
from trainers.tasks.spec import TaskData, TaskSpec

DEFAULT_TASK = RT_POLARITY.name

TASKS: dict[str, TaskSpec] = {
    spec.name: spec for spec in (RT_POLARITY, TREC, SMS_SPAM, DIALOG_REPLY, *GLUE_TASKS.values())
}

_OFFLINE_LOADERS: dict[str, Callable[[int], TaskData]] = {
    RT_POLARITY.name: load_rt_polarity,
    TREC.name: load_trec,
    SMS_SPAM.name: load_sms_spam,
    DIALOG_REPLY.name: load_dialog_reply,
}


def task_names(offline_only: bool = False) -> list[str]:
    """Registered task names, the default first; only those loadable without the hub if asked."""
    return [name for name, spec in TASKS.items() if spec.offline or not offline_only]


def offline_alternatives() -> str:
    """The tasks to suggest when the hub cannot be reached."""
    return f"an offline task ({', '.join(task_names(offline_only=True))}) or a local CSV/JSON/parquet file"


def load_task(name_or_path: str | Path, seed: int = 0) -> TaskData:
    """Load a registered task or a local file/folder, split deterministically by `seed`."""
    name = str(name_or_path)
    if name in _OFFLINE_LOADERS:
        return _OFFLINE_LOADERS[name](seed)
    if name in GLUE_TASKS:
        return load_glue(name, seed, offline_alternatives())
    if isinstance(name_or_path, Path) or looks_like_path(name):
        return load_local(name, seed)
    raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(task_names())}, or a path to a local file")


def resolve_task(name_or_path: str, cwd: str | Path | None = None) -> str:
    """A registered task name as given; a local file or folder as its absolute path (``cwd`` for a relative one).

    A name that is neither a registered task nor an existing path, nor looks like a file name,
    raises the unknown-task error; a missing file raises OSError naming where it was looked for.
    """
    name = str(name_or_path)
    if name in TASKS:
        return name
    path = Path(cwd or Path.cwd()) / Path(name).expanduser()
    if path.exists():
        return str(path.resolve())
    if looks_like_path(name):
        where = "" if str(path.resolve()) == name else f" (looked for {path.resolve()})"
        raise OSError(f"task file or folder {name!r} does not exist{where}")
    raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(task_names())}, or a path to a local file")


def check_task(name_or_path: str, seed: int = 0, cwd: str | Path | None = None) -> tuple[str, TaskData]:
    """Resolve and load a task as a job will (see ``resolve_task``), and check that it can be trained on.

    Every split must hold an example, train at least two labels, and validation and test no
    label that train lacks. Returns the resolved name and the loaded data.
    """
    resolved = resolve_task(name_or_path, cwd)
    data = load_task(Path(resolved) if resolved not in TASKS else resolved, seed)
    label = f"task {str(name_or_path)!r}"
    for split, frame in data.splits().items():
        if frame.empty:
            raise ValueError(f"{label} has no {split} examples")
    train_labels = set(data.train["label"])
    if len(train_labels) < 2:
        names = ", ".join(repr(data.spec.label_names[i]) for i in sorted(train_labels))
        raise ValueError(f"{label} has one label in its training examples ({names}); a classifier needs two or more")
    for split in ("validation", "test"):
        unseen = sorted(set(data.splits()[split]["label"]) - train_labels)
        if unseen:
            names = ", ".join(repr(data.spec.label_names[i]) for i in unseen)
            raise ValueError(f"{label}: its {split} split has label(s) {names} that no training example has")
    return resolved, data
