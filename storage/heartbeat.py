"""Which driver owns a RUNNING trial, and failing the trials of drivers that died.

Optuna's RDB heartbeat does not cover ask/tell, so a driver that dies leaves its trials
RUNNING forever. Each driver therefore publishes a heartbeat, a study system attr
``prumux:driver:<driver id>`` holding ``{"host", "pid", "time"}`` refreshed every
``interval`` seconds, and tags every trial it asks with the user attr ``driver``.

A RUNNING trial is stale, and ``fail_stale_trials`` marks it FAIL, when

- its driver ran on this host and that process no longer exists, or
- its driver's last heartbeat is older than ``grace_period`` seconds (another host, or a
  hung process; clocks of the hosts are assumed to agree within the grace period), or
- it has no known driver and started more than ``grace_period`` seconds ago.

So several drivers can share a study: each only fails trials whose owner is gone.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any, Self

import optuna
from optuna.trial import FrozenTrial, TrialState

from storage.optuna_private import study_id, study_storage
from storage.periodic import Periodic
from storage.trials import TrialRef, fail_trial, trial_id

HEARTBEAT_PREFIX = "prumux:driver:"
DRIVER_ATTR = "driver"
DEFAULT_INTERVAL_S = 30.0
DEFAULT_GRACE_PERIOD_S = 120.0

_logger = logging.getLogger(__name__)


class Heartbeat:
    """This driver's liveness record in a study; use as a context manager around the search."""

    def __init__(self, study: optuna.Study, interval: float = DEFAULT_INTERVAL_S) -> None:
        self.study = study
        self.interval = interval
        self.driver_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._beating = Periodic(
            self.beat, interval, name="prumux-heartbeat", failed="heartbeat failed", logger=_logger
        )

    def claim(self, trial: TrialRef) -> None:
        """Mark ``trial`` (a trial or its number) as owned by this driver."""
        study_storage(self.study).set_trial_user_attr(trial_id(self.study, trial), DRIVER_ATTR, self.driver_id)

    def beat(self) -> None:
        """Record that this driver is alive now."""
        record = {"host": socket.gethostname(), "pid": os.getpid(), "time": time.time()}
        study_storage(self.study).set_study_system_attr(study_id(self.study), HEARTBEAT_PREFIX + self.driver_id, record)

    def start(self) -> Self:
        """Beat now, then every ``interval`` seconds in a background thread."""
        self.beat()
        self._beating.start()
        return self

    def stop(self) -> None:
        """Stop beating; the driver's trials become stale once it exits."""
        self._beating.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def fail_stale_trials(study: optuna.Study, grace_period: float = DEFAULT_GRACE_PERIOD_S) -> list[int]:
    """Mark the RUNNING trials of dead drivers FAIL (see the module rule); return their numbers."""
    heartbeats = {
        key[len(HEARTBEAT_PREFIX) :]: value
        for key, value in study_storage(study).get_study_system_attrs(study_id(study)).items()
        if key.startswith(HEARTBEAT_PREFIX)
    }
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        reason = _stale_reason(trial, heartbeats, grace_period)
        if reason is not None and fail_trial(study, trial, reason):
            failed.append(trial.number)
    return failed


def _stale_reason(trial: FrozenTrial, heartbeats: dict[str, Any], grace_period: float) -> str | None:
    driver = trial.user_attrs.get(DRIVER_ATTR)
    heartbeat = heartbeats.get(driver)
    if heartbeat is None:
        started = trial.datetime_start or datetime.now()
        if (datetime.now() - started).total_seconds() > grace_period:
            return f"no heartbeat from its driver {driver!r}"
        return None
    if heartbeat["host"] == socket.gethostname() and not _process_exists(heartbeat["pid"]):
        return f"its driver {driver} (pid {heartbeat['pid']}) is gone"
    if time.time() - heartbeat["time"] > grace_period:
        return f"its driver {driver} stopped beating over {grace_period:.0f} s ago"
    return None


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:  # no /proc on this system
        return True
    # a killed child its parent has not reaped yet is a zombie: gone for our purpose
    return state != "Z"
