"""Derive learning-curve tables from the reconstructed grid tables (MNLI, QNLI, QQP, SST-2) for
the replay benchmark with early stopping.

These are NOT measurements: the paper publishes no curves. Each point of ``<task>.csv`` gets a
seeded synthetic curve that ends exactly at the point's accuracy, on a paper-shaped schedule
in steps (Appendix A's phases at a tenth of a GPU run's length, evaluated every 100 steps):

* phase 2 (``finetune``, 1,000 steps), one curve per N, shared by every s of that N: a saturating
  rise ``start + (final - start) * (1 - exp(-t / tau_N)) / (1 - exp(-T / tau_N))`` from near
  chance to the (N, 0) accuracy; multiplexed models learn slower, ``tau_N = 250 * (1 + log2 N / 2)``;
* for s > 0 the prune ramp (``prune``, 800 steps): the sparsity target ramps up and accuracy falls
  linearly from the phase-2 accuracy to a dip ``final - (0.04 + 0.3 s^2)`` (deeper the more it
  prunes; a collapsed point falls to its final near-chance accuracy), then
* the recovery (``pruned_finetune``, 1,000 steps): a saturating rise from the dip to the
  point's accuracy, ``tau = 250``.

Seeded Gaussian noise of 0.4 points (the sampling error of a 10,000-example validation set)
is added to every evaluation but each curve's last, which is the table's accuracy. The
(N, s > 0) curves omit their phase-2 rows: the (N, 0) curve is their prefix
(docs/ARCHITECTURE.md, "Curves table").

    python3 benchmarks/tables/derive_curves.py   # writes benchmarks/tables/<task>-curves.csv
"""

from __future__ import annotations

import argparse
import math
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

TABLES = Path(__file__).parent
TASKS = ("mnli", "qnli", "qqp", "sst2")
CHANCE = {"mnli": 1 / 3, "qnli": 0.5, "qqp": 0.5, "sst2": 0.5}
EVERY = 100
PHASE2_STEPS, PRUNE_STEPS, RECOVERY_STEPS = 1000, 800, 1000
TAU_PHASE2, TAU_RECOVERY = 250.0, 250.0
NOISE = 0.004


def saturating(t: np.ndarray, start: float, final: float, tau: float, length: int) -> np.ndarray:
    """A rise from ``start`` that reaches ``final`` exactly at ``length``."""
    return start + (final - start) * (1 - np.exp(-t / tau)) / (1 - math.exp(-length / tau))


def derive(points: pd.DataFrame, chance: float, rng: np.random.Generator) -> pd.DataFrame:
    """The curves table of one grid table (columns N, s, step, accuracy, stage)."""
    rows = []
    lookup = points.set_index(["N", "s"])["accuracy"]
    for N, s, final in points[["N", "s", "accuracy"]].itertuples(index=False):
        teacher = float(lookup[(N, 0.0)])
        if s == 0:
            steps = np.arange(EVERY, PHASE2_STEPS + 1, EVERY)
            tau = TAU_PHASE2 * (1 + math.log2(N) / 2)
            values = saturating(steps, chance + 0.02, teacher, tau, PHASE2_STEPS)
            stages = ["finetune"] * len(steps)
        else:
            dip = min(final, max(final - (0.04 + 0.3 * s * s), chance))
            ramp = np.arange(EVERY, PRUNE_STEPS + 1, EVERY)
            recovery = np.arange(EVERY, RECOVERY_STEPS + 1, EVERY)
            values = np.concatenate(
                [
                    teacher + (dip - teacher) * ramp / PRUNE_STEPS,
                    saturating(recovery, dip, final, TAU_RECOVERY, RECOVERY_STEPS),
                ]
            )
            steps = np.concatenate([PHASE2_STEPS + ramp, PHASE2_STEPS + PRUNE_STEPS + recovery])
            stages = ["prune"] * len(ramp) + ["pruned_finetune"] * len(recovery)
        noisy = np.clip(values + rng.normal(0, NOISE, len(values)), 0.0, 1.0)
        noisy[-1] = final
        rows += [(N, s, int(step), round(float(a), 4), stage) for step, a, stage in zip(steps, noisy, stages)]
    return pd.DataFrame(rows, columns=["N", "s", "step", "accuracy", "stage"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for task in TASKS:
        points = pd.read_csv(TABLES / f"{task}.csv", comment="#")
        rng = np.random.default_rng([args.seed, zlib.crc32(task.encode())])
        curves = derive(points, CHANCE[task], rng)
        path = TABLES / f"{task}-curves.csv"
        header = (
            f"# DERIVED curves, not measured: benchmarks/tables/derive_curves.py --seed {args.seed} from {task}.csv.\n"
            "# step = the point's own training step; the last row of a point is its accuracy in the points table;\n"
            "# (N, s > 0) rows start after phase 2: the (N, 0) curve is their shared prefix.\n"
        )
        path.write_text(header + curves.to_csv(index=False))
        print(f"{path}: {len(curves)} rows, {len(points)} points")


if __name__ == "__main__":
    main()
