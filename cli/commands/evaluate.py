"""``prumux-search evaluate``: measure a trained checkpoint as the paper does, and optionally record it as
a point of a study, so published CoFi and PruMUX models feed Auto-PruMUX without training anything."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pandas as pd

from cli.commands.study import DEFAULT_BUDGET, DEFAULT_GRID_N, DEFAULT_GRID_S
from cli.options import runtime_option, study_options
from storage import StudySettings, dense_accuracy, import_points, open_study, study_settings
from storage.points import is_dense, threshold
from storage.study import find_study

# A realised sparsity this close to a grid value is that grid point.
GRID_SNAP = 0.02


@click.command("evaluate")
@click.option(
    "--model", "model_name", required=True, help="Checkpoint: alias, folder or hub id (or a family with --n)."
)
@click.option("--task", required=True, help="Task name or local data file.")
@click.option(
    "--n",
    "N",
    type=int,
    default=None,
    help="Width N, to pick a family's checkpoint (its tokenizer is the family's N = 1 model's).",
)
@click.option(
    "--s",
    "grid_s_value",
    type=float,
    default=None,
    help="The grid sparsity the model stands for [default: its realised sparsity, to the nearest grid value].",
)
@click.option("--tokenizer", default=None, help="Another model whose tokenizer to use [default: the checkpoint's own].")
@click.option(
    "--seq-len", default=128, show_default=True, type=click.IntRange(min=2), help="Padded length (the paper's 128)."
)
@click.option("--batches", default=4, show_default=True, type=click.IntRange(min=1), help="Timed batches of 128 N.")
@click.option(
    "--max-eval-examples", type=click.IntRange(min=1), default=None, help="Validation/test rows [default: all]."
)
@click.option("--device", default=None, help="cpu, cuda or cuda:K (default: CUDA when present).")
@click.option("--bf16", is_flag=True, help="Measure throughput in bf16.")
@runtime_option("the throughput is measured on; eager's figure is recorded beside")
@click.option("--format", "output", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--into-study", is_flag=True, help="Record the point as a trial of the study (created if new).")
@study_options
@click.option("--grid-n", default=DEFAULT_GRID_N, show_default=True, help="A new study's widths N.")
@click.option("--grid-s", default=DEFAULT_GRID_S, show_default=True, help="A new study's sparsities s.")
@click.option("--budget", default=DEFAULT_BUDGET, show_default=True, type=float, help="A new study's accuracy budget.")
def evaluate(
    model_name: str,
    task: str,
    N: int | None,
    grid_s_value: float | None,
    tokenizer: str | None,
    seq_len: int,
    batches: int,
    max_eval_examples: int | None,
    device: str | None,
    bf16: bool,
    inference_runtime: str,
    output: str,
    into_study: bool,
    run_dir: Path | str,
    storage: str,
    study: str,
    grid_n: str,
    grid_s: str,
    budget: float,
) -> None:
    """Measure a checkpoint: validation accuracy, throughput next to the dense model, realised sparsity.

    With --into-study the point joins the study (a new study takes --grid-n/--grid-s/--budget;
    an existing one must be of the same task); `predict` and `start` then build on it.
    """
    from trainers.job import check_job
    from trainers.measure import checkpoint_width, measure_checkpoint

    job = check_job(task, model_name, grid_N=(checkpoint_width(model_name, N),), tokenizer=tokenizer)
    target = _target(storage, study, job.task, job.base_model, grid_n, grid_s, budget) if into_study else None
    point = measure_checkpoint(
        job.base_model,
        job.task,
        N,
        tokenizer,
        seq_len,
        batches,
        device=device,
        bf16=bf16,
        max_eval_examples=max_eval_examples,
        log=lambda line: click.echo(line, err=True),
        inference_runtime=inference_runtime,
    )
    values = point.to_dict()
    if target is not None:
        values["s"] = _grid_sparsity(grid_s_value, point.sparsity, target.grid_s)
        threshold = _threshold(storage, study, values, target.budget)  # checked before anything is written
        row = {**values, "accuracy": values["val_accuracy"], "checkpoint": values.pop("model"), "evaluated": True}
        import_points(open_study(storage, study, target, create=True), pd.DataFrame([row]), threshold)
    else:
        values["s"] = grid_s_value if grid_s_value is not None else round(point.sparsity, 2)
    if output == "json":
        click.echo(json.dumps(values, indent=2))
        return
    click.echo(
        f"{point.model}: N={point.N} s={values['s']:g} (realised sparsity {point.sparsity:.4f}), accuracy "
        f"{point.val_accuracy:.4f} (test {point.test_accuracy:.4f}), {point.throughput:.4g} examples/s, "
        f"{point.speedup:.2f}x the dense model ({point.dense_throughput:.4g} examples/s, length {point.seq_len}, "
        f"{point.hardware}) on {point.inference_runtime}; eager {point.eager_throughput:.4g} examples/s, "
        f"{point.eager_speedup:.2f}x"
    )
    if target is not None:
        click.echo(f"recorded as a point of study {study!r}")


def _target(storage: str, study: str, task: str, model: str, grid_n: str, grid_s: str, budget: float) -> StudySettings:
    """The settings of the study to record into, checked before anything is measured or written: an existing
    study's (it must be of this task), or a new one's from the options."""
    from search.grid import check_budget, check_grid, parse_values

    existing = find_study(storage, study)
    if existing is not None:
        settings = study_settings(existing)
        if settings is None or settings.task != task:
            raise ValueError(f"study {study!r} is of task {settings.task if settings else '?'!r}, not {task!r}")
        return settings
    grid_N, grid_S = check_grid(parse_values(grid_n, "grid N"), parse_values(grid_s, "grid s"))
    return StudySettings(task, model, "evaluated", check_budget(budget), tuple(grid_N), tuple(grid_S))


def _grid_sparsity(given: float | None, realised: float, grid_s: tuple[float, ...]) -> float:
    """The study's grid s the point stands for: `given`, else the one nearest the realised sparsity."""
    wanted = realised if given is None else given
    nearest = min(grid_s, key=lambda s: abs(s - wanted))
    if abs(nearest - wanted) > (GRID_SNAP if given is None else 1e-9):
        grid = ", ".join(f"{s:g}" for s in grid_s)
        raise ValueError(f"sparsity {wanted:.4f} is not on the study's grid ({grid}); pass --s to name its grid point")
    return nearest


def _threshold(storage: str, study: str, values: dict, budget: float) -> float:
    """The accuracy the point must reach: the study's dense accuracy (its own, if it is the dense point) - budget."""
    if is_dense(values["N"], values["s"]):
        return threshold(values["val_accuracy"], budget)
    existing = find_study(storage, study)
    dense = dense_accuracy(existing) if existing is not None else None
    if dense is None:
        raise ValueError(f"study {study!r} has no dense (N=1, s=0) point yet: evaluate that one first")
    return threshold(dense, budget)
