"""A self-contained HTML report of a study (plotly.js inlined: it opens without network)."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import plotly.graph_objects as go

from dashboards.figures import frontier_figure, learning_curves_figure, point_label, surrogate_figure
from dashboards.summary import StudySummary, summarize
from storage.points import dense_row, is_feasible, threshold
from storage.trials import configuration_text

BUDGETS = tuple(round(0.01 * k, 2) for k in range(11))
TRIAL_COLUMNS = (
    "number",
    "state",
    "N",
    "s",
    "family",
    "accuracy",
    "test_accuracy",
    "throughput",
    "speedup",
    "feasible",
    "hardware",
)
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border-bottom: 1px solid #ddd; padding: 4px 10px; text-align: left; }
code { background: #f4f4f4; padding: 2px 4px; }
"""


def write_report(study: optuna.Study, out_path: str | Path, png_dir: str | Path | None = None) -> Path:
    """Write the report of ``study`` to ``out_path``; with ``png_dir``, the figures as PNG too.

    A study without complete trials gives a page saying there is nothing yet.
    """
    summary = summarize(study)
    figures = report_figures(summary)
    out_path = Path(out_path)
    out_path.write_text(_page(summary, figures), encoding="utf-8")
    if png_dir is not None:
        write_pngs(figures, png_dir)
    return out_path


def report_figures(summary: StudySummary) -> dict[str, go.Figure]:
    """The report's figures by file stem: ``frontier``, ``learning-curves`` when trials have curves, and,
    when fitted, ``surrogate-map``."""
    if summary.points.empty:
        return {}
    figures = {"frontier": frontier_figure(summary.points, summary.threshold, summary.recommended_point())}
    if len(summary.curves):
        figures["learning-curves"] = learning_curves_figure(summary.curves, summary.threshold)
    if summary.surrogate is not None and summary.settings is not None:
        settings = summary.settings
        figures["surrogate-map"] = surrogate_figure(
            summary.surrogate, settings.grid_N, settings.grid_s, settings.budget
        )
    return figures


def write_pngs(figures: dict[str, go.Figure], png_dir: str | Path) -> list[Path]:
    """Write each figure as ``<png_dir>/<name>.png`` (kaleido, headless Chromium)."""
    try:
        import kaleido  # noqa: F401  (plotly's image export engine)
    except ImportError:
        raise ValueError("PNG export needs kaleido: pip install 'prumux-search[png]'") from None
    png_dir = Path(png_dir)
    png_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, figure in figures.items():
        path = png_dir / f"{name}.png"
        try:
            figure.write_image(path, width=1200, height=650)
        except Exception:  # noqa: BLE001 - under CPU load kaleido's Chromium can run a figure before its page is ready
            figure.write_image(path, width=1200, height=650)
        paths.append(path)
    return paths


def top_per_budget(points: pd.DataFrame, budgets: tuple[float, ...], k: int = 3) -> pd.DataFrame:
    """For each budget, the k measured points with the highest throughput within it."""
    dense = dense_row(points)
    if dense is None:
        return pd.DataFrame()
    dense_accuracy = float(dense["accuracy"])
    rows = []
    for budget in budgets:
        judged_by = threshold(dense_accuracy, budget)
        within = points[is_feasible(points["accuracy"].to_numpy(), judged_by)].sort_values(
            ["throughput", "accuracy"], ascending=False
        )
        best = [f"{point_label(r.N, r.s)} {r.speedup:.2f}x" for r in within.head(k).itertuples()]
        rows.append({"budget": budget, "threshold": judged_by, **{f"#{i + 1}": p for i, p in enumerate(best)}})
    return pd.DataFrame(rows)


def _page(summary: StudySummary, figures: dict[str, go.Figure]) -> str:
    title = f"PruMUX search report: {summary.name}"
    if summary.points.empty:
        body = f"<p>Nothing yet: study <code>{html.escape(summary.name)}</code> has no complete trials.</p>"
    else:
        body = "\n".join([_figures_html(figures), _trials_html(summary), _sweeps_html(summary), _budgets_html(summary)])
    return (
        f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head><body>\n<h1>{html.escape(title)}</h1>\n"
        f"{_facts_html(summary)}\n{body}\n</body></html>\n"
    )


def _facts_html(summary: StudySummary) -> str:
    rows = "".join(
        f"<tr><th>{html.escape(label)}</th><td>{_value_html(label, value)}</td></tr>"
        for label, value in summary.facts()
    )
    return f"<table class='facts'>{rows}</table>"


def _value_html(label: str, value: str) -> str:
    return f"<code>{html.escape(value)}</code>" if label == "command" else html.escape(value)


def _figures_html(figures: dict[str, go.Figure]) -> str:
    parts = ["<h2>Figures</h2>"]
    for position, (name, figure) in enumerate(figures.items()):
        parts.append(figure.to_html(full_html=False, include_plotlyjs=position == 0, div_id=name))
    return "\n".join(parts)


def _trials_html(summary: StudySummary) -> str:
    columns = [column for column in TRIAL_COLUMNS if column in summary.trials]
    table = summary.trials[columns].to_html(
        index=False, classes="trials", border=0, na_rep="", float_format=lambda x: f"{x:.4g}"
    )
    return f"<h2>Trials</h2>\n{table}"


def _sweeps_html(summary: StudySummary) -> str:
    """Each swept point's configurations (outcome, steps, validation accuracy, seconds) and what its
    bracket spent beside what training every configuration to its end would have; empty without sweeps."""
    if "bracket" not in summary.points:
        return ""
    parts = ["<h2>Sweeps inside the points</h2>"]
    for _, row in summary.points.iterrows():
        bracket = row["bracket"]
        if not isinstance(bracket, dict):
            continue
        cost = (
            f"{bracket['steps']} steps in {bracket['seconds']:.0f} s for {bracket['configurations']} configurations; "
            f"the full sweep: {bracket['full_sweep_steps']} steps, about {bracket['full_sweep_seconds'] or 0:.0f} s"
        )
        if "trained_steps" in bracket:  # recorded since the shared phase 1-2 steps are counted once
            cost += (
                f"; a model that configurations share counted once: {bracket['trained_steps']} steps trained, "
                f"{bracket['full_sweep_trained_steps']} for the full sweep"
            )
        parts.append(
            f"<h3>{html.escape(point_label(row['N'], row['s']))}</h3>\n<p>{html.escape(cost)}; every configuration's "
            f"curve is in study <code>{html.escape(bracket['study'])}</code>.</p>"
        )
        frame = pd.DataFrame(row["configurations"]).drop(columns=["digest"], errors="ignore")
        frame["values"] = [configuration_text(values) for values in frame["values"]]
        frame.insert(
            0, "winner", [values == row["configuration"] for values in pd.DataFrame(row["configurations"])["values"]]
        )
        parts.append(
            frame.to_html(index=False, classes="sweep", border=0, na_rep="", float_format=lambda x: f"{x:.4g}")
        )
    return "\n".join(parts)


def _budgets_html(summary: StudySummary) -> str:
    budgets = BUDGETS
    if summary.settings is not None and not np.isclose(BUDGETS, summary.settings.budget).any():
        budgets = tuple(sorted((*BUDGETS, summary.settings.budget)))
    table = top_per_budget(summary.points, budgets)
    if table.empty:
        return "<h2>Top-3 per budget</h2>\n<p>Needs the dense (1, 0) point, not measured yet.</p>"
    html_table = table.to_html(index=False, classes="budgets", border=0, na_rep="", float_format=lambda x: f"{x:.4g}")
    return f"<h2>Top-3 measured points per accuracy budget</h2>\n{html_table}"
