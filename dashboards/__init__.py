"""Our views of a search: the frontier and surrogate figures, dashboard publishing, the report."""

from dashboards.figures import frontier_figure, pareto_frontier, surrogate_figure
from dashboards.publish import publish
from dashboards.report import write_report
from dashboards.summary import StudySummary, summarize

__all__ = [
    "StudySummary",
    "frontier_figure",
    "pareto_frontier",
    "publish",
    "summarize",
    "surrogate_figure",
    "write_report",
]
