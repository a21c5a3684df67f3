"""The search run: a Ray Tune ``Tuner`` driving the Optuna study of an Auto-PruMUX search.

One Tune trial trains one (N, s) point (``tuning.trainable``); the trials are proposed by
``StudySearcher`` from the study in SQL, so ``run_search`` on an existing study resumes it:
trials left RUNNING by a dead driver are failed first (their points become proposable
again), finished points are never proposed again, and ``train_point`` reuses the phase 1-2
models and checkpoints in the run's work folder.

Run directory layout: ``work/`` (point checkpoints and the phase 1-2 cache, shared by every
trial and restart, and ``work/train.log``), ``ray/`` (Ray Tune's experiment folders;
``ray_storage`` may put them elsewhere) and ``driver.log`` (what the driver process logs, Ray's
notices and failed trials' tracebacks included, kept out of the console). The run directory is
a local path, a path every node mounts, or a pyarrow URI (``s3://bucket/run``), whose ``work/``
each process uses through a local mirror (``storage.remote``).

A SQLite study has one driver at a time (``storage.driver_lock``). SIGINT and SIGTERM end a
run cleanly: no new trial starts, the running trials are stopped and marked failed (their
points resume from their checkpoints on the next start), and Ray is shut down; a second
signal stops at once.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import optuna
import ray
from optuna.trial import FrozenTrial
from ray import tune

from prumux.inference import check_runtime
from search.noise import evaluation_rows
from search.sampler import AutoPruMUXSampler
from storage import (
    Heartbeat,
    StudySettings,
    fail_stale_trials,
    open_study,
)
from storage.driver_lock import sole_driver
from storage.leases import lease_ttl
from storage.optuna_private import study_storage
from storage.periodic import Periodic
from storage.points import DENSE_POINT
from storage.progress import running_progress
from storage.remote import check_uri, is_uri
from storage.study import find_study, record_validation_rows
from storage.trials import trial_id
from trainers.cache import CacheEntry, cache_entry
from trainers.job import check_writable_dir
from trainers.point_spec import PointSpec
from trainers.recipes import Recipe
from tuning.lost_nodes import LostNodeNotice, Say, notices_to_log
from tuning.ray_session import connect_ray
from tuning.run_dir import CACHE_LOCKS, RunDir
from tuning.searcher import StudySearcher
from tuning.stopping import BudgetStopping
from tuning.trainable import SearchJob, train_trial

TrialHook = Callable[[FrozenTrial, optuna.Study], None]
ProgressHook = Callable[[dict[int, dict]], None]  # trial number -> its latest progress record
PROGRESS_POLL_S = 1.0
INTERRUPTED = "the search run ended before it finished"
# Seconds a time-budgeted run keeps to stop the running trial, record it and shut Ray down
# (about 20 s measured on 2 CPU cores), at most a tenth of the budget.
STOP_RESERVE_S = 30.0


@dataclass(frozen=True)
class SearchOptions:
    """Where a search keeps its state and how it uses the Ray cluster."""

    run_dir: str  # a local or shared path, or a pyarrow URI
    storage_url: str
    study_name: str
    concurrency: int | None = None  # None: one trial per GPU, else 1
    cpus_per_trial: float | None = None  # None: the cluster's CPUs shared by the concurrent trials
    gpus_per_trial: float | None = None  # None: 1 when the cluster has GPUs, else 0
    max_trials: int | None = None
    time_budget_s: float | None = None  # the whole run's, from the call of run_search
    max_failures: int = 2
    ray_address: str | None = None
    ray_storage: str | None = None  # None: <run_dir>/ray
    cache_lock: str = "auto"  # "file", "database" or "auto" (database unless the study is SQLite)
    early_stopping: bool = True  # stop a trial whose point cannot reach the threshold or beat the best
    inference_runtime: str = "eager"  # what a point's throughput is measured on (prumux.inference.RUNTIMES)

    def __post_init__(self) -> None:
        check_runtime(self.inference_runtime)
        lease_ttl()  # a bad PRUMUX_LEASE_TTL_S is refused here, not in a trial
        if self.cache_lock not in CACHE_LOCKS:
            raise ValueError(f"cache lock must be one of {', '.join(CACHE_LOCKS)}, got {self.cache_lock!r}")
        _check_positive("concurrency", self.concurrency)
        _check_positive("max trials", self.max_trials)
        _check_positive("time budget", self.time_budget_s)
        _check_positive("CPUs per trial", self.cpus_per_trial)
        if self.gpus_per_trial is not None and self.gpus_per_trial < 0:
            raise ValueError(f"GPUs per trial must be >= 0, got {self.gpus_per_trial}")
        if self.max_failures < 0:
            raise ValueError(f"max failures must be >= 0, got {self.max_failures}")
        if self.ray_address and self.ray_address.startswith("ray://"):
            raise ValueError(
                "Ray Client addresses (ray://) are not supported: the search's driver must run on the cluster; "
                "submit it as a Ray Job (prumux-search submit) or pass --ray-address HOST:6379 from a cluster node"
            )
        if is_uri(self.run_dir):
            check_uri(self.run_dir)
            if self.cache_lock == "file":
                raise ValueError("a run directory at a URI is locked with database leases: use --cache-lock database")
        else:
            check_writable_dir(self.run_dir, "run directory")

    @property
    def run(self) -> RunDir:
        """The run directory, with the lock its work folder takes ("auto" resolved)."""
        return RunDir.for_search(self.run_dir, self.cache_lock, self.storage_url)

    @property
    def tune_storage(self) -> str:
        """Ray Tune's storage path: an absolute path or a URI."""
        return self.run.tune_storage(self.ray_storage)


@dataclass
class SearchOutcome:
    """How a search run ended."""

    study: optuna.Study
    stop_reason: str
    resumed_failed: list[int] = field(default_factory=list)  # stale trials failed on start
    failed: list[int] = field(default_factory=list)  # trials that failed for good (the search stopped)
    interrupted: list[int] = field(default_factory=list)  # trials stopped by the end of the run
    seconds: float = 0.0
    signal_name: str | None = None  # SIGINT or SIGTERM when a signal ended the run


def run_search(
    settings: StudySettings,
    recipe: Recipe,
    options: SearchOptions,
    on_trial: TrialHook | None = None,
    on_progress: ProgressHook | None = None,
    on_notice: Say | None = None,
    validation_rows: int | None = None,
) -> SearchOutcome:
    """Run (or resume) the search defined by ``settings``; call ``on_trial`` per finished trial,
    ``on_progress`` about every second with the progress records of the running trials, and
    ``on_notice`` with a line when a trial is retried because its node was lost.

    ``validation_rows``: the rows every final accuracy is a share of (``search.noise.validation_rows``),
    kept in the study and told to the sampler and the stopping rule (None: accuracies taken as exact).

    A study stored with other settings, or a SQLite study another live driver runs, raises
    ``ValueError`` and is left untouched.
    """
    started = time.monotonic()
    run = options.run
    sampler = search_sampler(settings, recipe, options, validation_rows)
    if find_study(options.storage_url, options.study_name) is not None:  # other settings: refused, nothing written
        open_study(options.storage_url, options.study_name, settings)
    with sole_driver(options.storage_url, options.study_name, settings.command):
        study = open_study(options.storage_url, options.study_name, settings, create=True, sampler=sampler)
        if validation_rows is not None:
            record_validation_rows(study, validation_rows)
        resumed_failed = fail_stale_trials(study)
        point = PointSpec(settings.task, settings.base_model, *DENSE_POINT, recipe, str(run.work_dir))
        job = SearchJob(options.storage_url, options.study_name, settings.budget, run, point, options.inference_runtime)
        with connect_ray(options.ray_address, run.driver_log), notices_to_log(), Heartbeat(study) as heartbeat:
            stopping = budget_stopping(study, sampler, recipe, options)
            searcher = StudySearcher(study, heartbeat, options.max_trials, stopped=stopping.decisions)
            interrupt = _Interrupt(searcher)
            try:
                with interrupt.on_signals(), _watching(study, on_progress):
                    budget_s = trials_time_budget(options, started)
                    tuner = _tuner(job, searcher, stopping, options, on_trial, interrupt, budget_s, on_notice)
                    tuner.fit()
            finally:
                interrupted = searcher.abandon_running(searcher.interrupted_reason or INTERRUPTED)
    seconds = time.monotonic() - started
    return SearchOutcome(
        study=study,
        stop_reason=searcher.stop_reason or _early_stop_reason(options, seconds),
        resumed_failed=resumed_failed,
        failed=searcher.failed,
        interrupted=interrupted,
        seconds=seconds,
        signal_name=interrupt.signal_name,
    )


def search_sampler(
    settings: StudySettings, recipe: Recipe, options: SearchOptions, validation_rows: int | None
) -> AutoPruMUXSampler:
    """The search's sampler over the study's grid, told the noise of ``validation_rows`` (None: exact)."""
    return AutoPruMUXSampler(
        settings.grid_N,
        settings.grid_s,
        settings.budget,
        is_cheap=functools.partial(_has_phase12_model, options, settings.task, settings.base_model, recipe),
        validation_rows=validation_rows,
    )


def budget_stopping(
    study: optuna.Study, sampler: AutoPruMUXSampler, recipe: Recipe, options: SearchOptions
) -> BudgetStopping:
    """The early-stopping rule, with the sampler's budget and throughput margin; its curve bound is told the
    rows of each evaluation during training."""
    return BudgetStopping(
        study,
        sampler.budget,
        sampler.throughput_margin,
        options.early_stopping,
        evaluation_rows(sampler.validation_rows, recipe.eval_examples),
    )


class _Interrupt(tune.Stopper):
    """Ends the Tune run (all trials) once SIGINT or SIGTERM arrived; a second signal stops at once."""

    def __init__(self, searcher: StudySearcher) -> None:
        self.searcher = searcher
        self.signal_name: str | None = None

    def __call__(self, trial_id: str, result: dict) -> bool:
        return False

    def stop_all(self) -> bool:
        return self.signal_name is not None

    @contextmanager
    def on_signals(self) -> Iterator[None]:
        """Handle SIGINT and SIGTERM while the block runs (in the main thread only; Tune's own
        SIGINT handler stays off)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
        previous = {number: signal.signal(number, self._handle) for number in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)

    def _handle(self, number: int, frame: object) -> None:
        if self.signal_name is not None:
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(number).name
        self.searcher.interrupt(self.signal_name)


@contextmanager
def _watching(study: optuna.Study, on_progress: ProgressHook | None) -> Iterator[None]:
    """Call ``on_progress`` with the running trials' progress records every second, from a thread."""
    if on_progress is None:
        yield
        return
    poll = Periodic(
        lambda: on_progress(running_progress(study)),
        PROGRESS_POLL_S,
        name="prumux-progress",
        failed="progress not read",
        logger=logging.getLogger(__name__),  # a missed refresh must not end the search
    )
    with poll:
        yield


def trial_resources(options: SearchOptions) -> tuple[dict[str, float], int]:
    """Resources of one trial and the number of concurrent trials, on the connected cluster."""
    cluster = ray.cluster_resources()
    gpus = options.gpus_per_trial if options.gpus_per_trial is not None else float(cluster.get("GPU", 0) > 0)
    concurrency = options.concurrency or (max(1, int(cluster.get("GPU", 0) // gpus)) if gpus else 1)
    cpus = options.cpus_per_trial or max(1.0, float(cluster.get("CPU", 1) // concurrency))
    return {"cpu": cpus, "gpu": gpus}, concurrency


class _TrialReporter(tune.Callback):
    """Calls a hook with the study's record of each Tune trial that finished or failed."""

    def __init__(self, searcher: StudySearcher, hook: TrialHook) -> None:
        self.searcher = searcher
        self.hook = hook

    def on_trial_complete(self, iteration: int, trials: list, trial: tune.experiment.Trial, **info) -> None:
        self._report(trial)

    def on_trial_error(self, iteration: int, trials: list, trial: tune.experiment.Trial, **info) -> None:
        self._report(trial)

    def __getstate__(self) -> dict:
        # Tune pickles its callbacks for Tuner.restore, which the driver never uses; the hook
        # may hold a console stream
        return {key: value for key, value in self.__dict__.items() if key != "hook"}

    def _report(self, trial: tune.experiment.Trial) -> None:
        study = self.searcher.study
        self.hook(study_storage(study).get_trial(trial_id(study, trial.config["trial_number"])), study)


def trials_time_budget(options: SearchOptions, started: float) -> float | None:
    """Seconds from now that Tune may run trials so the run ends within its time budget."""
    if options.time_budget_s is None:
        return None
    return max(options.time_budget_s - _stop_reserve(options.time_budget_s) - (time.monotonic() - started), 0.001)


def _tuner(
    job: SearchJob,
    searcher: StudySearcher,
    scheduler: BudgetStopping,
    options: SearchOptions,
    on_trial: TrialHook | None,
    stopper: tune.Stopper,
    time_budget_s: float | None,
    on_notice: Say | None = None,
) -> tune.Tuner:
    resources, concurrency = trial_resources(options)
    # Tune's newer console output prints its own tables even at verbose=0; the progress
    # users see is the per-trial hook, so use the older engine, which is silent at 0.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    trainable = tune.with_resources(tune.with_parameters(train_trial, job=job), resources)
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=-1,  # the searcher decides when to stop
            max_concurrent_trials=concurrency,
            reuse_actors=True,  # a worker keeps torch and the tokenizer loaded from one trial to the next
            time_budget_s=time_budget_s,
        ),
        run_config=tune.RunConfig(
            name=f"{options.study_name}-{time.strftime('%Y%m%d-%H%M%S')}",
            storage_path=options.tune_storage,
            failure_config=tune.FailureConfig(max_failures=options.max_failures),
            stop=stopper,
            callbacks=[
                *([_TrialReporter(searcher, on_trial)] if on_trial else []),
                *([LostNodeNotice(on_notice)] if on_notice else []),
            ],
            verbose=0,
        ),
    )


def _early_stop_reason(options: SearchOptions, seconds: float) -> str:
    budget = options.time_budget_s
    if budget is not None and seconds >= budget - _stop_reserve(budget):
        return f"time budget ({options.time_budget_s:g} s) reached"
    return "the run was interrupted"


def _stop_reserve(time_budget_s: float) -> float:
    return min(STOP_RESERVE_S, time_budget_s / 10)


def _has_phase12_model(options: SearchOptions, task: str, base_model: str, recipe: Recipe, N: int) -> bool:
    """Whether every phase 1-2 model of N the recipe's configurations need is cached (one without a sweep)."""
    return all(
        _cached(options.run, cache_entry(options.run.work_dir, task, base_model, N, c))
        for c in recipe.configurations(0)
    )


def _cached(run: RunDir, entry: CacheEntry) -> bool:
    remote = run.remote_work()
    if remote is None:
        return entry.exists()
    return remote.exists(entry.record_path.relative_to(run.work_dir))


def _check_positive(name: str, value: float | None) -> None:
    if value is not None and value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")
