"""A point's learning curve and the decision to stop training it early.

A ``Curve`` is a point's validation accuracy after each evaluation, at the point's own cumulative
training step, with the stage each step range belongs to (``finetune``: phase 2; for s > 0 then
``prune``: the sparsity ramp with distillation; ``pruned_finetune``: the pruned model's recovery).

``CurveBound`` is a conservative upper bound of a point's *final* validation accuracy from its
curve so far, fitted on the curves this study has already trained to their end. It is the
smaller of two bounds (each only where it applies):

* **Teacher bound** (s > 0, once the phase-2 part is complete): pruning with distillation rarely
  ends above the teacher, the phase-2 model, so the final accuracy is at most the best phase-2
  accuracy plus ``teacher_margin`` and, on ``eval_rows`` rows, ``noise_errors`` standard errors of a
  difference of two accuracies (both are measured with noise: on 300 rows a pruned point ended 3
  points above its teacher's best evaluation). While phase 2 still trains, its own stage bound
  (below) plus ``teacher_margin``.
* **Stage bound** of the stage the point is in: the best accuracy of that stage so far plus the
  larger of

  - the *empirical gap*: over the finished curves, at the same step offset into the same stage,
    ``target - best so far`` (target: the point's final accuracy in the stage it ends with; the
    stage's best in the phase-2 stage, which bounds an (N, 0) point's final accuracy and is what
    the teacher bound of an (N, s > 0) point needs),
    taken at the ``quantile`` (``higher`` interpolation, so below 20 curves it is their largest
    gap), and at least ``default_gap`` (0.1): the largest gap of k exchangeable curves bounds a new
    one's only with probability k / (k + 1), and the finished curves are the survivors (a recovery
    that stalls on a plateau and climbs again later is stopped during its stall, never learnt from:
    the generated families' plateaus were stopped 20 times with bounds 0.2-3.7 points under the
    threshold). Curves sharing one phase-2 prefix count once;
  - the *linear extrapolation*: the steepest recent chord of the curve (over ``slope_window``
    evaluation intervals), its rise raised by ``noise_errors`` errors of a difference of two
    evaluations (on ``eval_rows``), carried to the end of the stage. A saturating (concave) curve lies
    below its chords' extensions, so a slow starter that still climbs keeps a high bound
    whatever the finished curves did; a chord between two noisy evaluations is itself noisy, and one
    evaluation a standard error high flattens the next chord (held-out generated tables, seeds 20-39:
    two N = 10 phase-2 curves still climbing, on 2,000 and 300 rows, were stopped with column bounds
    of 0.67 and 0.86 under their feasible finals of 0.80 and 0.88),

  plus the evaluation noise: ``margin``, or where the curve's evaluations are made on a sample of
  ``eval_rows`` validation rows, at least one binomial standard error of the stage's best on them
  (the final accuracy is measured on every validation row: a 256-row sample's best can sit 2-3
  points from it either way, measured on the cpu-demo (1, 0.7) point, 0.758 against a final 0.782,
  where two finished curves had put the empirical gap at 0.003). A stage's offsets count from its first recorded step (the
  step of its first evaluation, as storage.curves records stage ranges); every point of a study
  follows one recipe, so equal offsets are equal progress. There is no stage bound before ``min_fraction`` of the
  training its target depends on (the point's steps; phase 2's alone for the teacher bound of an s > 0 point, so a
  pruned point's phase 2 is judged as early as an (N, 0) point's), nor before the stage has *shown its rise*: at
  least three evaluations, the best above the first by more than ``noise_errors`` errors of a difference of two
  (``margin`` or the standard error on ``eval_rows``), and the latest chord less steep than the chord from the first
  evaluation to the one before (concave so far). The linear
  extrapolation and the gaps hold for a saturating curve; a curve still flat at its start or accelerating has not
  shown how far it will rise (the generated families' slow starters: phase 2 flat near chance for 30-60% of the
  stage, then a steep rise, were stopped at 30% of it with a column bound; README's default search no longer
  stops its flat (5, 0) at step 40).

The ``prune`` stage gets no stage bound at all: while the sparsity target ramps up accuracy dips
and recovers later in ``pruned_finetune``, so its accuracies say little about the final one; only
the teacher bound (and the throughput rule) can stop a point there.

``decide_stop`` stops a point whose bound falls below the threshold (kind ``threshold``), or
whose throughput, even meeting the threshold, cannot beat the best feasible point so far (kind
``throughput``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import optuna

from search.noise import ValidationNoise
from storage.curves import STOP_KINDS, read_curve
from storage.points import FEASIBILITY_TOLERANCE
from storage.trials import trial_point

TEACHER_STAGE = "finetune"
UNSTAGED = ""  # the stage name of a curve recorded without stage ranges


@dataclass(frozen=True)
class Curve:
    """A point's validation accuracy after each evaluation so far (steps: the point's own cumulative training steps)."""

    N: int
    s: float
    steps: tuple[int, ...]
    accuracies: tuple[float, ...]
    total_steps: int  # the step at which the point's training ends
    stages: tuple[tuple[int, str], ...] = ()  # (first_step, stage name) ranges: finetune, prune, pruned_finetune

    def __post_init__(self) -> None:
        if not self.steps or len(self.steps) != len(self.accuracies):
            raise ValueError(f"curve of (N={self.N}, s={self.s:g}) needs as many accuracies as steps, at least one")
        if any(later <= earlier for earlier, later in zip(self.steps, self.steps[1:])):
            raise ValueError(f"curve of (N={self.N}, s={self.s:g}): steps must increase")
        if self.total_steps < self.steps[-1]:
            raise ValueError(f"curve of (N={self.N}, s={self.s:g}) goes past its total steps {self.total_steps}")

    @classmethod
    def from_trial(cls, trial: optuna.trial.FrozenTrial) -> Curve | None:
        """The trial's curve as stored (storage.curves); None if it has none or no total steps."""
        point, stored = trial_point(trial), read_curve(trial)
        if not stored.steps or stored.total_steps is None or point is None:
            return None
        return cls(*point, stored.steps, stored.accuracies, stored.total_steps, stored.stages)

    @property
    def finished(self) -> bool:
        """Whether the curve reaches the point's last training step."""
        return self.steps[-1] >= self.total_steps

    def upto(self, step: int) -> Curve:
        """The curve as it was after training to ``step`` (its evaluations at steps <= step)."""
        keep = sum(1 for value in self.steps if value <= step)
        if keep == 0:
            raise ValueError(f"curve of (N={self.N}, s={self.s:g}) has no evaluation by step {step}")
        stages = tuple(item for item in self.stages if item[0] <= self.steps[keep - 1])
        return Curve(self.N, self.s, self.steps[:keep], self.accuracies[:keep], self.total_steps, stages)

    def stage_at(self, step: int) -> str:
        """The stage the point was training at ``step``."""
        named = [stage for first, stage in self.stages if first <= step]
        return named[-1] if named else UNSTAGED

    def segments(self) -> list[tuple[str, int, np.ndarray, np.ndarray]]:
        """The curve split by stage: (stage, first step, steps, accuracies), in order."""
        names = [self.stage_at(step) for step in self.steps]
        steps, accuracies = np.asarray(self.steps), np.asarray(self.accuracies, float)
        out, start = [], 0
        for index in range(1, len(names) + 1):
            if index == len(names) or names[index] != names[start]:
                first = max((f for f, stage in self.stages if stage == names[start] and f <= steps[start]), default=0)
                out.append((names[start], int(first), steps[start:index], accuracies[start:index]))
                start = index
        return out


class CurveBound:
    """Conservative upper bound of a point's final accuracy from its curve so far.

    Parameters
    ----------
    quantile:
        Quantile of the finished curves' gaps (``higher`` interpolation) at the same stage offset.
    margin:
        Accuracy added to every stage bound (evaluation noise).
    default_gap:
        The least gap: the finished curves are the survivors (a curve that stalls and climbs again later
        is stopped during its stall, never learnt from), so however many there are they do not bound a
        new curve's gap below it.
    teacher_margin:
        How far above its best phase-2 accuracy a pruned (s > 0) point may end.
    slope_window:
        Evaluation intervals over which the steepest recent chord is taken.
    min_fraction:
        Share of the training a stage bound's target depends on before which none applies.
    eval_rows:
        Validation rows each evaluation of a curve is made on (None: the curve is exact, e.g. derived).
    uninformative_stages:
        Stages whose accuracies bound nothing (the sparsity ramp's dip).
    noise_errors:
        Noise errors of a difference of two evaluations (``margin`` or the standard error on ``eval_rows``) by
        which a stage must have risen above its first evaluation before it is bounded, and (on ``eval_rows``)
        by which a pruned point may end above its teacher beyond ``teacher_margin``.
    """

    def __init__(
        self,
        quantile: float = 0.95,
        margin: float = 0.01,
        default_gap: float = 0.1,
        teacher_margin: float = 0.01,
        slope_window: int = 2,
        min_fraction: float = 0.25,
        uninformative_stages: Sequence[str] = ("prune",),
        eval_rows: int | None = None,
        noise_errors: float = 2.0,
    ) -> None:
        self.quantile = quantile
        self.margin = margin
        self.default_gap = default_gap
        self.teacher_margin = teacher_margin
        self.slope_window = slope_window
        self.min_fraction = min_fraction
        self.uninformative_stages = tuple(uninformative_stages)
        self.eval_rows = eval_rows
        self.noise_errors = noise_errors

    def fit(self, finished: Sequence[Curve]) -> CurveBound:
        """Learn the gaps of curves trained to their end (last entry = final accuracy)."""
        segments: dict[str, dict[tuple, tuple[np.ndarray, np.ndarray, float]]] = {}
        lengths: dict[str, int] = {}
        for number, curve in enumerate(finished):
            if not curve.finished:
                raise ValueError(f"curve of (N={curve.N}, s={curve.s:g}) is not finished")
            parts = curve.segments()
            for index, (stage, first, steps, accuracies) in enumerate(parts):
                last = index == len(parts) - 1
                end = curve.total_steps if last else parts[index + 1][1]
                lengths[stage] = max(lengths.get(stage, 0), end - first)
                if stage in self.uninformative_stages:
                    continue
                target = accuracies[-1] if last and stage != TEACHER_STAGE else accuracies.max()
                # A phase-2 prefix shared by every s of its N counts once.
                key = (curve.N, tuple(steps), tuple(accuracies)) if stage == TEACHER_STAGE else (number, index)
                segments.setdefault(stage, {})[key] = (steps - first, np.maximum.accumulate(accuracies), float(target))
        self.segments_ = {stage: list(found.values()) for stage, found in segments.items()}
        self.stage_lengths_ = lengths
        self.n_curves_ = len(finished)
        return self

    def upper_bound(self, curve: Curve) -> float:
        """A conservative upper bound of the point's final validation accuracy."""
        if curve.finished:
            return float(curve.accuracies[-1])
        return float(min(self.stage_bound(curve), self.teacher_bound(curve), 1.0))

    def teacher_bound(self, curve: Curve) -> float:
        """The bound from the phase-2 part alone (inf for s = 0 or a curve without one): it also
        bounds (N, 0), hence every s of N."""
        parts = curve.segments()
        if curve.s == 0 or parts[0][0] != TEACHER_STAGE:
            return math.inf
        # While phase 2 trains, the stage bound bounds its best; after it, its best is known.
        if len(parts) == 1:
            return self._segment_bound(curve) + self.teacher_margin
        best = float(parts[0][3].max())
        return best + self.teacher_margin + self.noise_errors * self._difference_error(best)

    def stage_bound(self, curve: Curve) -> float:
        """The bound from the stage the point is in (inf where none applies; in the phase-2 stage
        of an s > 0 point only the teacher bound applies)."""
        if curve.s > 0 and curve.stage_at(curve.steps[-1]) == TEACHER_STAGE:
            return math.inf
        return self._segment_bound(curve)

    def _segment_bound(self, curve: Curve) -> float:
        """Bound of the current stage's target: its best (phase 2 of s > 0) or the final accuracy."""
        stage, first, steps, accuracies = curve.segments()[-1]
        last_stage = not (stage == TEACHER_STAGE and curve.s > 0)
        end = curve.total_steps if last_stage else first + self._length(stage, curve)
        if stage in self.uninformative_stages or curve.steps[-1] < self.min_fraction * end:
            return math.inf
        if not self._saturating(steps, accuracies):
            return math.inf
        extrapolated = self._slope(curve) * max(end - curve.steps[-1], 0)
        best = float(accuracies.max())
        return best + max(self._gap(stage, curve.steps[-1] - first), extrapolated) + self._noise(best)

    def _saturating(self, steps: np.ndarray, accuracies: np.ndarray) -> bool:
        """Whether the stage's curve so far has shown its rise and slowed since: it has risen above its
        first evaluation by more than ``noise_errors`` noise errors of a difference of two evaluations, and
        its latest chord is less steep than its chord from the first evaluation to the one before (as on a
        concave curve, which is what the chord extrapolation assumes). A curve still flat at its start, or
        accelerating, has not shown how far it will rise: neither its own chords nor the gaps of curves that
        had risen by then bound it (a slow starter, flat near chance for half its stage, then rising steeply)."""
        if len(accuracies) < 3:
            return False
        risen = float(accuracies.max() - accuracies[0]) > self.noise_errors * math.sqrt(2) * self._noise(accuracies[0])
        latest = (accuracies[-1] - accuracies[-2]) / (steps[-1] - steps[-2])
        before = (accuracies[-2] - accuracies[0]) / (steps[-2] - steps[0])
        return risen and bool(latest < before)

    def _difference_error(self, accuracy: float) -> float:
        """The standard error of a difference of two accuracies near ``accuracy``, each on ``eval_rows`` rows (0: exact)."""
        return ValidationNoise(self.eval_rows, accuracy).difference_error if self.eval_rows else 0.0

    def _noise(self, accuracy: float) -> float:
        """``margin``, or the standard error of ``accuracy`` measured on ``eval_rows`` rows if larger."""
        if not self.eval_rows:
            return self.margin
        return max(self.margin, ValidationNoise(self.eval_rows, accuracy).standard_error)

    def _slope(self, curve: Curve) -> float:
        """Steepest chord over the last ``slope_window`` intervals (the curve has at least three evaluations), each
        chord's rise raised by ``noise_errors`` errors of a difference of two evaluations (on ``eval_rows``): one
        noisy evaluation can flatten a chord still climbing."""
        steps = np.asarray(curve.steps[-self.slope_window - 1 :], float)
        accuracies = np.asarray(curve.accuracies[-self.slope_window - 1 :], float)
        rises = np.diff(accuracies) + self.noise_errors * self._difference_error(float(accuracies.max()))
        return max(float((rises / np.diff(steps)).max()), 0.0)

    def _gap(self, stage: str, offset: int) -> float:
        gaps = [
            target - best[np.searchsorted(offsets, offset, side="right") - 1]
            for offsets, best, target in getattr(self, "segments_", {}).get(stage, [])
            if offsets[0] <= offset
        ]
        empirical = float(np.quantile(gaps, self.quantile, method="higher")) if gaps else 0.0
        return max(empirical, self.default_gap)

    def _length(self, stage: str, curve: Curve) -> int:
        """Steps of ``stage`` as the finished curves trained it (the rest of the point if unknown)."""
        known = getattr(self, "stage_lengths_", {}).get(stage)
        return known if known is not None else curve.total_steps


@dataclass(frozen=True)
class StopDecision:
    """Why a running point stops: it cannot reach the threshold, or cannot beat the incumbent."""

    kind: str  # "threshold" or "throughput" (storage.curves.STOP_KINDS)
    bound: float  # the accuracy upper bound at the decision
    reason: str  # one line, e.g. "cannot reach 0.779 (bound 0.70)"
    column: bool = False  # the bound came from the phase-2 curve: it holds for every s of the point's N

    def __post_init__(self) -> None:
        if self.kind not in STOP_KINDS:
            raise ValueError(f"stop kind must be one of {', '.join(STOP_KINDS)}, got {self.kind!r}")


def decide_stop(
    curve: Curve,
    bound: CurveBound,
    threshold: float,
    throughput: float | None = None,
    incumbent_throughput: float | None = None,
) -> StopDecision | None:
    """Stop when the point's accuracy bound is below ``threshold``, or when its ``throughput``
    (measured or predicted) does not beat ``incumbent_throughput``, the best feasible point's;
    None: keep training."""
    upper = bound.upper_bound(curve)
    column = curve.s == 0 or bound.teacher_bound(curve) <= upper
    if upper < threshold - FEASIBILITY_TOLERANCE:
        return StopDecision("threshold", upper, f"cannot reach {threshold:.3f} (bound {upper:.2f})", column)
    if throughput is not None and incumbent_throughput is not None and throughput <= incumbent_throughput:
        reason = f"cannot beat the best feasible {incumbent_throughput:.2f}x (at most {throughput:.2f}x)"
        return StopDecision("throughput", upper, reason, column)
    return None


def false_stops(
    decisions: Sequence[tuple[Curve, StopDecision]], finals: dict[tuple[int, float], float], threshold: float
) -> int:
    """Threshold stops whose point, trained to its end, would have met ``threshold``."""
    return sum(
        1
        for curve, decision in decisions
        if decision.kind == "threshold" and finals[(curve.N, curve.s)] >= threshold - FEASIBILITY_TOLERANCE
    )
