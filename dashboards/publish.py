"""Storing our figures and a summary note with the study, for the live optuna-dashboard."""

from __future__ import annotations

import optuna
from optuna_dashboard import save_note, save_plotly_graph_object

from dashboards.figures import frontier_figure, learning_curves_figure, surrogate_figure
from dashboards.summary import StudySummary, summarize
from search.surrogate import AutoPruMUX

FRONTIER_ID = "prumux-frontier"
SURROGATE_ID = "prumux-surrogate-map"
CURVES_ID = "prumux-learning-curves"


def publish(
    study: optuna.Study,
    surrogate: AutoPruMUX | None = None,
    next_point: tuple[int, float] | None = None,
) -> StudySummary:
    """Store the frontier figure, the learning curves, the surrogate map and the summary note with ``study``.

    Call after every finished trial. ``surrogate`` defaults to one fitted on the study's
    points; the map needs the study's settings (grid, budget) and is skipped without them.
    """
    summary = summarize(study, surrogate)
    frontier = frontier_figure(summary.points, summary.threshold, summary.recommended_point())
    save_plotly_graph_object(study, frontier, graph_object_id=FRONTIER_ID)
    if len(summary.curves):
        curves = learning_curves_figure(summary.curves, summary.threshold)
        save_plotly_graph_object(study, curves, graph_object_id=CURVES_ID)
    if summary.surrogate is not None and summary.settings is not None:
        settings = summary.settings
        surrogate_map = surrogate_figure(
            summary.surrogate, settings.grid_N, settings.grid_s, settings.budget, next_point
        )
        save_plotly_graph_object(study, surrogate_map, graph_object_id=SURROGATE_ID)
    save_note(study, note_markdown(summary))
    return summary


def note_markdown(summary: StudySummary) -> str:
    """The study note: a table of the search's facts (passwords masked)."""
    lines = [f"## PruMUX search `{summary.name}`", "", "| | |", "| --- | --- |"]
    lines += [f"| {label} | {_cell(value)} |" for label, value in summary.facts()]
    lines += ["", "The frontier and the surrogate map are stored as this study's graphs, refreshed after every trial."]
    return "\n".join(lines)


def _cell(value: str) -> str:
    return value.replace("|", "\\|").replace("\n", " ")
