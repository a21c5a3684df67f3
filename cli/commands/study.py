"""The study commands of ``prumux-search``: ``start``, ``status``, ``best``, ``export``, ``import``.

Every input is validated before the study is opened (``check_search``, which runs the whole-job
check ``trainers.job.check_job``), so bad input never writes to it, and nothing reaches Ray.
"""

from __future__ import annotations

import functools
import json
import math
import shlex
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState

from cli.errors import JobFailed
from cli.main import EXIT_CODES
from cli.options import runtime_option, study_options
from search.noise import ValidationNoise, recommendation_notes, study_noise, validation_rows
from storage import StudySettings, mask_url, open_study, study_settings
from storage import import_points as add_points
from storage.curves import STOPPED_ATTR
from storage.study import find_study
from storage.trials import (
    CONFIGURATION_ATTR,
    complete_trial,
    configuration_text,
    dense_accuracy,
    is_feasible_trial,
    json_safe,
)

if TYPE_CHECKING:
    from cli.console import SearchConsole
    from dashboards.summary import StudySummary
    from trainers.job import Job
    from trainers.recipes import Recipe
    from tuning.driver import SearchOptions, SearchOutcome

DEFAULT_TASK = "rt-polarity"
DEFAULT_MODEL = "minilm-l6"
DEFAULT_RECIPE = "cpu-demo"
DEFAULT_GRID_N = "1,2,5"
DEFAULT_GRID_S = "0,0.5,0.7,0.9"
DEFAULT_BUDGET = 0.03
TABLE_COLUMNS = ["number", "state", "N", "s", "family", "accuracy", "throughput", "speedup", "feasible"]
EXIT_INTERRUPTED = 130


def definition_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options that define a search (stored with the study and checked on resume)."""
    options = [
        click.option("--task", default=DEFAULT_TASK, show_default=True, help="Task name or local data file."),
        click.option("--model", default=DEFAULT_MODEL, show_default=True, help="Base model alias, folder or hub id."),
        click.option("--recipe", default=DEFAULT_RECIPE, show_default=True, help="Recipe name or JSON file."),
        click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a recipe field."),
        click.option(
            "--grid-n", default=None, help=f"Multiplexing widths N [default: {DEFAULT_GRID_N}].", metavar="LIST"
        ),
        click.option("--grid-s", default=None, help=f"Sparsities s [default: {DEFAULT_GRID_S}].", metavar="LIST"),
        click.option(
            "--budget",
            default=DEFAULT_BUDGET,
            show_default=True,
            type=float,
            help="Accuracy loss allowed below dense (1, 0), a fraction.",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def check_search(
    task: str,
    model: str,
    recipe: str,
    overrides: tuple[str, ...],
    grid_n: str | None,
    grid_s: str | None,
    budget: float,
    command: str,
    *,
    cwd: str | Path | None = None,
    hub: bool = True,
) -> tuple[StudySettings, Job]:
    """Check a search's definition (budget, grid, and the whole job: task, model, recipe) before
    anything is written; return the study settings (resolved paths, the text given) and the job."""
    from search.grid import check_budget, check_grid, parse_values
    from trainers.job import check_job

    grid_N, grid_S = check_grid(
        parse_values(DEFAULT_GRID_N if grid_n is None else grid_n, "grid N"),
        parse_values(DEFAULT_GRID_S if grid_s is None else grid_s, "grid s"),
    )
    budget = check_budget(budget)
    job = check_job(task, model, recipe, overrides, grid_N=grid_N, grid_s=grid_S, cwd=cwd, hub=hub)
    settings = StudySettings(
        job.task, job.base_model, job.recipe_label, budget, tuple(grid_N), tuple(grid_S), command, job.given
    )
    return settings, job


def _time_budget(given: float | None, recipe: Recipe) -> float | None:
    """The run's time budget: the option's (0 = none), else the recipe's."""
    if given is None:
        return recipe.search_time_budget
    return None if given == 0 else given


def _command_line() -> str:
    """The running command with the options it was given (passwords are masked by the settings)."""
    context = click.get_current_context()
    words = context.command_path.split()
    for parameter in context.command.params:
        value = context.params.get(parameter.name)
        for item in value if isinstance(value, tuple) else (value,):
            if item is not None:
                words += [parameter.opts[0], str(item)]
    return shlex.join(words)


@click.command("start", epilog=EXIT_CODES)
@study_options
@definition_options
@click.option("--max-trials", type=int, default=None, help="Stop once the study holds this many trained points.")
@click.option(
    "--time-budget",
    type=float,
    default=None,
    help="End this run within this many seconds (the running trial is stopped up to 30 s before, "
    "to record it); 0 = when the search is done [default: the recipe's search_time_budget: 1200 "
    "for cpu-demo, none for paper].",
)
@click.option("--concurrency", type=int, default=None, help="Concurrent trials [default: one per GPU, else 1].")
@click.option("--cpus-per-trial", type=float, default=None, help="CPUs per trial [default: all, shared].")
@click.option("--gpus-per-trial", type=float, default=None, help="GPUs per trial [default: 1 if any].")
@click.option(
    "--max-failures",
    type=int,
    default=2,
    show_default=True,
    help="Ray retries of a failed trial (a retry that fails with the same error stops the search).",
)
@click.option(
    "--ray-address",
    default=None,
    help="Ray cluster to use: auto or HOST:6379, from a node of the cluster [default: a local instance].",
)
@click.option(
    "--cache-lock",
    type=click.Choice(["auto", "file", "database"]),
    default="auto",
    show_default=True,
    help="Lock of the shared phase 1-2 cache: lock files, or leases in the study's database for a run "
    "dir shared by cluster nodes (auto: database unless the study is SQLite).",
)
@click.option(
    "--early-stopping/--no-early-stopping",
    default=True,
    show_default=True,
    help="Stop a trial once its learning curve shows its point cannot reach the budget's threshold, "
    "or cannot beat the best feasible point (it is stored PRUNED with its bound).",
)
@runtime_option(
    "each point's throughput is measured on, as `serve --runtime` runs it; eager's figure is recorded beside"
)
def start(
    run_dir: Path | str,
    storage: str,
    study: str,
    task: str,
    model: str,
    recipe: str,
    overrides: tuple[str, ...],
    grid_n: str | None,
    grid_s: str | None,
    budget: float,
    max_trials: int | None,
    time_budget: float | None,
    concurrency: int | None,
    cpus_per_trial: float | None,
    gpus_per_trial: float | None,
    max_failures: int,
    ray_address: str | None,
    cache_lock: str,
    early_stopping: bool,
    inference_runtime: str,
) -> None:
    """Run (or resume) an Auto-PruMUX search: one Ray Tune trial per (N, s) point.

    Every input is checked first (task data, base model and tokenizer, recipe, grid, budget,
    run directory); relative paths are resolved against the working directory. While trials
    train, one live line per running trial shows its phase, step, last evaluation and ETA.
    """
    from cli.console import SearchConsole
    from tuning.driver import SearchOptions, run_search

    settings, job = check_search(task, model, recipe, overrides, grid_n, grid_s, budget, _command_line())
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    options = SearchOptions(
        run_dir=str(run_dir),
        storage_url=storage,
        study_name=study,
        concurrency=concurrency,
        cpus_per_trial=cpus_per_trial,
        gpus_per_trial=gpus_per_trial,
        max_trials=max_trials,
        time_budget_s=_time_budget(time_budget, job.recipe),
        max_failures=max_failures,
        ray_address=ray_address,
        cache_lock=cache_lock,
        early_stopping=early_stopping,
        inference_runtime=inference_runtime,
    )
    console = SearchConsole()
    console.line(
        f"study {study!r} in {mask_url(storage)}: {settings.task}, {settings.base_model}, "
        f"recipe {settings.recipe}, budget {settings.budget:g}"
    )
    noise = ValidationNoise(validation_rows(len(job.data.validation), job.recipe.max_eval_examples))
    for line in (noise.describe(), noise.warning(settings.budget)):
        if line:
            console.line(line)
    try:
        outcome = run_search(
            settings,
            job.recipe,
            options,
            on_trial=functools.partial(_report_trial, console),
            on_progress=console.progress,
            on_notice=console.line,
            validation_rows=noise.rows,
        )
    finally:
        console.close()
    _report_outcome(outcome, options)


def _report_outcome(outcome: SearchOutcome, options: SearchOptions) -> None:
    """Print how the run ended, the frontier and the recommendation; exit 130 or 1 as the run ended."""
    if outcome.resumed_failed:
        click.echo(f"resumed: trials {outcome.resumed_failed}, left running by a dead driver, were marked failed")
    if outcome.interrupted:
        click.echo(f"interrupted: trials {outcome.interrupted}; their points resume from checkpoints on the next start")
    click.echo(f"stopped: {outcome.stop_reason} after {outcome.seconds:.0f} s")
    _print_frontier(outcome.study)
    if outcome.signal_name:
        click.echo(f"interrupted by {outcome.signal_name}: run the same command again to resume")
        raise click.exceptions.Exit(EXIT_INTERRUPTED)
    if outcome.failed:
        raise JobFailed(_failure(outcome.study, outcome.failed[0], options))


def _failure(study: optuna.Study, number: int, options: SearchOptions) -> str:
    """The one line that says why a failed search stopped and where its full log is."""
    trial = study.trials[number]
    reason = trial.user_attrs.get("failed_because", "its training failed")
    where = "" if "full log:" in reason else f"; Ray's trial logs are under {options.tune_storage}"
    return (
        f"the search stopped: trial {number} (N={trial.params['N']}, s={trial.params['s']:g}) failed: {reason}{where}"
    )


@click.command("status")
@study_options
@click.option("--format", "output", type=click.Choice(["text", "json"]), default="text", show_default=True)
def status(run_dir: Path | str, storage: str, study: str, output: str) -> None:
    """Show the study's trials with feasibility and the surrogate's current top-3."""
    from dashboards.summary import summarize

    opened = open_study(storage, study)
    summary = summarize(opened)
    top = _top3(summary)
    if output == "json":
        click.echo(
            json.dumps(
                json_safe(
                    {
                        "study": study,
                        "settings": summary.settings.to_dict() if summary.settings else None,
                        "threshold": summary.threshold,
                        "compute": None if summary.compute is None else asdict(summary.compute),
                        "trials": _records(summary.trials),
                        "top": _records(top),
                    }
                ),
                indent=2,
            )
        )
        return
    click.echo(f"study {study!r}: threshold {_fmt(summary.threshold)}")
    _echo_noise(summary, opened)
    if summary.compute is not None:
        click.echo(f"training compute: {summary.compute.describe()}")
    click.echo(_table(*_with_configuration(summary.trials, TABLE_COLUMNS)) if len(summary.trials) else "no trials yet")
    click.echo("\ncurrent top-3 (surrogate predictions under the budget):")
    click.echo(_table(top, list(top.columns)) if len(top) else "none yet (needs the dense point and one more)")


@click.command("best")
@study_options
@click.option("--format", "output", type=click.Choice(["text", "json"]), default="text", show_default=True)
def best(run_dir: Path | str, storage: str, study: str, output: str) -> None:
    """Show the recommended model: the feasible trial with the highest measured throughput."""
    from dashboards.summary import summarize

    summary = summarize(open_study(storage, study))
    if summary.recommended is None:
        raise ValueError(f"study {study!r} has no feasible trial yet")
    figures = _best_figures(summary)
    if output == "json":
        click.echo(json.dumps(figures, indent=2))
        return
    click.echo(
        f"trial {figures['trial']}: N={figures['N']} s={figures['s']:g} ({figures['family']}), accuracy "
        f"{figures['accuracy']:.4f} (dense {_fmt(figures['dense_accuracy'])}, threshold {_fmt(figures['threshold'])}), "
        f"{figures['speedup']:.2f}x dense throughput ({figures['throughput']:.4g} examples/s on {figures['hardware']})"
    )
    if CONFIGURATION_ATTR in figures:
        click.echo(f"configuration (best of the recipe's sweep): {configuration_text(figures['configuration'])}")
    if figures["model_dir"]:
        click.echo(f"model: {figures['model_dir']}")


@click.command("export")
@study_options
@click.option("--trial", "number", type=int, required=True, help="Trial number to export.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Folder to write (new or empty).")
def export(run_dir: Path | str, storage: str, study: str, number: int, out: Path) -> None:
    """Copy a trial's trained model to OUT, servable (tokenizer, labels, length), with a README.md model card,
    its ONNX graph (when the onnx packages are installed) and the code that plain transformers loads it with."""
    from prumux.inference import onnx_available
    from servable import deployment_line, export_servable, model_card
    from trainers.point_sources import POINT_SOURCES

    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{out} exists and is not an empty folder")
    opened = open_study(storage, study)
    trial = complete_trial(opened, number)
    point = {**trial.user_attrs, **trial.params}
    spec = export_servable(point, out, POINT_SOURCES, f"trial {number}", graph=onnx_available())
    (out / "README.md").write_text(model_card(trial, study_settings(opened), spec.onnx))
    chosen = trial.user_attrs.get(CONFIGURATION_ATTR)
    also = f", configuration {configuration_text(chosen)}" if chosen else ""
    click.echo(f"exported trial {number} (N={trial.params['N']}, s={trial.params['s']:g}{also}) to {out}")
    click.echo(deployment_line(spec))


@click.command("import")
@study_options
@definition_options
@click.option(
    "--points",
    "points_csv",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="CSV of measured points: N, s, accuracy, throughput.",
)
def import_points(
    run_dir: Path | str,
    storage: str,
    study: str,
    task: str,
    model: str,
    recipe: str,
    overrides: tuple[str, ...],
    grid_n: str | None,
    grid_s: str | None,
    budget: float,
    points_csv: Path,
) -> None:
    """Import measured (N, s) points into a study (created with the definition options if new).

    Without --grid-n/--grid-s the grid is the study's, or for a new study the points' N and s values.
    """
    from search.grid import check_on_grid, grid_axes, read_points
    from storage.points import dense_row, threshold

    if not points_csv.is_file():
        raise ValueError(f"no such points file: {points_csv}")
    points = read_points(points_csv)
    stored = study_settings(existing) if (existing := find_study(storage, study)) else None
    axes = (stored.grid_N, stored.grid_s) if stored else grid_axes(points)
    grid_n = ",".join(f"{n:g}" for n in axes[0]) if grid_n is None else grid_n
    grid_s = ",".join(f"{s:g}" for s in axes[1]) if grid_s is None else grid_s
    settings, _ = check_search(task, model, recipe, overrides, grid_n, grid_s, budget, _command_line())
    check_on_grid(points, settings.grid_N, settings.grid_s)
    dense = dense_row(points)
    opened = open_study(storage, study, settings, create=dense is not None)
    dense_point_accuracy = _study_dense_accuracy(opened) if dense is None else float(dense["accuracy"])
    add_points(opened, points, threshold(dense_point_accuracy, settings.budget))
    click.echo(f"imported {len(points)} points into study {study!r}")


def _report_trial(console: SearchConsole, trial: FrozenTrial, study: optuna.Study) -> None:
    """Print one line per finished trial and refresh the dashboard figures."""
    from dashboards.publish import publish
    from tuning.searcher import trained_count

    point = f"N={trial.params['N']} s={trial.params['s']:g}"
    if STOPPED_ATTR in trial.user_attrs and trial.state == TrialState.PRUNED:
        console.line(
            f"trial {trial.number}  {point}  stopped: {trial.user_attrs[STOPPED_ATTR]}  "
            f"trainings used {trained_count(study)}"
        )
        publish(study)
        return
    if trial.state != TrialState.COMPLETE:
        reason = trial.user_attrs.get("failed_because", "")
        console.line(f"trial {trial.number}  {point}  {trial.state.name.lower()}: {reason}")
        return
    feasible = is_feasible_trial(trial)
    console.line(
        f"trial {trial.number}  {point}  accuracy {trial.values[0]:.4f}  "
        f"speed-up {trial.user_attrs.get('speedup', math.nan):.2f}x  feasible {'yes' if feasible else 'no'}  "
        f"trainings used {trained_count(study)}"
    )
    publish(study)


def _print_frontier(study: optuna.Study) -> None:
    from dashboards.summary import summarize

    summary = summarize(study)
    if summary.compute is not None:
        click.echo(f"training compute: {summary.compute.describe()}")
    front = {trial.number for trial in study.best_trials}
    frontier = summary.points[summary.points["number"].isin(front)].sort_values("throughput", ascending=False)
    click.echo("\nfrontier (feasible, not dominated in accuracy and throughput):")
    click.echo(_table(frontier, TABLE_COLUMNS[:1] + TABLE_COLUMNS[2:]) if len(frontier) else "none")
    if summary.recommended is None:
        click.echo("recommended: none yet (no feasible point)")
        return
    row = summary.recommended
    click.echo(
        f"recommended: trial {row['number']} N={row['N']} s={row['s']:g}, accuracy {row['accuracy']:.4f}, "
        f"{row['speedup']:.2f}x dense throughput; export it with: prumux-search export --trial {row['number']} --out DIR"
    )
    noise = study_noise(study)
    for note in [] if noise is None else recommendation_notes(summary.points, row, summary.threshold, noise):
        click.echo(f"  within noise: {note}")


def _echo_noise(summary: StudySummary, study: optuna.Study) -> None:
    noise = study_noise(study)
    budget = None if summary.settings is None else summary.settings.budget
    for line in [] if noise is None else (noise.describe(), budget is not None and noise.warning(budget)):
        if line:
            click.echo(line)


def _best_figures(summary: StudySummary) -> dict[str, Any]:
    from storage.points import dense_row

    row = summary.recommended
    dense = dense_row(summary.points)
    return json_safe(
        {
            "trial": int(row["number"]),
            "N": int(row["N"]),
            "s": float(row["s"]),
            "family": row["family"],
            "accuracy": float(row["accuracy"]),
            "dense_accuracy": None if dense is None else float(dense["accuracy"]),
            "threshold": summary.threshold,
            "throughput": float(row["throughput"]),
            "speedup": float(row["speedup"]),
            "model_dir": row.get("model_dir"),
            "hardware": row.get("hardware"),
        }
        | ({CONFIGURATION_ATTR: row[CONFIGURATION_ATTR]} if isinstance(row.get(CONFIGURATION_ATTR), dict) else {})
    )


def _with_configuration(frame: pd.DataFrame, columns: list[str]) -> tuple[pd.DataFrame, list[str]]:
    """The table and its columns, with each trial's winning configuration when the study has any."""
    if CONFIGURATION_ATTR not in frame:
        return frame, columns
    shown = frame.assign(
        **{
            CONFIGURATION_ATTR: [
                configuration_text(v) if isinstance(v, dict) else "-" for v in frame[CONFIGURATION_ATTR]
            ]
        }
    )
    return shown, [*columns, CONFIGURATION_ATTR]


def _top3(summary: StudySummary) -> pd.DataFrame:
    if summary.surrogate is None or summary.settings is None or summary.threshold is None:
        return pd.DataFrame(columns=["N", "s", "accuracy", "throughput", "interpolated"])
    grid = pd.DataFrame([(n, s) for n in summary.settings.grid_N for s in summary.settings.grid_s], columns=["N", "s"])
    return summary.surrogate.top_k(summary.settings.budget, k=3, candidates=grid)


def _study_dense_accuracy(study: optuna.Study) -> float:
    if (accuracy := dense_accuracy(study)) is None:
        raise ValueError("the points need the dense (N=1, s=0) point: the study has not measured it")
    return accuracy


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return frame.to_dict("records")


def _table(frame: pd.DataFrame, columns: list[str]) -> str:
    return frame[columns].to_string(index=False, float_format=lambda value: f"{value:.4g}")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.4g}"
    return "-" if value is None else str(value)
