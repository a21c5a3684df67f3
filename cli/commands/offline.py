"""Offline commands: ``predict`` (the paper's use of Auto-PruMUX on measured points) and
``replay`` (a search against a fully measured grid table)."""

from __future__ import annotations

import json

import click
import optuna
import pandas as pd

from cli.options import study_options
from replay.curves import METHODS as CURVE_METHODS
from replay.curves import replay_tables, summarize_curves
from replay.points import SAMPLERS, replay_many, summarize
from search.grid import THROUGHPUT_COLUMNS, parse_budgets, read_points
from search.surrogate import AutoPruMUX
from storage import open_study, points_frame, study_settings
from storage.points import is_feasible, threshold

FORMATS = click.Choice(["table", "json"])


def budget_options(command):
    """``--budget`` (one) and ``--budgets`` (a range or list); ``_budgets`` turns them into a list."""
    command = click.option("--budgets", "budgets_text", help="Several budgets: start:stop:step or a comma list.")(
        command
    )
    return click.option("--budget", type=float, help="Accuracy loss budget, e.g. 0.03.")(command)


@click.command()
@click.option(
    "--points",
    "points_path",
    type=click.Path(dir_okay=False),
    help="CSV of measured points: N, s, accuracy, throughput [default: the study's measured points].",
)
@study_options
@budget_options
@click.option(
    "--throughput-from",
    "throughput_path",
    type=click.Path(dir_okay=False),
    help="CSV of throughputs (N, s, throughput) measured on another task; its shapes become the candidates.",
)
@click.option("--top", default=3, show_default=True, type=click.IntRange(min=1), help="Predictions per budget.")
@click.option("--format", "output", type=FORMATS, default="table", show_default=True)
def predict(points_path, run_dir, storage, study, budget, budgets_text, throughput_path, top, output) -> None:
    """Fit the surrogate on measured points (a CSV, or a study's trials) and print the top-k (N, s) per budget."""
    if points_path is None:
        points, budget = _study_points(storage, study, budget, budgets_text)
    else:
        points = read_points(points_path)
    budgets = _budgets(budget, budgets_text)
    throughput = read_points(throughput_path, THROUGHPUT_COLUMNS) if throughput_path else None
    model = AutoPruMUX().fit(points, throughput)
    candidates = throughput if throughput is not None else points
    reports = [_report(model, points, candidates, b, top) for b in budgets]
    if output == "json":
        payload = [{"budget": r["budget"], "top": r["top"]} for r in reports]
        click.echo(json.dumps(payload[0] if budget is not None else payload, indent=2))
        return
    for report in reports:
        click.echo(_format_report(report))
    known = [r["best_in_top"] for r in reports if r["best_in_top"] is not None]
    if len(reports) > 1 and known:
        click.echo(
            f"true best within top {top}: {sum(known)}/{len(known)} budgets ({100 * sum(known) / len(known):.1f}%)"
        )


@click.command()
@click.option(
    "--table",
    "table_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="CSV measuring every (N, s) of a grid.",
)
@click.option(
    "--curves",
    "curves_path",
    type=click.Path(dir_okay=False),
    help="CSV of the grid's learning curves (N, s, step, accuracy[, stage]): replay in training steps, with early stopping.",
)
@budget_options
@click.option(
    "--sampler",
    type=click.Choice([*dict.fromkeys([*SAMPLERS, *CURVE_METHODS]), "all"]),
    default="all",
    show_default=True,
)
@click.option("--seeds", default=5, show_default=True, type=click.IntRange(min=1), help="Seeds per baseline sampler.")
@click.option(
    "--trainings",
    type=click.IntRange(min=1),
    help="Trainings per baseline search [default: as many as AutoPruMUX used; with --curves: the grid's size].",
)
@click.option(
    "--eval-rows",
    type=click.IntRange(min=1),
    help="With --curves: validation rows each curve evaluation was measured on (their noise widens our bound) "
    "[default: exact curves].",
)
@click.option("--format", "output", type=FORMATS, default="table", show_default=True)
def replay(table_path, curves_path, budget, budgets_text, sampler, seeds, trainings, eval_rows, output) -> None:
    """Replay searches against a fully measured grid and compare the samplers."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per replayed trial drowns the table
    budgets = _budgets(budget, budgets_text)
    if curves_path is not None:
        results = replay_tables(table_path, curves_path, budgets, sampler, seeds, trainings, eval_rows)
        summary = summarize_curves(results)
    else:
        if sampler not in (*SAMPLERS, "all"):
            raise ValueError(f"--sampler {sampler} needs --curves")
        samplers = (
            SAMPLERS if sampler == "all" else ("autoprumux", sampler) if sampler != "autoprumux" else ("autoprumux",)
        )
        results = replay_many(read_points(table_path), budgets, samplers, seeds, trainings)
        summary = summarize(results)
    if output == "json":
        click.echo(
            json.dumps({"summary": summary.to_dict("records"), "searches": results.to_dict("records")}, indent=2)
        )
        return
    if len(budgets) == 1:
        click.echo(results.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        click.echo("")
    click.echo(summary.to_string(index=False, float_format=lambda v: f"{v:.1f}"))


def _budgets(budget: float | None, budgets_text: str | None) -> list[float]:
    if (budget is None) == (budgets_text is None):
        raise click.UsageError("give exactly one of --budget and --budgets")
    return parse_budgets(str(budget) if budget is not None else budgets_text)


def _report(model: AutoPruMUX, points: pd.DataFrame, candidates: pd.DataFrame, budget: float, k: int) -> dict:
    top = model.top_k(budget, k, candidates)
    rows = [
        {"N": int(r.N), "s": float(r.s), "accuracy": float(r.accuracy), "throughput": float(r.throughput)}
        for r in top.itertuples()
    ]
    best = _true_best(points, candidates, budget, model.dense_accuracy_)
    best_in_top = None if best is None else any((r["N"], r["s"]) == best for r in rows)
    return {"budget": budget, "top": rows, "best": best, "best_in_top": best_in_top, "frame": top}


def _true_best(points: pd.DataFrame, candidates: pd.DataFrame, budget: float, dense: float):
    """The measured best within the budget, when every candidate is measured; else None."""
    measured = set(zip(points["N"], points["s"].round(9)))
    if not set(zip(candidates["N"].astype(int), candidates["s"].round(9))) <= measured:
        return None
    feasible = points[is_feasible(points["accuracy"].to_numpy(), threshold(dense, budget))]
    best = feasible.sort_values(["throughput", "accuracy"], ascending=False).iloc[0]
    return int(best["N"]), float(best["s"])


def _format_report(report: dict) -> str:
    lines = [f"budget {report['budget']:g}"]
    for rank, row in enumerate(report["frame"].itertuples(), start=1):
        kind = "interpolated" if row.interpolated else "extrapolated"
        lines.append(
            f"  top {rank}: (N={row.N}, s={row.s:g})  accuracy {row.accuracy:.4f}  throughput {row.throughput:.2f}  {kind}"
        )
    if not report["top"]:
        lines.append("  no candidate within the budget")
    if report["best"] is not None:
        verdict = "in top" if report["best_in_top"] else "NOT in top"
        lines.append(f"  actual best: (N={report['best'][0]}, s={report['best'][1]:g})  {verdict}")
    return "\n".join(lines)


def _study_points(
    storage: str, study: str, budget: float | None, budgets_text: str | None
) -> tuple[pd.DataFrame, float]:
    """The study's measured points, and the budget to use (the study's own unless one is given)."""
    opened = open_study(storage, study)
    frame = points_frame(opened)
    if frame.empty:
        raise ValueError(f"study {study!r} has no measured points yet")
    settings = study_settings(opened)
    if budget is None and budgets_text is None and settings is not None:
        budget = settings.budget
    return read_points(frame), budget
