"""A recipe's sweep: its configurations, and a point trained as a bracket of them (real training on
the tiny BERT, real Optuna pruner, real Ray for the search)."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from optuna.pruners import SuccessiveHalvingPruner
from optuna.trial import TrialState

from dashboards.report import write_report
from storage import StudySettings, default_url, open_study
from storage.optuna_private import study_storage, trial_storage_id
from trainers.curve import settling_steps
from trainers.point import train_point
from trainers.point_spec import PointSpec
from trainers.recipes import fields_through, load_recipe, recipe_from_dict
from tuning.bracket import (
    CROSS_ENTROPY_ATTR,
    SHARED_MODELS,
    SynchronousHalvingPruner,
    bracket_levels,
    bracket_rungs,
    bracket_study_name,
    rung_steps,
    train_bracket,
)
from tuning.driver import SearchOptions, run_search

# Two phase-2 learning rates (one too small to learn) x two CoFi layer-distillation versions: 4 configurations, 2 phase-2 models.
SWEEP = {"finetune_lr": [0.001, 1e-06], "layer_distill_version": [3, 6]}
PHASE3 = {
    "pruned_finetune_lr": [0.001, 0.01],
    "distill_alpha_layer,distill_alpha_ce": [[0.9, 0.1], [0.5, 0.5]],
    "layer_distill_version": [4, 6],
}


def sweep_recipe(sweep: dict = SWEEP):
    return load_recipe("tiny", {"sweep": json.dumps(sweep)})


def report(trial: optuna.Trial, accuracy: float, step: int, cross_entropy: float | None = None) -> None:
    """Report a configuration's evaluation as the bracket does: its accuracy, and its cross-entropy beside it."""
    trial.report(accuracy, step)
    if cross_entropy is not None:
        recorded = study_storage(trial.study).get_trial(trial_storage_id(trial)).user_attrs.get(CROSS_ENTROPY_ATTR, {})
        trial.set_user_attr(CROSS_ENTROPY_ATTR, recorded | {str(step): cross_entropy})


def test_configurations_are_plain_recipes_and_the_sweep_is_in_no_digest() -> None:
    recipe = sweep_recipe({"finetune_lr": SWEEP["finetune_lr"], **PHASE3})
    plain = load_recipe("tiny")

    configurations = recipe.configurations(0.5)
    assert len(configurations) == 16 and all(not c.sweep for c in configurations)
    assert recipe.digest() == plain.digest()
    first = {
        "pruned_finetune_lr": 0.001,
        "distill_alpha_layer": 0.9,
        "distill_alpha_ce": 0.1,
        "layer_distill_version": 4,
    }
    first = load_recipe("tiny", first)
    assert configurations[0].digest() == first.digest()
    assert configurations[0].digest(("finetune_lr",)) == configurations[1].digest(("finetune_lr",))
    assert [c.finetune_lr for c in recipe.configurations(0)] == [0.001, 1e-06]  # s = 0: no phase 3 to sweep
    assert recipe_from_dict(recipe.to_dict()) == recipe and "sweep" not in plain.to_dict()


@pytest.mark.parametrize(
    "sweep, message",
    [
        ({"bogus": [1]}, "unknown field bogus"),
        ({"finetune_lr": []}, "finetune_lr needs a non-empty list"),
        ({"distill_alpha_layer,distill_alpha_ce": [[0.9]]}, "must be a list of 2"),
        ({"prune_hidden": [1]}, "prune_hidden must be true or false"),
        ({"droprate_init": [0.5, 1.5]}, 'configuration {"droprate_init": 1.5} is invalid'),
    ],
)
def test_a_bad_sweep_is_refused_naming_it(sweep: dict, message: str) -> None:
    with pytest.raises(ValueError, match="sweep") as error:
        sweep_recipe(sweep)
    assert message in str(error.value)


@pytest.mark.parametrize(
    "pruner, stopped",
    [
        (SuccessiveHalvingPruner(min_resource=35, reduction_factor=2), []),
        (SynchronousHalvingPruner([35]), [0, 1, 2, 3]),
    ],
)
def test_the_bracket_pruner_compares_each_configuration_with_every_one_at_its_rung(pruner, stopped) -> None:
    # the cpu-demo (1, 0.5) sweep at step 40: the first four configurations share a phase-2 model at 0.609,
    # the last four one at 0.770; asked in the sweep's order, the stock pruner lets every one through
    study = optuna.create_study(direction="maximize", pruner=pruner)
    trials = [study.ask() for _ in range(8)]
    for trial in trials:
        report(trial, *((0.609, 40, 0.66) if trial.number < 4 else (0.770, 40, 0.50)))
    assert [trial.number for trial in trials if trial.should_prune()] == stopped


def test_configurations_sharing_a_model_compete_as_one_while_they_share_it() -> None:
    # three phase-2 models, two configurations each: one model passes the phase-2 rung (3 // 2), not two;
    # at the phase-3 rung the two configurations of that model are two competitors
    shared = [(SHARED_MODELS["finetune"], 100)]
    study = optuna.create_study(direction="maximize", pruner=SynchronousHalvingPruner([50, 145], shared))
    trials = [study.ask() for _ in range(6)]
    for trial in trials:
        trial.set_user_attr(SHARED_MODELS["finetune"], f"model-{trial.number // 2}")
        report(trial, [0.6, 0.7, 0.8][trial.number // 2], 50, [0.6, 0.5, 0.4][trial.number // 2])
    assert [trial.number for trial in trials if trial.should_prune()] == [0, 1, 2, 3]
    for trial, value in zip(trials[4:], (0.81, 0.83)):
        report(trial, value, 145, 1 - value)
    assert [trial.number for trial in trials[4:] if trial.should_prune()] == [4]


def test_a_tie_at_a_rung_is_broken_in_the_sweep_s_order() -> None:
    # two of four promoted; trials 1 and 2 tie for the second place (as two cpu-demo (1, 0.5) pruning stages
    # did at step 140, on all 1709 validation rows): the one asked first goes on
    study = optuna.create_study(direction="maximize", pruner=SynchronousHalvingPruner([140]))
    trials = [study.ask() for _ in range(4)]
    for trial, value in zip(trials, (0.8, 0.7654, 0.7654, float("nan"))):
        report(trial, value, 140, 1 - value)
    assert [trial.number for trial in trials if trial.should_prune()] == [2, 3]


def test_a_rung_ranks_by_validation_cross_entropy() -> None:
    # the cpu-demo (2, 0.5) sweep's four pruning stages (layer-distillation version, alphas), measured at the
    # pruning rungs on all 1709 validation rows: by accuracy, (6, 0.5/0.5) is second at step 150 and is stopped
    # at 160 by 3 rows; it ends 2 points above every other one, and its cross-entropy is the lowest at both
    measured = {
        150: [(0.6167, 0.6647), (0.5535, 0.6873), (0.6413, 0.6408), (0.6331, 0.6342)],
        160: {2: (0.6431, 0.6354), 3: (0.6413, 0.6293)},
    }
    study = optuna.create_study(direction="maximize", pruner=SynchronousHalvingPruner([150, 160]))
    trials = [study.ask() for _ in range(4)]
    for trial, (accuracy, entropy) in zip(trials, measured[150]):
        report(trial, accuracy, 150, entropy)
    assert [trial.number for trial in trials if trial.should_prune()] == [0, 1]
    for trial in trials[2:]:
        accuracy, entropy = measured[160][trial.number]
        report(trial, accuracy, 160, entropy)
    assert [trial.number for trial in trials[2:] if trial.should_prune()] == [2]


def test_a_rung_where_a_competitor_has_no_cross_entropy_ranks_by_accuracy() -> None:
    # a phase-2 model cached before cross-entropies were kept reports accuracies only
    study = optuna.create_study(direction="maximize", pruner=SynchronousHalvingPruner([50]))
    trials = [study.ask() for _ in range(2)]
    report(trials[0], 0.77, 50)
    report(trials[1], 0.61, 50, 0.3)
    assert [trial.number for trial in trials if trial.should_prune()] == [1]


CPU_DEMO_STAGES = (("finetune", 100), ("prune", 80), ("pruned_finetune", 100))


@pytest.mark.parametrize(
    "sweep, levels, rungs",
    [
        # 2 fine-tuning learning rates x 2 alphas x 2 pruned fine-tuning learning rates: each level halves 2 models
        (
            {
                "finetune_lr": [4e-05, 8e-05],
                "distill_alpha_layer,distill_alpha_ce": [[0.9, 0.1], [0.5, 0.5]],
                "pruned_finetune_lr": [5e-05, 1e-04],
            },
            {"finetune": (0, 100, 2), "prune": (100, 180, 2), "pruned_finetune": (180, 280, 2)},
            [50, 140, 230],
        ),
        # phase 3 only: one phase-2 model, 4 pruning stages, 2 fine-tunings of each
        (
            {"layer_distill_version": [4, 6], "prune_lr": [1e-05, 5e-05], "pruned_finetune_lr": [5e-05, 1e-04]},
            {"finetune": (0, 100, 1), "prune": (100, 180, 4), "pruned_finetune": (180, 280, 2)},
            [120, 140, 230],
        ),
        (
            {"finetune_lr": [1e-05, 2e-05, 4e-05, 8e-05]},
            {"finetune": (0, 100, 4), "prune": (100, 180, 1), "pruned_finetune": (180, 280, 1)},
            [25, 50],
        ),
    ],
)
def test_the_rungs_halve_each_stage_s_models_from_its_start(sweep: dict, levels: dict, rungs: list[int]) -> None:
    recipe = load_recipe("cpu-demo", {"sweep": json.dumps(sweep)})
    assert bracket_levels(recipe.configurations(0.5), CPU_DEMO_STAGES) == levels
    assert bracket_rungs(list(levels.values())) == rungs
    assert rung_steps(100, 8) == [13, 26, 52]
    assert bracket_levels(recipe.configurations(0.0), CPU_DEMO_STAGES[:1]) == {"finetune": levels["finetune"]}


@pytest.mark.parametrize("N, rungs", [(1, [50, 160, 230]), (2, [150, 160, 230])])
def test_the_pruning_level_halves_after_the_lagrangian_warmup(N: int, rungs: list[int]) -> None:
    # the sweeps of benchmarks/point_sweep.py: at N = 2 the phase-3 one, 4 pruning stages of one phase-2 model
    sweep = {"distill_alpha_layer,distill_alpha_ce": [[0.9, 0.1], [0.5, 0.5]], "pruned_finetune_lr": [5e-05, 1e-04]}
    sweep |= {"finetune_lr": [4e-05, 8e-05]} if N == 1 else {"layer_distill_version": [4, 6]}
    recipe = load_recipe("cpu-demo", {"sweep": json.dumps(sweep)})
    assert settling_steps(recipe, N, 8530) == {"prune": recipe.lagrangian_warmup_steps} == {"prune": 40}
    levels = bracket_levels(recipe.configurations(0.5), CPU_DEMO_STAGES, {"prune": 40})
    assert levels["prune"] == (140, 180, 2 if N == 1 else 4) and bracket_rungs(list(levels.values())) == rungs
    assert bracket_levels(recipe.configurations(0.5), CPU_DEMO_STAGES, {"prune": 500})["prune"] == (180, 180, 2 * N)


def test_configurations_differing_only_in_the_pruned_fine_tuning_share_one_pruning_stage(
    tiny_bert_dir: Path, tmp_path: Path
) -> None:
    recipe = sweep_recipe({"pruned_finetune_lr": [0.001, 0.01]})
    first, second = (
        train_point(PointSpec("rt-polarity", str(tiny_bert_dir), 1, 0.5, c, tmp_path), progress=False)
        for c in recipe.configurations(0.5)
    )
    assert [path.name for path in (tmp_path / "pruning").glob("*/*/*") if path.is_dir()] == [
        f"N1-s0.5-r{recipe.configurations(0.5)[0].digest(fields_through('prune'))}-seed{recipe.seed}"
    ]
    through_pruning = [[row for row in result.curve if row[2] != "pruned_finetune"] for result in (first, second)]
    assert through_pruning[0] == through_pruning[1]
    assert (tmp_path / "train.log").read_text().count("started prune:") == 1


def test_a_bracket_cut_short_continues_where_it_stopped(tiny_bert_dir: Path, tmp_path: Path) -> None:
    point = PointSpec("rt-polarity", str(tiny_bert_dir), 1, 0.5, sweep_recipe(), str(tmp_path))
    flushed = []

    def killed_after_two_rungs(evaluation) -> None:
        flushed.append(evaluation.step)
        if max(flushed) > 8:  # the second rung reached, in phase 3, before its decisions: the job dies
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_bracket(point, default_url(tmp_path), "cut", on_evaluation=killed_after_two_rungs)
    inner = optuna.load_study(study_name=bracket_study_name("cut", 1, 0.5), storage=default_url(tmp_path))
    cut = {t.number: (t.state, max(t.intermediate_values)) for t in inner.trials}

    result = train_bracket(point, default_url(tmp_path), "cut")

    inner = optuna.load_study(study_name=bracket_study_name("cut", 1, 0.5), storage=default_url(tmp_path))
    assert len(inner.trials) == 4  # the same configurations' trials, continued
    for trial in inner.trials:
        if cut[trial.number][0] == TrialState.PRUNED:
            assert trial.state == TrialState.PRUNED and max(trial.intermediate_values) == cut[trial.number][1]
    running = [number for number, (state, _) in cut.items() if state == TrialState.RUNNING]
    assert running and any(cut[number][1] > 8 for number in running)
    log = (tmp_path / "train.log").read_text()
    assert "resumed prune from step" in log
    finished = [t for t in inner.trials if t.state == TrialState.COMPLETE]
    assert result["val_accuracy"] == max(t.value for t in finished)
    # every configuration trained on to its end (benchmarks/point_sweep.py's full sweep), the bracket read again: its record stands
    for configuration in point.recipe.configurations(point.s):
        train_point(
            PointSpec(point.task, point.base_model, point.N, point.s, configuration, point.workdir), progress=False
        )
    assert train_bracket(point, default_url(tmp_path), "cut")["bracket"] == result["bracket"]


@pytest.fixture(scope="module")
def swept_search(local_ray, tiny_bert_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    run_dir = tmp_path_factory.mktemp("sweep-search")
    settings = StudySettings("rt-polarity", str(tiny_bert_dir), "tiny+sweep", 0.05, (1,), (0.0, 0.5))
    options = SearchOptions(run_dir=str(run_dir), storage_url=default_url(run_dir), study_name="swept")
    outcome = run_search(settings, sweep_recipe(), options)
    return run_dir, outcome, open_study(default_url(run_dir), "swept")


def test_a_swept_point_is_its_best_configuration(swept_search) -> None:
    run_dir, outcome, study = swept_search
    assert not outcome.failed
    trial = next(t for t in study.trials if t.params["s"] == 0.5)
    assert trial.state == TrialState.COMPLETE
    attrs = trial.user_attrs
    inner = optuna.load_study(study_name=bracket_study_name("swept", 1, 0.5), storage=default_url(run_dir))
    stopped = [t for t in inner.trials if t.state == TrialState.PRUNED]
    finished = [t for t in inner.trials if t.state == TrialState.COMPLETE]
    assert len(inner.trials) == 4 and stopped and finished  # the pruner stopped some configurations
    for configuration in inner.trials:  # each rung's evaluation has the cross-entropy the pruner ranks by
        reached = [step for step in inner.user_attrs["rungs"] if step in configuration.intermediate_values]
        assert reached and all(configuration.user_attrs[CROSS_ENTROPY_ATTR][str(step)] > 0 for step in reached)
    assert trial.values[0] == attrs["val_accuracy"] == max(t.value for t in finished)
    winner = next(c for c in attrs["configurations"] if c["digest"] == attrs["configuration_digest"])
    assert winner["outcome"] == "finished" and winner["values"] == attrs["configuration"]
    assert sum(c["outcome"].startswith("stopped") for c in attrs["configurations"]) == len(stopped)
    assert all("test_accuracy" not in c for c in attrs["configurations"]) and 0 <= attrs["test_accuracy"] <= 1
    bracket = attrs["bracket"]
    assert bracket["steps"] < bracket["full_sweep_steps"] == 4 * attrs["total_steps"]
    # each phase-2 model once: at N = 1 phase 1-2 is the fine-tuning, shared by the two configurations of its learning rate
    tiny = load_recipe("tiny")
    phase12, phase3 = tiny.finetune_steps, tiny.prune_steps + tiny.pruned_finetune_steps
    assert attrs["total_steps"] == phase12 + phase3
    assert bracket["full_sweep_trained_steps"] == 2 * phase12 + 4 * phase3
    assert bracket["trained_steps"] < bracket["steps"]
    # 4 configurations, 2 phase-2 value sets: one cached phase-2 model for the configurations of each
    entries = list((run_dir / "work" / "cache").glob("*/*/N1-*"))
    assert len([entry for entry in entries if entry.is_dir()]) == 2


def test_status_best_and_export_name_the_winning_configuration(swept_search, run_main) -> None:
    run_dir, _, study = swept_search
    trial = next(t for t in study.trials if t.params["s"] == 0.5)
    words = " ".join(f"{key}={value:g}" for key, value in trial.user_attrs["configuration"].items())

    code, out, err = run_main("status", "--run-dir", str(run_dir), "--study", "swept")
    assert code == 0, err
    assert "configuration" in out and words in out
    code, out, err = run_main("best", "--run-dir", str(run_dir), "--study", "swept", "--format", "json")
    assert code == 0, err
    best = json.loads(out)
    assert best["configuration"] == study.trials[best["trial"]].user_attrs["configuration"]
    report = write_report(study, run_dir / "report.html").read_text()
    assert "Sweeps inside the points" in report and bracket_study_name("swept", 1, 0.5) in report
    exported = run_dir / "exported"
    code, out, err = run_main(
        "export", "--run-dir", str(run_dir), "--study", "swept", "--trial", str(trial.number), "--out", str(exported)
    )
    assert code == 0, err
    assert words in out and words in (exported / "README.md").read_text()
    assert (exported / "model.safetensors").read_bytes() == (
        Path(trial.user_attrs["model_dir"]) / "model.safetensors"
    ).read_bytes()


def test_recipes_show_prints_the_sweep_and_its_configurations(run_main) -> None:
    code, out, err = run_main("recipes", "show", "paper")
    assert code == 0, err
    assert "pruned_finetune_lr: [1e-05, 2e-05, 3e-05, 5e-05]" in out
    assert "configurations: 36 per point with s > 0, 1 per point with s = 0" in out
    code, out, _ = run_main("recipes", "show", "cpu-demo")
    assert code == 0 and "sweep: none (1 configuration)" in out
