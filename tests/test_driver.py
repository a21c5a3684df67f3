"""The Ray Tune search driver: real Ray, real Optuna studies on SQLite and PostgreSQL, real training.

The searches use the tiny random BERT, the `tiny` recipe and a 2 x 2 grid.
The two searches share one work folder, so the second reuses the first one's trainings.
"""

from __future__ import annotations

import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from storage import StudySettings, default_url, open_study
from storage.study import study_validation_rows
from trainers.recipes import load_recipe
from tuning.driver import (
    STOP_RESERVE_S,
    SearchOptions,
    budget_stopping,
    run_search,
    search_sampler,
    trial_resources,
    trials_time_budget,
)

BUDGET = 0.05


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("search-run")


def settings_for(model_dir: Path) -> StudySettings:
    return StudySettings("rt-polarity", str(model_dir), "tiny", BUDGET, (1, 2), (0.0, 0.5))


def search(
    run_dir: Path, storage_url: str, study_name: str, model_dir: Path, validation_rows: int | None = None, **options
):
    """A search on the tiny recipe; without early stopping unless asked (these tests check that every point completes)."""
    options.setdefault("early_stopping", False)
    finished: list[int] = []
    outcome = run_search(
        settings_for(model_dir),
        load_recipe("tiny"),
        SearchOptions(run_dir=str(run_dir), storage_url=storage_url, study_name=study_name, **options),
        on_trial=lambda trial, study: finished.append(trial.number),
        validation_rows=validation_rows,
    )
    return outcome, finished


def check_complete_search(study: optuna.Study, finished: list[int]) -> None:
    trials = study.get_trials()
    assert trials and all(t.state == TrialState.COMPLETE for t in trials)
    assert sorted(finished) == [t.number for t in trials]
    assert (trials[0].params["N"], trials[0].params["s"]) == (1, 0.0)
    points = [(t.params["N"], t.params["s"]) for t in trials]
    assert len(set(points)) == len(points)
    threshold = trials[0].values[0] - BUDGET
    for trial in trials:
        accuracy, throughput = trial.values
        assert 0 <= accuracy <= 1 and throughput > 0
        assert trial.constraints["accuracy"] == pytest.approx(threshold - accuracy)
        assert trial.user_attrs["val_accuracy"] == accuracy
        assert Path(trial.user_attrs["model_dir"]).is_dir()
        assert trial.user_attrs["driver"]
    feasible = {t.number for t in trials if t.constraints["accuracy"] <= 0}
    best = {t.number for t in study.best_trials}
    assert best and best <= feasible


def test_search_on_sqlite_writes_complete_trials(local_ray, tiny_bert_dir: Path, run_dir: Path) -> None:
    rows = load_recipe("tiny").max_eval_examples  # the validation rows of the tiny recipe's rt-polarity
    outcome, finished = search(run_dir, default_url(run_dir), "sqlite-search", tiny_bert_dir, validation_rows=rows)

    study = open_study(default_url(run_dir), "sqlite-search")
    check_complete_search(study, finished)
    assert outcome.stop_reason == "the search is done"
    assert study_validation_rows(study) == rows and outcome.study.sampler.validation_rows == rows
    assert len(study.trials) >= 3  # the dense point and the two edge anchors
    assert not outcome.failed and not outcome.interrupted and not outcome.resumed_failed


def test_search_on_postgresql_reuses_trainings(
    local_ray, tiny_bert_dir: Path, run_dir: Path, postgres_url: str, fresh_postgres_study_name: str
) -> None:
    _, finished = search(run_dir, postgres_url, fresh_postgres_study_name, tiny_bert_dir)

    study = open_study(postgres_url, fresh_postgres_study_name)
    check_complete_search(study, finished)
    sqlite_study = open_study(default_url(run_dir), "sqlite-search")
    trained = {(t.params["N"], t.params["s"]): t.values for t in sqlite_study.trials}
    for trial in study.trials:  # same work folder: every point's stored result is reused
        assert trial.values == trained[(trial.params["N"], trial.params["s"])]


def test_a_search_records_the_runtime_it_measured_on(local_ray, tiny_bert_dir: Path, run_dir: Path) -> None:
    search(run_dir, default_url(run_dir), "on-onnx", tiny_bert_dir, max_trials=2, inference_runtime="onnx")

    trained = {(t.params["N"], t.params["s"]): t for t in open_study(default_url(run_dir), "sqlite-search").trials}
    trials = open_study(default_url(run_dir), "on-onnx").trials
    assert len(trials) == 2
    for trial in trials:  # the same work folder: trained once, measured again on ONNX Runtime, eager beside it
        attrs, eager = trial.user_attrs, trained[(trial.params["N"], trial.params["s"])].user_attrs
        assert attrs["inference_runtime"] == "onnx" and eager["inference_runtime"] == "eager"
        assert (
            trial.values == [attrs["val_accuracy"], attrs["throughput"]]
            and attrs["val_accuracy"] == eager["val_accuracy"]
        )
        assert attrs["eager_throughput"] > 0 and attrs["eager_speedup"] > 0


def test_max_trials_stops_the_search(local_ray, tiny_bert_dir: Path, run_dir: Path) -> None:
    outcome, finished = search(run_dir, default_url(run_dir), "one-trial", tiny_bert_dir, max_trials=1)

    study = open_study(default_url(run_dir), "one-trial")
    assert [(t.params["N"], t.params["s"], t.state) for t in study.trials] == [(1, 0.0, TrialState.COMPLETE)]
    assert outcome.stop_reason == "max trials (1) reached"
    assert finished == [0]


def test_concurrent_trials_are_told_after_the_dense_point(local_ray, tiny_bert_dir: Path, run_dir: Path) -> None:
    outcome, finished = search(run_dir, default_url(run_dir), "concurrent", tiny_bert_dir, concurrency=2)

    check_complete_search(open_study(default_url(run_dir), "concurrent"), finished)
    assert outcome.stop_reason == "the search is done"


def test_time_budget_fails_the_trials_it_interrupts(local_ray, tiny_bert_dir: Path, run_dir: Path) -> None:
    outcome, _ = search(run_dir, default_url(run_dir), "short", tiny_bert_dir, time_budget_s=1)

    study = open_study(default_url(run_dir), "short")
    assert outcome.stop_reason == "time budget (1 s) reached"
    assert not study.get_trials(states=(TrialState.RUNNING,))
    failed = study.get_trials(states=(TrialState.FAIL,))
    assert outcome.interrupted == [t.number for t in failed] and failed
    assert all(t.user_attrs["failed_because"] == "the search run ended before it finished" for t in failed)


def test_trials_stop_in_time_for_the_run_to_end_within_its_budget(tmp_path: Path) -> None:
    def options(budget: float | None) -> SearchOptions:
        return SearchOptions(
            run_dir=str(tmp_path), storage_url=default_url(tmp_path), study_name="x", time_budget_s=budget
        )

    started_100_s_ago = time.monotonic() - 100
    assert trials_time_budget(options(1200), started_100_s_ago) == pytest.approx(1200 - STOP_RESERVE_S - 100, abs=1)
    assert trials_time_budget(options(10), time.monotonic()) == pytest.approx(9, abs=0.5)  # a tenth kept
    assert trials_time_budget(options(10), started_100_s_ago) > 0
    assert trials_time_budget(options(None), started_100_s_ago) is None


@pytest.mark.parametrize("validation_rows, eval_rows", [(1709, 32), (20, 20), (None, 32)])
def test_the_sampler_and_the_stopping_rule_are_told_the_rows(
    validation_rows: int | None, eval_rows: int, tmp_path: Path
) -> None:
    """The sampler gets the rows of the final evaluations; the stopping rule those of the evaluations during
    training: the recipe's ``eval_examples`` (32 in ``tiny``) of the validation rows."""
    settings, recipe = settings_for(tmp_path), load_recipe("tiny")
    options = SearchOptions(run_dir=str(tmp_path), storage_url=default_url(tmp_path), study_name="rows")
    sampler = search_sampler(settings, recipe, options, validation_rows)
    study = open_study(options.storage_url, options.study_name, settings, create=True, sampler=sampler)
    stopping = budget_stopping(study, sampler, recipe, options)

    assert sampler.validation_rows == validation_rows
    assert stopping.eval_rows == eval_rows
    assert (stopping.budget, stopping.throughput_margin, stopping.enabled) == (BUDGET, sampler.throughput_margin, True)


def test_resources_follow_the_cluster(local_ray, run_dir: Path) -> None:
    options = SearchOptions(run_dir=str(run_dir), storage_url=default_url(run_dir), study_name="x")
    assert trial_resources(options) == ({"cpu": 2.0, "gpu": 0.0}, 1)
    two = SearchOptions(run_dir=str(run_dir), storage_url=default_url(run_dir), study_name="x", concurrency=2)
    assert trial_resources(two) == ({"cpu": 1.0, "gpu": 0.0}, 2)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"concurrency": 0}, "concurrency must be positive"),
        ({"max_trials": -1}, "max trials must be positive"),
        ({"time_budget_s": 0}, "time budget must be positive"),
        ({"gpus_per_trial": -1}, "GPUs per trial must be >= 0"),
        ({"max_failures": -1}, "max failures must be >= 0"),
        ({"cache_lock": "nfs"}, "cache lock must be one of auto, file, database"),
        ({"inference_runtime": "tensorrt"}, "unknown runtime 'tensorrt'; expected one of auto, torch, onnx, eager"),
    ],
)
def test_bad_options_raise_value_error(options: dict, message: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=message):
        SearchOptions(run_dir=str(tmp_path), storage_url=default_url(tmp_path), study_name="x", **options)


def test_other_settings_leave_the_study_untouched(local_ray, tiny_bert_dir: Path, run_dir: Path) -> None:
    url = default_url(run_dir)
    before = [(t.number, t.state, t.values) for t in open_study(url, "one-trial").trials]
    changed = StudySettings("rt-polarity", str(tiny_bert_dir), "tiny", 0.2, (1, 2), (0.0, 0.5))
    options = SearchOptions(run_dir=str(run_dir), storage_url=url, study_name="one-trial")
    with pytest.raises(ValueError, match="budget: 0.05 != 0.2"):
        run_search(changed, load_recipe("tiny"), options)
    assert [(t.number, t.state, t.values) for t in open_study(url, "one-trial").trials] == before
