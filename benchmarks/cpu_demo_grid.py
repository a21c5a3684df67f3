"""Train a whole (N, s) grid with one recipe and write the measured table.

The table (N, s, accuracy, throughput, ...) is what `prumux-search replay` and
`prumux-search predict` read: a real, fully measured grid to judge the sampler against.
`accuracy` is the validation accuracy (what the search selects on); the test accuracy is kept
beside it. Phase 1-2 models are trained once per N and reused by every s, and points already
in the work dir (say, the work dir of a `prumux-search start` run with the same recipe) are
read back, not retrained. `seconds` is the point's own training and measuring time, its phase
1-2 model's counted in every point that uses it; the script also prints its own wall time.

Beside the table it writes the points' learning curves (`--curves`, default `<out>-curves.csv`):
rows `N,s,step,accuracy,stage`, each evaluation during training at the point's own step, the last
row of a point its final validation accuracy (the table's `accuracy`). An (N, 0) curve is the
phase-2 curve every (N, s) of that N starts with, so the (N, s > 0) rows are only their phase-3
evaluations (docs/ARCHITECTURE.md, "Curves table"). `prumux-search replay --table T --curves C`
replays a search on both.

    python benchmarks/cpu_demo_grid.py --out benchmarks/tables/cpu-demo-rt-polarity.csv
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

from trainers.curve import PHASE12_STAGES
from trainers.point import PointResult, train_point
from trainers.point_spec import PointSpec

COLUMNS = ["N", "s", "accuracy", "test_accuracy", "throughput", "speedup", "sparsity", "family", "seconds"]
CURVE_COLUMNS = ["N", "s", "step", "accuracy", "stage"]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="rt-polarity")
    parser.add_argument("--model", default="minilm-l6")
    parser.add_argument("--recipe", default="cpu-demo")
    parser.add_argument("--grid-n", default="1,2,5")
    parser.add_argument("--grid-s", default="0,0.5,0.7,0.9")
    parser.add_argument("--workdir", default="prumux-runs/grid")
    parser.add_argument("--out", default="benchmarks/tables/cpu-demo-rt-polarity.csv")
    parser.add_argument("--curves", default=None, help="the curves table (default: <out>-curves.csv)")
    return parser.parse_args()


def curve_rows(result: PointResult) -> list[dict]:
    """The point's curve rows: its own evaluations (phase 3 only when s > 0), its final accuracy last."""
    own = [row for row in result.curve if result.s == 0 or row[2] not in PHASE12_STAGES]
    rows = [
        {"N": result.N, "s": result.s, "step": step, "accuracy": value, "stage": stage}
        for step, value, stage in own
        if step < result.total_steps
    ]
    last_stage = own[-1][2] if own else "finetune"
    rows.append(
        {"N": result.N, "s": result.s, "step": result.total_steps, "accuracy": result.val_accuracy, "stage": last_stage}
    )
    return rows


def main() -> None:
    args = parse_args()
    grid = [(int(n), float(s)) for n in args.grid_n.split(",") for s in args.grid_s.split(",")]
    curves_out = args.curves or str(Path(args.out).with_suffix("")) + "-curves.csv"
    rows, curves, run_started = [], [], time.perf_counter()
    for index, (N, s) in enumerate(grid, start=1):
        print(f"[{index}/{len(grid)}] training (N={N}, s={s:g})", flush=True)
        result = train_point(PointSpec(args.task, args.model, N, s, args.recipe, args.workdir))
        rows.append(
            {
                "N": N,
                "s": s,
                "accuracy": result.val_accuracy,
                "test_accuracy": result.test_accuracy,
                "throughput": result.throughput,
                "speedup": result.speedup,
                "sparsity": result.sparsity,
                "family": result.family,
                "seconds": sum(result.phase_seconds.values()),
            }
        )
        curves += curve_rows(result)
        table = pd.DataFrame(rows, columns=COLUMNS)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.out, index=False, float_format="%.6g")
        pd.DataFrame(curves, columns=CURVE_COLUMNS).to_csv(curves_out, index=False, float_format="%.6g")
    print(f"\n{args.task} / {args.model} / {args.recipe} on {result.hardware}")
    print(table.to_string(index=False, float_format=lambda value: f"{value:.3f}"))
    print(
        f"points' own time: {table.seconds.sum() / 60:.1f} min; this run: {(time.perf_counter() - run_started) / 60:.1f} min"
    )
    print(f"table written to {args.out}, curves to {curves_out}")


if __name__ == "__main__":
    main()
