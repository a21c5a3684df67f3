"""The `tasks`, `models`, `recipes` and `train` commands of `prumux-search`."""

from __future__ import annotations

import json
from collections.abc import Sequence

import click

from cli.errors import JobFailed

HUB_TASK = "hub, not loaded offline"
HUB_MODEL = "hub, not available offline"


@click.command("tasks")
@click.argument("names", nargs=-1)
@click.option("--seed", default=0, show_default=True, help="Seed of the splits.")
def tasks(names: tuple[str, ...], seed: int) -> None:
    """List tasks with split sizes and label balance (all registered tasks, or NAMES / local files)."""
    from trainers.hub import hub_reachable
    from trainers.tasks import TASKS, load_task

    rows = []
    for name in names or TASKS:
        if not names and not TASKS[name].offline and not hub_reachable():
            rows.append([name, "pair" if TASKS[name].is_pair else "single", "-", "-", "-", HUB_TASK])
            continue
        data = load_task(name, seed)
        sizes = data.sizes()
        balance = ", ".join(f"{label} {share:.1%}" for label, share in data.balance().items())
        kind = "pair" if data.spec.is_pair else "single"
        rows.append([data.spec.name, kind, sizes["train"], sizes["validation"], sizes["test"], balance])
    click.echo(format_table(["task", "input", "train", "validation", "test", "label balance"], rows))


@click.command("models")
@click.argument("names", nargs=-1)
def models(names: tuple[str, ...]) -> None:
    """List base models with layers / hidden / heads / parameters (the known aliases, or NAMES)."""
    from trainers.models import BASE_MODELS, is_available, model_summary, resolve_model

    rows = []
    for name in names or BASE_MODELS:
        if not names and not is_available(name):
            rows.append([name, "-", "-", "-", "-", "-", f"{resolve_model(name)} ({HUB_MODEL})"])
            continue
        shape = model_summary(name)
        rows.append(
            [
                name,
                shape["layers"],
                shape["hidden"],
                shape["heads"],
                shape["intermediate"],
                f"{shape['parameters']:,}",
                shape["source"],
            ]
        )
    click.echo(format_table(["model", "layers", "hidden", "heads", "intermediate", "parameters", "source"], rows))


@click.group("recipes")
def recipes() -> None:
    """List the shipped recipes, or show one with its sweep."""


@recipes.command("list")
def list_recipes() -> None:
    """The shipped recipes with their number of configurations per pruned point."""
    from trainers.recipes import RECIPES, load_recipe

    rows = [[name, len(load_recipe(name).configurations()), str(path)] for name, path in RECIPES.items()]
    click.echo(format_table(["recipe", "configurations", "file"], rows))


@recipes.command("show")
@click.argument("name")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a recipe value (repeatable).")
def show_recipe(name: str, overrides: tuple[str, ...]) -> None:
    """Print recipe NAME (a shipped name or a JSON file) as JSON, then its sweep and how many
    configurations a pruned point (s > 0) and an unpruned one (s = 0) train."""
    from trainers.recipes import load_recipe, parse_overrides

    recipe = load_recipe(name, parse_overrides(overrides))
    click.echo(json.dumps(recipe.to_dict(), indent=2))
    if not recipe.sweep:
        click.echo("sweep: none (1 configuration)")
        return
    click.echo("sweep:")
    for key, values in recipe.to_dict()["sweep"].items():
        click.echo(f"  {key}: {json.dumps(values)}")
    pruned, dense = len(recipe.configurations(0.5)), len(recipe.configurations(0))
    click.echo(f"configurations: {pruned} per point with s > 0, {dense} per point with s = 0")


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain-text table: left-aligned columns separated by two spaces, with a header rule."""
    cells = [[str(value) for value in row] for row in [headers, *rows]]
    widths = [max(len(row[column]) for row in cells) for column in range(len(headers))]
    lines = ["  ".join(value.ljust(width) for value, width in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


@click.command("train")
@click.option("--task", required=True, help="Task name (see `tasks`) or a local data file.")
@click.option("--model", "base_model", required=True, help="Base model alias (see `models`), folder or hub id.")
@click.option("--n", "N", type=int, required=True, help="Multiplexing width N (1 = no multiplexing).")
@click.option("--sparsity", "s", type=float, default=0.0, show_default=True, help="Target sparsity s in [0, 1).")
@click.option(
    "--recipe", default="cpu-demo", show_default=True, help="Recipe name (paper, cpu-demo, smoke) or JSON file."
)
@click.option(
    "--workdir", default="./prumux-runs", show_default=True, help="Work dir: caches, checkpoints, models, train.log."
)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a recipe value (repeatable).")
@click.option("--device", default=None, help="cpu, cuda or cuda:K (default: CUDA when present).")
@click.option("--bf16", is_flag=True, help="bf16 autocast for training and bf16 throughput.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def train(
    task: str,
    base_model: str,
    N: int,
    s: float,
    recipe: str,
    workdir: str,
    overrides: tuple[str, ...],
    device: str | None,
    bf16: bool,
    quiet: bool,
) -> None:
    """Train one (N, s) point (resuming or reusing what the work dir holds) and print its result.

    Every input is checked before training starts (exit status 2 on bad input); a training that
    fails exits with status 1 and one line naming the cause, its traceback in WORKDIR/train.log.
    """
    import json

    from trainers.job import check_job, check_writable_dir
    from trainers.phases.loop import Runtime
    from trainers.point import train_point

    job = check_job(task, base_model, recipe, overrides, grid_N=(N,), grid_s=(s,))
    folder = check_writable_dir(workdir, "work dir")
    Runtime.create(device, bf16)  # an unknown or absent device is bad input, not a failed training
    if (count := len(job.recipe.configurations(s))) > 1:
        click.echo(
            f"note: train trains the recipe's own values; its sweep ({count} configurations at s={s:g}) "
            "is trained by start, as a bracket inside the point",
            err=True,
        )
    try:
        result = train_point(
            job.point(N, s, folder).with_recipe(job.recipe.configure({})),
            progress=not quiet,
            device=device,
            bf16=bf16,
        )
    except Exception as error:
        raise JobFailed(_logged_failure(folder, f"train {job.task}/{job.base_model}/N={N}/s={s:g}", error)) from None
    values = result.to_dict()
    shown = ["family", "N", "s", "val_accuracy", "test_accuracy", "throughput", "speedup", "sparsity", "hardware"]
    click.echo(format_table(["field", "value"], [[key, _shown(values[key])] for key in shown]))
    click.echo(f"phase seconds: {values['phase_seconds']}  model: {values['model_dir']}")
    click.echo(json.dumps({key: value for key, value in values.items() if key != "recipe_values"}, indent=2))


def _logged_failure(workdir, job: str, error: Exception) -> str:
    """Log the traceback of a failed job to the work dir's train.log; return the one line to print."""
    from trainers.progress import LOG_FILE, error_cause, job_log

    cause = error_cause(error)
    try:
        with job_log(workdir, job) as log:
            log.error("failed: %s", cause, exc_info=error)
    except OSError:
        return f"training failed: {cause}"
    return f"training failed: {cause} (full log: {workdir / LOG_FILE})"


def _shown(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
