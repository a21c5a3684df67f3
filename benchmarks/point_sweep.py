"""The sweep inside a point: every configuration trained to its end against the bracket, side by side.

For each point, the full sweep trains every configuration of the recipe's sweep to its end
(``trainers.point.train_point``) and keeps the best by validation accuracy; the bracket trains
the same configurations by successive halving (``search.bracket.train_bracket``, Optuna's
pruner deciding). Each side has its own work folder, so neither reuses the other's trainings.
"steps" counts every configuration's own steps; "trained" counts a phase 1-2 model that several
configurations share once, as the cache trains it.
The target (issue 19): the bracket picks the full sweep's winner, or one within 0.5 points of it,
at <= 40% of its steps.

    nice -n 19 python benchmarks/point_sweep.py                        # cpu-demo, (1, 0.5) and (2, 0)
    nice -n 19 python benchmarks/point_sweep.py --model tiny-folder --recipe smoke --set prune_steps=8 ...

Writes a Markdown table to ``--out`` (default: stdout only).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from search.bracket import Point, train_bracket
from storage import default_url
from trainers.point import PHASE12_PHASES, train_point
from trainers.recipes import Recipe, load_recipe, parse_overrides

# Phase 2 (the fine-tuning learning rate, around cpu-demo's 8e-5) and phase 3 (Table 5's kind of values).
DEFAULT_SWEEP = {
    "finetune_lr": [4e-05, 8e-05],
    "pruned_finetune_lr": [5e-05, 1e-04],
    "distill_alpha_layer,distill_alpha_ce": [[0.9, 0.1], [0.5, 0.5]],
}
COLUMNS = (
    "point",
    "configurations",
    "full: winner",
    "full: val acc",
    "full: steps",
    "full: trained",
    "full: s",
    "bracket: winner",
    "bracket: val acc",
    "bracket: steps",
    "bracket: trained",
    "bracket: s",
    "steps ratio",
    "trained ratio",
    "gap (points)",
)


def full_sweep(recipe: Recipe, task: str, model: str, N: int, s: float, workdir: Path) -> dict:
    """Every configuration to its end; the best by validation accuracy, with the steps and seconds of all
    (seconds from the results, so a rerun on the same work folder reports what the trainings took)."""
    outcomes = []
    for values, configuration in zip(recipe.sweep_values(s), recipe.configurations(s)):
        result = train_point(task, model, N, s, configuration, workdir, progress=False)
        trained = result.total_steps - (result.phase12_steps if result.cache_hit else 0)
        seconds = sum(v for k, v in result.phase_seconds.items() if not (result.cache_hit and k in PHASE12_PHASES))
        outcomes.append((result.val_accuracy, values, result.total_steps, trained, seconds))
    best = max(outcomes, key=lambda outcome: outcome[0])
    return {
        "winner": best[1],
        "accuracy": best[0],
        "steps": sum(outcome[2] for outcome in outcomes),
        "trained": sum(outcome[3] for outcome in outcomes),
        "seconds": sum(outcome[4] for outcome in outcomes),
    }


def bracket(recipe: Recipe, task: str, model: str, N: int, s: float, workdir: Path) -> dict:
    started = time.monotonic()
    point = Point(default_url(workdir), "point-sweep", task, model, N, s, recipe, str(workdir / "work"))
    result = train_bracket(point)
    return {
        "winner": result["configuration"],
        "accuracy": result["val_accuracy"],
        "steps": result["bracket"]["steps"],
        "trained": result["bracket"]["trained_steps"],
        "seconds": time.monotonic() - started,
    }


def row(point: tuple[int, float], count: int, full: dict, halved: dict) -> list[str]:
    return [
        f"({point[0]}, {point[1]:g})",
        str(count),
        json.dumps(full["winner"]),
        f"{full['accuracy']:.4f}",
        str(full["steps"]),
        str(full["trained"]),
        f"{full['seconds']:.0f}",
        json.dumps(halved["winner"]),
        f"{halved['accuracy']:.4f}",
        str(halved["steps"]),
        str(halved["trained"]),
        f"{halved['seconds']:.0f}",
        f"{halved['steps'] / full['steps']:.2f}",
        f"{halved['trained'] / full['trained']:.2f}",
        f"{100 * (full['accuracy'] - halved['accuracy']):.2f}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="rt-polarity")
    parser.add_argument("--model", default="minilm-l6")
    parser.add_argument("--recipe", default="cpu-demo")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--sweep", default=json.dumps(DEFAULT_SWEEP), help="The sweep, as JSON.")
    parser.add_argument("--points", default="1:0.5,2:0", help="N:s points, comma-separated.")
    parser.add_argument("--workdir", type=Path, default=None, help="Work folder [default: a temporary one].")
    parser.add_argument("--out", type=Path, default=None, help="Markdown file to write the table to.")
    args = parser.parse_args()
    recipe = load_recipe(args.recipe, {**parse_overrides(args.overrides), "sweep": args.sweep})
    points = [(int(n), float(s)) for n, s in (item.split(":") for item in args.points.split(","))]
    root = args.workdir or Path(tempfile.mkdtemp(prefix="point-sweep-"))
    rows = []
    for N, s in points:
        full = full_sweep(recipe, args.task, args.model, N, s, root / "full")
        halved = bracket(recipe, args.task, args.model, N, s, root / "bracket")
        rows.append(row((N, s), len(recipe.configurations(s)), full, halved))
        print(" | ".join(rows[-1]), flush=True)
    table = "\n".join(
        [f"| {' | '.join(COLUMNS)} |", f"|{'---|' * len(COLUMNS)}", *(f"| {' | '.join(r)} |" for r in rows)]
    )
    header = f"{args.task}, {args.model}, recipe {args.recipe} {' '.join(args.overrides)}, sweep {args.sweep}\n\n"
    print(table)
    if args.out:
        args.out.write_text(header + table + "\n")


if __name__ == "__main__":
    main()
