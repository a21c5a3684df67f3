"""Replay searches on a grid's learning curves: training a point to step k reveals its curve up
to k and costs k steps, its phase-2 part charged once per N (every s of N reuses it).

Methods, side by side on the same curves (each recommends its best fully trained feasible point):

* ``autoprumux-es``: the AutoPruMUXSampler, and at each evaluation ``decide_stop`` with a
  ``CurveBound`` refitted on the curves finished so far; a stop is recorded through
  ``tuning.stopping.record_stop`` (storage.curves.record_stopped), so the sampler sees it as in a
  live search. The threshold is known once (1, 0), its first point, is measured; the point's
  throughput is the table's (``measured``: throughput depends on the shape, not the task).
* ``autoprumux``: the same sampler, every point trained to its end.
* ``tpe-sha`` / ``tpe-hyperband``: the stock Optuna code a user would write: a single-objective
  study maximising throughput, the constraint ``threshold - accuracy`` set with
  ``trial.set_constraint`` when the point finishes, ``trial.report(accuracy, step)`` at each
  evaluation and ``raise TrialPruned`` when ``should_prune()``; ``SuccessiveHalvingPruner()`` /
  ``HyperbandPruner()`` with their defaults; TPE as the points replay's (``make_sampler``).
* ``asha-optuna`` / ``random-asha``: real Ray Tune runs (replay.ray_tune).
* ``grid``: every point to its end.

Baselines other than ``grid`` run ``trials`` trials (default: as many as the grid has points); a
repeated point costs only the steps it trains beyond what it had reached.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass

import numpy as np
import optuna
import pandas as pd

from replay.curve_table import phase2_end, read_curves
from replay.points import ReplayResult, make_sampler, search_result, summarize, true_best
from search.compute import StepLedger
from search.curves import Curve, CurveBound, StopDecision, decide_stop, false_stops
from search.grid import check_budget, read_points, require_full_grid
from search.sampler import AutoPruMUXSampler, suggest_point
from storage.points import DENSE_POINT, is_feasible, table_threshold
from tuning.stopping import record_stop

OURS = ("autoprumux-es", "autoprumux")
OPTUNA_PRUNERS = {"tpe-sha": optuna.pruners.SuccessiveHalvingPruner, "tpe-hyperband": optuna.pruners.HyperbandPruner}
RAY_METHODS = ("asha-optuna", "random-asha")
METHODS = (*OURS, *OPTUNA_PRUNERS, *RAY_METHODS, "grid")

Point = tuple[int, float]


@dataclass(frozen=True)
class CurveReplayResult(ReplayResult):
    """A replayed search's outcome with the training steps it spent."""

    steps: int
    grid_steps: int  # what the exhaustive grid spends
    stopped: int  # points stopped early (by our bound, a pruner or a scheduler)
    false_stops: int  # stops whose point would have met the threshold (ours: threshold stops only)


def grid_steps(curves: dict[Point, Curve]) -> int:
    """Steps of the exhaustive grid: every point trained to its end, phase 2 once per N."""
    ledger = _ledger(curves)
    for point, curve in curves.items():
        ledger.train(point, curve.total_steps)
    return ledger.steps


class _Search:
    """What one replayed search has trained and measured."""

    def __init__(self, table: pd.DataFrame, curves: dict[Point, Curve], budget: float) -> None:
        self.table, self.curves = table, curves
        self.grid_N, self.grid_s = require_full_grid(table)
        self.lookup = table.set_index(["N", "s"])
        self.threshold = table_threshold(table, budget)
        self.ledger = _ledger(curves)
        self.measured: dict[Point, pd.Series] = {}
        self.started: set[Point] = set()
        self.stops: list[tuple[Curve, StopDecision]] = []
        self.stopped = 0
        self.pruned: list[Point] = []  # points a baseline's pruner or scheduler stopped

    def prune(self, point: Point) -> None:
        """A baseline's pruner or scheduler stopped ``point``."""
        self.stopped += 1
        self.pruned.append(point)

    def finish(self, point: Point) -> pd.Series:
        self.ledger.train(point, self.curves[point].total_steps)
        row = self.measured.setdefault(point, self.lookup.loc[point])  # a repeat keeps its first place
        return row


def replay_curves(
    table: pd.DataFrame,
    curves: dict[Point, Curve],
    budget: float,
    method: str = "autoprumux-es",
    seed: int = 0,
    trials: int | None = None,
    storage: str | optuna.storages.BaseStorage | None = None,
    eval_rows: int | None = None,
    validation_rows: int | None = None,
) -> CurveReplayResult:
    """One search on the curves (``read_curves``) of a full grid ``table``; ``eval_rows``: the validation rows
    each evaluation of the curves was measured on (``CurveBound``; None for exact curves); ``validation_rows``:
    those of the table's accuracies (our sampler's noise; None: exact)."""
    table = read_points(table)
    budget = check_budget(budget)
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    search = _Search(table, curves, budget)
    trials = len(table) if trials is None else trials
    if method in OURS:
        bound = CurveBound(eval_rows=eval_rows) if method == "autoprumux-es" else None
        _ours(search, budget, seed, bound, storage, validation_rows)
    elif method in OPTUNA_PRUNERS:
        _optuna_pruned(search, budget, seed, OPTUNA_PRUNERS[method](), trials, storage)
    elif method in RAY_METHODS:
        from replay.ray_tune import ray_search

        ray_search(search, method, seed, trials)
    else:
        for point in curves:
            search.started.add(point)
            search.finish(point)
    base = search_result(method, budget, seed, len(table), search.measured, search.threshold, true_best(table, budget))
    finals = {point: float(row["accuracy"]) for point, row in search.lookup.iterrows()}
    return CurveReplayResult(
        **{**asdict(base), "trainings": len(search.started)},
        steps=search.ledger.steps,
        grid_steps=grid_steps(curves),
        stopped=search.stopped,
        false_stops=false_stops(search.stops, finals, search.threshold)
        + int(is_feasible(np.array([finals[point] for point in search.pruned]), search.threshold).sum()),
    )


def replay_curves_many(
    table: pd.DataFrame,
    curves: dict[Point, Curve],
    budgets: Sequence[float],
    methods: Sequence[str] = METHODS,
    seeds: int = 5,
    trials: int | None = None,
    eval_rows: int | None = None,
) -> pd.DataFrame:
    """Every method over budgets and seeds, one row per search; ours and the grid are
    deterministic and run once per budget. Ray methods share one local Ray instance."""
    rows = []
    with _ray_if_needed(methods):
        for budget in budgets:
            for method in methods:
                runs = 1 if method in (*OURS, "grid") else seeds
                rows += [
                    asdict(replay_curves(table, curves, budget, method, seed, trials, eval_rows=eval_rows))
                    for seed in range(runs)
                ]
    return pd.DataFrame(rows)


def replay_tables(
    table_path: str,
    curves_path: str,
    budgets: Sequence[float],
    method: str = "all",
    seeds: int = 5,
    trials: int | None = None,
    eval_rows: int | None = None,
) -> pd.DataFrame:
    """``replay_curves_many`` on a points table and its curves table (CSV paths): every method,
    or ours (with and without early stopping) beside ``method``; bad input raises ``ValueError``
    before any search (and Ray) starts."""
    if method != "all" and method not in METHODS:
        raise ValueError(f"--sampler {method} has no replay on curves; choose from {', '.join(METHODS)}, all")
    table = read_points(table_path)
    require_full_grid(table)
    curves = read_curves(curves_path, table)
    methods = METHODS if method == "all" else tuple(dict.fromkeys((*OURS, method)))
    return replay_curves_many(table, curves, budgets, methods, seeds, trials, eval_rows)


def summarize_curves(results: pd.DataFrame) -> pd.DataFrame:
    """``summarize`` plus, per method, mean steps, ``steps_pct`` (steps as % of the exhaustive
    grid's), mean points stopped and total false stops."""
    frame = results.assign(steps_pct=100 * results["steps"] / results["grid_steps"])
    extra = frame.groupby("sampler", sort=False).agg(
        steps=("steps", "mean"),
        steps_pct=("steps_pct", "mean"),
        stopped=("stopped", "mean"),
        false_stops=("false_stops", "sum"),
    )
    return summarize(results).merge(extra.reset_index(), on="sampler")


def _ours(
    search: _Search, budget: float, seed: int, stopping: CurveBound | None, storage, validation_rows: int | None
) -> None:
    """Our sampler; with ``stopping``, the bound refitted on the curves finished so far judges each evaluation."""
    sampler = AutoPruMUXSampler(search.grid_N, search.grid_s, budget, seed=seed, validation_rows=validation_rows)
    study = optuna.create_study(storage=storage, sampler=sampler, directions=["maximize", "maximize"])
    finished: list[Curve] = []
    threshold = None  # known once the dense point is measured
    for _ in range(2 * len(search.table)):
        if sampler.is_done(study):
            break
        trial = study.ask()
        point = suggest_point(trial, search.grid_N, search.grid_s)
        search.started.add(point)
        curve, row = search.curves[point], search.lookup.loc[point]
        incumbent = _incumbent(search.measured, threshold)
        bound = None if stopping is None or threshold is None else stopping.fit(finished)
        decision = None
        for step in curve.steps[:-1]:
            search.ledger.train(point, step)
            if bound is not None:
                seen = curve.upto(step)
                decision = decide_stop(seen, bound, threshold, float(row["throughput"]), incumbent)
                if decision is not None:
                    record_stop(study, trial, seen, decision, threshold, float(row["throughput"]), "measured")
                    search.stops.append((seen, decision))
                    search.stopped += 1
                    break
        if decision is None:
            search.finish(point)
            threshold = search.threshold if DENSE_POINT in search.measured else None
            trial.set_constraint("accuracy", search.threshold - row["accuracy"])
            study.tell(trial, [float(row["accuracy"]), float(row["throughput"])])
            finished.append(curve)


def _optuna_pruned(search: _Search, budget: float, seed: int, pruner, trials: int, storage) -> None:
    sampler = make_sampler("tpe", search.table, budget, seed)
    study = optuna.create_study(storage=storage, sampler=sampler, pruner=pruner, direction="maximize")

    def objective(trial: optuna.Trial) -> float:
        point = suggest_point(trial, search.grid_N, search.grid_s)
        search.started.add(point)
        curve = search.curves[point]
        for step, accuracy in zip(curve.steps, curve.accuracies):
            search.ledger.train(point, step)
            trial.report(accuracy, step)
            if step < curve.total_steps and trial.should_prune():
                search.prune(point)
                raise optuna.TrialPruned()
        row = search.finish(point)
        trial.set_constraint("accuracy", search.threshold - row["accuracy"])
        return float(row["throughput"])

    study.optimize(objective, n_trials=trials)


def _incumbent(measured: dict[Point, pd.Series], threshold: float | None) -> float | None:
    """Throughput of the best measured feasible point (None before any)."""
    if threshold is None:
        return None
    rows = [row for row in measured.values() if is_feasible(row["accuracy"], threshold)]
    return max((float(row["throughput"]) for row in rows), default=None)


def _ledger(curves: dict[Point, Curve]) -> StepLedger:
    return StepLedger({N: phase2_end(curves, N) for N, _ in curves})


def _ray_if_needed(methods: Sequence[str]):
    if not any(method in RAY_METHODS for method in methods):
        return nullcontext()
    from replay.ray_tune import local_ray

    return local_ray()
