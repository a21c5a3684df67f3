"""The `tasks` and `models` commands of `prumux-search`."""

from __future__ import annotations

from collections.abc import Sequence

import click

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
            [name, shape["layers"], shape["hidden"], shape["heads"], shape["intermediate"],
             f"{shape['parameters']:,}", shape["source"]]
        )
    click.echo(format_table(["model", "layers", "hidden", "heads", "intermediate", "parameters", "source"], rows))


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain-text table: left-aligned columns separated by two spaces, with a header rule."""
    cells = [[str(value) for value in row] for row in [headers, *rows]]
    widths = [max(len(row[column]) for row in cells) for column in range(len(headers))]
    lines = ["  ".join(value.ljust(width) for value, width in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)
