"""One (N, s) point of a search, as every layer from the driver down to `train_point` names it."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

from trainers.recipes import Recipe, load_recipe


def check_point(N: int, s: float) -> None:
    """A grid point: N an integer >= 1 (1 = no multiplexing), s a sparsity in [0, 1)."""
    if isinstance(N, bool) or not isinstance(N, int) or N < 1:
        raise ValueError(f"N must be an integer >= 1, got {N!r}")
    if isinstance(s, bool) or not isinstance(s, (int, float)) or math.isnan(s) or not 0 <= s < 1:
        raise ValueError(f"sparsity s must be in [0, 1), got {s!r}")


@dataclass(frozen=True)
class PointSpec:
    """The point (N, s) of ``task`` on ``base_model``, trained with ``recipe`` in the work dir ``workdir``.

    ``recipe`` may be given as a recipe's name or file; it is loaded. N and s are checked (`check_point`).
    """

    task: str
    base_model: str
    N: int
    s: float
    recipe: Recipe
    workdir: str | Path

    def __post_init__(self) -> None:
        check_point(self.N, self.s)
        if not isinstance(self.recipe, Recipe):
            object.__setattr__(self, "recipe", load_recipe(self.recipe))

    @property
    def label(self) -> str:
        """``task/base_model/N=../s=..``: how logs and errors name the point."""
        return f"{self.task}/{self.base_model}/N={self.N}/s={self.s:g}"

    def at(self, N: int, s: float) -> PointSpec:
        """The same search's point (N, s)."""
        return replace(self, N=N, s=s)

    def with_recipe(self, recipe: Recipe) -> PointSpec:
        """The point trained with another recipe (one configuration of a sweep)."""
        return replace(self, recipe=recipe)

    def in_workdir(self, workdir: str | Path) -> PointSpec:
        """The point trained in another work dir (a node's local mirror of a shared one)."""
        return replace(self, workdir=workdir)
