"""Replay a search against a fully measured grid table: the objective looks the point up
instead of training it.

One loop, ``study.optimize`` (ask/tell underneath; GridSampler stops a study only from inside
it), drives every sampler. Each trial records the trial layout of
docs/ARCHITECTURE.md: params N and s, the constraint ``threshold - accuracy`` set with
``trial.set_constraint`` before ``tell`` (Optuna 5's way; TPE and GP read it from the trial,
``constraints_func`` is deprecated). AutoPruMUX reads values ``[accuracy, throughput]``; the
baselines optimise the real objective, throughput alone under the constraint, so TPE and GP
search for it rather than for an accuracy/throughput Pareto front.

A training is a distinct point measured; a baseline that repeats a point pays nothing for
it. Every sampler's recommendation is its best measured feasible point.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import optuna
import pandas as pd

from search.grid import check_budget, read_points, require_full_grid
from search.sampler import AutoPruMUXSampler, stop_when_done, suggest_point
from storage.points import is_feasible, table_threshold

SAMPLERS = ("autoprumux", "grid", "random", "tpe", "gp")
# Random proposals of TPE and GP before their models start; the default 10 would leave
# them random for most of a 36-point grid's matched budget.
STARTUP_TRIALS = 5
# Asks a baseline may spend per training before the replay gives up on new points.
ASKS_PER_TRAINING = 20


@dataclass(frozen=True)
class ReplayResult:
    """Outcome of one replayed search."""

    sampler: str
    budget: float
    seed: int
    trainings: int
    grid_size: int
    recommended_N: int
    recommended_s: float
    best_N: int
    best_s: float
    hit: bool
    regret: float
    trainings_to_best: float  # trainings until the true best was measured (NaN: never)


def true_best(table: pd.DataFrame, budget: float) -> pd.Series:
    """The highest-throughput point of the table within the budget."""
    feasible = table[is_feasible(table["accuracy"].to_numpy(), table_threshold(table, budget))]
    return feasible.sort_values(["throughput", "accuracy"], ascending=False).iloc[0]


def make_sampler(
    name: str, table: pd.DataFrame, budget: float, seed: int, validation_rows: int | None = None
) -> optuna.samplers.BaseSampler:
    """A sampler by name over the table's grid (``validation_rows``: ours only, the noise of the table's accuracies)."""
    grid_N, grid_s = require_full_grid(table)
    if name == "autoprumux":
        return AutoPruMUXSampler(grid_N, grid_s, budget, seed=seed, validation_rows=validation_rows)
    if name == "grid":
        return optuna.samplers.GridSampler({"N": grid_N, "s": grid_s}, seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=STARTUP_TRIALS)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=STARTUP_TRIALS)
    raise ValueError(f"unknown sampler {name!r}; choose from {', '.join(SAMPLERS)}")


def replay(
    table: pd.DataFrame,
    budget: float,
    sampler: str = "autoprumux",
    seed: int = 0,
    max_trainings: int | None = None,
    storage: str | optuna.storages.BaseStorage | None = None,
    validation_rows: int | None = None,
) -> ReplayResult:
    """Run one search against a full grid table; baselines stop after ``max_trainings``
    (default: the whole grid), AutoPruMUX when it is done (or at ``max_trainings``)."""
    table = read_points(table)
    grid_N, grid_s = require_full_grid(table)
    budget = check_budget(budget)
    best = true_best(table, budget)
    threshold = table_threshold(table, budget)
    chosen = make_sampler(sampler, table, budget, seed, validation_rows)
    study = _create_study(chosen, sampler, storage)
    cap = len(table) if max_trainings is None else min(max_trainings, len(table))
    lookup = table.set_index(["N", "s"])
    measured: dict[tuple[int, float], pd.Series] = {}

    def objective(trial: optuna.Trial) -> float | list[float]:
        point = suggest_point(trial, grid_N, grid_s)
        row = measured[point] = lookup.loc[point]
        trial.set_constraint("accuracy", threshold - row["accuracy"])
        return [row["accuracy"], row["throughput"]] if sampler == "autoprumux" else row["throughput"]

    def stop_at_cap(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if len(measured) >= cap:
            study.stop()

    if not (isinstance(chosen, AutoPruMUXSampler) and chosen.is_done(study)):
        study.optimize(objective, n_trials=ASKS_PER_TRAINING * len(table), callbacks=[stop_at_cap, stop_when_done])
    return search_result(sampler, budget, seed, len(table), measured, threshold, best)


def replay_many(
    table: pd.DataFrame,
    budgets: Sequence[float],
    samplers: Sequence[str] = SAMPLERS,
    seeds: int = 5,
    trainings: int | None = None,
) -> pd.DataFrame:
    """Replay every sampler over budgets and seeds; one row per search.

    Baselines get ``trainings`` trainings, or by default as many as AutoPruMUX used for the
    same budget (GridSampler always trains the whole grid). AutoPruMUX is deterministic, so
    it runs once per budget.
    """
    table = read_points(table)
    rows = []
    for budget in budgets:
        auto = replay(table, budget, "autoprumux")
        matched = auto.trainings if trainings is None else trainings
        for sampler in samplers:
            if sampler == "autoprumux":
                rows.append(asdict(auto))
                continue
            cap = None if sampler == "grid" else matched
            runs = 1 if sampler == "grid" else seeds
            rows += [asdict(replay(table, budget, sampler, seed, cap)) for seed in range(runs)]
    return pd.DataFrame(rows)


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    """Per sampler: mean trainings as % of the grid, % of searches recommending the true best,
    mean throughput regret (1 - recommended / best), and mean trainings until the true best was
    measured (over the searches that measured it: what a search stopped early has found)."""
    frame = results.assign(trainings_pct=100 * results["trainings"] / results["grid_size"])
    summary = frame.groupby("sampler", sort=False).agg(
        trainings=("trainings", "mean"),
        trainings_pct=("trainings_pct", "mean"),
        hit_pct=("hit", lambda hit: 100 * hit.mean()),
        regret_pct=("regret", lambda regret: 100 * regret.mean()),
        to_best=("trainings_to_best", "mean"),
        searches=("hit", "size"),
    )
    return summary.reset_index()


def _create_study(sampler: optuna.samplers.BaseSampler, name: str, storage) -> optuna.Study:
    directions = ["maximize", "maximize"] if name == "autoprumux" else ["maximize"]
    return optuna.create_study(storage=storage, sampler=sampler, directions=directions)


def search_result(sampler, budget, seed, grid_size, measured, threshold, best) -> ReplayResult:
    """A search's outcome from the points it measured, in order (``measured``: point -> table row)."""
    frame = pd.DataFrame([{**row, "N": point[0], "s": point[1]} for point, row in measured.items()])
    frame = frame if len(frame) else pd.DataFrame(columns=["N", "s", "accuracy", "throughput"])
    feasible = frame[is_feasible(frame["accuracy"].to_numpy(), threshold)]
    chosen = feasible.sort_values(["throughput", "accuracy"], ascending=False).iloc[0] if len(feasible) else None
    recommended = (int(chosen["N"]), float(chosen["s"])) if chosen is not None else (0, 0.0)
    throughput = float(chosen["throughput"]) if chosen is not None else 0.0
    return ReplayResult(
        sampler=sampler,
        budget=budget,
        seed=seed,
        trainings=len(measured),
        grid_size=grid_size,
        recommended_N=recommended[0],
        recommended_s=recommended[1],
        best_N=int(best["N"]),
        best_s=float(best["s"]),
        hit=throughput >= float(best["throughput"]),
        regret=1.0 - throughput / float(best["throughput"]),
        trainings_to_best=_position(measured, (int(best["N"]), float(best["s"]))),
    )


def _position(measured: dict[tuple[int, float], pd.Series], point: tuple[int, float]) -> float:
    """1-based order in which ``point`` was measured, NaN if it never was."""
    return float(list(measured).index(point) + 1) if point in measured else float("nan")
