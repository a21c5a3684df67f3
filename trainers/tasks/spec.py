"""What a task is: its description (TaskSpec) and its three labelled splits (TaskData)."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class TaskSpec:
    """A classification task: label names (index = label id), metric, and whether inputs are pairs.

    `offline` is False for tasks that live on the Hugging Face hub; their `label_names`
    are empty here and filled from the hub dataset's features when the task is loaded.
    """

    name: str
    label_names: tuple[str, ...]
    metric: str = "accuracy"
    is_pair: bool = False
    description: str = ""
    source: str = ""
    offline: bool = True

    @property
    def num_labels(self) -> int:
        """Number of classes."""
        return len(self.label_names)

    @property
    def columns(self) -> list[str]:
        """The columns of every split of this task."""
        return ["text", "text_pair", "label"] if self.is_pair else ["text", "label"]


@dataclass
class TaskData:
    """A loaded task: DataFrames with columns `text`, `text_pair` (pair tasks only), `label` (int)."""

    spec: TaskSpec
    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame

    def splits(self) -> dict[str, pd.DataFrame]:
        """The splits by name, in train / validation / test order."""
        return {"train": self.train, "validation": self.validation, "test": self.test}

    def sizes(self) -> dict[str, int]:
        """Number of examples per split."""
        return {name: len(frame) for name, frame in self.splits().items()}

    def balance(self, split: str | None = None) -> dict[str, float]:
        """Fraction of examples per label name, in one split or (None) over all splits."""
        frames = [self.splits()[split]] if split else list(self.splits().values())
        labels = pd.concat([frame["label"] for frame in frames])
        counts = labels.value_counts(normalize=True)
        return {name: float(counts.get(index, 0.0)) for index, name in enumerate(self.spec.label_names)}
