"""A point of a recipe with a sweep: its configurations trained as a bracket of successive halving.

Each configuration (``Recipe.configurations``: the recipe with one combination of the sweep's
values) is one trial of the point's own single-objective Optuna study, ``"<study>/N<N>-s<s>"`` in
the search's storage, which maximises validation accuracy with a successive-halving pruner
(``SynchronousHalvingPruner``): the pruner, not this module, decides which configurations stop.
The configurations are trained interleaved, rung by rung (``trainers.point.train_point`` with ``stop_at_step``):
every live one to the rung's step and evaluated there, each evaluation reported to its trial,
then each trial asks ``should_prune`` and a pruned one is stopped where it is.
Survivors train to their end; the point is its best finished configuration by validation
accuracy, and only that one's test accuracy is recorded.

Why not Optuna's ``SuccessiveHalvingPruner`` as it is: it is asynchronous, a trial competes at
its rung only with the trials asked before it, so in a bracket asked in the sweep's order the
first configuration is never stopped and the first of each tied group (configurations that
share a phase-2 model report equal values through phase 2) shelters the rest. On the values
measured for the cpu-demo (1, 0.5) sweep of ``benchmarks/point_sweep.py`` (4 configurations at
0.609 and then 4 at 0.770 at step 40) it stops none of them (``tests/test_sweep.py``).
``SynchronousHalvingPruner``
is that pruner with two changes: every configuration has reported the rung before any is asked,
so each competes with all of them, and the rung steps are given (the levels below). Its
promotion rule is the top 1/r, as Optuna's, but a fixed count, ties broken in the sweep's order:
two distinct pruning stages tied on all 1709 validation rows at the cpu-demo (1, 0.5) rung, and
promoting both kept 4 of 4 configurations. Its rung bookkeeping (``completed_rung_<k>`` system
attrs) is Optuna's.

A rung ranks by validation cross-entropy, not accuracy (the trial's intermediate values, its
curve, stay accuracies; the point is still its best configuration by validation accuracy). On
1709 rows an accuracy's standard error is about 1.2 points, and the rung accuracy of a pruning
stage did not rank how its configurations end: on the cpu-demo (2, 0.5) sweep the full sweep's
winner's pruning stage (layer-distillation version 6, alphas 0.5/0.5) stood below version 4's at
both pruning rungs (0.6331 against 0.6413 at step 150, 0.6413 against 0.6431 at 160), was stopped,
and ended 2 points above it. Its cross-entropy was the lowest at both (0.6342 against 0.6408, 0.6293
against 0.6354); ranked so, the bracket picks the full sweep's winner at (1, 0.5) and the configuration tied
with it at (2, 0.5) (``benchmarks/tables/point-sweep-cpu-demo.md``).

The rungs come in levels, one per stage that ends where configurations part
(``bracket_levels``): phases 1-2 (configurations with the same phase 1-2 values share one cached
model), the pruning stage (configurations that differ only in the pruned model's fine-tuning
share one, ``trainers.cache.pruning_directory``) and the pruned model's fine-tuning. Rungs placed
by the point's total steps alone fall where configurations cannot differ yet (measured on the
cpu-demo (1, 0.5) sweep: 0.52 of the full sweep's steps, every rung after the first a tie). In each
level the n models that part from one model of the level before are halved over its S steps,
counted from its start: K = floor(log_r n) rungs at R, R r, ..., R r^(K-1) with R = ceil(S / r^K)
(``rung_steps``), and while configurations share a model they compete as one. The pruning level
starts after the Lagrangian warm-up (``trainers.curve.settling_steps``): while the sparsity target
ramps up, accuracy dips by how the masks move, not by how the configuration will end (measured on
the cpu-demo (2, 0.5) sweep: every layer-distillation version 6 configuration stood at 0.554 at
prune step 20 of the 40-step warm-up, below the version 4 ones, and the full sweep's winner is
one of them, 0.660 against 0.644). A rung is decided on an evaluation at
exactly its step on the final evaluation's validation rows (the recipe's ``eval_examples`` rows
misled: on 256 of them the same bracket stopped the full sweep's winner); it selects no kept
state (``trainers.phases.loop``), so a configuration trains exactly as it would alone.
Everything lives in the work folder (checkpoints) and the study (the trials, their
curves and decisions), so a bracket cut short continues where it stopped when the point is
trained again.

While it runs, the point's own curve (the outer trial's, judged by ``tuning.stopping``) is the
best configuration's: after each rung, every step's best accuracy over the configurations.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.pruners import SuccessiveHalvingPruner
from optuna.storages import BaseStorage
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from storage import open_storage
from storage.optuna_private import study_storage, trial_storage_id
from storage.trials import CONFIGURATION_ATTR
from trainers.cache import LockFactory
from trainers.curve import PHASE3_STAGES, PHASE12_STAGES, Evaluation, settling_steps
from trainers.point import PausedPoint, PointResult, train_point
from trainers.point_spec import PointSpec
from trainers.recipes import Recipe, fields_through

REDUCTION_FACTOR = 2
RUNG_KEY_PREFIX = "completed_rung_"  # Optuna's SuccessiveHalvingPruner's own bookkeeping
INDEX_ATTR, DIGEST_ATTR, SECONDS_ATTR = "configuration_index", "digest", "seconds"
CROSS_ENTROPY_ATTR = "cross_entropy"  # a configuration's evaluations' validation cross-entropy, {"<step>": value}
# A configuration's model is set, up to the end of each of these stages, by these fields only: its key there.
SHARED_MODELS = {"finetune": "phase12_digest", "prune": "pruning_digest"}


class SynchronousHalvingPruner(SuccessiveHalvingPruner):
    """Optuna's ``SuccessiveHalvingPruner`` for trials that all report a rung before any asks, at given rung
    steps: a trial at rung k (its first step at or after ``rungs[k]``) is promoted when it is among the
    best ``max(1, n // reduction_factor)`` of the n competitors that reached the rung, ties in the order the
    trials were asked (Successive Halving's fixed count; Optuna's asynchronous pruner, which cannot know
    how many trials will reach a rung, promotes every tie). Best: the lowest validation cross-entropy
    there (the ``CROSS_ENTROPY_ATTR`` user attr; NaN ranks last); where a competitor has none recorded
    (a phase-2 model cached before cross-entropies were kept), the best value there, as the study optimises.

    ``shared``: (user attr, step) pairs: up to that step, trials with the same value of that user attr
    train one model (a cached phase-2 model, a pruning stage with the same values) and compete as one."""

    def __init__(
        self, rungs: list[int], shared: list[tuple[str, int]] = (), reduction_factor: int = REDUCTION_FACTOR
    ) -> None:
        super().__init__(min_resource=rungs[0] if rungs else 1, reduction_factor=reduction_factor)
        self.rungs, self.reduction_factor = rungs, reduction_factor
        self.shared = sorted(shared, key=lambda pair: pair[1])

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        if trial.last_step is None:
            return False
        rung = sum(1 for key in trial.system_attrs if key.startswith(RUNG_KEY_PREFIX))
        while rung < len(self.rungs) and trial.last_step >= (rung_step := self.rungs[rung]):
            promoted = self._promoted(study, rung_step)
            study_storage(study).set_trial_system_attr(
                trial_storage_id(trial), f"{RUNG_KEY_PREFIX}{rung}", _value_at(trial, rung_step)
            )
            if self._competitor(trial, rung_step) not in promoted:
                return True
            rung += 1
        return False

    def _competitor(self, trial: FrozenTrial, step: int) -> str | int:
        """Who ``trial`` competes as at ``step``: the model it shares there, else itself."""
        attr = next((attr for attr, until in self.shared if step <= until), None)
        return trial.user_attrs.get(attr, trial.number) if attr else trial.number

    def _promoted(self, study: optuna.Study, step: int) -> set[str | int]:
        """The competitors promoted at the rung at ``step``."""
        reached: dict[str | int, tuple[float | None, float, int]] = {}
        for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
            if (value := _value_at(t, step)) is not None:
                reached.setdefault(self._competitor(t, step), (_cross_entropy_at(t, step), value, t.number))
        if all(entropy is not None for entropy, _, _ in reached.values()):
            scores = {c: (entropy, number) for c, (entropy, _, number) in reached.items()}
        else:
            sign = -1 if study.direction == StudyDirection.MAXIMIZE else 1
            scores = {c: (sign * value, number) for c, (_, value, number) in reached.items()}
        ranked = sorted(scores, key=lambda c: (math.isnan(scores[c][0]), *scores[c]))
        return set(ranked[: max(1, len(ranked) // self.reduction_factor)])


def _reported_step(trial: FrozenTrial, step: int) -> int | None:
    """The trial's first reported step at or after ``step`` (None: it never got there)."""
    reached = [reported for reported in trial.intermediate_values if reported >= step]
    return min(reached) if reached else None


def _value_at(trial: FrozenTrial, step: int) -> float | None:
    """The trial's value at its first reported step at or after ``step`` (None: it never got there)."""
    reported = _reported_step(trial, step)
    return None if reported is None else trial.intermediate_values[reported]


def _cross_entropy_at(trial: FrozenTrial, step: int) -> float | None:
    """The trial's validation cross-entropy at its first reported step at or after ``step`` (None: not recorded)."""
    reported = _reported_step(trial, step)
    return None if reported is None else trial.user_attrs.get(CROSS_ENTROPY_ATTR, {}).get(str(reported))


def bracket_study_name(study_name: str, N: int, s: float) -> str:
    """The name of the point's own study of configurations, beside the search's study."""
    return f"{study_name}/N{N}-s{s:g}"


def rung_steps(total_steps: int, configurations: int, reduction_factor: int = REDUCTION_FACTOR) -> list[int]:
    """The steps of the rungs before the end: R r^k for k < K, K = floor(log_r n), R = ceil(T / r^K)."""
    rungs = int(math.log(configurations, reduction_factor) + 1e-9) if configurations > 1 else 0
    first = max(1, math.ceil(total_steps / reduction_factor**rungs))
    return [first * reduction_factor**k for k in range(rungs)]


def bracket_rungs(levels: list[tuple[int, int, int]]) -> list[int]:
    """The rungs of a bracket in levels (start step, end step, n): the n models that part from each other in
    a level (its configurations with the same values up to its start, different ones up to its end) are
    halved over its steps, counted from its start."""
    return [start + step for start, end, n in levels if end > start for step in rung_steps(end - start, n)]


def bracket_levels(
    recipes: list[Recipe], stages: tuple[tuple[str, int], ...], settling: dict[str, int] | None = None
) -> dict[str, tuple[int, int, int]]:
    """The bracket's levels by the stage that ends them: phases 1-2 (``finetune``), the pruning stage, the pruned
    model's fine-tuning, as the point has them; each (start, end, the most models that part from one model
    of the level before). A level's halving starts ``settling[stage]`` steps after the stage before it ends
    (``trainers.curve.settling_steps``)."""
    settling = settling or {}
    ends = {"finetune": sum(steps for stage, steps in stages if stage in PHASE12_STAGES)}
    for stage, steps in stages:
        if stage in PHASE3_STAGES:
            ends[stage] = max(ends.values()) + steps
    levels, start, parents = {}, 0, [""] * len(recipes)
    for stage, end in ends.items():
        keys = [recipe.digest(fields_through(stage)) for recipe in recipes]
        children: dict[str, set[str]] = {}
        for parent, key in zip(parents, keys):
            children.setdefault(parent, set()).add(key)
        settled = min(end, start + settling.get(stage, 0))
        levels[stage] = (settled, end, max(len(models) for models in children.values()))
        start, parents = end, keys
    return levels


@dataclass
class _Configuration:
    """One configuration of the bracket and its trial in the point's study."""

    index: int
    values: dict[str, Any]
    recipe: Recipe
    trial_id: int
    number: int
    evaluations: dict[int, Evaluation] = field(default_factory=dict)
    result: PointResult | None = None
    seconds: float = 0.0

    @property
    def last(self) -> Evaluation | None:
        return self.evaluations[max(self.evaluations)] if self.evaluations else None


def train_bracket(
    point: PointSpec,
    storage_url: str,
    study_name: str,
    *,
    lock: LockFactory | None = None,
    on_evaluation: Callable[[Evaluation], None] | None = None,
    storage: BaseStorage | None = None,
    inference_runtime: str = "eager",
) -> dict[str, Any]:
    """Train (or continue) the point's bracket of configurations; return the point's result: the winner's
    ``PointResult`` values plus ``configuration`` (its swept values), ``configuration_digest``,
    ``configurations`` (every one's outcome) and ``bracket`` (the steps and seconds it spent, and
    what training every configuration to its end would have cost; ``steps`` counts each
    configuration's own steps, ``trained_steps`` a model that several share (a cached phase 1-2 model,
    a pruning stage) once, as it is trained; the full sweep's figures are at the winner's phase lengths).

    The bracket is the study ``bracket_study_name(study_name, N, s)`` beside the search's study ``study_name``
    at ``storage_url``; ``lock`` locks the work dir's folders (`train_point`'s). ``storage``: the search's
    open storage (a trial's), else one is opened at ``storage_url`` and closed at the end. Each finished
    configuration's throughput is measured on ``inference_runtime`` (`train_point`'s)."""
    if storage is None:
        opened = open_storage(storage_url)
        try:
            return train_bracket(
                point,
                storage_url,
                study_name,
                lock=lock,
                on_evaluation=on_evaluation,
                storage=opened,
                inference_runtime=inference_runtime,
            )
        finally:
            opened.engine.dispose()
    recipes = point.recipe.configurations(point.s)
    values = point.recipe.sweep_values(point.s)
    probe = _Probe(on_evaluation)
    study = _study(point, study_name, recipes, storage)
    configurations = _configurations(study, recipes, values)
    live = [c for c in configurations if _state(study, c) in (TrialState.RUNNING, TrialState.WAITING)]
    first = live[0] if live else configurations[0]
    train = functools.partial(train_point, progress=False, lock=lock, inference_runtime=inference_runtime)
    plan = _advance(point, train, study, first, 0, probe)  # the point's stages, nothing trained
    rungs, shared = [], []
    if isinstance(plan, PausedPoint):  # else every configuration has finished or stopped: the recorded rungs stand
        levels = bracket_levels([c.recipe for c in configurations], plan.stages, _settling(point, plan, configurations))
        rungs = bracket_rungs(list(levels.values()))
        shared = [(attr, levels[stage][1]) for stage, attr in SHARED_MODELS.items() if stage in levels]
        study.set_user_attr("rungs", rungs)
    study.pruner = SynchronousHalvingPruner(rungs, shared)
    for rung in [*rungs, None]:
        live = [c for c in configurations if _state(study, c) == TrialState.RUNNING]
        for configuration in live:
            _advance(point, train, study, configuration, rung, probe)
        probe.flush()
        for configuration in live:
            if configuration.result is None and optuna.Trial(study, configuration.trial_id).should_prune():
                study.tell(configuration.number, state=TrialState.PRUNED)
    for configuration in configurations:  # finished or pruned before this call: its stored result and curve
        if configuration.result is None and _state(study, configuration) == TrialState.COMPLETE:
            _advance(point, train, study, configuration, None, probe)
        if not configuration.evaluations:
            configuration.evaluations = _stored_curve(study, configuration)
    return _outcome(study, configurations)


def _settling(point: PointSpec, plan: PausedPoint, configurations: list[_Configuration]) -> dict[str, int]:
    """Each stage's settling steps, the longest of the configurations'."""
    settling: dict[str, int] = {}
    for configuration in configurations:
        for stage, steps in settling_steps(configuration.recipe, point.N, plan.train_size).items():
            settling[stage] = max(settling.get(stage, 0), steps)
    return settling


def _study(point: PointSpec, study_name: str, recipes: list[Recipe], storage: BaseStorage) -> optuna.Study:
    study = optuna.create_study(
        storage=storage,
        study_name=bracket_study_name(study_name, point.N, point.s),
        direction="maximize",
        load_if_exists=True,
    )
    study.set_user_attr("configurations", len(recipes))
    return study


def _configurations(study: optuna.Study, recipes: list[Recipe], values: list[dict[str, Any]]) -> list[_Configuration]:
    """Each configuration with its trial: the stored one (a bracket trained before), else a new one."""
    stored = {t.user_attrs[INDEX_ATTR]: t for t in study.get_trials(deepcopy=False) if INDEX_ATTR in t.user_attrs}
    configurations = []
    for index, (recipe, chosen) in enumerate(zip(recipes, values)):
        trial = stored.get(index)
        if trial is None:
            new = study.ask()
            for key, value in (
                (INDEX_ATTR, index),
                (CONFIGURATION_ATTR, chosen),
                (DIGEST_ATTR, recipe.digest()),
                *((attr, recipe.digest(fields_through(stage))) for stage, attr in SHARED_MODELS.items()),
            ):
                new.set_user_attr(key, value)
            trial = study_storage(study).get_trial(trial_storage_id(new))
        elif trial.user_attrs.get(DIGEST_ATTR) != recipe.digest():
            raise ValueError(
                f"study {study.study_name!r} holds configuration {index} with other values "
                f"({trial.user_attrs.get(CONFIGURATION_ATTR)}); use another --study name"
            )
        configurations.append(
            _Configuration(
                index,
                chosen,
                recipe,
                trial_storage_id(trial),
                trial.number,
                seconds=trial.user_attrs.get(SECONDS_ATTR, 0.0),
            )
        )
    return configurations


def _advance(
    point: PointSpec,
    train: Callable[..., PointResult | PausedPoint],
    study: optuna.Study,
    configuration: _Configuration,
    rung: int | None,
    probe: _Probe,
) -> PointResult | PausedPoint:
    """Train ``configuration`` to step ``rung``, evaluated there (None: to its end), and report its new
    evaluations to its trial; a finished one is told its validation accuracy. Returns ``train_point``'s answer."""
    was_running = _state(study, configuration) == TrialState.RUNNING
    started = time.monotonic()
    result = train(
        point.with_recipe(configuration.recipe),
        stop_at_step=rung,
        on_evaluation=lambda evaluation: _keep(configuration, evaluation, probe),
    )
    trial = study_storage(study).get_trial(configuration.trial_id)
    if not was_running:  # finished or stopped before: only its stored result is read
        configuration.result = result if isinstance(result, PointResult) else None
        return result
    configuration.seconds += time.monotonic() - started
    study_storage(study).set_trial_user_attr(configuration.trial_id, SECONDS_ATTR, configuration.seconds)
    reported = trial.intermediate_values
    for step, evaluation in sorted(configuration.evaluations.items()):
        if step not in reported:
            study_storage(study).set_trial_intermediate_value(configuration.trial_id, step, evaluation.accuracy)
    recorded = trial.user_attrs.get(CROSS_ENTROPY_ATTR, {})
    entropies = {
        str(step): e.cross_entropy
        for step, e in configuration.evaluations.items()
        if e.cross_entropy is not None and str(step) not in recorded
    }
    if entropies:  # as its accuracy, a step's first recorded cross-entropy stands
        study_storage(study).set_trial_user_attr(configuration.trial_id, CROSS_ENTROPY_ATTR, recorded | entropies)
    if isinstance(result, PointResult):
        configuration.result = result
        study.tell(configuration.number, result.val_accuracy)
    return result


def _keep(configuration: _Configuration, evaluation: Evaluation, probe: _Probe) -> None:
    configuration.evaluations[evaluation.step] = evaluation
    probe(evaluation)


class _Probe:
    """The point's curve while its bracket trains: per step the best accuracy over the configurations,
    handed to ``sink`` once a rung is complete (``flush``), so each step is judged with all of them."""

    def __init__(self, sink: Callable[[Evaluation], None] | None) -> None:
        self.sink = sink
        self.best: dict[int, Evaluation] = {}
        self.pending: set[int] = set()

    def __call__(self, evaluation: Evaluation) -> None:
        known = self.best.get(evaluation.step)
        if known is None or evaluation.accuracy > known.accuracy:
            self.best[evaluation.step] = evaluation
            self.pending.add(evaluation.step)

    def flush(self) -> None:
        if self.sink is not None:
            for step in sorted(self.pending):
                self.sink(self.best[step])
        self.pending.clear()


def _state(study: optuna.Study, configuration: _Configuration) -> TrialState:
    return study_storage(study).get_trial(configuration.trial_id).state


def _stored_curve(study: optuna.Study, configuration: _Configuration) -> dict[int, Evaluation]:
    trial = study_storage(study).get_trial(configuration.trial_id)
    return {step: Evaluation(step, value, "", 0) for step, value in trial.intermediate_values.items()}


def _outcome(study: optuna.Study, configurations: list[_Configuration]) -> dict[str, Any]:
    """The winner's result with every configuration's outcome and the bracket's cost."""
    trials = {c.index: study_storage(study).get_trial(c.trial_id) for c in configurations}
    finished = [c for c in configurations if c.result is not None and trials[c.index].state == TrialState.COMPLETE]
    if not finished:
        raise RuntimeError(f"the bracket of {study.study_name!r} finished no configuration")
    winner = max(finished, key=lambda c: (c.result.val_accuracy, -c.index))
    outcomes = [_configuration_outcome(c, trials[c.index]) for c in configurations]
    steps = sum(outcome["steps"] for outcome in outcomes)
    seconds = sum(outcome["seconds"] for outcome in outcomes)
    full_steps = winner.result.total_steps * len(configurations)
    trained, full_trained = _trained_steps(configurations, outcomes, winner.result)  # seconds scale at their rate
    return {
        **winner.result.to_dict(),
        CONFIGURATION_ATTR: winner.values,
        "configuration_digest": winner.recipe.digest(),
        "configurations": outcomes,
        "bracket": {
            "study": study.study_name,
            "configurations": len(configurations),
            "rungs": study.user_attrs.get("rungs", []),
            "steps": steps,
            "seconds": round(seconds, 2),
            "full_sweep_steps": full_steps,
            "full_sweep_seconds": round(seconds / trained * full_trained, 2) if trained else None,
            "trained_steps": trained,
            "full_sweep_trained_steps": full_trained,
        },
    }


def _trained_steps(
    configurations: list[_Configuration], outcomes: list[dict[str, Any]], winner: PointResult
) -> tuple[int, int]:
    """The steps the configurations trained and those a full sweep trains, a model that several share up to
    the end of a stage (a cached phase 1-2 model, a pruning stage) counted once, at the winner's stage lengths."""
    trained = full = start = 0
    ends = [(winner.steps_through(stage), fields_through(stage)) for stage in SHARED_MODELS]
    for end, fields in [*ends, (winner.total_steps, None)]:
        models: dict[str, int] = {}
        for configuration, outcome in zip(configurations, outcomes):
            key = configuration.recipe.digest(fields)
            models[key] = max(models.get(key, 0), min(max(outcome["steps"] - start, 0), end - start))
        trained, full, start = trained + sum(models.values()), full + len(models) * (end - start), end
    return trained, full


def _configuration_outcome(configuration: _Configuration, trial: FrozenTrial) -> dict[str, Any]:
    finished = trial.state == TrialState.COMPLETE
    last = configuration.last
    steps = configuration.result.total_steps if finished and configuration.result else (last.step if last else 0)
    return {
        "index": configuration.index,
        "values": configuration.values,
        "digest": configuration.recipe.digest(),
        "outcome": "finished" if finished else f"stopped at step {steps}",
        "steps": steps,
        "val_accuracy": trial.value if finished else (last.accuracy if last else None),
        "seconds": round(configuration.seconds, 2),
        "trial": trial.number,
    }
