"""Deduplication and seeded train / validation / test splitting shared by the tasks."""

from __future__ import annotations

import numpy as np
import pandas as pd

from trainers.tasks.spec import TaskData, TaskSpec

# Every run of ten rows (in label order when stratified) gives 8 to train, 1 to validation, 1 to test.
_PATTERN = np.array([0] * 8 + [1, 2])


def normalise(text: str) -> str:
    """The form under which two texts count as the same sentence: lowercase, single spaces."""
    return " ".join(str(text).lower().split())


def dedupe(frame: pd.DataFrame, column: str = "text") -> pd.DataFrame:
    """Keep the first row of each normalised `column` value."""
    keys = frame[column].map(normalise)
    return frame[~keys.duplicated()].reset_index(drop=True)


def split_frame(
    frame: pd.DataFrame, seed: int, stratify: str | None = None
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Train, validation, test (80 / 10 / 10) of shuffled rows, each label split alike if `stratify`."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(frame))
    ranked = order if stratify is None else order[np.argsort(frame[stratify].to_numpy()[order], kind="stable")]
    assignment = np.empty(len(frame), dtype=int)
    assignment[ranked] = np.resize(_PATTERN, len(frame))
    # A fresh shuffle per split, so validation and test rows are not ranked neighbours row by row.
    return tuple(
        frame.iloc[rng.permutation(np.flatnonzero(assignment == split))].reset_index(drop=True) for split in range(3)
    )


def split_task(spec: TaskSpec, frame: pd.DataFrame, seed: int) -> TaskData:
    """TaskData from one deduplicated frame, split 80 / 10 / 10 by `seed`, stratified by label."""
    return TaskData(spec, *split_frame(frame[spec.columns], seed, stratify="label"))
