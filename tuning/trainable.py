"""The Ray Tune trainable: one trial trains one (N, s) point and records it in the study.

``train_point`` keeps its checkpoints and the shared phase 1-2 cache under the run's work
folder, keyed by the point, not by the trial: a trial that Ray retries, or a point proposed
again after a driver died, continues where the last attempt stopped, and a point whose
training had finished returns its result at once. Tune's own checkpoints are therefore not used.

With ``cache_lock="database"`` (a work folder shared by the nodes of a cluster) the phase 1-2
cache entries and point folders are locked with leases in the study's database instead of
lock files. A work folder at a URI (``work_uri``) is trained in a local mirror: a folder is
pulled when its lease is taken and pushed while and after it is held (``storage.remote``), and
the trial records the model's URI. A recipe with a sweep trains the point as a bracket of its
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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import optuna
import ray
import sqlalchemy
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState
from ray import tune
from sqlalchemy.engine import Engine

from storage import Lease, database_engine, open_study, record_result
from storage.curves import set_total_steps, write_evaluations
from storage.errors import first_line
from storage.points import is_dense, threshold
from storage.progress import record_failed_attempt, write_progress
from storage.remote import RemoteFolder, mirror_dir
from storage.trials import dense_trial, fail_trial, is_feasible_trial, json_safe, trial_id
from trainers.cache import ENTRY_FILE, THROUGHPUT_FILE, LockFactory, record_origin
from trainers.curve import Evaluation
from trainers.point import RESULT_FILE, train_point
from trainers.progress import LOG_FILE, error_cause, job_log, reporting_progress
from trainers.recipes import Recipe
from tuning.bracket import Point, train_bracket

WAIT_POLL_SECONDS = 5.0
PROGRESS_EVERY_S = 2.0  # a trial writes its progress into the study at most this often
COMPLETION_FILES = (ENTRY_FILE, RESULT_FILE)  # written last: a folder is complete once they exist
TRANSIENT_ERRORS = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    optuna.exceptions.StorageInternalError,
)


@dataclass(frozen=True)
class PointJob:
    """What every trial of one search shares: where the study is and how to train a point."""

    storage_url: str
    study_name: str
    task: str
    base_model: str
    recipe: Recipe
    workdir: str
    budget: float
    cache_lock: str = "file"  # "file" or "database"
    work_uri: str | None = None  # the work folder's URI when ``workdir`` is its local mirror


def train_trial(config: dict[str, Any], job: PointJob) -> None:
    """Train (or resume) the trial's point, record it in the study, report it to Tune."""
    N, s, number = int(config["N"]), float(config["s"]), int(config["trial_number"])
    job = on_this_node(job)
    study = open_study(job.storage_url, job.study_name)
    curve = TrialCurve(study, number, N, s)
    progress = ProgressWriter(study, trial_id(study, number), N, s, on_write=curve.report_progress)
    node = ray.util.get_node_ip_address()  # recorded with the result and with the cache entries trained here
    record_origin(node=node)
    try:
        with work_dir_locks(job) as (remote, lock), reporting_progress(progress):
            progress({"stage": "preparing", "phase": None, "step": 0, "total": 0, "eta": None})
            result = _train(job, N, s, lock, curve)
    except Exception as error:
        if failed_for_good(study, number, f"N={N}/s={s:g}", error, job):
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


def _train(job: PointJob, N: int, s: float, lock: LockFactory | None, curve: TrialCurve) -> dict[str, Any]:
    """The point's result: its one configuration trained, or its sweep's as a bracket (``tuning.bracket``)."""
    configurations = job.recipe.configurations(s)
    if len(configurations) > 1:
        point = Point(job.storage_url, job.study_name, job.task, job.base_model, N, s, job.recipe, job.workdir, lock)
        return train_bracket(point, on_evaluation=curve, storage=curve.study._storage)
    return train_point(
        job.task, job.base_model, N, s, configurations[0], job.workdir, progress=False, lock=lock, on_evaluation=curve
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


def on_this_node(job: PointJob) -> PointJob:
    """``job`` with the mirror of a work folder at a URI in this node's temporary folder rather
    than the driver's (nodes share no disk, and their temporary folders may differ)."""
    if job.work_uri is None:
        return job
    run_location = (
        job.work_uri.partition("?")[0].rstrip("/").removesuffix("/work")
    )  # the driver's child_uri(run, "work")
    return replace(job, workdir=str(mirror_dir(run_location) / "work"))


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


def failed_for_good(study: optuna.Study, number: int, point: str, error: Exception, job: PointJob) -> bool:
    """Log a failed attempt (traceback to ``train.log``, cause into the study); if an earlier attempt
    failed the same way, fail the trial with the cause and return True (retrying would fail again)."""
    cause = error_cause(error)
    log = str(Path(job.workdir) / LOG_FILE) + (f" on {socket.gethostname()}" if job.work_uri else "")
    try:
        with job_log(Path(job.workdir), f"trial {number} {point}") as trial_log:
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


@contextmanager
def work_dir_locks(job: PointJob) -> Iterator[tuple[RemoteFolder | None, LockFactory | None]]:
    """The lock of the work folder's entries that ``job.cache_lock`` says (None: lock files), for
    ``train_point``; with a ``work_uri``, the lock also mirrors them, and the remote folder comes first."""
    if job.cache_lock != "database":
        yield None, None
        return
    engine = database_engine(job.storage_url)
    remote = RemoteFolder(job.work_uri, job.workdir) if job.work_uri else None
    lock = lease_lock(engine, job.workdir)
    try:
        if remote is not None:
            remote.pull(THROUGHPUT_FILE)
        yield remote, mirrored_lock(lock, remote, job.recipe.checkpoint_every_seconds) if remote else lock
        if remote is not None:
            remote.push(THROUGHPUT_FILE)
    finally:
        engine.dispose()


def mirrored_lock(lock: LockFactory, remote: RemoteFolder, push_every_s: float) -> LockFactory:
    """A lock factory that takes ``lock`` and keeps the locked folder in sync with ``remote``:
    pulled once the lock is held, pushed every ``push_every_s`` seconds and before it is freed."""

    @contextmanager
    def locked_and_mirrored(directory: Path, log: logging.Logger) -> Iterator[None]:
        relative = Path(directory).resolve().relative_to(remote.local.resolve())
        with lock(directory, log):
            log.info("pulled %d files of %s", remote.pull(relative), remote.uri_of(directory))
            with remote.pushing(relative, push_every_s, last=COMPLETION_FILES):
                yield

    return locked_and_mirrored


def lease_lock(engine: Engine, workdir: str) -> LockFactory:
    """A cache lock factory: a lease in the database of ``engine`` per folder of the work dir.

    The key is the folder relative to the work dir, so nodes mounting the shared folder at
    different paths agree on it.
    """
    root = Path(workdir).resolve()

    def lock(directory: Path, log: logging.Logger) -> Lease:
        key = f"work:{Path(directory).resolve().relative_to(root)}"
        log.info("locking with the database lease %s", key)
        return Lease(engine, key)

    return lock


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
    return study._storage.get_trial(trial_id(study, number))
