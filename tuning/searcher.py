"""``StudySearcher``: a Ray Tune searcher whose trials are the trials of an Optuna study in SQL.

Ray's ``OptunaSearch`` keeps its own study and tells it only metric values; this searcher
asks the stored study itself (ask/tell), so restarts and other drivers see the same trials.

Who writes what:

- ``suggest`` asks the study (its sampler proposes N and s), tags the trial with this
  driver's heartbeat and hands ``{"N", "s", "trial_number"}`` to the trainable.
- The trainable worker records its own result (values, constraint, user attrs) before it
  reports to Tune, so a finished training is in the study even if the driver dies next.
- ``on_trial_complete`` records a trial that the scheduler stopped early (``tuning.stopping``:
  its point cannot reach the threshold or beat the best) as PRUNED, with its last accuracy, the
  bound that stopped it, the threshold, its predicted throughput and why; it is never trained
  again. It fails a trial that Ray gave up on, or that was stopped otherwise, if it is still
  RUNNING in the study: its point may be proposed again and resumes from its checkpoints.
  A trial that errored after Ray's retries, or whose worker found its error deterministic
  (the result says ``failed``; the worker failed the trial with the cause), also ends the
  search (no new trials): a point that cannot be trained would otherwise be proposed again
  and again.

Several drivers may share the study: each proposes while holding the study's ``propose``
lease (``storage.leases``), so the trial one driver asks is in the study before another
driver's sampler looks, and RUNNING trials count as taken points.

Stopping: the sampler is done (it waits while trials are pending, since their results may
revive candidates; the searcher then asks again when a trial completes),
``max_trials`` trained points are in the study, or a trial failed.
"""

from __future__ import annotations

import json
import time
import warnings

import optuna
from optuna.samplers import PartialFixedSampler
from optuna.trial import TrialState
from ray.tune.search import Searcher

from search.sampler import AutoPruMUXSampler, search_space
from storage import Heartbeat
from storage.leases import study_lease
from storage.optuna_private import study_storage
from storage.progress import failed_attempts
from storage.trials import fail_trial, trial_id
from tuning.stopping import Stop

# how often a waiting searcher looks at the study again when no trial of its own completes
RECHECK_SECONDS = 5.0
IMPORTED = "import"


class StudySearcher(Searcher):
    """Propose the study sampler's next (N, s) to Ray Tune; fail trials Ray gives up on."""

    def __init__(
        self,
        study: optuna.Study,
        heartbeat: Heartbeat,
        max_trials: int | None = None,
        stopped: dict[str, Stop] | None = None,
    ) -> None:
        super().__init__(metric="throughput", mode="max")
        if not isinstance(study.sampler, AutoPruMUXSampler):
            raise TypeError("the study must be opened with an AutoPruMUXSampler")
        self.study = study
        self.heartbeat = heartbeat
        self.max_trials = max_trials
        self.stop_reason: str | None = None
        self.interrupted_reason: str | None = None  # set by ``interrupt``: the reason its running trials fail
        self.failed: list[int] = []
        self.stopped = {} if stopped is None else stopped  # Tune trial id -> the scheduler's early stop (shared)
        self._sampler: AutoPruMUXSampler = study.sampler
        self._distributions = search_space(self._sampler.grid_N, self._sampler.grid_s)
        self._running: dict[str, int] = {}  # Ray Tune trial id -> Optuna trial number
        # drivers sharing the study propose one at a time, so no point is asked twice
        self._proposing = study_lease(study, "propose")
        self._recheck_at = 0.0

    def suggest(self, trial_id: str) -> dict | str | None:
        """The next point as a trial config, None to wait, or FINISHED."""
        if self.stop_reason is not None:
            return Searcher.FINISHED
        if time.monotonic() < self._recheck_at:
            return None
        if self.max_trials is not None and trained_count(self.study) >= self.max_trials:
            return self._finish(f"max trials ({self.max_trials}) reached")
        if not self._proposing.try_acquire():  # another driver is proposing a point: ask again soon
            return self._wait()
        try:
            return self._propose(trial_id)
        finally:
            self._proposing.release()

    def _propose(self, trial_id: str) -> dict | str | None:
        """Ask the sampler for a point and the study for its trial (holding the propose lease)."""
        point = self._sampler.next_point(self.study)
        if point is None:
            return self._finish("the search is done") if self._sampler.is_done(self.study) else self._wait()
        trial = self._ask(point)
        self.heartbeat.claim(trial)
        self._running[trial_id] = trial.number
        return {"N": int(trial.params["N"]), "s": float(trial.params["s"]), "trial_number": trial.number}

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        """Fail the study trial if the worker did not record it; stop the search on an error."""
        number = self._running.pop(trial_id, None)
        self._recheck_at = 0.0
        if number is None:
            return
        if trial_id in self.stopped:
            self.stopped.pop(trial_id).record(self.study)
        elif result and result.get("failed"):  # the worker failed the trial with its cause
            self._stop_on_failure(number)
        elif error and self._fail_if_running(number, self._error_reason(number)):
            self._stop_on_failure(number)
        elif not error:
            self._fail_if_running(number, self.interrupted_reason or "Ray stopped it before it finished")

    def interrupt(self, signal_name: str) -> None:
        """Propose nothing more: the run was interrupted (its running trials resume on the next start)."""
        self.interrupted_reason = (
            f"interrupted by {signal_name}; its point resumes from its checkpoints on the next start"
        )
        self.stop_reason = f"interrupted by {signal_name}"

    def abandon_running(self, reason: str) -> list[int]:
        """Fail every trial still in flight (the run ended under them); return their numbers."""
        numbers = [number for number in self._running.values() if self._fail_if_running(number, reason)]
        self._running.clear()
        return numbers

    def __getstate__(self) -> dict:
        # Tune pickles its search algorithm for Tuner.restore, which the driver never uses
        # (the study in SQL is the state): leave out the live database and thread handles.
        return {k: v for k, v in self.__dict__.items() if k not in ("study", "heartbeat", "_sampler", "_proposing")}

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "w") as file:
            json.dump({"running": self._running, "stop_reason": self.stop_reason}, file)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path) as file:
            state = json.load(file)
        self._running, self.stop_reason = state["running"], state["stop_reason"]

    def _ask(self, point: tuple[int, float]) -> optuna.Trial:
        """Ask the study for a trial at the point the sampler chose just now.

        Fixing the point keeps ``ask`` from running the sampler again, which could reach a
        different decision (or none) if a worker recorded a result in between.
        """
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            fixed = PartialFixedSampler({"N": point[0], "s": point[1]}, self._sampler)
        view = optuna.load_study(study_name=self.study.study_name, storage=study_storage(self.study), sampler=fixed)
        return view.ask(self._distributions)

    def _wait(self) -> None:
        """The sampler waits for pending trials: ask it again when one completes (or soon)."""
        self._recheck_at = time.monotonic() + RECHECK_SECONDS

    def _finish(self, reason: str) -> str:
        self.stop_reason = reason
        return Searcher.FINISHED

    def _fail_if_running(self, number: int, reason: str) -> bool:
        return fail_trial(self.study, number, reason)

    def _stop_on_failure(self, number: int) -> None:
        self.failed.append(number)
        self.stop_reason = f"trial {number} failed"

    def _error_reason(self, number: int) -> str:
        """Why Ray gave up on a trial: the last cause its attempts recorded, if any."""
        attempts = failed_attempts(self.study, trial_id(self.study, number))
        if not attempts:
            return "its worker failed after Ray's retries (see Ray's trial logs)"
        return f"{attempts[-1]['cause']} (after Ray's retries; full log: {attempts[-1]['log']})"


def trained_count(study: optuna.Study) -> int:
    """Points trained, in training or stopped early in the study (imported points are not counted)."""
    states = (TrialState.COMPLETE, TrialState.RUNNING, TrialState.PRUNED)
    return sum(t.user_attrs.get("source") != IMPORTED for t in study.get_trials(deepcopy=False, states=states))
