"""The evaluation noise of an accuracy measured on a finite validation split, and what a budget can resolve.

An accuracy ``a`` measured on ``rows`` validation rows is a binomial share: one row moves it by
``1 / rows``, and its standard error is ``sqrt(a (1 - a) / rows)``. Feasibility compares a point's
accuracy with the threshold, the dense accuracy less the budget; a budget *resolves* on the split
when it spans at least two standard errors (``RESOLVING_ERRORS``): below it, a point as good as the
dense model and one a whole budget worse are told apart by chance.
Where the accuracy is not known yet the error is taken at 50%, its largest.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import optuna
import pandas as pd

from storage.study import study_validation_rows
from storage.trials import dense_accuracy

RESOLVING_ERRORS = 2.0  # standard errors of an accuracy that a budget must span


@dataclass(frozen=True)
class ValidationNoise:
    """The noise of accuracies measured on ``rows`` validation rows, at ``accuracy`` (None: the worst case, 50%)."""

    rows: int
    accuracy: float | None = None

    def __post_init__(self) -> None:
        if self.rows < 1:
            raise ValueError(f"validation rows must be at least 1, got {self.rows}")

    @property
    def one_row(self) -> float:
        """The accuracy one validation row is worth."""
        return 1.0 / self.rows

    @property
    def standard_error(self) -> float:
        """One binomial standard error of the accuracy."""
        p = 0.5 if self.accuracy is None else min(max(self.accuracy, 0.0), 1.0)
        return math.sqrt(max(p * (1 - p), 0.25 / self.rows) / self.rows)

    @property
    def difference_error(self) -> float:
        """One standard error of the difference of two such accuracies (each on ``rows`` rows)."""
        return math.sqrt(2) * self.standard_error

    @property
    def resolution(self) -> float:
        """The smallest budget the split resolves (two standard errors)."""
        return RESOLVING_ERRORS * self.standard_error

    def rows_for(self, budget: float) -> int:
        """Validation rows at which ``budget`` is resolved."""
        p = 0.5 if self.accuracy is None else self.accuracy
        return math.ceil(RESOLVING_ERRORS**2 * p * (1 - p) / budget**2) if budget > 0 else 0

    def describe(self) -> str:
        """One line: the rows, what one row and one standard error are in accuracy points."""
        where = "at 50% accuracy, the largest" if self.accuracy is None else f"at {self.accuracy:.3f}"
        return (
            f"feasibility is decided on {self.rows:,} validation rows: one row is {100 * self.one_row:.2f} "
            f"accuracy points, one standard error {100 * self.standard_error:.2f} points ({where})"
        )

    def warning(self, budget: float) -> str | None:
        """A one-line warning when ``budget`` is below what the split resolves (None when it is not)."""
        if budget >= self.resolution:
            return None
        return (
            f"warning: the budget ({100 * budget:g} points) is below what {self.rows:,} validation rows resolve "
            f"({100 * self.resolution:.1f} points, two standard errors): "
            f"a point as good as dense and one a whole budget worse are told apart by chance; use a validation split of at least "
            f"{self.rows_for(budget):,} rows or a budget of at least {100 * self.resolution:.1f} points"
        )


def within_noise(
    recommended: tuple[float, float],
    others: Sequence[tuple[str, float, float]],
    threshold: float,
    noise: ValidationNoise,
) -> list[str]:
    """Why a recommendation (accuracy, throughput) is within noise: itself within one standard error of
    the threshold, or a faster point (name, accuracy, throughput) that missed the threshold by less."""
    accuracy, throughput = recommended
    error = noise.standard_error
    notes = []
    if accuracy - threshold < error:
        notes.append(
            f"its accuracy is {100 * (accuracy - threshold):.2f} points above the threshold, within one standard "
            f"error ({100 * error:.2f}): measured again it may fall below"
        )
    for name, other_accuracy, other_throughput in others:
        if other_throughput > throughput and 0 < threshold - other_accuracy < error:
            notes.append(
                f"{name} is faster ({other_throughput:.2f} against {throughput:.2f}) and missed the threshold by "
                f"{100 * (threshold - other_accuracy):.2f} points, within one standard error"
            )
    return notes


def validation_rows(split_rows: int, max_eval_examples: int | None) -> int:
    """The validation rows a point's final accuracy is measured on: the split, or the recipe's cap on it."""
    return split_rows if max_eval_examples is None else min(split_rows, max_eval_examples)


def evaluation_rows(validation_rows: int | None, eval_examples: int | None) -> int | None:
    """The rows an evaluation during training is measured on: the first ``eval_examples`` (the recipe's) of the
    ``validation_rows`` (``trainers.phases``); None when neither is known (exact)."""
    if validation_rows is None or eval_examples is None:
        return eval_examples if validation_rows is None else validation_rows
    return min(validation_rows, eval_examples)


def study_noise(study: optuna.Study) -> ValidationNoise | None:
    """The noise of the study's accuracies at its dense accuracy (None when no ``start`` recorded its validation
    rows: ``storage.study.record_validation_rows``)."""
    rows = study_validation_rows(study)
    return None if rows is None else ValidationNoise(rows, dense_accuracy(study))


def recommendation_notes(
    points: pd.DataFrame, recommended: pd.Series, threshold: float, noise: ValidationNoise
) -> list[str]:
    """``within_noise`` for a study's recommended row among its measured ``points`` (N, s, accuracy, speedup)."""
    others = [
        (f"(N={int(row.N)}, s={row.s:g})", float(row.accuracy), float(row.speedup))
        for row in points.itertuples(index=False)
    ]
    return within_noise((float(recommended["accuracy"]), float(recommended["speedup"])), others, threshold, noise)
