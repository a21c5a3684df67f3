"""AutoPruMUXSampler in real Optuna studies (in memory and SQLite) against a grid table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from replay.points import true_best
from search import AutoPruMUXSampler, SearchDone, stop_when_done, suggest_point
from search.curves import Curve, StopDecision
from search.grid import read_points, require_full_grid
from search.sampler import expected_settled, measured_points, stopped_points
from tuning.stopping import record_stop

optuna.logging.set_verbosity(optuna.logging.WARNING)

TABLE = Path(__file__).parents[1] / "benchmarks" / "tables" / "mnli.csv"


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return read_points(TABLE)


def objective_for(table: pd.DataFrame):
    grid_N, grid_s = require_full_grid(table)
    lookup = table.set_index(["N", "s"])

    def objective(trial: optuna.Trial) -> list[float]:
        row = lookup.loc[suggest_point(trial, grid_N, grid_s)]
        return [row["accuracy"], row["throughput"]]

    return objective


def run(table: pd.DataFrame, budget: float, storage=None, study_name=None) -> optuna.Study:
    grid_N, grid_s = require_full_grid(table)
    sampler = AutoPruMUXSampler(grid_N, grid_s, budget)
    study = optuna.create_study(
        storage=storage,
        study_name=study_name,
        sampler=sampler,
        directions=["maximize", "maximize"],
        load_if_exists=True,
    )
    study.optimize(objective_for(table), n_trials=len(table), callbacks=[stop_when_done])
    return study


def points_of(study: optuna.Study) -> list[tuple[int, float]]:
    return [(t.params["N"], t.params["s"]) for t in study.trials]


def best_found(study: optuna.Study, table: pd.DataFrame, budget: float) -> tuple[int, float]:
    done = table.merge(pd.DataFrame(points_of(study), columns=["N", "s"]))
    best = true_best(done, budget)
    return int(best["N"]), float(best["s"])


@pytest.mark.parametrize("budget", [0.0, 0.03, 0.08])
def test_never_repeats_stops_and_finds_true_best_in_memory(table, budget):
    study = run(table, budget)
    points = points_of(study)
    assert len(points) == len(set(points)) < len(table)
    assert points[0] == (1, 0.0)
    assert study.sampler.is_done(study)
    best = true_best(table, budget)
    assert best_found(study, table, budget) == (best["N"], best["s"])


def test_sqlite_resume_continues_without_repeats(table, tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    grid_N, grid_s = require_full_grid(table)
    first = optuna.create_study(
        storage=url, study_name="s", sampler=AutoPruMUXSampler(grid_N, grid_s, 0.03), directions=["maximize"] * 2
    )
    first.optimize(objective_for(table), n_trials=4)
    resumed = run(table, 0.03, storage=url, study_name="s")  # a fresh sampler reads the stored trials
    points = points_of(resumed)
    assert len(points) == len(set(points)) > 4
    assert points == points_of(run(table, 0.03))
    with pytest.raises(SearchDone):
        suggest_point(resumed.ask(), grid_N, grid_s)


def test_running_and_waiting_points_are_taken_failed_ones_are_not(table):
    grid_N, grid_s = require_full_grid(table)
    study = optuna.create_study(sampler=AutoPruMUXSampler(grid_N, grid_s, 0.03), directions=["maximize"] * 2)
    running = study.ask()
    assert suggest_point(running, grid_N, grid_s) == (1, 0.0)
    study.enqueue_trial({"N": 1, "s": 0.95})
    waiting_taken = study.sampler.next_point(study)
    assert waiting_taken == (10, 0.0)
    failed = study.ask()  # the enqueued (1, 0.95)
    assert suggest_point(failed, grid_N, grid_s) == (1, 0.95)
    study.tell(failed, state=TrialState.FAIL)
    assert study.sampler.next_point(study) == (1, 0.95)
    assert not study.sampler.is_done(study)  # a trial is still running


def test_cheap_N_wins_throughput_ties(table):
    grid_N, grid_s = require_full_grid(table)
    costly = AutoPruMUXSampler(grid_N, grid_s, 0.10, tie_tolerance=0.0)
    cheap = AutoPruMUXSampler(grid_N, grid_s, 0.10, tie_tolerance=10.0, is_cheap=lambda n: n == 2)
    measured = table[table["s"].isin([0.0]) | (table["N"] == 1)]
    taken = set(zip(measured["N"], measured["s"]))
    assert costly.plan(measured, taken, set())["N"].iloc[0] != 2
    assert cheap.plan(measured, taken, {2})["N"].iloc[0] == 2


def test_rejects_bad_settings():
    with pytest.raises(ValueError, match="budget"):
        AutoPruMUXSampler([1, 2], [0.0, 0.5], 1.5)
    with pytest.raises(ValueError, match="dense"):
        AutoPruMUXSampler([2, 5], [0.0, 0.5], 0.03)


def test_a_collapsed_edge_does_not_rule_out_the_points_before_it() -> None:
    """Dense, then both far edges at chance (as a short recipe gives): a linear chord through
    the collapse says nothing about the points before it, so the search must go on there."""
    grid_N, grid_s = [1, 2, 5], [0.0, 0.5, 0.7, 0.9]
    sampler = AutoPruMUXSampler(grid_N, grid_s, budget=0.03)
    study = optuna.create_study(sampler=sampler, directions=["maximize", "maximize"])
    for (N, s), values in {(1, 0.0): [0.81, 100.0], (1, 0.9): [0.55, 400.0], (5, 0.0): [0.55, 450.0]}.items():
        study.enqueue_trial({"N": N, "s": s})
        trial = study.ask()
        suggest_point(trial, grid_N, grid_s)
        study.tell(trial, values)
    assert not sampler.is_done(study)
    before_the_collapse = {(n, s) for n in (1, 2) for s in (0.0, 0.5, 0.7)} - {(1, 0.0)}
    assert sampler.next_point(study) in before_the_collapse


def test_a_sure_ruling_out_and_a_likely_modest_gain_go_before_a_long_shot() -> None:
    """After the anchors of a cpu-demo-like search (pruning degrades gently, N = 5 collapses), the first points
    are (2, 0), near certain to measure low and so to rule out every N = 2 point (3 candidates), and (1, 0.7),
    likely feasible between s = 0 and 0.9 (the concave decline), which then settles (1, 0.5), slower; the faster
    N = 2 long shots come after. (1, 0.7) went first while the centre of its probabilities was infinite (no
    chord extends to it), which made it certainly feasible; it now has the monotone cap as its concave bound."""
    measured = pd.DataFrame(
        {"N": [1, 1, 5], "s": [0.0, 0.9, 0.0], "accuracy": [0.81, 0.73, 0.55], "throughput": [100.0, 930.0, 510.0]}
    )
    sampler = AutoPruMUXSampler([1, 2, 5], [0.0, 0.5, 0.7, 0.9], budget=0.03)
    plan = sampler.plan(measured, {(1, 0.0), (1, 0.9), (5, 0.0)}, {1, 5})
    candidates = plan[plan["candidate"]]
    assert [tuple(point) for point in candidates[["N", "s"]].head(2).itertuples(index=False)] == [(2, 0.0), (1, 0.7)]
    by_point = candidates.set_index(["N", "s"])
    assert by_point.loc[(2, 0.0), "p_ruling_out"] > 0.99
    assert 0.99 > by_point.loc[(1, 0.7), "p_feasible"] > 0.4 > by_point.loc[(2, 0.0), "p_feasible"]
    assert by_point.loc[(1, 0.7), "expected_gain"] > by_point.loc[(1, 0.5), "expected_gain"]
    assert candidates["expected_settled"].is_monotonic_decreasing
    faster_long_shot = candidates[candidates["N"] == 2]
    assert (faster_long_shot["throughput"] > by_point.loc[(1, 0.7), "throughput"]).any()


def test_a_feasible_point_settles_its_less_pruned_row() -> None:
    """Pruning removes FLOPs: an untried point of a measured N is no faster than the row's more pruned
    measured points, so once (2, 0.6) is feasible the less pruned N = 2 points cannot beat it, whatever
    their estimated throughput's margin."""
    measured = pd.DataFrame(
        {
            "N": [1, 1, 2, 2],
            "s": [0.0, 0.9, 0.0, 0.6],
            "accuracy": [0.81, 0.70, 0.80, 0.80],
            "throughput": [100.0, 900.0, 190.0, 400.0],
        }
    )
    sampler = AutoPruMUXSampler([1, 2], [0.0, 0.2, 0.4, 0.5, 0.6, 0.9], budget=0.03)
    plan = sampler.plan(measured, set(zip(measured["N"], measured["s"])), {1, 2}).set_index(["N", "s"])
    assert (plan.loc[[(2, 0.2), (2, 0.4), (2, 0.5)], "optimistic_throughput"] <= 400.0).all()
    assert not plan.loc[[(2, 0.2), (2, 0.4), (2, 0.5)], "candidate"].any()
    assert plan.loc[(2, 0.9), "optimistic_throughput"] > 400.0


def test_expected_settled_counts_what_each_outcome_rules_out() -> None:
    """A candidate settles itself, the candidates no faster than it when feasible, and those it dominates when
    it measures low; a point that is no candidate settles nothing and is settled by no one."""
    frame = pd.DataFrame(
        {
            "N": [1, 1, 2, 2],
            "s": [0.5, 0.7, 0.5, 0.0],
            "throughput": [2.0, 3.0, 4.0, 1.5],
            "optimistic_throughput": [2.4, 3.6, 4.8, 1.8],
            "candidate": [True, True, True, False],
        }
    )
    p_feasible = np.array([0.5, 0.2, 0.1, 0.9])
    p_ruling_out = np.array([0.4, 0.3, 0.6, 0.1])
    settled = expected_settled(frame, p_feasible, p_ruling_out)
    # (1, 0.5): nothing slower; dominates (1, 0.7) and (2, 0.5). (1, 0.7): (1, 0.5) slower; dominates nothing.
    # (2, 0.5): (1, 0.5) and (1, 0.7) slower; dominates nothing among the candidates.
    assert settled == pytest.approx([1 + 0.4 * 2, 1 + 0.2 * 1, 1 + 0.1 * 2, 0.0])


def test_a_long_row_is_bracketed_not_walked() -> None:
    """On a long row whose accuracy crosses the threshold, the search does not walk the row from its measured
    end: its first point there lies well inside the row, and the whole search trains a fifth of the grid (22
    trainings, the row walked point by point, when the next point was the highest expected gain alone)."""
    grid_s = [round(0.025 * k, 3) for k in range(40)]
    rows = [(n, s, 0.9 - 0.004 * (n - 1) - 0.1 * s, n / (1 - 0.9 * s)) for n in (1, 2) for s in grid_s]
    table = pd.DataFrame(rows, columns=["N", "s", "accuracy", "throughput"])
    study = run(table, 0.05)
    row_two = [s for n, s in points_of(study) if n == 2 and s > 0]
    assert grid_s[4] < row_two[0] < grid_s[-4]
    assert len(points_of(study)) <= len(table) // 5
    assert best_found(study, table, 0.05) == tuple(true_best(table, 0.05)[["N", "s"]])


def stop_point(study: optuna.Study, point: tuple[int, float], grid, bound: float, step: int = 40, throughput=None):
    """Train ``point`` to ``step`` on a flat curve and record it stopped, as the live scheduler does."""
    study.enqueue_trial({"N": point[0], "s": point[1]})
    trial = study.ask()
    suggest_point(trial, *grid)
    total = 100 if point[1] == 0 else 280
    curve = Curve(point[0], point[1], (step // 2, step), (bound - 0.1, bound - 0.1), total, ((step // 2, "finetune"),))
    decision = StopDecision("threshold", bound, f"cannot reach 0.814 (bound {bound:.2f})", column=point[1] == 0)
    assert record_stop(study, trial, curve, decision, 0.814, throughput, "measured" if throughput else "predicted")
    return trial


def test_a_stopped_phase2_point_rules_out_its_N_column_and_beyond(table):
    grid = require_full_grid(table)
    sampler = AutoPruMUXSampler(*grid, 0.03)
    study = optuna.create_study(sampler=sampler, directions=["maximize", "maximize"])
    stop_point(study, (2, 0.0), grid, bound=0.79)
    study.optimize(objective_for(table), n_trials=len(table), callbacks=[stop_when_done])
    trained = points_of(study)
    assert trained.count((2, 0.0)) == 1  # never proposed again: its only trial is the stopped one
    assert [point for point in trained if point[0] >= 2] == [(2, 0.0)]
    assert sampler.is_done(study)
    assert study.trials[0].state == TrialState.PRUNED and study.trials[0].user_attrs["bound_column"] is True
    # The same search without the stop trains multiplexed points (the true best at 3% is N = 2).
    assert any(point[0] >= 2 for point in points_of(run(table, 0.03)))


def test_a_stopped_pruned_point_caps_the_more_pruned_and_more_multiplexed(table):
    grid = require_full_grid(table)
    sampler = AutoPruMUXSampler(*grid, 0.03)
    study = optuna.create_study(sampler=sampler, directions=["maximize", "maximize"])
    for point in [(1, 0.0), (1, 0.95), (10, 0.0), (1, 0.6), (2, 0.0)]:
        study.enqueue_trial({"N": point[0], "s": point[1]})
        study.optimize(objective_for(table), n_trials=1)
    stop_point(study, (1, 0.8), grid, bound=0.80, step=220, throughput=4.1)
    trials = study.get_trials(deepcopy=False)
    stopped = stopped_points(trials)
    assert stopped[["N", "s", "accuracy_bound", "column"]].values.tolist() == [[1, 0.8, 0.80, False]]
    taken = {(t.params["N"], t.params["s"]) for t in trials}
    plan = sampler.plan(measured_points(trials), taken, set(), stopped).set_index(["N", "s"])
    dominated = [(n, s) for n, s in plan.index if n >= 1 and s >= 0.8]
    assert dominated and (plan.loc[dominated, "optimistic_accuracy"] <= 0.80 + 1e-12).all()
    assert not plan.loc[dominated, "candidate"].any()
    free = plan.loc[[(1, 0.75), (2, 0.75)], "optimistic_accuracy"]
    assert (free > 0.80).all() and plan.loc[(1, 0.75), "candidate"]
    # Its measured throughput is a measured shape for the throughput model.
    assert sampler._throughputs(stopped).values.tolist() == [[1, 0.8, 4.1]]


def test_a_resumed_search_keeps_its_stopped_points(table, tmp_path):
    url = f"sqlite:///{tmp_path / 'resume.db'}"
    small = table[table["N"].isin([1, 2]) & table["s"].isin([0.0, 0.6])].reset_index(drop=True)
    grid = require_full_grid(small)
    first = optuna.create_study(storage=url, study_name="r", directions=["maximize", "maximize"])
    for point in [(1, 0.0), (1, 0.6)]:
        first.enqueue_trial({"N": point[0], "s": point[1]})
        first.optimize(objective_for(small), n_trials=1)
    stop_point(first, (2, 0.0), grid, bound=0.70)
    # A new driver on the same storage: the stopped point stays decided and rules out (2, 0.6).
    sampler = AutoPruMUXSampler(*grid, 0.03)
    resumed = optuna.load_study(study_name="r", storage=url, sampler=sampler)
    assert sampler.next_point(resumed) is None and sampler.is_done(resumed)
    assert [t.state for t in resumed.trials] == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.PRUNED]
