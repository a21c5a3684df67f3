"""Replay loop: every sampler through real Optuna studies against a full grid table."""

from __future__ import annotations

from pathlib import Path

import optuna
import pandas as pd
import pytest

from search import replay, replay_many, summarize
from search.grid import read_points

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
