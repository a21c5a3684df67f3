"""Measured (N, s) points as Optuna trials: recording, importing and reading them back.

A trial has params ``N`` and ``s`` (categorical over the grid), values
``[accuracy, throughput]``, the constraint ``accuracy`` = threshold - accuracy (<= 0 is
feasible, so ``study.best_trials`` honours the budget), and the training result as user attrs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import optuna
import pandas as pd
from optuna.distributions import CategoricalDistribution
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from storage.optuna_private import study_id, study_storage, trial_storage_id
from storage.points import family, is_dense, threshold
from storage.study import SETTINGS_ATTR, study_settings

TrialRef = int | optuna.trial.BaseTrial | FrozenTrial
CONSTRAINT = "accuracy"
FAIL_REASON_ATTR = "failed_because"
CONFIGURATION_ATTR = "configuration"  # the swept values of a point's winning configuration (tuning.bracket)
POINT_COLUMNS = ("N", "s", "accuracy", "throughput")
FRAME_COLUMNS = ("number", "state", "N", "s", "family", "accuracy", "throughput", "speedup", "feasible")
_ACTIVE = (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)
_DTYPES = {
    "number": int,
    "N": int,
    "s": float,
    "accuracy": float,
    "throughput": float,
    "speedup": float,
    "feasible": bool,
}


def is_feasible_trial(trial: FrozenTrial) -> bool:
    """Whether a trial is COMPLETE and meets its stored constraint (``threshold - accuracy <= 0``)."""
    return trial.state == TrialState.COMPLETE and all(value <= 0 for value in trial.constraints.values())


def trial_point(trial: FrozenTrial) -> tuple[int, float] | None:
    """The trial's (N, s): its params, or those enqueued for it while it waits; None without both."""
    params = trial.params or trial.system_attrs.get("fixed_params", {})
    if "N" not in params or "s" not in params:
        return None
    return int(params["N"]), float(params["s"])


def trial_id(study: optuna.Study, trial: TrialRef) -> int:
    """Return the storage id of a trial given as an object or by its number."""
    if not isinstance(trial, int):
        return trial_storage_id(trial)
    try:
        return study_storage(study).get_trial_id_from_study_id_trial_number(study_id(study), trial)
    except KeyError:
        raise ValueError(f"study {study.study_name!r} has no trial {trial}") from None


def record_result(study: optuna.Study, trial: TrialRef, result: dict[str, Any], threshold: float) -> FrozenTrial:
    """Complete a RUNNING trial with a training result.

    ``result`` (a ``PointResult.to_dict()``) is stored as user attrs; its accuracy is
    ``val_accuracy`` (or ``accuracy``). The trial is feasible when accuracy >= ``threshold``.
    """
    accuracy = float(result["val_accuracy"] if "val_accuracy" in result else result["accuracy"])
    throughput = float(result["throughput"])
    _check_measurement(accuracy, throughput)
    number = trial if isinstance(trial, int) else trial.number
    identifier = trial_id(study, trial)
    for key, value in json_safe(result).items():
        study_storage(study).set_trial_user_attr(identifier, key, value)
    optuna.Trial(study, identifier).set_constraint(CONSTRAINT, threshold - accuracy)
    return study.tell(number, [accuracy, throughput])


def fail_trial(study: optuna.Study, trial: TrialRef, reason: str) -> bool:
    """Mark a RUNNING trial FAIL with ``reason`` (user attr ``failed_because``); False if it had finished."""
    identifier = trial_id(study, trial)
    storage = study_storage(study)
    if storage.get_trial(identifier).state != TrialState.RUNNING:
        return False
    try:
        storage.set_trial_user_attr(identifier, FAIL_REASON_ATTR, reason)
        return storage.set_trial_state_values(identifier, TrialState.FAIL)
    except UpdateFinishedTrialError:  # another process finished it in between
        return False


def import_points(study: optuna.Study, frame: pd.DataFrame, threshold: float) -> None:
    """Add measured points (columns N, s, accuracy, throughput, any others) as complete trials.

    Extra columns become user attrs. Points outside the study's grid, repeated in ``frame``
    or already in the study raise ``ValueError`` before anything is written.
    """
    _check_frame(frame)
    distributions = _distributions(study, frame)
    grid_N = {_key(n): n for n in distributions["N"].choices}
    grid_s = {_key(s): s for s in distributions["s"].choices}
    present = {(_key(t.params["N"]), _key(t.params["s"])) for t in study.get_trials(deepcopy=False, states=_ACTIVE)}
    trials = []
    for row in frame.to_dict("records"):
        point = (_key(row["N"]), _key(row["s"]))
        if point[0] not in grid_N or point[1] not in grid_s:
            raise ValueError(f"point (N={row['N']}, s={row['s']}) is not on the study's grid")
        if point in present:
            raise ValueError(f"point (N={row['N']}, s={row['s']}) is already in study {study.study_name!r}")
        trials.append(_imported_trial(row, grid_N[point[0]], grid_s[point[1]], distributions, threshold))
    study.add_trials(trials)


def points_frame(study: optuna.Study, states: Iterable[TrialState] = (TrialState.COMPLETE,)) -> pd.DataFrame:
    """One row per trial in ``states``: the ``FRAME_COLUMNS`` then the trial's user attrs.

    ``speedup`` is the trial's own measured speed-up over dense (user attr ``speedup``) or
    else its throughput over the study's dense (1, 0) throughput. Rows without values (not
    COMPLETE) have NaN accuracy and throughput and are not feasible.
    """
    trials = [t for t in study.get_trials(deepcopy=False, states=tuple(states)) if {"N", "s"} <= t.params.keys()]
    dense = _dense_throughput(study)
    rows = [_row(trial, dense) for trial in trials]
    return pd.DataFrame(rows, columns=_columns(rows)).astype(_DTYPES)


def complete_trial(study: optuna.Study, number: int) -> FrozenTrial:
    """The study's trial ``number``; ValueError unless it exists and is complete."""
    trials = {trial.number: trial for trial in study.get_trials(deepcopy=False)}
    if number not in trials:
        raise ValueError(f"study {study.study_name!r} has no trial {number}")
    if trials[number].state != TrialState.COMPLETE:
        raise ValueError(f"trial {number} is {trials[number].state.name.lower()}, not complete")
    return trials[number]


def recommend(points: pd.DataFrame) -> pd.Series | None:
    """The feasible point with the highest throughput (then accuracy), or None."""
    feasible = points[points["feasible"]]
    if feasible.empty:
        return None
    return feasible.sort_values(["throughput", "accuracy"], ascending=False).iloc[0]


def accuracy_threshold(study: optuna.Study) -> float | None:
    """The study's threshold: its dense trial's accuracy minus its budget; None before both are known."""
    dense, settings = dense_accuracy(study), study_settings(study)
    return None if dense is None or settings is None else threshold(dense, settings.budget)


def configuration_text(values: dict[str, Any]) -> str:
    """A configuration of a recipe's sweep (``CONFIGURATION_ATTR``) as ``field=value`` words."""
    return " ".join(
        f"{key}={value:g}" if isinstance(value, float) else f"{key}={value}" for key, value in values.items()
    )


def json_safe(value: Any) -> Any:
    """Return ``value`` as JSON-safe Python: arrays and scalars of numpy or torch unwrapped,
    non-finite floats as None, anything else (paths) as text."""
    if isinstance(value, dict):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if hasattr(value, "tolist"):
        return json_safe(value.tolist())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)


def _check_measurement(accuracy: float, throughput: float) -> None:
    if not 0.0 <= accuracy <= 1.0:
        raise ValueError(f"accuracy must be a fraction in [0, 1], got {accuracy}")
    if not (math.isfinite(throughput) and throughput > 0):
        raise ValueError(f"throughput must be a positive number of examples/s, got {throughput}")


def _check_frame(frame: pd.DataFrame) -> None:
    missing = [column for column in POINT_COLUMNS if column not in frame.columns]
    if missing:
        raise ValueError(f"points need columns {', '.join(POINT_COLUMNS)}; missing: {', '.join(missing)}")
    if frame.empty:
        raise ValueError("no points to import")
    points = frame[list(POINT_COLUMNS)]
    if points.isna().any().any():
        raise ValueError("points have missing (NaN) values in N, s, accuracy or throughput")
    for row in points.to_dict("records"):
        _check_measurement(float(row["accuracy"]), float(row["throughput"]))
    repeated = frame[frame.duplicated(["N", "s"])]
    if not repeated.empty:
        row = repeated.iloc[0]
        raise ValueError(f"point (N={row['N']}, s={row['s']}) appears more than once")


def _distributions(study: optuna.Study, frame: pd.DataFrame) -> dict[str, CategoricalDistribution]:
    """The study's N and s distributions: from its trials, else its settings, else ``frame``."""
    for trial in study.get_trials(deepcopy=False):
        if {"N", "s"} <= trial.distributions.keys():
            return {name: trial.distributions[name] for name in ("N", "s")}
    settings = study.user_attrs.get(SETTINGS_ATTR)
    grid_N = settings["grid_N"] if settings else sorted(frame["N"].unique())
    grid_s = settings["grid_s"] if settings else sorted(frame["s"].unique())
    return {
        "N": CategoricalDistribution([int(n) for n in grid_N]),
        "s": CategoricalDistribution([float(s) for s in grid_s]),
    }


def _key(value: Any) -> float:
    return round(float(value), 9)


def _imported_trial(
    row: dict[str, Any], N: int, s: float, distributions: dict[str, CategoricalDistribution], threshold: float
) -> FrozenTrial:
    accuracy, throughput = float(row["accuracy"]), float(row["throughput"])
    extra = {key: value for key, value in row.items() if key not in POINT_COLUMNS and not pd.isna(value)}
    return optuna.trial.create_trial(
        params={"N": N, "s": s},
        distributions=distributions,
        values=[accuracy, throughput],
        user_attrs={**json_safe(extra), "source": "import"},
        constraints={CONSTRAINT: threshold - accuracy},
    )


def dense_accuracy(study: optuna.Study) -> float | None:
    """The measured accuracy of the study's dense (1, 0) point, or None before it is measured."""
    dense = dense_trial(study)
    return None if dense is None else dense.values[0]


def _dense_throughput(study: optuna.Study) -> float | None:
    dense = dense_trial(study)
    return None if dense is None else dense.values[1]


def dense_trial(study: optuna.Study) -> FrozenTrial | None:
    """The study's dense trial: the first (lowest-numbered) COMPLETE trial at (1, 0), or None.

    A study measures the dense point once; should it hold more (an import beside a trained one),
    the first stays the reference, so every threshold of the study is the same."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return next((trial for trial in complete if is_dense(trial.params.get("N"), trial.params.get("s"))), None)


def _row(trial: FrozenTrial, dense_throughput: float | None) -> dict[str, Any]:
    N, s = int(trial.params["N"]), float(trial.params["s"])
    accuracy, throughput = trial.values if trial.values else (math.nan, math.nan)
    speedup = trial.user_attrs.get("speedup")
    if speedup is None:
        speedup = throughput / dense_throughput if dense_throughput else math.nan
    feasible = is_feasible_trial(trial)
    own = {
        "number": trial.number,
        "state": trial.state.name,
        "N": N,
        "s": s,
        "family": family(N, s),
        "accuracy": accuracy,
        "throughput": throughput,
        "speedup": speedup,
        "feasible": feasible,
    }
    return {**{k: v for k, v in trial.user_attrs.items() if k not in own}, **own}


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    extra = dict.fromkeys(key for row in rows for key in row if key not in FRAME_COLUMNS)
    return [*FRAME_COLUMNS, *extra]
