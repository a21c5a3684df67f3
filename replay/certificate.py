"""The shortest proof of a table's true best: what a search that trusts no model must train.

To recommend the true best a search measures it and rules out every faster point. The rule that needs
no model is the monotone cap (``search.surrogate.monotone_cap``): more N or more s gains no accuracy,
so a measured point whose accuracy plus the sampler's margin is below the threshold rules out every
point with at least its N and its s. A faster point that no such low point lies below must be trained
itself. The fewest trainings that rule out every faster point this way, plus the dense point and the
true best, are the *certificate*: a search that trains fewer ruled some point out on a model's
prediction alone, which is where its misses come from. The family replay prints it beside ours
(``benchmarks/replay_families.py --methods certificate``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from replay.points import ReplayResult, search_result, true_best
from search.grid import check_budget, read_points, require_full_grid
from search.sampler import AutoPruMUXSampler
from storage.points import DENSE_POINT, is_feasible, table_threshold


def certificate(table: pd.DataFrame, budget: float, margin: float) -> list[tuple[int, float]]:
    """The fewest points whose measurements prove the true best by the monotone cap with ``margin``:
    the dense point, the true best, the faster points no low point lies below, and a minimum set of
    low points (accuracy plus ``margin`` below the threshold) below every other faster point."""
    threshold = table_threshold(table, budget)
    best = true_best(table, budget)
    faster = table[table["throughput"] > float(best["throughput"])]
    low = table[~is_feasible(table["accuracy"].to_numpy() + margin, threshold)]
    lowest = _minimal(low)
    unprovable, intervals = [], []
    for point in faster.itertuples():
        below = np.flatnonzero((lowest["N"].to_numpy() <= point.N) & (lowest["s"].to_numpy() <= point.s + 1e-12))
        if below.size:
            intervals.append((below.min(), below.max()))  # contiguous: ``lowest`` is a staircase
        else:
            unprovable.append((int(point.N), float(point.s)))
    chosen = [lowest.iloc[i] for i in _stabbing(intervals)]
    proof = [DENSE_POINT, (int(best["N"]), float(best["s"])), *unprovable, *((int(p.N), float(p.s)) for p in chosen)]
    return list(dict.fromkeys(proof))


def replay_certificate(table: pd.DataFrame, budget: float, validation_rows: int | None = None) -> ReplayResult:
    """The certificate as a replayed search (sampler ``certificate``), at the margin our sampler uses on the
    table (its noise-aware margin when ``validation_rows`` is given)."""
    table = read_points(table)
    grid_N, grid_s = require_full_grid(table)
    budget = check_budget(budget)
    threshold = table_threshold(table, budget)
    sampler = AutoPruMUXSampler(grid_N, grid_s, budget, validation_rows=validation_rows)
    proof = certificate(table, budget, sampler.margins(threshold)[0])
    lookup = table.set_index(["N", "s"])
    measured = {point: lookup.loc[point] for point in proof}
    return search_result("certificate", budget, 0, len(table), measured, threshold, true_best(table, budget))


def _minimal(points: pd.DataFrame) -> pd.DataFrame:
    """The points no other point lies below (no more N and no more s), by N ascending (s then descends)."""
    ordered = points.sort_values(["N", "s"], kind="stable")
    keep, lowest_s = [], np.inf
    for index, point in zip(ordered.index, ordered.itertuples()):
        if point.s < lowest_s - 1e-12:
            keep.append(index)
            lowest_s = point.s
    return ordered.loc[keep].reset_index(drop=True)


def _stabbing(intervals: list[tuple[int, int]]) -> list[int]:
    """The fewest indices that fall in every interval (greedy by right end: optimal for intervals)."""
    chosen: list[int] = []
    for start, end in sorted(intervals, key=lambda interval: interval[1]):
        if not chosen or chosen[-1] < start:
            chosen.append(end)
    return chosen
