"""What exporting a point needs of the trainers: the tokenizer it trained with and its task's label names."""

from __future__ import annotations

from typing import TYPE_CHECKING

from servable import PointSources
from trainers.families import tokenizer_for
from trainers.models import load_tokenizer

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


def point_tokenizer(base_model: str, N: int) -> PreTrainedTokenizerBase:
    """The tokenizer the width-N points of ``base_model`` train with (a family's shared one)."""
    return load_tokenizer(tokenizer_for(base_model, N))


def task_label_names(task: str, num_labels: int) -> tuple[str, ...]:
    """The task's label names (a registered task, or one that loads here); ``label_K`` when unknown."""
    from trainers.tasks import TASKS, load_task

    names = TASKS[task].label_names if task in TASKS else ()
    if not names:
        try:
            names = load_task(task).spec.label_names
        except (ValueError, OSError):
            names = ()
    if len(names) != num_labels:
        names = tuple(f"label_{index}" for index in range(num_labels))
    return tuple(str(name) for name in names)


POINT_SOURCES = PointSources(tokenizer=point_tokenizer, label_names=task_label_names)
