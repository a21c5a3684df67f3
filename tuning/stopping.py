"""``BudgetStopping``: a Ray Tune scheduler that stops a trial once its point can no longer matter.

Each trial reports every evaluation of its point (``tuning.trainable``): validation accuracy at
the point's own training step. At each one the scheduler asks ``search.curves.decide_stop``
whether the point is done for:

- its accuracy cannot reach the study's threshold (dense accuracy - budget): an upper bound of
  its final accuracy, from a learning-curve model (``CurveBound``) fitted on the curves of the
  study's finished points, falls below it; or
- even meeting the threshold, its throughput cannot beat the best feasible point so far (its
  throughput as the Auto-PruMUX model predicts it, optimistically: its margin added).

Evaluations reported again (a cached phase 1-2 model's, a resumed stage's) arrive one at a time;
the curve they make is judged once they are all in, at the trial's next progress report, so a
prefix that is already complete never looks like a curve cut short. The dense (1, 0) trial is never stopped (it defines the threshold), and nothing is stopped
before the dense accuracy is known. A STOP reaches the searcher through Tune's
``on_trial_complete`` with the last result, as for any stopped trial; Tune hands the scheduler a
copy of each result, so the decisions are shared with the searcher through ``decisions``
(both live in the driver process), and the searcher records the trial PRUNED with its bound.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import optuna
from optuna.trial import TrialState
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from search.curves import Curve, CurveBound, StopDecision, decide_stop
from search.sampler import measured_points
from search.surrogate import AutoPruMUX
from storage.curves import record_stopped
from storage.points import is_dense, is_feasible, threshold
from storage.trials import TrialRef, dense_trial

if TYPE_CHECKING:
    from ray.tune.execution.tune_controller import TuneController
    from ray.tune.experiment import Trial


@dataclass(frozen=True)
class Stop:
    """A trial the scheduler stopped: its curve so far, the decision, the threshold it was judged by."""

    number: int
    curve: Curve
    decision: StopDecision
    threshold: float
    throughput: float  # examples/s, as the Auto-PruMUX model predicts it

    def record(self, study: optuna.Study) -> bool:
        """Store the trial as stopped (PRUNED, with its bound and reason); False if it had finished."""
        return record_stop(study, self.number, self.curve, self.decision, self.threshold, self.throughput, "predicted")


class BudgetStopping(FIFOScheduler):
    """Run trials in order (FIFO) and STOP those whose point cannot reach the budget or beat the best.

    Parameters
    ----------
    study:
        The search's study: its finished curves, the dense accuracy and the feasible points.
    budget:
        Accuracy loss allowed below the dense (1, 0) accuracy.
    throughput_margin:
        Relative error allowed on a predicted throughput (the sampler's).
    enabled:
        False records curves but never stops (``--no-early-stopping``).
    eval_rows:
        Validation rows of each evaluation during training (``search.noise.evaluation_rows``): their
        noise widens the bound (``CurveBound``).
    """

    def __init__(
        self,
        study: optuna.Study,
        budget: float,
        throughput_margin: float = 0.2,
        enabled: bool = True,
        eval_rows: int | None = None,
    ):
        super().__init__()
        self.study = study
        self.budget = budget
        self.throughput_margin = throughput_margin
        self.enabled = enabled
        self.eval_rows = eval_rows
        self.decisions: dict[str, Stop] = {}  # Tune trial id -> why it was stopped (read by the searcher)
        self._curves: dict[str, list[tuple[int, float, str]]] = {}
        self._total_steps: dict[str, int] = {}
        self._undecided: set[str] = set()  # trials whose curve grew by evaluations reported again
        self._bound: CurveBound | None = None
        self._bound_fitted_on: tuple[int, ...] = ()

    def on_trial_result(self, tune_controller: TuneController, trial: Trial, result: dict) -> str:
        rows = self._curves.setdefault(trial.trial_id, [])
        if result.get("evaluation"):
            rows[:] = [row for row in rows if row[0] != int(result["step"])]
            rows.append((int(result["step"]), float(result["accuracy"]), str(result["stage"])))
            rows.sort()
            self._total_steps[trial.trial_id] = int(result["total_steps"])
            if result.get("again"):  # a cached or resumed curve arrives one row at a time: judge it whole
                self._undecided.add(trial.trial_id)
                return TrialScheduler.CONTINUE
        elif trial.trial_id not in self._undecided:
            return TrialScheduler.CONTINUE
        self._undecided.discard(trial.trial_id)
        stop = self.decide(result, rows, self._total_steps[trial.trial_id]) if self.enabled and rows else None
        if stop is None:
            return TrialScheduler.CONTINUE
        self.decisions[trial.trial_id] = stop
        return TrialScheduler.STOP

    def on_trial_complete(self, tune_controller: TuneController, trial: Trial, result: dict) -> None:
        self._forget(trial.trial_id)

    def on_trial_remove(self, tune_controller: TuneController, trial: Trial) -> None:
        self._forget(trial.trial_id)

    def _forget(self, trial_id: str) -> None:
        self._curves.pop(trial_id, None)
        self._total_steps.pop(trial_id, None)
        self._undecided.discard(trial_id)

    def decide(self, result: dict, rows: list[tuple[int, float, str]], total_steps: int) -> Stop | None:
        """Whether the trial's point, with the curve ``rows`` so far, should stop now."""
        N, s = int(result["N"]), float(result["s"])
        dense = dense_trial(self.study)
        if is_dense(N, s) or dense is None or rows[-1][0] >= total_steps:  # at its last step nothing is saved
            return None
        dense_accuracy, dense_throughput = dense.values
        judged_by = threshold(dense_accuracy, self.budget)
        curve = Curve(
            N=N,
            s=s,
            steps=tuple(r[0] for r in rows),
            accuracies=tuple(r[1] for r in rows),
            total_steps=total_steps,
            stages=_stage_ranges(rows),
        )
        throughput, incumbent = self._throughputs(N, s, judged_by)
        speedup = throughput / dense_throughput
        best = None if incumbent is None else incumbent / dense_throughput
        decision = decide_stop(curve, self._fitted_bound(), judged_by, speedup, best)
        if decision is None:
            return None
        return Stop(int(result["trial_number"]), curve, decision, judged_by, throughput)

    def _fitted_bound(self) -> CurveBound:
        """The curve model, refitted whenever the study has finished another point."""
        finished = self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        numbers = tuple(trial.number for trial in finished)
        if self._bound is None or numbers != self._bound_fitted_on:
            curves = [curve for curve in map(Curve.from_trial, finished) if curve is not None and curve.finished]
            self._bound, self._bound_fitted_on = CurveBound(eval_rows=self.eval_rows).fit(curves), numbers
        return self._bound

    def _throughputs(self, N: int, s: float, threshold: float) -> tuple[float, float | None]:
        """The point's optimistic predicted throughput and the best feasible throughput so far."""
        measured = measured_points(self.study.get_trials(deepcopy=False))
        feasible = measured[is_feasible(measured["accuracy"].to_numpy(), threshold)]
        incumbent = float(feasible["throughput"].max()) if len(feasible) else None
        prediction = AutoPruMUX().fit(measured).predict(N, s)
        margin = 0.0 if prediction.throughput_measured[0] else self.throughput_margin
        return float(prediction.throughput[0]) * (1 + margin), incumbent

    def __getstate__(self) -> dict:
        # Tune pickles its scheduler for Tuner.restore, which the driver never uses (the study is the state)
        return {key: value for key, value in self.__dict__.items() if key not in ("study", "_bound")}


def _stage_ranges(rows: list[tuple[int, float, str]]) -> tuple[tuple[int, str], ...]:
    ranges: list[tuple[int, str]] = []
    for step, _, stage in rows:
        if not ranges or ranges[-1][1] != stage:
            ranges.append((step, stage))
    return tuple(ranges)


def record_stop(
    study: optuna.Study,
    trial: TrialRef,
    curve: Curve,
    decision: StopDecision,
    threshold: float,
    throughput: float | None,
    throughput_source: str,
) -> bool:
    """Store a RUNNING trial as stopped by ``decision`` (storage.curves.record_stopped), with
    ``bound_column`` and ``stopped_step`` for the sampler; False if it had finished."""
    return record_stopped(
        study,
        trial,
        accuracy=float(curve.accuracies[-1]),
        bound=decision.bound,
        threshold=threshold,
        throughput=math.nan if throughput is None else float(throughput),
        throughput_source=throughput_source,
        reason=decision.reason,
        kind=decision.kind,
        attrs={"bound_column": decision.column, "stopped_step": int(curve.steps[-1])},
    )
