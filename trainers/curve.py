"""A point's learning curve: each evaluation at the point's own cumulative training step.

A point trains its stages in a fixed order (retrieval, mlm, finetune, then prune and
pruned_finetune when s > 0), each a known number of steps, so an evaluation after step k of a
stage is at step (steps of the stages before it) + k of the point. Phases 1-2 are shared by
every s of an N (the cache): a point that reuses them still has their evaluations at the start
of its curve, reported again from the cached stage records without re-training.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from trainers.recipes import Recipe

PHASE12_STAGES = ("retrieval", "mlm", "finetune")
PHASE3_STAGES = ("prune", "pruned_finetune")
STAGE_ORDER = PHASE12_STAGES + PHASE3_STAGES


@dataclass(frozen=True)
class Evaluation:
    """One evaluation of a point: validation accuracy (and cross-entropy, where recorded) after ``step`` of its
    training steps, in ``stage``."""

    step: int
    accuracy: float
    stage: str
    total_steps: int  # the step at which the point's training ends
    again: bool = False  # made earlier (a resumed or cached stage) and reported once more
    cross_entropy: float | None = None


def point_stages(recipe: Recipe, N: int, s: float, train_size: int, trained: Iterable[str]) -> list[tuple[str, int]]:
    """The stages the point trains, in order, with their steps; ``trained`` names the phase 1-2 stages it trains."""
    trained = set(trained)
    stages = [stage for stage in PHASE12_STAGES if stage in trained]
    if s > 0:
        stages += PHASE3_STAGES
    return [(stage, recipe.stage_steps(stage, train_size, N)) for stage in stages]


def settling_steps(recipe: Recipe, N: int, train_size: int) -> dict[str, int]:
    """Per stage, the steps at its start over which its accuracy does not yet rank models: the pruning
    stage's Lagrangian warm-up, while the sparsity target ramps up to s and accuracy dips with it."""
    prune = recipe.stage_steps("prune", train_size, N)
    return {"prune": min(prune, recipe.stage_steps("lagrangian_warmup", train_size, N))}


class PointCurve:
    """An evaluation sink (``trainers.progress.reporting_evaluations``) that places each stage's
    evaluations on the point's step axis, keeps them in ``evaluations_`` and hands each to ``sink``."""

    def __init__(self, sink: Callable[[Evaluation], None] | None = None) -> None:
        self.sink = sink
        self.offsets_: dict[str, int] = {}
        self.stages_: list[tuple[str, int]] = []
        self.total_steps_ = 0
        self.evaluations_: list[Evaluation] = []

    def plan(self, stages: list[tuple[str, int]]) -> PointCurve:
        """Set the point's stages (name, steps) in training order."""
        self.stages_, offset = stages, 0
        for stage, steps in stages:
            self.offsets_[stage] = offset
            offset += steps
        self.total_steps_ = offset
        return self

    def __call__(
        self, stage: str, step: int, accuracy: float, cross_entropy: float | None = None, again: bool = False
    ) -> None:
        if stage not in self.offsets_:  # a stage of another job (e.g. the dense model a wider one starts from)
            return
        point_step = self.offsets_[stage] + step
        evaluation = Evaluation(point_step, accuracy, stage, self.total_steps_, again, cross_entropy)
        self.evaluations_ = [e for e in self.evaluations_ if e.step != evaluation.step] + [evaluation]
        if self.sink is not None:
            self.sink(evaluation)

    def reached(self, step: int) -> Callable[[str, int], bool]:
        """A pause check (``trainers.progress.pausing``): true once a stage of the point is at or past ``step``."""
        return lambda stage, done: stage in self.offsets_ and self.offsets_[stage] + done >= step

    def rows(self) -> list[list]:
        """The evaluations as JSON rows ``[step, accuracy, stage]``, by step."""
        return [[e.step, e.accuracy, e.stage] for e in sorted(self.evaluations_, key=lambda e: e.step)]
