"""Reading a curves table: every point's validation accuracy after each of its training steps.

Rows ``N,s,step,accuracy`` and an optional ``stage`` (``finetune``, ``prune``,
``pruned_finetune``); the last row of a point is its final accuracy, the one in its points table.
An (N, 0) curve is the phase-2 curve that every (N, s) of that N starts with: the rows of an
(N, s > 0) point at steps up to the (N, 0) curve's last step are that shared prefix, and may be
omitted (the (N, 0) rows stand for them) or repeat it exactly. Without a ``stage`` column the
prefix is ``finetune`` and every later row ``prune`` (the stage whose accuracies stop nothing).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from search.curves import Curve
from search.grid import load_csv, read_points

CURVE_COLUMNS = ("N", "s", "step", "accuracy")
STAGES = ("finetune", "prune", "pruned_finetune")
PREFIX_STAGE, AFTER_PREFIX_STAGE = "finetune", "prune"
# Two accuracies closer than this are the same measurement written twice.
SAME = 1e-6


def read_curves(source: str | Path | pd.DataFrame, points: pd.DataFrame) -> dict[tuple[int, float], Curve]:
    """Every point's full curve, (N, s > 0) ones with their (N, 0) prefix; raise ``ValueError``
    (one line) on a table that does not fit ``points``."""
    name = str(source) if not isinstance(source, pd.DataFrame) else "curves"
    frame = load_csv(source)
    missing = [column for column in CURVE_COLUMNS if column not in frame.columns]
    if missing:
        raise ValueError(f"{name}: missing column(s) {', '.join(missing)}")
    staged = "stage" in frame.columns
    values = frame[list(CURVE_COLUMNS)]
    try:
        values = values.astype(float)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: non-numeric values in {', '.join(CURVE_COLUMNS)}") from None
    if values.isna().any(axis=None) or ((values["accuracy"] < 0) | (values["accuracy"] > 1)).any():
        raise ValueError(f"{name}: every row needs a step and an accuracy in [0, 1]")
    if staged and not frame["stage"].isin(STAGES).all():
        bad = frame.loc[~frame["stage"].isin(STAGES), "stage"].iloc[0]
        raise ValueError(f"{name}: unknown stage {bad!r}; stages are {', '.join(STAGES)}")
    values = values.assign(N=values["N"].astype(int), step=values["step"].astype(int), s=values["s"].round(9))
    values["stage"] = frame["stage"].to_numpy() if staged else None
    points = read_points(points)
    groups = {
        (int(n), float(s)): rows.sort_values("step", kind="stable") for (n, s), rows in values.groupby(["N", "s"])
    }
    curves = {}
    for N, s, final in points[["N", "s", "accuracy"]].itertuples(index=False):
        key = (int(N), round(float(s), 9))
        if key not in groups:
            raise ValueError(f"{name}: no curve for (N={N}, s={s:g})")
        if (N, 0.0) not in groups:
            raise ValueError(f"{name}: no phase-2 curve (N={N}, s=0) for (N={N}, s={s:g})")
        curve = _point_curve(groups[key], groups[(int(N), 0.0)], name)
        if abs(curve.accuracies[-1] - final) > SAME:
            raise ValueError(
                f"{name}: the curve of (N={N}, s={s:g}) ends at {curve.accuracies[-1]:g}, its point at {final:g}"
            )
        curves[(int(N), float(s))] = curve
    return curves


def phase2_end(curves: dict[tuple[int, float], Curve], N: int) -> int:
    """The last step of N's shared phase-2 curve."""
    return curves[(N, 0.0)].total_steps


def _point_curve(rows: pd.DataFrame, prefix: pd.DataFrame, name: str) -> Curve:
    N, s = int(rows["N"].iloc[0]), float(rows["s"].iloc[0])
    if rows["step"].duplicated().any() or (rows["step"] <= 0).any():
        raise ValueError(f"{name}: the steps of (N={N}, s={s:g}) must be positive and distinct")
    if s > 0:
        end = int(prefix["step"].iloc[-1])
        repeated = rows[rows["step"] <= end]
        if len(repeated) and not _same_rows(repeated, prefix):
            raise ValueError(f"{name}: (N={N}, s={s:g}) starts unlike its phase-2 curve (N={N}, s=0)")
        if len(repeated) == len(rows):
            raise ValueError(f"{name}: (N={N}, s={s:g}) has no rows after its phase-2 curve")
        rows = pd.concat([prefix, rows[rows["step"] > end]])
    steps = tuple(int(step) for step in rows["step"])
    stages = _stage_ranges(rows, s, steps, int(prefix["step"].iloc[-1]))
    return Curve(N, s, steps, tuple(float(a) for a in rows["accuracy"]), steps[-1], stages)


def _same_rows(repeated: pd.DataFrame, prefix: pd.DataFrame) -> bool:
    if len(repeated) != len(prefix) or (repeated["step"].to_numpy() != prefix["step"].to_numpy()).any():
        return False
    return bool(np.allclose(repeated["accuracy"].to_numpy(), prefix["accuracy"].to_numpy(), atol=SAME, rtol=0))


def _stage_ranges(rows: pd.DataFrame, s: float, steps: tuple[int, ...], end: int) -> tuple[tuple[int, str], ...]:
    if rows["stage"].isna().all():
        names = [PREFIX_STAGE if step <= end or s == 0 else AFTER_PREFIX_STAGE for step in steps]
    else:
        names = [PREFIX_STAGE if step <= end else stage for step, stage in zip(steps, rows["stage"])]
    return tuple(
        (step, stage)
        for index, (step, stage) in enumerate(zip(steps, names))
        if index == 0 or names[index - 1] != stage
    )
