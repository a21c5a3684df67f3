"""The pictures users decide from: the measured frontier, the surrogate's map and the learning curves."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from storage.points import family as point_family
from storage.points import threshold as budget_threshold

FAMILIES = {
    "dense": ("dense (1, 0)", "#1f77b4", "diamond"),
    "cofi": ("CoFi (1, s)", "#2ca02c", "square"),
    "datamux": ("DataMUX (N, 0)", "#ff7f0e", "triangle-up"),
    "prumux": ("PruMUX (N, s)", "#d62728", "circle"),
}
INFEASIBLE_COLOR = "#b0b0b0"
TEMPLATE = "plotly_white"
# markers on the heat maps sit above the cell's centre, where its value is written
MARKER_OFFSET = 0.3


def point_label(N: int, s: float) -> str:
    """Label a grid point as the paper does: ``(N, s)``."""
    return f"({int(N)}, {s:g})"


def frontier_figure(
    points: pd.DataFrame, threshold: float | None, recommended: tuple[int, float] | None = None
) -> go.Figure:
    """Throughput improvement over dense (log) against accuracy (reversed), as the paper's Fig. 3.

    ``points`` is ``storage.points_frame`` output. One series per family; points below the
    accuracy ``threshold`` are grey; the frontier is drawn over the feasible points only.
    """
    figure = go.Figure()
    for family in FAMILIES:
        # feasible first: the legend shows a series' first marker, which must not be grey
        rows = points[points["family"] == family].sort_values(["feasible", "accuracy"], ascending=False)
        if len(rows):
            figure.add_trace(_family_trace(family, rows))
    frontier = pareto_frontier(points[points["feasible"]])
    if len(frontier) > 1:
        figure.add_trace(
            go.Scatter(
                x=frontier["accuracy"],
                y=frontier["speedup"],
                mode="lines",
                name="frontier (feasible)",
                line={"color": "#444", "dash": "dot"},
                hoverinfo="skip",
                meta={"role": "frontier"},
            )
        )
    if recommended is not None:
        figure.add_trace(_recommended_trace(points, recommended))
    if threshold is not None:
        figure.add_vline(
            x=threshold,
            line={"color": "#d62728", "dash": "dash"},
            annotation_text=f"threshold {threshold:.3f}",
            annotation_position="top",
        )
    figure.update_layout(
        title="Throughput improvement against accuracy (greyed: outside the accuracy budget)",
        xaxis={"title": "accuracy", "autorange": "reversed", "tickformat": ".1%"},
        yaxis={"title": "throughput improvement over dense", "type": "log", **_log_ticks(points["speedup"].max())},
        template=TEMPLATE,
        legend={"orientation": "h", "y": -0.18},
    )
    return figure


def pareto_frontier(points: pd.DataFrame) -> pd.DataFrame:
    """The points no other point beats in both accuracy and speed-up, by falling accuracy."""
    ordered = points.sort_values(["accuracy", "speedup"], ascending=False)
    best = -np.inf
    keep = []
    for index, speedup in ordered["speedup"].items():
        if speedup > best:
            keep.append(index)
            best = speedup
    return ordered.loc[keep]


def surrogate_figure(
    surrogate: Any,
    grid_N: Sequence[int],
    grid_s: Sequence[float],
    budget: float,
    next_point: tuple[int, float] | None = None,
) -> go.Figure:
    """Heat maps of the surrogate's predicted accuracy and throughput over the (N, s) grid.

    ``surrogate`` is a fitted ``search.AutoPruMUX``. Measured points are marked with a cross,
    the cells predicted within ``budget`` of the dense accuracy are outlined, and
    ``next_point`` (the point proposed next) is marked with a star.
    """
    grid_N, grid_s = [int(n) for n in grid_N], [float(s) for s in grid_s]
    N, s = np.meshgrid(grid_N, grid_s)
    prediction = surrogate.predict(N.ravel(), s.ravel())
    accuracy = prediction.accuracy.reshape(N.shape)
    throughput = prediction.throughput.reshape(N.shape)
    threshold = budget_threshold(surrogate.dense_accuracy_, budget)
    figure = make_subplots(
        rows=1,
        cols=2,
        horizontal_spacing=0.16,
        subplot_titles=("predicted accuracy", "predicted throughput (examples/s)"),
    )
    figure.add_trace(_heatmap(accuracy, "%{z:.3f}", colorbar_x=0.42, name="accuracy"), row=1, col=1)
    figure.add_trace(_heatmap(throughput, "%{z:,.0f}", colorbar_x=1.0, name="throughput"), row=1, col=2)
    outline = _region_outline(accuracy >= threshold)
    measured = _grid_positions(surrogate.points_, grid_N, grid_s)
    for col in (1, 2):
        legend = col == 1
        figure.add_trace(_outline_trace(outline, threshold, legend), row=1, col=col)
        figure.add_trace(_marker_trace(measured, "measured", "x", "white", legend), row=1, col=col)
        if next_point is not None:
            proposed = _grid_positions(pd.DataFrame([next_point], columns=["N", "s"]), grid_N, grid_s)
            figure.add_trace(_marker_trace(proposed, "next", "star", "#ffd700", legend), row=1, col=col)
    axis_N = {"tickvals": list(range(len(grid_N))), "ticktext": [str(n) for n in grid_N], "title": "N"}
    axis_s = {"tickvals": list(range(len(grid_s))), "ticktext": [f"{v:g}" for v in grid_s], "title": "s"}
    figure.update_xaxes(**axis_N)
    figure.update_yaxes(**axis_s)
    figure.update_layout(
        title=f"Auto-PruMUX surrogate (outlined: predicted accuracy >= {threshold:.3f}, budget {budget:g})",
        template=TEMPLATE,
        legend={"orientation": "h", "y": -0.2},
    )
    return figure


def _family_trace(family: str, rows: pd.DataFrame) -> go.Scatter:
    name, color, symbol = FAMILIES[family]
    feasible = rows["feasible"].to_numpy(bool)
    return go.Scatter(
        x=rows["accuracy"],
        y=rows["speedup"],
        mode="markers+text",
        name=name,
        text=[point_label(n, s) for n, s in zip(rows["N"], rows["s"])],
        textposition="top center",
        customdata=np.column_stack([rows["number"], feasible]),
        marker={
            "size": 11,
            "symbol": symbol,
            "color": np.where(feasible, color, INFEASIBLE_COLOR).tolist(),
            "line": {"width": 1, "color": "#333"},
        },
        hovertemplate="trial %{customdata[0]} %{text}<br>accuracy %{x:.4f}<br>speed-up %{y:.2f}x<extra></extra>",
        meta={"family": family},
    )


def _log_ticks(largest: float) -> dict[str, list]:
    """1-2-5 ticks labelled as multiples ("5x") up to ``largest``."""
    values = [m * 10.0**e for e in range(-1, 5) for m in (1, 2, 5)]
    values = [v for v in values if 0.1 <= v <= max(largest, 1.0) * 2.5]
    return {"tickvals": values, "ticktext": [f"{v:g}x" for v in values]}


def _recommended_trace(points: pd.DataFrame, recommended: tuple[int, float]) -> go.Scatter:
    N, s = recommended
    row = points[(points["N"] == N) & np.isclose(points["s"], s)].iloc[0]
    return go.Scatter(
        x=[row["accuracy"]],
        y=[row["speedup"]],
        mode="markers",
        name=f"recommended {point_label(N, s)}",
        marker={"symbol": "star", "size": 22, "color": "rgba(0,0,0,0)", "line": {"width": 2, "color": "#000"}},
        meta={"role": "recommended"},
    )


def _heatmap(z: np.ndarray, texttemplate: str, colorbar_x: float, name: str) -> go.Heatmap:
    return go.Heatmap(
        z=z,
        colorscale="Viridis",
        texttemplate=texttemplate,
        name=name,
        colorbar={"x": colorbar_x},
        hovertemplate=f"{name} %{{z:.4g}}<extra></extra>",
    )


def _region_outline(inside: np.ndarray) -> tuple[list[float | None], list[float | None]]:
    """Line segments around the True cells of a [s, N] mask, in cell-index coordinates."""
    xs: list[float | None] = []
    ys: list[float | None] = []
    rows, cols = inside.shape
    for i, j in zip(*np.nonzero(inside)):
        for di, dj in ((-1, 0), (1, 0), (0, -1), (0, 1)):
            ni, nj = i + di, j + dj
            if 0 <= ni < rows and 0 <= nj < cols and inside[ni, nj]:
                continue
            if di:  # horizontal edge between rows i and ni
                xs += [j - 0.5, j + 0.5, None]
                ys += [i + di / 2, i + di / 2, None]
            else:
                xs += [j + dj / 2, j + dj / 2, None]
                ys += [i - 0.5, i + 0.5, None]
    return xs, ys


def _outline_trace(outline: tuple[list, list], threshold: float, legend: bool) -> go.Scatter:
    return go.Scatter(
        x=outline[0],
        y=outline[1],
        mode="lines",
        name=f"feasible (accuracy >= {threshold:.3f})",
        line={"color": "#ff1493", "width": 3},
        hoverinfo="skip",
        showlegend=legend,
        legendgroup="feasible",
        meta={"role": "feasible-region"},
    )


def _grid_positions(points: pd.DataFrame, grid_N: list[int], grid_s: list[float]) -> pd.DataFrame:
    """Cell indices of the points that lie on the grid."""
    x = [grid_N.index(int(n)) if int(n) in grid_N else None for n in points["N"]]
    y = [next((k for k, v in enumerate(grid_s) if np.isclose(v, s)), None) for s in points["s"]]
    positions = pd.DataFrame({"x": x, "y": y, "N": points["N"].to_numpy(), "s": points["s"].to_numpy()})
    return positions.dropna()


def _marker_trace(positions: pd.DataFrame, role: str, symbol: str, color: str, legend: bool) -> go.Scatter:
    return go.Scatter(
        x=positions["x"],
        y=positions["y"] + MARKER_OFFSET,
        mode="markers",
        name=role,
        text=[point_label(n, s) for n, s in zip(positions["N"], positions["s"])],
        marker={
            "symbol": symbol,
            "size": 16 if role == "next" else 10,
            "color": color,
            "line": {"width": 1.5, "color": "#000"},
        },
        hovertemplate=f"{role} %{{text}}<extra></extra>",
        showlegend=legend,
        legendgroup=role,
        meta={"role": role},
    )


def learning_curves_figure(curves: pd.DataFrame, threshold: float | None) -> go.Figure:
    """Validation accuracy against each point's own training step, one line per point.

    ``curves`` is ``storage.curves.curves_frame`` output. A point stopped early ends in a cross
    (its reason on hover); the accuracy ``threshold`` is drawn across.
    """
    figure = go.Figure()
    for number, rows in curves.groupby("number", sort=True):
        first = rows.iloc[0]
        family = point_family(int(first["N"]), float(first["s"]))
        name, color, _ = FAMILIES[family]
        stopped = bool(first["stopped_because"])
        label = f"{point_label(first['N'], first['s'])} trial {number}" + (" stopped" if stopped else "")
        figure.add_trace(
            go.Scatter(
                x=rows["step"],
                y=rows["accuracy"],
                mode="lines+markers",
                name=label,
                line={"color": color, "dash": "dot" if stopped else "solid"},
                marker={
                    "size": [5] * (len(rows) - 1) + [12 if stopped else 5],
                    "symbol": ["circle"] * (len(rows) - 1) + ["x" if stopped else "circle"],
                },
                text=[f"{stage}" for stage in rows["stage"]],
                hovertemplate=f"{label}<br>step %{{x}}<br>accuracy %{{y:.4f}}<br>%{{text}}"
                + (f"<br>{first['stopped_because']}" if stopped else "")
                + "<extra></extra>",
                meta={"role": "stopped" if stopped else "curve", "family": family},
            )
        )
    if threshold is not None:
        figure.add_hline(
            y=threshold,
            line={"color": "#444", "dash": "dash"},
            annotation_text=f"threshold {threshold:.3f}",
            annotation_position="bottom right",
        )
    figure.update_layout(
        template=TEMPLATE,
        title="Learning curves: validation accuracy during each point's training",
        xaxis_title="the point's training steps (shared phases 1-2 included)",
        yaxis_title="validation accuracy",
    )
    return figure
