"""What a running trial tells its driver through the study: its progress and its failed attempts.

Both live in the trial's system attrs, in the study's database, which every node of a cluster
reaches (a file on the worker's disk would not be). optuna-dashboard does not show system
attrs, so the trial's user attrs stay its training result.

- ``prumux:progress``: the latest progress record a worker wrote (stage, step, total, last
  evaluation, elapsed and ETA seconds, the wall time it was written); the driver reads the
  records of the running trials with ``running_progress``.
- ``prumux:attempts``: one entry per failed attempt of the trial (the error's one-line cause and
  where the full log is), so a retry that fails the same way can tell that it is deterministic.
"""

from __future__ import annotations

import re
from typing import Any

import optuna
from optuna.trial import TrialState

from storage.optuna_private import study_id, study_storage

PROGRESS_ATTR = "prumux:progress"
ATTEMPTS_ATTR = "prumux:attempts"


def write_progress(study: optuna.Study, trial_id: int, record: dict[str, Any]) -> None:
    """Store a running trial's latest progress record (JSON-safe values)."""
    study_storage(study).set_trial_system_attr(trial_id, PROGRESS_ATTR, record)


def running_progress(study: optuna.Study) -> dict[int, dict[str, Any]]:
    """The latest progress record of every RUNNING trial that wrote one: trial number -> record."""
    trials = study_storage(study).get_all_trials(study_id(study), deepcopy=False, states=(TrialState.RUNNING,))
    return {trial.number: trial.system_attrs[PROGRESS_ATTR] for trial in trials if PROGRESS_ATTR in trial.system_attrs}


def failed_attempts(study: optuna.Study, trial_id: int) -> list[dict[str, str]]:
    """The failed attempts recorded for a trial, oldest first."""
    return list(study_storage(study).get_trial_system_attrs(trial_id).get(ATTEMPTS_ATTR, []))


def record_failed_attempt(study: optuna.Study, trial_id: int, cause: str, log: str) -> bool:
    """Record a failed attempt; return whether an earlier attempt failed with the same cause.

    Causes are compared with their numbers blanked, so "out of memory: tried 2.1 GiB" and
    "... 2.3 GiB" count as the same error.
    """
    attempts = failed_attempts(study, trial_id)
    repeated = any(same_cause(cause, attempt["cause"]) for attempt in attempts)
    study_storage(study).set_trial_system_attr(trial_id, ATTEMPTS_ATTR, [*attempts, {"cause": cause, "log": log}])
    return repeated


def same_cause(first: str, second: str) -> bool:
    """Whether two one-line error causes name the same error, numbers aside."""
    return _shape(first) == _shape(second)


def _shape(cause: str) -> str:
    return re.sub(r"\d+(\.\d+)?", "#", cause)
