"""Our views of a search: the frontier and surrogate figures, dashboard publishing, the report."""

from dashboards.figures import frontier_figure
from dashboards.figures import pareto_frontier
from dashboards.figures import surrogate_figure
from dashboards.publish import publish
from dashboards.report import write_report
from dashboards.summary import StudySummary
from dashboards.summary import summarize

__all__ = [
    "StudySummary",
    "frontier_figure",
    "pareto_frontier",
    "publish",
    "summarize",
    "surrogate_figure",
    "write_report",
]
