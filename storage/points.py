"""A point's domain facts, in one place for every layer: the dense point, a point's family, the budget's
threshold and feasibility.

A budget is an absolute accuracy loss below the dense (1, 0) model's measured accuracy; a point is
feasible when its accuracy reaches that threshold. The study's dense accuracy is its dense trial's
(``storage.trials.dense_trial``: the first complete one) and a points table's its first dense row
(``dense_row``), the same rule, since tables list a study's trials by number.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

DENSE_POINT = (1, 0.0)  # (N, s) of the dense model, every budget's reference
# Measured accuracies are rounded fractions; this keeps "exactly at the threshold" feasible.
FEASIBILITY_TOLERANCE = 1e-9


def is_dense(N: float, s: float) -> bool:
    """Whether (N, s) is the dense point (1, 0)."""
    return (N, s) == DENSE_POINT


def family(N: int, s: float) -> str:
    """Name the model family of a grid point: dense, cofi, datamux or prumux."""
    if N == 1:
        return "dense" if s == 0 else "cofi"
    return "datamux" if s == 0 else "prumux"


def threshold(dense_accuracy: float, budget: float) -> float:
    """The accuracy a point must reach: the dense accuracy minus the budget."""
    return dense_accuracy - budget


def is_feasible(accuracy: np.ndarray | float, threshold: float) -> np.ndarray | bool:
    """Whether accuracy meets the threshold (dense accuracy minus budget)."""
    return np.asarray(accuracy) >= threshold - FEASIBILITY_TOLERANCE


def dense_row(points: pd.DataFrame) -> pd.Series | None:
    """The dense (1, 0) row of a points table, or None: the first one."""
    dense = points[[is_dense(N, s) for N, s in zip(points["N"], points["s"])]]
    return None if dense.empty else dense.iloc[0]


def table_threshold(points: pd.DataFrame, budget: float) -> float:
    """The threshold of a points table: its dense row's accuracy minus ``budget``; ValueError without one."""
    dense = dense_row(points)
    if dense is None:
        raise ValueError("the table has no dense point (N=1, s=0)")
    return threshold(float(dense["accuracy"]), budget)
