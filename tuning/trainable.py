"""The Ray Tune trainable: one trial trains one (N, s) point and records it in the study.

``train_point`` keeps its checkpoints and the shared phase 1-2 cache under the run's work
folder, keyed by the point, not by the trial: a trial that Ray retries, or a point proposed
again after a driver died, continues where the last attempt stopped, and a point whose
training had finished returns its result at once. Tune's own checkpoints are therefore not used.

The run directory (``tuning.run_dir.RunDir``) says how the work folder's entries are locked (lock
files, or leases in the study's database) and, for a run directory at a URI, mirrors them on the
node; the trial then records the model's URI. A recipe with a sweep trains the point as a bracket of its
configurations (``tuning.bracket``); the trial records the winner's result.

A trial's constraint is ``threshold - accuracy`` with threshold = dense (1, 0) accuracy -
budget, and Optuna cannot change it after ``tell``. Trials may train concurrently with the
dense one, so a worker waits until the dense accuracy is in the study before it records
its result (the dense trial itself uses its own accuracy).

While it trains, a trial writes its progress (stage, step/total, last evaluation, elapsed, ETA)
into the study every few seconds (``storage.progress``), where the driver reads it. Each
evaluation of its point is stored as the trial's learning curve (``storage.curves``: an
intermediate value at the point's own step, the stage named; the cached phase 1-2 evaluations
included, and the final accuracy at the last step) and sent to Tune (``tune.report`` with
``evaluation: True``), whose scheduler (``tuning.stopping``) may stop the trial. Progress is sent
to Tune too, so a stopped trial's training thread ends within seconds (at its next report). A failed
attempt writes its traceback to the work folder's ``train.log`` and its one-line cause into
the study; an attempt that fails with the cause of an earlier attempt is deterministic (bad
data, a shape error, out of memory), so instead of raising for Ray to retry into the same
wall it fails the trial with that cause and reports ``{"failed": True}``, which stops the search.
"""

from __future__ import annotations

import logging
import math
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna
import ray
import sqlalchemy
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState
from ray import tune

from storage import open_study, record_result
from storage.curves import set_total_steps, write_evaluations
from storage.errors import first_line
from storage.optuna_private import study_storage
from storage.points import is_dense, threshold
from storage.progress import record_failed_attempt, write_progress
from storage.trials import dense_trial, fail_trial, is_feasible_trial, json_safe, trial_id
from trainers.cache import LockFactory, record_origin
from trainers.curve import Evaluation
from trainers.point import train_point
from trainers.point_spec import PointSpec
from trainers.progress import LOG_FILE, error_cause, job_log, reporting_progress
from tuning.bracket import train_bracket
from tuning.run_dir import RunDir

WAIT_POLL_SECONDS = 5.0
PROGRESS_EVERY_S = 2.0  # a trial writes its progress into the study at most this often
TRANSIENT_ERRORS = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    optuna.exceptions.StorageInternalError,
)


@dataclass(frozen=True)
class SearchJob:
    """What every trial of one search shares: its study and budget, its run directory, and the point spec
    each trial trains at its own (N, s), in this node's work folder."""

    storage_url: str
    study_name: str
    budget: float
    run_dir: RunDir
    point: PointSpec
    inference_runtime: str = "eager"  # what each point's throughput is measured on (prumux.inference.RUNTIMES)

    def trial_point(self, N: int, s: float) -> PointSpec:
        """The point a trial trains: (N, s) in the run directory's work folder on this node."""
        return self.point.at(N, s).in_workdir(str(self.run_dir.work_dir))


def train_trial(config: dict[str, Any], job: SearchJob) -> None:
    """Train (or resume) the trial's point, record it in the study, report it to Tune."""
    N, s, number = int(config["N"]), float(config["s"]), int(config["trial_number"])
    point = job.trial_point(N, s)
    study = open_study(job.storage_url, job.study_name)
    curve = TrialCurve(study, number, N, s)
    progress = ProgressWriter(study, trial_id(study, number), N, s, on_write=curve.report_progress)
    node = ray.util.get_node_ip_address()  # recorded with the result and with the cache entries trained here
    record_origin(node=node)
    try:
        work_locks = job.run_dir.work_locks(job.storage_url, point.recipe.checkpoint_every_seconds)
        with work_locks as (remote, lock), reporting_progress(progress):
            progress({"stage": "preparing", "phase": None, "step": 0, "total": 0, "eta": None})
            result = _train(job, point, lock, curve)
    except Exception as error:
        if failed_for_good(study, number, f"N={N}/s={s:g}", error, job.run_dir):
            tune.report(
                {"trial_number": number, "N": N, "s": s, "accuracy": math.nan, "throughput": math.nan, "failed": True}
            )
            return
        raise
    if remote is not None:
        result["model_dir"] = remote.uri_of(result["model_dir"])
    curve.finish(result.pop("curve"), result["total_steps"], result["val_accuracy"])
    result["node"] = node
    trial = _stored(study, number)
    if trial.state != TrialState.COMPLETE:  # a retry after the record was written is a no-op
        judged_by = (
            threshold(result["val_accuracy"], job.budget) if is_dense(N, s) else wait_for_threshold(study, job.budget)
        )
        trial = record_result(study, number, result, judged_by)
    tune.report(trial_metrics(trial))


def _train(job: SearchJob, point: PointSpec, lock: LockFactory | None, curve: TrialCurve) -> dict[str, Any]:
    """The point's result: its one configuration trained, or its sweep's as a bracket (``tuning.bracket``)."""
    configurations = point.recipe.configurations(point.s)
    if len(configurations) > 1:
        return train_bracket(
            point,
            job.storage_url,
            job.study_name,
            lock=lock,
            on_evaluation=curve,
            storage=study_storage(curve.study),
            inference_runtime=job.inference_runtime,
        )
    return train_point(
        point.with_recipe(configurations[0]),
        progress=False,
        lock=lock,
        on_evaluation=curve,
        inference_runtime=job.inference_runtime,
    ).to_dict()


class TrialCurve:
    """The trial's learning curve: each evaluation into the study and to Tune as it is made.

    Tune's results always carry the searcher's metric (``throughput``, NaN until the end) and
    ``evaluation`` (True for an evaluation, False for a progress report); an evaluation made
    earlier (a cached or resumed stage's) says ``again``.
    """

    def __init__(self, study: optuna.Study, number: int, N: int, s: float) -> None:
        self.study, self.number = study, number
        self.point = {"trial_number": number, "N": N, "s": s}
        self.last_accuracy = math.nan
        self._total_steps: int | None = None

    def __call__(self, evaluation: Evaluation) -> None:
        if evaluation.total_steps != self._total_steps:
            self._store(set_total_steps, evaluation.total_steps)
            self._total_steps = evaluation.total_steps
        self._store(write_evaluations, [(evaluation.step, evaluation.accuracy)], evaluation.stage)
        self.last_accuracy = evaluation.accuracy
        tune.report(
            {
                **self.point,
                "accuracy": evaluation.accuracy,
                "throughput": math.nan,
                "evaluation": True,
                "again": evaluation.again,
                "step": evaluation.step,
                "stage": evaluation.stage,
                "total_steps": evaluation.total_steps,
            }
        )

    def report_progress(self, record: dict[str, Any]) -> None:
        """Send a progress record to Tune (where a stopped trial's training thread ends)."""
        tune.report(
            {
                **self.point,
                "accuracy": self.last_accuracy,
                "throughput": math.nan,
                "evaluation": False,
                "step": record.get("step", 0),
                "stage": record.get("stage", ""),
            }
        )

    def finish(self, rows: list[list], total_steps: int, final_accuracy: float) -> None:
        """Store the whole curve of a trained point, its last step holding the final validation accuracy."""
        by_stage: dict[str, list[tuple[int, float]]] = {}
        for step, value, stage in rows:
            by_stage.setdefault(stage, []).append((int(step), float(value)))
        for stage, evaluations in by_stage.items():
            self._store(write_evaluations, evaluations, stage)
        if total_steps:
            self._store(set_total_steps, total_steps)
            self._store(write_evaluations, [(total_steps, final_accuracy)])

    def _store(self, write, *args) -> None:
        try:
            write(self.study, self.number, *args)
        except UpdateFinishedTrialError:  # the trial was stopped (PRUNED) or recorded meanwhile
            pass
        except Exception as error:  # noqa: BLE001 - a curve is for watching and stopping; it must never stop a training
            logging.getLogger(__name__).warning("curve not written: %s", first_line(error))


class ProgressWriter:
    """A progress sink that writes a trial's records into the study: the first of each stage,
    a stage's last step, and otherwise at most every ``every_s`` seconds; ``on_write`` is called
    with each record written."""

    def __init__(
        self,
        study: optuna.Study,
        trial_identifier: int,
        N: int,
        s: float,
        every_s: float = PROGRESS_EVERY_S,
        on_write: Callable[[dict[str, Any]], None] | None = None,
    ):
        self.study, self.trial_identifier, self.point = study, trial_identifier, {"N": N, "s": s}
        self.every_s = every_s
        self.on_write = on_write
        self.started = time.monotonic()
        self._written_at = -float("inf")
        self._stage: str | None = None

    def __call__(self, record: dict[str, Any]) -> None:
        now = time.monotonic()
        new_stage = record["stage"] != self._stage
        if not new_stage and record["step"] < record["total"] and now - self._written_at < self.every_s:
            return
        self._stage, self._written_at = record["stage"], now
        full = {**record, **self.point, "elapsed": now - self.started, "time": time.time()}
        try:
            write_progress(self.study, self.trial_identifier, json_safe(full))
        except Exception as error:  # noqa: BLE001 - progress is for watching; it must never stop a training
            logging.getLogger(__name__).warning("progress not written: %s", first_line(error))
        if self.on_write is not None:
            self.on_write(full)


def failed_for_good(study: optuna.Study, number: int, point: str, error: Exception, run_dir: RunDir) -> bool:
    """Log a failed attempt (traceback to ``train.log``, cause into the study); if an earlier attempt
    failed the same way, fail the trial with the cause and return True (retrying would fail again)."""
    cause = error_cause(error)
    log = str(run_dir.work_dir / LOG_FILE) + (f" on {socket.gethostname()}" if run_dir.is_uri else "")
    try:
        with job_log(run_dir.work_dir, f"trial {number} {point}") as trial_log:
            trial_log.error("attempt failed: %s", cause, exc_info=error)
    except OSError:  # the work folder itself is unusable; the cause still reaches the study
        log = "Ray's trial log (the work folder could not be written)"
    if isinstance(error, TRANSIENT_ERRORS):  # a lost database connection: worth Ray's retry however often seen
        return False
    identifier = trial_id(study, number)
    if not record_failed_attempt(study, identifier, cause, log):
        return False
    fail_trial(study, number, f"{cause} (the same error on a retry; full log: {log})")
    return True


def wait_for_threshold(study: optuna.Study, budget: float, poll_seconds: float = WAIT_POLL_SECONDS) -> float:
    """Return dense accuracy - budget, waiting while the dense trial is still training.

    Raises ``RuntimeError`` when the study has no dense trial left to wait for (it failed).
    """
    while True:
        if (dense := dense_trial(study)) is not None:
            return threshold(dense.values[0], budget)
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if not any(is_dense(t.params.get("N"), t.params.get("s")) for t in running):
            raise RuntimeError("the dense (1, 0) trial failed, so this point's feasibility is unknown")
        time.sleep(poll_seconds)


def trial_metrics(trial: FrozenTrial) -> dict[str, Any]:
    """The scalars Ray Tune records for a finished trial."""
    accuracy, throughput = trial.values
    return {
        "trial_number": trial.number,
        "N": int(trial.params["N"]),
        "s": float(trial.params["s"]),
        "accuracy": accuracy,
        "throughput": throughput,
        "speedup": float(trial.user_attrs.get("speedup", float("nan"))),
        "feasible": is_feasible_trial(trial),
    }


def _stored(study: optuna.Study, number: int) -> FrozenTrial:
    return study_storage(study).get_trial(trial_id(study, number))
