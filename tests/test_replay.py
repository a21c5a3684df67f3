"""Replay loop: every sampler through real Optuna studies against a full grid table."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pandas as pd
import pytest

from cli.main import main
from replay import replay, replay_many, summarize
from replay.curve_table import phase2_end, read_curves
from replay.curves import grid_steps, replay_curves, replay_curves_many, summarize_curves
from search.compute import StepLedger
from search.grid import read_points
from storage.curves import stopped_trials

TABLE = Path(__file__).parents[1] / "benchmarks" / "tables" / "qqp.csv"


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return read_points(TABLE)


def test_autoprumux_finds_true_best_with_few_trainings(table):
    result = replay(table, 0.03)
    assert result.hit and result.regret == 0.0
    assert (result.recommended_N, result.recommended_s) == (2, 0.9)  # the paper's Table 2 QQP best
    assert result.trainings <= 0.4 * result.grid_size
    assert 1 <= result.trainings_to_best <= result.trainings  # the true best was measured, at that training


def test_grid_trains_everything_and_baselines_respect_the_cap(table):
    assert replay(table, 0.03, "grid").trainings == len(table)
    for sampler in ("random", "tpe"):
        result = replay(table, 0.03, sampler, seed=1, max_trainings=6)
        assert result.trainings == 6 and 0.0 <= result.regret <= 1.0


def test_sqlite_storage_records_constraints(table, tmp_path):
    url = f"sqlite:///{tmp_path / 'replay.db'}"
    replay(table, 0.03, storage=url)
    study = optuna.load_study(study_name=optuna.get_all_study_names(url)[0], storage=url)
    feasible = [t for t in study.trials if t.constraints["accuracy"] <= 0]
    assert feasible and all(t.values[0] >= 0.88 - 1e-9 for t in feasible)
    assert {t.params["N"] for t in study.best_trials} <= {1, 2, 5, 10}


def test_replay_many_matches_baseline_trainings(table):
    results = replay_many(table, [0.0, 0.05], samplers=["autoprumux", "random"], seeds=2)
    auto = results[results["sampler"] == "autoprumux"].set_index("budget")["trainings"]
    random = results[results["sampler"] == "random"]
    assert (random["trainings"].to_numpy() == auto.loc[random["budget"]].to_numpy()).all()
    summary = summarize(results).set_index("sampler")
    assert summary.loc["autoprumux", "hit_pct"] == 100.0
    assert summary.loc["random", "searches"] == 4
    assert 1 <= summary.loc["autoprumux", "to_best"] <= summary.loc["autoprumux", "trainings"]


def test_rejects_partial_table(table):
    with pytest.raises(ValueError, match="full grid"):
        replay(table.iloc[1:], 0.03)
    with pytest.raises(ValueError, match="unknown sampler"):
        replay(table, 0.03, "annealing")


# Replay on learning curves: a small grid cut from the derived QQP curves.
CURVES = TABLE.with_name("qqp-curves.csv")
SMALL_N, SMALL_S = (1, 2), (0.0, 0.6, 0.75, 0.9)


@pytest.fixture(scope="module")
def small() -> tuple[pd.DataFrame, dict]:
    points = read_points(TABLE)
    points = points[points["N"].isin(SMALL_N) & points["s"].isin(SMALL_S)].reset_index(drop=True)
    rows = pd.read_csv(CURVES, comment="#")
    rows = rows[rows["N"].isin(SMALL_N) & rows["s"].round(9).isin(SMALL_S)]
    return points, read_curves(rows, points)


def test_curves_table_shares_each_N_phase2_prefix(small):
    points, curves = small
    prefix = curves[(2, 0.0)]
    pruned = curves[(2, 0.75)]
    assert (
        pruned.steps[: len(prefix.steps)] == prefix.steps
        and pruned.accuracies[: len(prefix.steps)] == prefix.accuracies
    )
    assert [stage for _, stage in pruned.stages] == ["finetune", "prune", "pruned_finetune"]
    # Exhaustive grid: phase 2 once per N, then every pruned point's own steps.
    own = sum(curve.total_steps - curves[(n, 0.0)].total_steps for (n, s), curve in curves.items() if s > 0)
    assert grid_steps(curves) == sum(curves[(n, 0.0)].total_steps for n in SMALL_N) + own


def test_step_ledger_charges_phase2_once_and_only_new_steps(small):
    _, curves = small
    ledger = StepLedger({N: phase2_end(curves, N) for N, _ in curves})
    ledger.train((2, 0.6), 500)  # half of N = 2's phase 2
    ledger.train((2, 0.9), 1500)  # the rest of phase 2, then 500 of its own
    ledger.train((2, 0.0), 1000)  # already trained: free
    ledger.train((2, 0.9), 1200)  # not beyond what it reached: free
    assert ledger.steps == 1000 + 500


def test_curves_table_bad_input(small, tmp_path):
    points, curves = small
    rows = pd.read_csv(CURVES, comment="#")
    rows = rows[rows["N"].isin(SMALL_N) & rows["s"].round(9).isin(SMALL_S)]
    with pytest.raises(ValueError, match=r"the curve of \(N=1, s=0.9\) ends at"):
        bad = rows.copy()
        bad.loc[(bad["N"] == 1) & (bad["s"] == 0.9) & (bad["step"] == bad["step"].max()), "accuracy"] = 0.5
        read_curves(bad, points)
    with pytest.raises(ValueError, match=r"no curve for \(N=2, s=0.6\)"):
        read_curves(rows[~((rows["N"] == 2) & (rows["s"] == 0.6))], points)
    repeated = rows[(rows["N"] == 1) & (rows["s"] == 0.0)].assign(s=0.6)
    assert read_curves(pd.concat([rows, repeated]), points)[(1, 0.6)] == curves[(1, 0.6)]  # an exact prefix is accepted
    with pytest.raises(ValueError, match=r"\(N=1, s=0.6\) starts unlike its phase-2 curve"):
        read_curves(pd.concat([rows, repeated.assign(accuracy=0.6)]), points)
    with pytest.raises(ValueError, match="unknown stage"):
        read_curves(rows.assign(stage="warmup"), points)


def test_ours_with_early_stopping_matches_without_at_fewer_steps(small, tmp_path):
    points, curves = small
    url = f"sqlite:///{tmp_path / 'curves.db'}"
    with_stops = replay_curves(points, curves, 0.02, "autoprumux-es", storage=url)
    without = replay_curves(points, curves, 0.02, "autoprumux")
    assert with_stops.hit and without.hit and with_stops.false_stops == 0
    assert with_stops.stopped >= 1 and with_stops.steps < without.steps <= with_stops.grid_steps
    # Stops are stored as a live search stores them: PRUNED with the bound below the threshold.
    study = optuna.load_study(study_name=optuna.get_all_study_names(url)[0], storage=url)
    stopped = stopped_trials(study)
    assert len(stopped) == with_stops.stopped
    for trial in stopped:
        attrs = trial.user_attrs
        assert attrs["stopped_kind"] in ("threshold", "throughput") and attrs["stopped_because"].startswith("cannot")
        if attrs["stopped_kind"] == "threshold":
            assert attrs["accuracy_bound"] < attrs["threshold"]
    grid = replay_curves(points, curves, 0.03, "grid")
    assert grid.steps == grid.grid_steps and grid.hit and grid.trainings == len(points)


def test_optuna_pruner_baselines_report_and_prune(small):
    points, curves = small
    for method in ("tpe-sha", "tpe-hyperband"):
        result = replay_curves(points, curves, 0.03, method, seed=1, trials=12)
        assert result.trainings <= len(points) and 0 < result.steps < result.grid_steps
        assert result.stopped >= 1 and 0 <= result.false_stops <= result.stopped


def test_ray_tune_baselines_run_real_tune(small, local_ray):
    points, curves = small
    results = replay_curves_many(points, curves, [0.03], ["asha-optuna", "random-asha"], seeds=1, trials=4)
    assert list(results["sampler"]) == ["asha-optuna", "random-asha"]
    assert (results["steps"] > 0).all() and (results["steps"] <= results["grid_steps"]).all()
    assert (results["trainings"] >= 1).all() and (results["stopped"] <= 4).all()  # ASHA may stop none of 4
    summary = summarize_curves(results).set_index("sampler")
    assert (summary["steps_pct"] <= 100).all()


def test_replay_cli_with_curves_reports_steps(capsys, tmp_path, small):
    points, _ = small
    rows = pd.read_csv(CURVES, comment="#")
    rows = rows[rows["N"].isin(SMALL_N) & rows["s"].round(9).isin(SMALL_S)]
    points.to_csv(tmp_path / "points.csv", index=False)
    rows.to_csv(tmp_path / "curves.csv", index=False)
    args = ["replay", "--table", str(tmp_path / "points.csv"), "--curves", str(tmp_path / "curves.csv")]
    with pytest.raises(SystemExit) as stop:
        main(
            [
                *args,
                "--budget",
                "0.03",
                "--sampler",
                "tpe-sha",
                "--seeds",
                "1",
                "--eval-rows",
                "256",
                "--format",
                "json",
            ]
        )
        raise SystemExit(0)
    assert stop.value.code == 0
    payload = json.loads(capsys.readouterr().out)
    assert [row["sampler"] for row in payload["summary"]] == ["autoprumux-es", "autoprumux", "tpe-sha"]
    assert all({"steps", "grid_steps"} <= set(row) for row in payload["searches"])
    assert all(0 < row["steps_pct"] <= 100 for row in payload["summary"])
    with pytest.raises(SystemExit) as stop:
        main([*args, "--budget", "0.03", "--sampler", "gp"])
    assert stop.value.code == 2 and "has no replay on curves" in capsys.readouterr().err


def test_a_chord_on_a_measured_row_does_not_rule_out_the_point_inside_it():
    """Measured on the cpu-demo trec grid at budget 0.01: early stopping reorders the search so that
    (1, 0.7) is measured (0.885, infeasible) before (1, 0.5); the chord from dense 0.907 put (1, 0.5) at
    0.891, below the threshold 0.897, and the search ended on the dense model, while (1, 0.5) is 0.900.
    A decline concave in s lies above its chords, so (1, 0.5) stays a candidate."""
    tables = Path(__file__).parents[1] / "benchmarks" / "tables"
    points = read_points(tables / "cpu-demo-trec.csv")
    curves = read_curves(tables / "cpu-demo-trec-curves.csv", points)
    for eval_rows in (None, 256):  # the curves were measured on 256 validation rows
        result = replay_curves(points, curves, 0.01, "autoprumux-es", eval_rows=eval_rows)
        assert (result.recommended_N, result.recommended_s) == (1, 0.5) and result.hit and result.false_stops == 0
