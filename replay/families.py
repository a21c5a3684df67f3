"""Generated grid families for the replay: seeded points tables no search here was tuned on.

Every table is a full grid in the replay's points format (``N,s,accuracy,throughput``, the dense
(1, 0) row first, throughput the speed-up over it) plus ``true_accuracy`` (before evaluation noise)
and, per table, ``eval_rows``: the validation rows each accuracy is measured on. Accuracy is
``dense - loss(N, s)`` floored at chance, then measured as a binomial share of ``eval_rows`` rows,
so its noise is one binomial standard error, ``sqrt(a (1 - a) / eval_rows)``. Throughput is a FLOP
model, ``N^e / (f + (1 - f)(1 - s))`` with a fixed share ``f`` and a multiplexing efficiency ``e``,
times 2% lognormal noise. ``generate(family, seed)`` is deterministic in (family, seed);
``family_curves.generate_curves`` gives a table its learning curves.

Losses: ``loss_N`` grows with log2 N (a random power), ``loss_s`` is ``b (s / s_max)^q`` with
q in [2, 5] (flat, then steeper: concave in s). They combine

* additively: ``loss_N + loss_s`` (the paper's observation);
* super-additively: ``+ k sqrt(loss_N loss_s)``, k in [0.5, 1.5] (each hurts more with the other);
* sub-additively: ``- k min(loss_N, loss_s)``, k in [0.4, 0.9] (never below the larger one).

The families (``FAMILIES``; the decision band is 1 point, the budget step of the replay):

========== ======================= ==============================================================
name       grid                    what it tests
========== ======================= ==============================================================
additive   N 1,2,5,10 x s 0,.6-.95  additive losses, 10,000 rows: noise 0.2-0.5 pt, well below the band
super      paper grid (36)         super-additive interaction
sub        paper grid (36)         sub-additive interaction
cliff-s    paper grid (36)         collapse to near chance from a random high s on (every N)
cliff-N    paper grid (36)         collapse to near chance from a random N >= 5 on (every s)
noise-band paper grid (36)         additive, 2,000 rows: noise 0.5-1.0 pt, about the band
noise-high paper grid (36)         additive, 300 rows: noise 1.4-2.6 pt, above the band
plain      paper grid (36)         a plain base: N = 2 loses 8-30 points, N >= 5 near chance
cpu-short  N 1,2,5 x s 0,.5,.7,.9  the cpu-demo grid (12), plain base, 1,000 rows: noise 0.8-1.5 pt
gpu-88     8 N x 11 s (88)         N 1,2,4,5,8,10,20,40 x s 0,.5-.95: mixed interaction, s cliff
gpu-320    8 N x 40 s (320)        same Ns x s 0-.975 by .025: mixed interaction, s cliff
========== ======================= ==============================================================

Every family has ``SEEDS`` (10) seeds by default; a table's dense accuracy (0.80-0.94 on two
labels, 0.70-0.90 on three) and loss scales are drawn per seed.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

SEEDS = 10
PAPER_N = (1, 2, 5, 10)
PAPER_S = (0.0, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
GPU_N = (1, 2, 4, 5, 8, 10, 20, 40)
EXACT_ROWS = 10_000
THROUGHPUT_NOISE = 0.02


@dataclass(frozen=True)
class Family:
    """A family of generated grids: its axes, how losses combine and how accuracy is measured."""

    name: str
    grid_N: tuple[int, ...] = PAPER_N
    grid_s: tuple[float, ...] = PAPER_S
    interaction: str = "additive"  # additive, super, sub, or mixed (any of them, per seed)
    cliff: str = ""  # "s" or "N": collapse to near chance beyond a drawn sparsity or width
    eval_rows: int = EXACT_ROWS
    plain: bool = False  # multiplexing a plain base: N = 2 half works, N >= 5 barely
    curve_every: int = 100  # evaluation interval of the curves (family_curves)

    @property
    def size(self) -> int:
        return len(self.grid_N) * len(self.grid_s)


def _steps(start: float, stop: float, step: float) -> tuple[float, ...]:
    return tuple(round(x, 3) for x in np.arange(start, stop + step / 2, step))


FAMILIES: dict[str, Family] = {
    family.name: family
    for family in (
        Family("additive"),
        Family("super", interaction="super"),
        Family("sub", interaction="sub"),
        Family("cliff-s", cliff="s"),
        Family("cliff-N", cliff="N"),
        Family("noise-band", eval_rows=2_000),
        Family("noise-high", eval_rows=300),
        Family("plain", plain=True),
        Family("cpu-short", (1, 2, 5), (0.0, 0.5, 0.7, 0.9), plain=True, eval_rows=1_000, curve_every=20),
        Family("gpu-88", GPU_N, (0.0, *_steps(0.5, 0.95, 0.05)), interaction="mixed", cliff="s"),
        Family("gpu-320", GPU_N, _steps(0.0, 0.975, 0.025), interaction="mixed", cliff="s"),
    )
}


@dataclass(frozen=True)
class FamilyTable:
    """One generated grid: its points table, the rows its accuracies were measured on, its chance level."""

    family: str
    seed: int
    points: pd.DataFrame  # N, s, accuracy, throughput, true_accuracy
    eval_rows: int
    chance: float

    @property
    def name(self) -> str:
        return f"{self.family}-{self.seed}"


def family_rng(family: str, seed: int, part: str = "points") -> np.random.Generator:
    """The generator of one (family, seed, part): independent of every other family and part."""
    return np.random.default_rng([seed, zlib.crc32(family.encode()), zlib.crc32(part.encode())])


def noise_sd(accuracy: np.ndarray | float, eval_rows: int) -> np.ndarray:
    """One binomial standard error of an accuracy measured on ``eval_rows`` rows."""
    accuracy = np.asarray(accuracy, float)
    return np.sqrt(accuracy * (1 - accuracy) / eval_rows)


def generate(family: str | Family, seed: int) -> FamilyTable:
    """The grid of ``family`` for ``seed`` (deterministic)."""
    family = FAMILIES[family] if isinstance(family, str) else family
    rng = family_rng(family.name, seed)
    chance = float(rng.choice([0.5, 1 / 3]))
    dense = rng.uniform(0.80, 0.94) if chance == 0.5 else rng.uniform(0.70, 0.90)
    N, s = (axis.ravel() for axis in np.meshgrid(np.array(family.grid_N, float), family.grid_s, indexing="ij"))
    loss = _combine(_loss_N(family, rng, N), _loss_s(family, rng, s), _interaction(family, rng), rng)
    true = np.maximum(dense - loss, chance + rng.uniform(0.0, 0.02, len(N)))
    true = _collapse(family, rng, N, s, true, chance)
    true[0] = dense
    measured = rng.binomial(family.eval_rows, true) / family.eval_rows
    share, efficiency = rng.uniform(0.05, 0.25), rng.uniform(0.85, 1.0)
    throughput = N**efficiency / (share + (1 - share) * (1 - s)) * np.exp(rng.normal(0, THROUGHPUT_NOISE, len(N)))
    throughput = throughput / throughput[0]
    points = pd.DataFrame(
        {"N": N.astype(int), "s": s, "accuracy": measured, "throughput": throughput, "true_accuracy": true}
    )
    return FamilyTable(family.name, seed, points, family.eval_rows, chance)


def generate_family(family: str | Family, seeds: int = SEEDS) -> list[FamilyTable]:
    """Seeds 0 .. seeds-1 of ``family``."""
    return [generate(family, seed) for seed in range(seeds)]


def _loss_N(family: Family, rng: np.random.Generator, N: np.ndarray) -> np.ndarray:
    if family.plain:  # N = 2 half works, wider barely: most of the way to chance
        half, rest = rng.uniform(0.08, 0.30), rng.uniform(0.30, 0.60)
        return np.where(N == 1, 0.0, np.where(N == 2, half, rest))
    per_doubling, power = rng.uniform(0.003, 0.012), rng.uniform(0.8, 1.5)
    return per_doubling * np.log2(N) ** power


def _loss_s(family: Family, rng: np.random.Generator, s: np.ndarray) -> np.ndarray:
    scale, power = rng.uniform(0.02, 0.08), rng.uniform(2.0, 5.0)
    return scale * (s / max(family.grid_s)) ** power


def _interaction(family: Family, rng: np.random.Generator) -> str:
    if family.interaction == "mixed":
        return str(rng.choice(["additive", "super", "sub"]))
    return family.interaction


def _combine(loss_N: np.ndarray, loss_s: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    if kind == "super":
        return loss_N + loss_s + rng.uniform(0.5, 1.5) * np.sqrt(loss_N * loss_s)
    if kind == "sub":
        return loss_N + loss_s - rng.uniform(0.4, 0.9) * np.minimum(loss_N, loss_s)
    return loss_N + loss_s


def _collapse(
    family: Family, rng: np.random.Generator, N: np.ndarray, s: np.ndarray, true: np.ndarray, chance: float
) -> np.ndarray:
    """Near-chance accuracy beyond the drawn cliff (none without ``family.cliff``)."""
    if family.cliff == "s":
        high = [x for x in family.grid_s if x >= 0.8]
        edge = float(rng.choice(high[: max(len(high) - 1, 1)]))
        fallen = s >= edge - 1e-9
    elif family.cliff == "N":
        fallen = N >= float(rng.choice([n for n in family.grid_N if n >= 5]))
    else:
        return true
    floor = chance + rng.uniform(0.0, 0.05, len(N))
    return np.where(fallen, np.minimum(true, floor), true)


def describe(table: FamilyTable) -> str:
    """A one-line header for a written table: family, seed, rows, noise."""
    se = float(noise_sd(table.points["true_accuracy"].iloc[0], table.eval_rows))
    return (
        f"# GENERATED table, not measured: replay.families {table.family} seed {table.seed}; "
        f"eval_rows={table.eval_rows} (one standard error {100 * se:.2f} points at dense), chance {table.chance:.3f}"
    )


def write_table(table: FamilyTable, path: str) -> None:
    """Write the points table (with its header) to ``path``."""
    with open(path, "w") as out:
        out.write(describe(table) + "\n")
        table.points.to_csv(out, index=False)


__all__ = ["FAMILIES", "SEEDS", "Family", "FamilyTable", "generate", "generate_family", "noise_sd", "write_table"]
