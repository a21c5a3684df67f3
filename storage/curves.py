"""A trial's learning curve, and a trial stopped early, as they are kept in the study.

Curve: each evaluation made while a point trains is the trial's intermediate value at the
point's own cumulative training step (``trial.intermediate_values``, readable by any Optuna
client). ``Trial.report`` refuses a multi-objective study, the storage does not, so the values
are written through the storage. User attr ``curve_stages`` names the stage of each step range
(``[[first_step, stage], ...]``, in order) and ``curve_total_steps`` the step the point's
training ends at.

Stopped trial: state PRUNED, which keeps no values in a multi-objective study, so what it
measured is in user attrs: ``val_accuracy`` (its last evaluation), ``accuracy_bound`` (the upper
bound of its final accuracy that stopped it), ``threshold``, ``throughput`` (with
``throughput_source``: ``measured`` or ``predicted``), ``stopped_because`` (one line) and
``stopped_kind`` (``threshold``: it cannot reach the threshold; ``throughput``: it cannot beat the
best feasible point).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import optuna
import pandas as pd
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from storage.optuna_private import study_storage
from storage.trials import TrialRef, json_safe, trial_id

STAGES_ATTR = "curve_stages"
TOTAL_STEPS_ATTR = "curve_total_steps"
STOPPED_ATTR = "stopped_because"
STOP_KINDS = ("threshold", "throughput")
CURVE_COLUMNS = ("number", "state", "N", "s", "step", "accuracy", "stage", "total_steps", "stopped_because")


@dataclass(frozen=True)
class StoredCurve:
    """A trial's evaluations as stored: steps ascending, accuracies, stage ranges, planned last step."""

    steps: tuple[int, ...]
    accuracies: tuple[float, ...]
    stages: tuple[tuple[int, str], ...]
    total_steps: int | None

    def stage_at(self, step: int) -> str | None:
        """The stage the point was training at ``step``."""
        named = [stage for first, stage in self.stages if first <= step]
        return named[-1] if named else None


def write_evaluations(
    study: optuna.Study, trial: TrialRef, evaluations: Iterable[tuple[int, float]], stage: str | None = None
) -> None:
    """Store evaluations ``(step, accuracy)`` of a RUNNING trial; ``stage`` names the stage they belong to."""
    identifier = trial_id(study, trial)
    storage = study_storage(study)
    evaluations = list(evaluations)
    for step, value in evaluations:
        storage.set_trial_intermediate_value(identifier, int(step), float(value))
    if stage is not None and evaluations:
        stages = [tuple(item) for item in storage.get_trial(identifier).user_attrs.get(STAGES_ATTR, [])]
        first = min(int(step) for step, _ in evaluations)
        if not stages or stages[-1][1] != stage:
            stages.append((first, stage))
            storage.set_trial_user_attr(identifier, STAGES_ATTR, [list(item) for item in stages])


def set_total_steps(study: optuna.Study, trial: TrialRef, total_steps: int) -> None:
    """Record the step at which the trial's training ends."""
    study_storage(study).set_trial_user_attr(trial_id(study, trial), TOTAL_STEPS_ATTR, int(total_steps))


def read_curve(trial: FrozenTrial) -> StoredCurve:
    """The trial's curve as stored (empty when it has none)."""
    steps = tuple(sorted(trial.intermediate_values))
    accuracies = tuple(float(trial.intermediate_values[step]) for step in steps)
    stages = tuple((int(first), str(stage)) for first, stage in trial.user_attrs.get(STAGES_ATTR, []))
    total = trial.user_attrs.get(TOTAL_STEPS_ATTR)
    return StoredCurve(steps, accuracies, stages, None if total is None else int(total))


def record_stopped(
    study: optuna.Study,
    trial: TrialRef,
    *,
    accuracy: float,
    bound: float,
    threshold: float,
    throughput: float,
    throughput_source: str,
    reason: str,
    kind: str,
    attrs: dict[str, Any] | None = None,
) -> bool:
    """Mark a RUNNING trial PRUNED with what it measured and why it stopped; False if it had finished."""
    if kind not in STOP_KINDS:
        raise ValueError(f"stop kind must be one of {', '.join(STOP_KINDS)}, got {kind!r}")
    identifier = trial_id(study, trial)
    storage = study_storage(study)
    if storage.get_trial(identifier).state != TrialState.RUNNING:
        return False
    values = {
        **(attrs or {}),
        "val_accuracy": accuracy,
        "accuracy_bound": bound,
        "threshold": threshold,
        "throughput": throughput if math.isfinite(throughput) else None,
        "throughput_source": throughput_source,
        STOPPED_ATTR: reason,
        "stopped_kind": kind,
    }
    try:
        for key, value in json_safe(values).items():
            storage.set_trial_user_attr(identifier, key, value)
        return storage.set_trial_state_values(identifier, TrialState.PRUNED)
    except UpdateFinishedTrialError:  # its worker completed it in between
        return False


def stopped_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The study's trials stopped early (PRUNED with a recorded reason)."""
    pruned = study.get_trials(deepcopy=False, states=(TrialState.PRUNED,))
    return [trial for trial in pruned if STOPPED_ATTR in trial.user_attrs]


def curves_frame(study: optuna.Study) -> pd.DataFrame:
    """One row per evaluation of every trial with a curve (``CURVE_COLUMNS``), by trial and step.

    ``stopped_because`` is the reason of a trial stopped early, else empty.
    """
    rows = []
    for trial in study.get_trials(deepcopy=False):
        if not trial.intermediate_values or not {"N", "s"} <= trial.params.keys():
            continue
        curve = read_curve(trial)
        reason = trial.user_attrs.get(STOPPED_ATTR, "") if trial.state == TrialState.PRUNED else ""
        for step, value in zip(curve.steps, curve.accuracies):
            rows.append(
                (
                    trial.number,
                    trial.state.name,
                    int(trial.params["N"]),
                    float(trial.params["s"]),
                    step,
                    value,
                    curve.stage_at(step) or "",
                    curve.total_steps,
                    reason,
                )
            )
    return pd.DataFrame(rows, columns=list(CURVE_COLUMNS))
