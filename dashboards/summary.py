"""What a study has found so far, gathered once for the note, the figures and the report."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import optuna
import pandas as pd
from optuna.trial import TrialState

from dashboards.figures import point_label
from search.compute import Compute, search_compute
from search.sampler import censored_points, stopped_points
from search.surrogate import AutoPruMUX
from storage import StudySettings, accuracy_threshold, mask_url, points_frame, recommend, study_settings
from storage.curves import curves_frame


@dataclass(frozen=True)
class StudySummary:
    """A study's settings, trials, measured points, threshold, recommendation and surrogate.

    ``points`` holds the COMPLETE trials, ``trials`` every trial, ``curves`` every evaluation
    of the trials' learning curves (``storage.curves.curves_frame``); ``surrogate`` is a fitted
    ``search.AutoPruMUX`` or None when the points cannot be fitted yet; ``compute`` the training
    steps the search spent against the exhaustive grid's (``search.compute``).
    """

    name: str
    settings: StudySettings | None
    trials: pd.DataFrame
    points: pd.DataFrame
    threshold: float | None
    recommended: pd.Series | None
    surrogate: AutoPruMUX | None
    curves: pd.DataFrame
    compute: Compute | None

    def facts(self) -> list[tuple[str, str]]:
        """Label and value pairs describing the search, passwords masked."""
        counts = self.trials["state"].value_counts()
        states = ", ".join(f"{counts[state]} {state.lower()}" for state in counts.index)
        facts = [("study", self.name)]
        if self.settings is not None:
            settings = self.settings
            facts += [
                ("task", settings.task),
                ("base model", settings.base_model),
                ("recipe", settings.recipe),
                ("budget", f"{settings.budget:g} accuracy below dense"),
                ("grid", f"N in {_set(settings.grid_N)}, s in {_set(settings.grid_s)}"),
            ]
        facts += [
            ("accuracy threshold", "unknown" if self.threshold is None else f"{self.threshold:.4f}"),
            ("trials", states or "none"),
            ("training compute", "unknown" if self.compute is None else self.compute.describe()),
            ("current best", self._best()),
            ("hardware", ", ".join(self.hardware()) or "unknown"),
        ]
        if self.settings is not None and self.settings.command:
            facts.append(("command", self.settings.command))
        return [(label, mask_url(value)) for label, value in facts]

    def hardware(self) -> list[str]:
        """The distinct hardware the points were measured on."""
        if "hardware" not in self.points:
            return []
        return sorted({str(value) for value in self.points["hardware"].dropna()})

    def recommended_point(self) -> tuple[int, float] | None:
        """The recommended (N, s), if any point is feasible."""
        if self.recommended is None:
            return None
        return int(self.recommended["N"]), float(self.recommended["s"])

    def _best(self) -> str:
        if self.recommended is None:
            return "none feasible yet"
        row = self.recommended
        return (
            f"{point_label(row['N'], row['s'])} trial {row['number']}: accuracy {row['accuracy']:.4f}, "
            f"{row['speedup']:.2f}x dense throughput ({row['throughput']:.4g} examples/s)"
        )


def summarize(study: optuna.Study, surrogate: AutoPruMUX | None = None) -> StudySummary:
    """Gather ``study``'s state; fit a surrogate on its points unless one is given."""
    points = points_frame(study)
    settings = study_settings(study)
    trials = study.get_trials(deepcopy=False)
    stopped = stopped_points(trials)
    return StudySummary(
        name=study.study_name,
        settings=settings,
        trials=points_frame(study, states=tuple(TrialState)),
        points=points,
        threshold=accuracy_threshold(study),
        recommended=recommend(points),
        surrogate=surrogate if surrogate is not None else fit_surrogate(points, censored_points(stopped)),
        curves=curves_frame(study),
        compute=None if settings is None else search_compute(trials, settings.grid_N, settings.grid_s),
    )


def fit_surrogate(points: pd.DataFrame, censored: pd.DataFrame | None = None) -> AutoPruMUX | None:
    """An ``AutoPruMUX`` fitted on the points and the upper bounds of the points stopped early (as the
    sampler fits it: a stopped phase-2 curve caps its whole N column), or None while they cannot be fitted."""
    if len(points) < 2:
        return None
    try:
        return AutoPruMUX().fit(points[["N", "s", "accuracy", "throughput"]], censored=censored)
    except (ValueError, np.linalg.LinAlgError):
        return None


def _set(values: tuple[float, ...]) -> str:
    return "{" + ", ".join(f"{value:g}" for value in values) + "}"
