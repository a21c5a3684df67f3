"""Search efficiency of Auto-PruMUX against Optuna's samplers, replayed on fully measured grids.

For every table in benchmarks/tables/ and every budget 0, 0.005, ..., 0.10 it replays the
searches (replay.points) and prints, per table and over all tables side by side: mean
trainings as % of the grid, % of searches whose recommendation is the true best within the
budget, and mean throughput regret. Baselines get as many trainings as AutoPruMUX used for the
same budget, or ``--trainings``. ``to_best``: mean trainings until the true best was measured
(over the searches that measured it): what a search stopped early would have found.

    PYTHONPATH=. python3 benchmarks/search_efficiency.py [--seeds 3] [--samplers autoprumux,tpe]
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import optuna
import pandas as pd

from replay.points import SAMPLERS, replay_many, summarize
from search.grid import parse_budgets, read_points

TABLES = Path(__file__).parent / "tables"
POINT_TABLES = sorted(path for path in TABLES.glob("*.csv") if not path.stem.endswith("-curves"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", nargs="*", type=Path, default=POINT_TABLES)
    parser.add_argument("--budgets", default="0:0.10:0.005")
    parser.add_argument("--samplers", default=",".join(SAMPLERS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--trainings", type=int, default=None, help="fixed trainings per baseline search")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    budgets = parse_budgets(args.budgets)
    samplers = args.samplers.split(",")
    per_table = {}
    for path in args.tables:
        results = replay_many(read_points(path), budgets, samplers, args.seeds, args.trainings)
        per_table[path.stem] = results
        print(f"== {path.stem} ({len(budgets)} budgets)")
        print(summarize(results).to_string(index=False, float_format=lambda v: f"{v:.1f}"))
    overall = summarize(pd.concat(per_table.values())).set_index("sampler")
    columns = ["trainings_pct", "hit_pct", "regret_pct", "to_best"]
    print(f"== all tables: {', '.join(per_table)}")
    print(overall[columns].T.to_string(float_format=lambda v: f"{v:.1f}"))


if __name__ == "__main__":
    main()
