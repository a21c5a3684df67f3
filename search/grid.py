"""Parsing and validation of (N, s) grids, budgets and measured point tables.

Every check raises ``ValueError`` with a one-line message naming the offending value, so the
CLI can print it as is.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

POINT_COLUMNS = ("N", "s", "accuracy", "throughput")
THROUGHPUT_COLUMNS = ("N", "s", "throughput")


def check_budget(budget: float) -> float:
    """Return the budget as a float if it is an accuracy loss in [0, 1]."""
    value = float(budget)
    if not 0.0 <= value <= 1.0 or math.isnan(value):
        raise ValueError(f"budget must be an accuracy loss in [0, 1], got {budget}")
    return value


def parse_budgets(text: str) -> list[float]:
    """Budgets from ``"0.03"``, ``"0.01,0.03"`` or a range ``"start:stop:step"`` (stop included)."""
    text = text.strip()
    if ":" in text:
        parts = _floats(text.split(":"), "budget range")
        if len(parts) != 3 or parts[2] <= 0 or parts[1] < parts[0]:
            raise ValueError(f"budget range must be start:stop:step with step > 0, got {text!r}")
        start, stop, step = parts
        count = math.floor((stop - start) / step + 1e-9) + 1
        return [check_budget(round(start + i * step, 10)) for i in range(count)]
    return [check_budget(value) for value in _floats(text.split(","), "budget")]


def parse_values(text: str, name: str) -> list[float]:
    """A comma-separated list of numbers, e.g. a grid axis ``"1,2,5,10"``."""
    values = _floats(text.split(","), name)
    if len(set(values)) != len(values):
        raise ValueError(f"{name} list has repeated values: {text!r}")
    return sorted(values)


def check_grid(grid_N: Sequence[float], grid_s: Sequence[float]) -> tuple[list[int], list[float]]:
    """Validate grid axes: positive integer N, sparsity in [0, 1), dense (1, 0) included."""
    if not grid_N or not grid_s:
        raise ValueError("grid needs at least one N and one s value")
    if any(float(n) != int(n) or int(n) < 1 for n in grid_N):
        raise ValueError(f"grid N values must be positive integers, got {list(grid_N)}")
    if any(not 0.0 <= float(s) < 1.0 for s in grid_s):
        raise ValueError(f"grid s values must lie in [0, 1), got {list(grid_s)}")
    ns, ss = sorted({int(n) for n in grid_N}), sorted({float(s) for s in grid_s})
    if len(ns) != len(grid_N) or len(ss) != len(grid_s):
        raise ValueError("grid values must not repeat")
    if ns[0] != 1 or ss[0] != 0.0:
        raise ValueError("grid must contain the dense point (N=1, s=0)")
    return ns, ss


def read_points(source: str | Path | pd.DataFrame, columns: Sequence[str] = POINT_COLUMNS) -> pd.DataFrame:
    """Read and validate a table of measured points (a CSV path or a DataFrame).

    Lines starting with ``#`` are comments. Returns the required columns, N as int.
    """
    frame = load_csv(source)
    name = str(source) if not isinstance(source, pd.DataFrame) else "points"
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise ValueError(f"{name}: missing column(s) {', '.join(missing)}")
    frame = frame[list(columns)]
    if frame.empty:
        raise ValueError(f"{name}: no points")
    try:
        frame = frame.astype(float)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: non-numeric values in {', '.join(columns)}") from None
    _check_values(frame, name)
    frame = frame.assign(N=frame["N"].astype(int)).reset_index(drop=True)
    return frame


def check_on_grid(points: pd.DataFrame, grid_N: Iterable[int], grid_s: Iterable[float]) -> None:
    """Raise if any point's N or s lies outside the grid."""
    on_N = points["N"].isin(list(grid_N))
    on_s = np.isclose(points["s"].to_numpy()[:, None], np.asarray(list(grid_s))[None, :]).any(1)
    outside = points.loc[~(on_N.to_numpy() & on_s), ["N", "s"]]
    if not outside.empty:
        first = outside.iloc[0]
        raise ValueError(f"point (N={int(first.N)}, s={first.s:g}) is outside the grid")


def require_full_grid(points: pd.DataFrame) -> tuple[list[int], list[float]]:
    """The grid axes of a table that measures every (N, s) of its axes; raise otherwise."""
    grid_N, grid_s = grid_axes(points)
    if len(points) != len(grid_N) * len(grid_s):
        raise ValueError(f"table is not a full grid: {len(points)} points for {len(grid_N)} N x {len(grid_s)} s values")
    return grid_N, grid_s


def grid_axes(points: pd.DataFrame) -> tuple[list[int], list[float]]:
    """Sorted distinct N and s values of a point table."""
    return sorted(int(n) for n in points["N"].unique()), sorted(float(s) for s in points["s"].unique())


def load_csv(source: str | Path | pd.DataFrame) -> pd.DataFrame:
    """A CSV (``#`` lines are comments) or a copy of a DataFrame; a one-line ValueError if unreadable."""
    if isinstance(source, pd.DataFrame):
        return source.copy()
    try:
        return pd.read_csv(source, comment="#", skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise ValueError(f"{source}: empty CSV") from None
    except pd.errors.ParserError as error:
        raise ValueError(f"{source}: not a valid CSV ({' '.join(str(error).split())})") from None


def _check_values(frame: pd.DataFrame, name: str) -> None:
    nan_rows = frame.isna().any(axis=1)
    if nan_rows.any():
        raise ValueError(f"{name}: missing or NaN value in row {int(np.argmax(nan_rows)) + 1}")
    n = frame["N"]
    if ((n != n.round()) | (n < 1)).any():
        raise ValueError(f"{name}: N must be a positive integer, got {n[(n != n.round()) | (n < 1)].iloc[0]:g}")
    if ((frame["s"] < 0) | (frame["s"] >= 1)).any():
        raise ValueError(f"{name}: s must lie in [0, 1)")
    if "accuracy" in frame and ((frame["accuracy"] < 0) | (frame["accuracy"] > 1)).any():
        raise ValueError(f"{name}: accuracy must be a fraction in [0, 1]")
    if "throughput" in frame and (frame["throughput"] <= 0).any():
        raise ValueError(f"{name}: throughput must be positive")
    duplicated = frame.duplicated(subset=["N", "s"])
    if duplicated.any():
        row = frame[duplicated].iloc[0]
        raise ValueError(f"{name}: duplicate point (N={int(row.N)}, s={row.s:g})")


def _floats(parts: Iterable[str], name: str) -> list[float]:
    values = []
    for part in parts:
        try:
            value = float(part)
        except ValueError:
            raise ValueError(f"{name}: not a number: {part.strip()!r}") from None
        if math.isnan(value):
            raise ValueError(f"{name}: NaN is not allowed")
        values.append(value)
    return values
