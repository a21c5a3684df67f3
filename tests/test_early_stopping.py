"""Early stopping in a real search: curves in the study, a hopeless point judged and stored.

The task (conftest's cue task) is made so that the tiny random BERT learns it at N = 1 (a cue word decides
the label: dense accuracy 1.0) and cannot at N = 2 in the few steps of the recipe (it stays at the majority
class), so with a 5-point budget no N = 2 point can reach the threshold. Its phase 2 is flat from its first
evaluation: it has not shown its rise (search.curves: a slow starter looks the same until it rises), so (2, 0)
trains to its end and its measured accuracy rules out its column, or, where its speed-up cannot beat (1, 0.5)'s,
the throughput rule stops it and the teacher bound stops (2, 0.5) once its phase 2 is complete. The scheduler's
threshold stop and its record are also tested on a hand-made study (``BudgetStopping.decide``, ``Stop.record``).
"""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from search.compute import search_compute
from storage import StudySettings, default_url
from storage.curves import STOPPED_ATTR, read_curve
from trainers.recipes import load_recipe
from tuning.bracket import bracket_study_name
from tuning.driver import SearchOptions, run_search

from conftest import CUE_RECIPE as RECIPE

BUDGET = 0.05


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One run directory for the module's searches (a study each): the points they share are trained once."""
    return tmp_path_factory.mktemp("cue-search")


def search(run_dir: Path, study: str, task: Path, model: Path, recipe: dict = RECIPE, sparsities=(0.0, 0.5), **options):
    settings = StudySettings(str(task), str(model), "tiny+cue", BUDGET, (1, 2), sparsities)
    lines: list[tuple[int, str]] = []
    outcome = run_search(
        settings,
        load_recipe("tiny", recipe),
        SearchOptions(run_dir=str(run_dir), storage_url=default_url(run_dir), study_name=study, **options),
        on_trial=lambda trial, study: lines.append((trial.number, trial.state.name)),
    )
    return outcome, lines


def points(study: optuna.Study) -> dict[tuple[int, float], optuna.trial.FrozenTrial]:
    return {(t.params["N"], t.params["s"]): t for t in study.get_trials()}


def test_a_flat_hopeless_column_is_ruled_out(local_ray, tiny_bert_dir: Path, cue_task: Path, run_dir: Path) -> None:
    outcome, _ = search(run_dir, "stopped", cue_task, tiny_bert_dir)

    study = optuna.load_study(study_name="stopped", storage=default_url(run_dir))  # the stock API reads it back
    trials = points(study)
    dense, mux = trials[(1, 0.0)], trials[(2, 0.0)]
    assert dense.state == TrialState.COMPLETE and dense.values[0] == 1.0
    curve = read_curve(dense)
    assert curve.steps == (10, 20, 30, 40, 50, 60) and curve.total_steps == 60
    assert dense.intermediate_values[60] == dense.values[0]  # the last step holds the final accuracy
    assert curve.stages == ((10, "finetune"),)

    threshold = dense.values[0] - BUDGET
    if mux.state == TrialState.COMPLETE:  # flat: not judged, trained to its end; measured, it caps its column
        assert mux.values[0] < threshold and (2, 0.5) not in trials
        assert max(read_curve(mux).steps) == read_curve(mux).total_steps
    else:  # its measured speed-up could not beat (1, 0.5)'s (the machine's timing decides which)
        assert mux.state == TrialState.PRUNED and mux.user_attrs["stopped_kind"] == "throughput"
        pruned = trials[(2, 0.5)]  # its flat phase 2 trains to its end; the teacher bound stops it after
        assert pruned.state == TrialState.PRUNED and pruned.user_attrs["stopped_kind"] == "threshold"
        assert pruned.user_attrs[STOPPED_ATTR].startswith(f"cannot reach {threshold:.3f} (bound ")
        assert pruned.user_attrs["accuracy_bound"] < threshold and pruned.user_attrs["bound_column"]
        stopped = read_curve(pruned)
        assert stopped.stages[-1][1] == "prune" and max(stopped.steps) < stopped.total_steps
    assert outcome.stop_reason == "the search is done"
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.FAIL))
    spent = search_compute(study.get_trials(), (1, 2), (0.0, 0.5))
    assert spent.spent < spent.grid

    again, lines = search(run_dir, "stopped", cue_task, tiny_bert_dir)  # a resumed search retrains nothing
    assert lines == [] and again.stop_reason == "the search is done"


def test_without_early_stopping_every_point_trains_to_its_end(
    local_ray, tiny_bert_dir: Path, cue_task: Path, run_dir: Path
) -> None:
    search(run_dir, "full", cue_task, tiny_bert_dir, early_stopping=False, max_trials=3)

    mux = points(optuna.load_study(study_name="full", storage=default_url(run_dir)))[(2, 0.0)]
    assert mux.state == TrialState.COMPLETE
    assert max(mux.intermediate_values) == read_curve(mux).total_steps


def test_a_swept_point_s_curve_is_its_best_configuration_s(
    local_ray, tiny_bert_dir: Path, cue_task: Path, run_dir: Path
) -> None:
    swept = {**RECIPE, "sweep": json.dumps({"finetune_lr": [0.01, 0.003]})}  # both learn the cue at N = 1 only
    outcome, _ = search(run_dir, "swept", cue_task, tiny_bert_dir, swept, sparsities=(0.0,))

    study = optuna.load_study(study_name="swept", storage=default_url(run_dir))
    trials = points(study)
    assert trials[(1, 0.0)].state == TrialState.COMPLETE and "configuration" in trials[(1, 0.0)].user_attrs
    mux = trials[(2, 0.0)]
    assert mux.state == TrialState.COMPLETE  # flat at the majority class: not judged, measured at its end
    inner = optuna.load_study(study_name=bracket_study_name("swept", 2, 0.0), storage=default_url(run_dir))
    best = max(max(t.intermediate_values.values()) for t in inner.trials if t.intermediate_values)
    # the point's curve is its best configuration's, and that one could not reach the threshold either
    assert max(best, mux.values[0]) < trials[(1, 0.0)].values[0] - BUDGET
    assert not outcome.failed


def hand_made_study(tmp_path: Path) -> optuna.Study:
    """A dense point with its curve and a point stopped early, recorded as the search records them."""
    from search.sampler import search_space
    from storage import open_study, record_result
    from storage.curves import record_stopped, set_total_steps, write_evaluations

    study = open_study(default_url(tmp_path), "hand", create=True)
    space = search_space((1, 2), (0.0, 0.5))
    study.enqueue_trial({"N": 1, "s": 0.0})
    dense = study.ask(space)
    write_evaluations(study, dense.number, [(10, 0.7), (20, 0.8)], "finetune")
    set_total_steps(study, dense.number, 20)
    record_result(study, dense.number, {"val_accuracy": 0.8, "throughput": 100.0, "speedup": 1.0}, 0.75)
    study.enqueue_trial({"N": 2, "s": 0.0})
    stopped = study.ask(space)
    write_evaluations(study, stopped.number, [(10, 0.55), (20, 0.56)], "finetune")
    set_total_steps(study, stopped.number, 80)
    record_stopped(
        study,
        stopped.number,
        accuracy=0.56,
        bound=0.7,
        threshold=0.75,
        throughput=190.0,
        throughput_source="predicted",
        reason="cannot reach 0.750 (bound 0.70)",
        kind="threshold",
    )
    return study


def test_a_stopped_trial_gets_its_console_line_and_its_curve_in_the_report(tmp_path: Path) -> None:
    import io

    from cli.commands.study import _report_trial
    from cli.console import SearchConsole
    from dashboards.report import write_report

    study = hand_made_study(tmp_path)
    stream = io.StringIO()
    _report_trial(SearchConsole(stream, live=False), study.trials[1], study)
    assert "trial 1  N=2 s=0  stopped: cannot reach 0.750 (bound 0.70)" in stream.getvalue()

    page = write_report(study, tmp_path / "report.html").read_text()
    assert "Learning curves" in page and "cannot reach 0.750 (bound 0.70)" in page


def test_the_summary_s_surrogate_keeps_a_stopped_column_below_its_bound(tmp_path: Path) -> None:
    """The report's surrogate map is fitted as the sampler fits it: the stopped (2, 0) caps every N = 2 point
    (measured in the default search: without it the map drew N = 2 and 5 as accurate as N = 1, inside the budget)."""
    from dashboards.summary import summarize
    from search.sampler import search_space
    from storage import record_result

    study = hand_made_study(tmp_path)
    study.enqueue_trial({"N": 1, "s": 0.5})
    pruned = study.ask(search_space((1, 2), (0.0, 0.5)))
    record_result(study, pruned.number, {"val_accuracy": 0.78, "throughput": 180.0, "speedup": 1.8}, 0.75)
    predicted = summarize(study).surrogate.predict([2, 2, 1], [0.0, 0.5, 0.5]).accuracy
    assert (predicted[:2] <= 0.7).all() and predicted[2] == pytest.approx(0.78)


def test_the_scheduler_stops_a_risen_point_below_the_threshold_and_records_it(tmp_path: Path) -> None:
    """``BudgetStopping.decide`` on the hand-made study (dense 0.8, budget 0.05): (2, 0.5) in phase 2, risen and
    flat far below the threshold, is stopped with a column bound and stored PRUNED; the same level flat from its
    first evaluation is not judged."""
    from search.sampler import search_space, stopped_points
    from storage import record_result
    from tuning.stopping import BudgetStopping

    study = hand_made_study(tmp_path)
    space = search_space((1, 2), (0.0, 0.5))
    study.enqueue_trial({"N": 1, "s": 0.5})
    record_result(study, study.ask(space).number, {"val_accuracy": 0.78, "throughput": 180.0, "speedup": 1.8}, 0.75)
    study.enqueue_trial({"N": 2, "s": 0.5})
    trial = study.ask(space)
    scheduler = BudgetStopping(study, 0.05)
    result = {"N": 2, "s": 0.5, "trial_number": trial.number}
    flat = [(10, 0.55, "finetune"), (20, 0.56, "finetune"), (30, 0.55, "finetune"), (40, 0.55, "finetune")]
    assert scheduler.decide(result, flat, 80) is None
    risen = [(10, 0.40, "finetune"), (20, 0.55, "finetune"), (30, 0.56, "finetune"), (40, 0.56, "finetune")]
    stop = scheduler.decide(result, risen, 80)
    assert stop is not None and stop.decision.kind == "threshold" and stop.decision.column
    assert stop.decision.bound < stop.threshold == pytest.approx(0.75)
    assert stop.record(study) and study.trials[trial.number].state == TrialState.PRUNED
    assert set(stopped_points(study.trials)["s"]) == {0.0, 0.5}
