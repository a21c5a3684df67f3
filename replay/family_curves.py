"""Learning curves for a generated grid (``replay.families``), in the replay's curves format.

Rows ``N,s,step,accuracy,stage``; every curve ends exactly at its point's (measured) accuracy, and
(N, s > 0) curves omit their phase-2 rows: the (N, 0) curve is their shared prefix (replay.curve_table).
The schedule, in the family's evaluation interval ``every`` (100 steps; 20 on cpu-short): phase 2
(``finetune``) 10 evaluations, the prune ramp (``prune``) 8, the recovery (``pruned_finetune``) 10.

Shapes, drawn per seed:

* **phase 2**, one per N: a saturating rise from near chance to the (N, 0) accuracy, slower the
  wider N (``tau = L / 4 * (1 + log2 N / 2)``). A **slow starter** (each N > 1 with chance 0.3) stays
  within 2 points of chance for the first 30-60% of the stage, then rises steeply (logistic) to it;
* **pruning dip**: during the ramp accuracy falls linearly from the phase-2 accuracy to
  ``final - depth``, depth 2-10 points plus ``0.3 s^2`` (floored at chance), then recovers
  saturating to the point's accuracy;
* **plateau** (each pruned point with chance 0.3): the recovery stalls where it is (a fifth to two
  fifths into the stage) for 30-50% of the stage, then climbs linearly to the point's accuracy.

Each evaluation but the last is measured on ``curve_rows`` validation rows (binomial noise, the
same standard error as the points table's on ``eval_rows``, or the cpu-demo's 256-row sample on
cpu-short); the last is the point's accuracy, measured on the whole split.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from replay.families import FAMILIES, FamilyTable, family_rng

PHASE2, RAMP, RECOVERY = 10, 8, 10  # evaluations per stage
SLOW_SHARE, PLATEAU_SHARE = 0.3, 0.3
CPU_SAMPLE_ROWS = 256


def curve_rows(table: FamilyTable) -> int:
    """Validation rows each evaluation before a point's last is measured on."""
    return CPU_SAMPLE_ROWS if table.family == "cpu-short" else table.eval_rows


def generate_curves(table: FamilyTable) -> pd.DataFrame:
    """The curves table of a generated grid (deterministic in its family and seed)."""
    rng = family_rng(table.family, table.seed, "curves")
    every = FAMILIES[table.family].curve_every
    rows_per_eval = curve_rows(table)
    finals = table.points.set_index(["N", "s"])["accuracy"]
    rows = []
    for N, s, final in table.points[["N", "s", "accuracy"]].itertuples(index=False):
        if s == 0:
            steps = every * np.arange(1, PHASE2 + 1)
            values = _phase2(rng, int(N), float(final), table.chance)
            stages = ["finetune"] * PHASE2
        else:
            teacher = float(finals[(N, 0.0)])
            values = np.concatenate([_ramp(rng, teacher, float(final), float(s), table.chance), _recovery(rng)])
            values[RAMP:] = values[RAMP - 1] + (float(final) - values[RAMP - 1]) * values[RAMP:]
            steps = every * np.arange(PHASE2 + 1, PHASE2 + RAMP + RECOVERY + 1)
            stages = ["prune"] * RAMP + ["pruned_finetune"] * RECOVERY
        measured = rng.binomial(rows_per_eval, np.clip(values, 0.0, 1.0)) / rows_per_eval
        measured[-1] = final
        rows += [(int(N), float(s), int(step), float(a), stage) for step, a, stage in zip(steps, measured, stages)]
    return pd.DataFrame(rows, columns=["N", "s", "step", "accuracy", "stage"])


def _phase2(rng: np.random.Generator, N: int, final: float, chance: float) -> np.ndarray:
    """Phase-2 accuracies at evaluations 1..PHASE2, the last exactly ``final``."""
    t = np.arange(1, PHASE2 + 1) / PHASE2
    start = chance + 0.02
    if N > 1 and rng.random() < SLOW_SHARE:  # a slow starter: flat near chance, then a steep rise
        onset = rng.uniform(0.3, 0.6)
        rise = 1 / (1 + np.exp(-(t - (onset + 1) / 2) * 12))
        shape = (rise - rise[0]) / (rise[-1] - rise[0])
    else:
        tau = 0.25 * (1 + np.log2(N) / 2)
        shape = (1 - np.exp(-t / tau)) / (1 - np.exp(-1 / tau))
    return start + (final - start) * shape


def _ramp(rng: np.random.Generator, teacher: float, final: float, s: float, chance: float) -> np.ndarray:
    """The prune ramp: a linear fall from the teacher's accuracy to the dip."""
    dip = max(min(final, teacher) - rng.uniform(0.02, 0.10) - 0.3 * s * s, chance)
    return teacher + (dip - teacher) * np.arange(1, RAMP + 1) / RAMP


def _recovery(rng: np.random.Generator) -> np.ndarray:
    """The recovery's share of the way from the dip to the final accuracy, 1 at the end; with a plateau stall."""
    t = np.arange(1, RECOVERY + 1) / RECOVERY
    share = (1 - np.exp(-t / 0.25)) / (1 - np.exp(-4.0))
    if rng.random() < PLATEAU_SHARE:  # stalls where it is, then climbs linearly to the end
        first = int(np.searchsorted(t, rng.uniform(0.2, 0.4)))
        last = min(int(np.searchsorted(t, t[first] + rng.uniform(0.3, 0.5))), RECOVERY - 1)
        share[first:last] = share[first]
        share[last:] = np.linspace(share[first], 1.0, RECOVERY - last + 1)[1:]
    share[-1] = 1.0
    return share
