"""The training compute a search has spent, against what the exhaustive grid would spend.

Steps are counted as they are trained: the phase 1-2 model of an N once (every s of N reuses it
from the cache), each pruned point's own phase-3 steps once, a point stopped early up to the step
it reached, a point trained again only beyond where it had got. The exhaustive grid trains every
grid point to its end with the study's recipe, phase 1-2 once per N. ``StepLedger`` keeps that
account, here and for the searches ``replay.curves`` replays.

A point's reach is read from its stored curve (``storage.curves``): a complete trial's planned
last step, a stopped one's ``stopped_step``, any other trial's last evaluation. The end of an N's
phase 1-2 is its last phase 1-2 evaluation (every stage evaluates at its end). A swept point
counts as one configuration here; its bracket's own cost is in its ``bracket`` attr.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from optuna.trial import FrozenTrial, TrialState

from storage.curves import read_curve
from storage.trials import trial_point
from trainers.curve import PHASE3_STAGES, PHASE12_STAGES
from trainers.recipes import Recipe, recipe_from_dict

Point = tuple[int, float]


@dataclass(frozen=True)
class Compute:
    """Training steps a search spent and the exhaustive grid's (None where the recipe is unknown)."""

    spent: int
    grid: int | None

    def describe(self) -> str:
        """One line, e.g. ``700 training steps, 36% of the exhaustive grid's 1920``."""
        if not self.grid:
            return f"{self.spent} training steps"
        return f"{self.spent} training steps, {100 * self.spent / self.grid:.0f}% of the exhaustive grid's {self.grid}"


class StepLedger:
    """Training steps spent: phase 2 once per N (``phase2_ends``: the step it ends at; a point of an N
    not in it counts as all phase 2), each point's own steps after it once per point; training a point
    further costs only the new steps."""

    def __init__(self, phase2_ends: dict[int, int]) -> None:
        self.phase2_ends = phase2_ends
        self.phase2: dict[int, int] = {}
        self.own: dict[Point, int] = {}

    def train(self, point: Point, step: int) -> None:
        """Record that ``point`` has been trained to ``step``."""
        end = self.phase2_ends.get(point[0], step)
        self.phase2[point[0]] = max(self.phase2.get(point[0], 0), min(step, end))
        if point[1] > 0:
            self.own[point] = max(self.own.get(point, 0), step - end)

    @property
    def steps(self) -> int:
        return sum(self.phase2.values()) + sum(self.own.values())


def search_compute(trials: Sequence[FrozenTrial], grid_N: Sequence[int], grid_s: Sequence[float]) -> Compute:
    """What the study's ``trials`` trained, and the exhaustive ``grid_N`` x ``grid_s`` grid's steps."""
    phase2_ends: dict[int, int] = {}
    reached: list[tuple[Point, int]] = []
    for trial in trials:
        point = trial_point(trial)
        curve = read_curve(trial)
        step = _reach(trial, curve.steps)
        if point is None or step is None:
            continue
        reached.append((point, step))
        ends = [at for at in curve.steps if curve.stage_at(at) in PHASE12_STAGES]
        if ends and (point[1] == 0 or any(curve.stage_at(at) in PHASE3_STAGES for at in curve.steps)):
            phase2_ends[point[0]] = max(ends)
    ledger = StepLedger(phase2_ends)
    for point, step in reached:
        ledger.train(point, step)
    return Compute(ledger.steps, _grid_steps(trials, grid_N, grid_s))


def _grid_steps(trials: Sequence[FrozenTrial], grid_N: Sequence[int], grid_s: Sequence[float]) -> int | None:
    """Every grid point to its end with the recipe of the study's complete trials, their training-split size,
    and per N the phase 1-2 stages its points train (a seen N's ``phases``; else those the recipe runs)."""
    done = [t for t in trials if t.state == TrialState.COMPLETE and "recipe_values" in t.user_attrs]
    train_size = max((int(t.user_attrs.get("train_size", 0)) for t in done), default=0)
    if not train_size:
        return None
    recipe = recipe_from_dict(done[0].user_attrs["recipe_values"])
    phase12 = {N: tuple(stage for stage in PHASE12_STAGES if recipe.runs(stage)) for N in grid_N}
    for trial in done:
        phases = trial.user_attrs.get("phases", {})
        phase12[trial_point(trial)[0]] = tuple(stage for stage in PHASE12_STAGES if phases.get(stage) == "trained")
    pruned = sum(1 for s in grid_s if s > 0)
    return sum(
        _steps(recipe, phase12[N], N, train_size) + pruned * _steps(recipe, PHASE3_STAGES, N, train_size)
        for N in grid_N
    )


def _steps(recipe: Recipe, stages: tuple[str, ...], N: int, train_size: int) -> int:
    return sum(recipe.stage_steps(stage, train_size, N) for stage in stages)


def _reach(trial: FrozenTrial, steps: tuple[int, ...]) -> int | None:
    if trial.state == TrialState.COMPLETE and "curve_total_steps" in trial.user_attrs:
        return int(trial.user_attrs["curve_total_steps"])
    if "stopped_step" in trial.user_attrs:
        return int(trial.user_attrs["stopped_step"])
    return steps[-1] if steps else None
