"""The sweep inside a point: every configuration trained to its end against the bracket, side by side.

For each point, the bracket trains the configurations of its sweep by successive halving
(``tuning.bracket.train_bracket``, Optuna's pruner deciding); then the full sweep trains every
configuration to its end (``trainers.point.train_point``) and keeps the best by validation
accuracy. The full sweep runs in the bracket's work folder: a configuration the bracket stopped
resumes from its checkpoint, which trains exactly as without the stop
(``tests/test_point_curve.py``), one it finished is read back, and its figures are those of
every configuration's whole training (from the results), so each configuration is trained once.
"steps" counts every configuration's own steps; "trained" counts a phase 1-2 model that several
configurations share once, as the cache trains it: the compute spent.
The target (issue 19): the bracket picks the full sweep's winner, or one within 0.5 points of it,
at <= 40% of its (trained) steps. Both picks are compared on validation accuracy (what they select
on) and on test accuracy (which neither sees), and a second table gives every configuration's
accuracies trained to its end beside how the bracket ended it.

    nice -n 19 python benchmarks/point_sweep.py          # cpu-demo: (1, 0.5) and (2, 0.5), 8 configurations each
    nice -n 19 python benchmarks/point_sweep.py --points 1:0.5 --bracket-only
    nice -n 19 python benchmarks/point_sweep.py --model tiny-folder --recipe smoke --set prune_steps=8 ...

Writes a Markdown table to ``--out`` (default: stdout only).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from storage import default_url
from trainers.point import train_point
from trainers.point_spec import PointSpec
from trainers.recipes import Recipe, load_recipe, parse_overrides
from tuning.bracket import train_bracket

# Phase 2 (the fine-tuning learning rate, around cpu-demo's 8e-5) and phase 3 (Table 5's kind of values).
COFI_SWEEP = {
    "finetune_lr": [4e-05, 8e-05],
    "pruned_finetune_lr": [5e-05, 1e-04],
    "distill_alpha_layer,distill_alpha_ce": [[0.9, 0.1], [0.5, 0.5]],
}
# Phase 3 only: at N = 2 every phase-2 value is also the dense model's it starts from (mux_start dense),
# so a phase-2 sweep would train a dense model per configuration besides the point's own steps.
PRUMUX_SWEEP = {
    "pruned_finetune_lr": [5e-05, 1e-04],
    "distill_alpha_layer,distill_alpha_ce": [[0.9, 0.1], [0.5, 0.5]],
    "layer_distill_version": [4, 6],
}
DEFAULT_POINTS = {(1, 0.5): COFI_SWEEP, (2, 0.5): PRUMUX_SWEEP}
COLUMNS = (
    "point",
    "configurations",
    "full: winner",
    "full: val acc",
    "full: test acc",
    "full: steps",
    "full: trained",
    "full: s",
    "bracket: winner",
    "bracket: val acc",
    "bracket: test acc",
    "bracket: steps",
    "bracket: trained",
    "bracket: s",
    "steps ratio",
    "trained ratio",
    "gap (points)",
    "test gap (points)",
)
EACH_COLUMNS = ("point", "configuration", "full: val acc", "full: test acc", "bracket")


def full_sweep(recipe: Recipe, task: str, model: str, N: int, s: float, workdir: Path, halved: dict) -> dict:
    """Every configuration to its end, continuing the bracket's work folder; the best by validation accuracy.
    Its trained steps count a shared model once, as the bracket counts them; its seconds are the bracket's
    plus this continuation's (the bracket's trainings are where every configuration's starts)."""
    started = time.monotonic()
    results = [
        (values, train_point(PointSpec(task, model, N, s, configuration, workdir), progress=False))
        for values, configuration in zip(recipe.sweep_values(s), recipe.configurations(s))
    ]
    winner, best = max(results, key=lambda outcome: outcome[1].val_accuracy)
    return {
        "winner": winner,
        "accuracy": best.val_accuracy,
        "test": best.test_accuracy,
        "each": [(values, result.val_accuracy, result.test_accuracy) for values, result in results],
        "steps": sum(result.total_steps for _, result in results),
        "trained": halved["full_sweep_trained"],
        "seconds": halved["seconds"] + time.monotonic() - started,
    }


def bracket(recipe: Recipe, task: str, model: str, N: int, s: float, workdir: Path) -> dict:
    started = time.monotonic()
    result = train_bracket(PointSpec(task, model, N, s, recipe, str(workdir)), default_url(workdir), "point-sweep")
    return {
        "winner": result["configuration"],
        "accuracy": result["val_accuracy"],
        "test": result["test_accuracy"],
        "outcomes": [outcome["outcome"] for outcome in result["configurations"]],
        "steps": result["bracket"]["steps"],
        "trained": result["bracket"]["trained_steps"],
        "seconds": time.monotonic() - started,
        "rungs": result["bracket"]["rungs"],
        "full_sweep_steps": result["bracket"]["full_sweep_steps"],
        "full_sweep_trained": result["bracket"]["full_sweep_trained_steps"],
    }


def row(point: tuple[int, float], count: int, full: dict | None, halved: dict) -> list[str]:
    def side(result: dict | None) -> list[str]:
        if result is None:
            return ["-"] * 6
        figures = (
            f"{result['accuracy']:.4f}",
            f"{result['test']:.4f}",
            str(result["steps"]),
            str(result["trained"]),
            f"{result['seconds']:.0f}",
        )
        return [json.dumps(result["winner"]), *figures]

    compared = ["-"] * 4
    if full is not None:
        compared = [
            f"{halved['steps'] / full['steps']:.2f}",
            f"{halved['trained'] / full['trained']:.2f}",
            f"{100 * (full['accuracy'] - halved['accuracy']):.2f}",
            f"{100 * (full['test'] - halved['test']):.2f}",
        ]
    return [f"({point[0]}, {point[1]:g})", str(count), *side(full), *side(halved), *compared]


def each_rows(point: tuple[int, float], full: dict, halved: dict) -> list[list[str]]:
    """One row per configuration: its full training's accuracies and how the bracket ended it."""
    return [
        [f"({point[0]}, {point[1]:g})", json.dumps(values), f"{val:.4f}", f"{test:.4f}", outcome]
        for (values, val, test), outcome in zip(full["each"], halved["outcomes"])
    ]


def markdown(columns: tuple[str, ...], rows: list[list[str]]) -> str:
    return "\n".join(
        [f"| {' | '.join(columns)} |", f"|{'---|' * len(columns)}", *(f"| {' | '.join(r)} |" for r in rows)]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="rt-polarity")
    parser.add_argument("--model", default="minilm-l6")
    parser.add_argument("--recipe", default="cpu-demo")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--sweep", default=None, help="The sweep of every point, as JSON [default: each point's own].")
    parser.add_argument("--points", default=None, help="N:s points, comma-separated [default: (1, 0.5), (2, 0.5)].")
    parser.add_argument("--bracket-only", action="store_true", help="Train the brackets only, not the full sweeps.")
    parser.add_argument("--workdir", type=Path, default=None, help="Work folder [default: a temporary one].")
    parser.add_argument("--out", type=Path, default=None, help="Markdown file to write the table to.")
    args = parser.parse_args()
    points = DEFAULT_POINTS
    if args.points:
        chosen = [(int(n), float(s)) for n, s in (item.split(":") for item in args.points.split(","))]
        points = {point: DEFAULT_POINTS.get(point) for point in chosen}
    root = args.workdir or Path(tempfile.mkdtemp(prefix="point-sweep-"))
    rows, each, sweeps = [], [], []
    for (N, s), own_sweep in points.items():
        sweep = args.sweep or json.dumps(own_sweep or COFI_SWEEP)
        recipe = load_recipe(args.recipe, {**parse_overrides(args.overrides), "sweep": sweep})
        workdir = root / f"N{N}-s{s:g}"
        halved = bracket(recipe, args.task, args.model, N, s, workdir)
        print(f"({N}, {s:g}) bracket: {json.dumps(halved)}", flush=True)
        full = None if args.bracket_only else full_sweep(recipe, args.task, args.model, N, s, workdir, halved)
        rows.append(row((N, s), len(recipe.configurations(s)), full, halved))
        each += each_rows((N, s), full, halved) if full else []
        sweeps.append(f"({N}, {s:g}): {sweep}")
        print(" | ".join(rows[-1]), flush=True)
    table = markdown(COLUMNS, rows) + (f"\n\n{markdown(EACH_COLUMNS, each)}" if each else "")
    header = (
        f"{args.task}, {args.model}, recipe {args.recipe} {' '.join(args.overrides)}; sweeps {'; '.join(sweeps)}\n\n"
    )
    print(table)
    if args.out:
        args.out.write_text(header + table + "\n")


if __name__ == "__main__":
    main()
