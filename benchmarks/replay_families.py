"""The replay over generated grid families (replay.families, replay.family_curves): ours beside the stock baselines.

Per family, over its seeds and the budgets: the true-best share (% of searches recommending the true
best; in brackets the lowest and highest share of one seed's budgets), trainings as % of the grid
(and their mean count), and on the curves training steps as % of the exhaustive grid's and false stops
(stopped points that would have met the threshold). Points baselines (TPE, GP, random) get as many
trainings as ours used on the same table and budget; curves baselines (TPE + SuccessiveHalving /
Hyperband, Ray Tune ASHA + OptunaSearch / random) run as many trials as the grid has points
(``--curve-trials`` caps it). GP and the Ray methods are slow: they run on the first ``--slow-seeds``
seeds of each family and the ``--slow-budgets`` only, as the table says. ``certificate`` (points) is no
search: the fewest trainings that prove each table's true best by the monotone cap alone (replay.certificate),
what a search pays that rules nothing out on a model's prediction.

    PYTHONPATH=. nice -n 10 python3 benchmarks/replay_families.py --jobs 2 --out benchmarks/tables/families.md
    PYTHONPATH=. python3 benchmarks/replay_families.py --methods ours --families additive,noise-high   # quick
    PYTHONPATH=. python3 benchmarks/replay_families.py --write DIR   # the tables as CSV, for prumux-search replay
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict

import optuna
import pandas as pd

from replay.certificate import replay_certificate
from replay.curve_table import read_curves
from replay.curves import replay_curves
from replay.families import FAMILIES, SEEDS, describe, generate, write_table
from replay.family_curves import curve_rows, generate_curves
from replay.points import replay
from search.grid import parse_budgets

POINT_BASELINES = ("tpe", "random", "gp", "certificate")
CURVE_OURS = ("autoprumux-es", "autoprumux")
CURVE_BASELINES = ("tpe-sha", "tpe-hyperband", "asha-optuna", "random-asha")
SLOW = ("gp", "asha-optuna", "random-asha")
RAY = ("asha-optuna", "random-asha")
LARGE = 100  # grid points above which --large-seeds applies


def replay_table(family: str, seed: int, budgets: Sequence[float], methods: Sequence[str], options: dict) -> list[dict]:
    """Every search on one generated table: one row per (mode, method, budget, baseline seed)."""
    _quiet()
    table = generate(family, seed)
    rows = []
    curves = read_curves(generate_curves(table), table.points) if options["curves"] else None
    rows_per_eval = curve_rows(table)
    trials = min(len(table.points), options["curve_trials"] or len(table.points))
    slow = seed < options["first_seed"] + options["slow_seeds"]
    validation_rows = table.eval_rows if options["noise_aware"] else None
    for budget in budgets:
        is_slow_budget = slow and any(abs(budget - b) < 1e-9 for b in options["slow_budgets"])
        if options["points"]:
            ours = replay(table.points, budget, "autoprumux", seed, validation_rows=validation_rows)
            rows.append({**asdict(ours), "mode": "points"})
            for method in methods:
                if method == "certificate":
                    rows.append({**asdict(replay_certificate(table.points, budget, validation_rows)), "mode": "points"})
                elif method in POINT_BASELINES and (method not in SLOW or is_slow_budget):
                    for run in range(options["baseline_seeds"]):
                        baseline = replay(table.points, budget, method, run, ours.trainings)
                        rows.append({**asdict(baseline), "mode": "points"})
        if curves is None:
            continue
        for method in methods:
            if method in CURVE_OURS or (method in CURVE_BASELINES and method not in RAY):
                runs = 1 if method in CURVE_OURS else options["baseline_seeds"]
                for run in range(runs):
                    result = replay_curves(
                        table.points,
                        curves,
                        budget,
                        method,
                        run,
                        trials,
                        eval_rows=rows_per_eval,
                        validation_rows=validation_rows,
                    )
                    rows.append({**asdict(result), "mode": "curves"})
    return [{**row, "family": family, "table_seed": seed} for row in rows]


def replay_ray(family: str, seed: int, budgets: Sequence[float], methods: Sequence[str], options: dict) -> list[dict]:
    """The Ray Tune baselines on one table (the caller holds a local Ray)."""
    table = generate(family, seed)
    curves = read_curves(generate_curves(table), table.points)
    trials = min(len(table.points), options["curve_trials"] or len(table.points))
    rows = []
    for budget in budgets:
        for method in methods:
            result = replay_curves(table.points, curves, budget, method, 0, trials)
            rows.append({**asdict(result), "mode": "curves", "family": family, "table_seed": seed})
    return rows


def write_tables(folder: str, families: Sequence[str], seeds: range) -> None:
    """Each generated table as ``<family>-<seed>.csv`` and its curves as ``<family>-<seed>-curves.csv``."""
    os.makedirs(folder, exist_ok=True)
    for family in families:
        for seed in seeds:
            table = generate(family, seed)
            write_table(table, os.path.join(folder, f"{table.name}.csv"))
            with open(os.path.join(folder, f"{table.name}-curves.csv"), "w") as out:
                out.write(describe(table) + "\n")
                generate_curves(table).to_csv(out, index=False)
    print(f"{len(families) * len(seeds)} tables and their curves in {folder}")


def summarize_families(results: pd.DataFrame) -> pd.DataFrame:
    """Per (mode, family, method): hit %, its lowest and highest per-seed share, trainings (% and count),
    steps % and false stops (curves), searches."""
    frame = results.assign(
        trainings_pct=100 * results["trainings"] / results["grid_size"],
        steps_pct=100 * results.get("steps", 0) / results.get("grid_steps", 1),
        false_stops=results.get("false_stops", 0),
    )
    keys = ["mode", "family", "sampler"]
    per_seed = frame.groupby([*keys, "table_seed"], sort=False)["hit"].mean().mul(100)
    spread = per_seed.groupby(level=keys, sort=False).agg(seed_min="min", seed_max="max")
    summary = frame.groupby(keys, sort=False).agg(
        hit_pct=("hit", lambda hit: 100 * hit.mean()),
        trainings=("trainings", "mean"),
        trainings_pct=("trainings_pct", "mean"),
        steps_pct=("steps_pct", "mean"),
        false_stops=("false_stops", "sum"),
        searches=("hit", "size"),
    )
    return summary.join(spread).reset_index()


def markdown(summary: pd.DataFrame, header: str) -> str:
    """The summary as markdown: per mode one table, a row per family and a column per method."""
    out = [header]
    for mode, part in summary.groupby("mode", sort=False):
        methods = list(dict.fromkeys(part["sampler"]))
        out += [
            "",
            f"### {mode}: true-best share % [lowest-highest seed] / "
            + ("trainings % of the grid (mean trainings)" if mode == "points" else "steps % of the grid / false stops"),
            "",
            "| family | " + " | ".join(methods) + " |",
            "|---|" + "---|" * len(methods),
        ]
        for family, rows in part.groupby("family", sort=False):
            cells = {row["sampler"]: _cell(row, mode) for _, row in rows.iterrows()}
            out.append(f"| {family} | " + " | ".join(cells.get(m, "") for m in methods) + " |")
        everything = _overall(part)
        out.append("| **all** | " + " | ".join(everything.get(m, "") for m in methods) + " |")
    return "\n".join(out) + "\n"


def _cell(row: pd.Series, mode: str) -> str:
    share = f"{row['hit_pct']:.1f} [{row['seed_min']:.0f}-{row['seed_max']:.0f}]"
    if mode == "points":
        return f"{share} / {row['trainings_pct']:.1f} ({row['trainings']:.1f})"
    return f"{share} / {row['steps_pct']:.1f} / {int(row['false_stops'])}"


def _overall(part: pd.DataFrame) -> dict[str, str]:
    """Per method over every family: mean share (families weighted by searches), lowest family share, cost."""
    cells = {}
    for method, rows in part.groupby("sampler", sort=False):
        share = (rows["hit_pct"] * rows["searches"]).sum() / rows["searches"].sum()
        cost = rows["trainings_pct"] if part["mode"].iloc[0] == "points" else rows["steps_pct"]
        cost = (cost * rows["searches"]).sum() / rows["searches"].sum()
        tail = f" / {int(rows['false_stops'].sum())}" if part["mode"].iloc[0] == "curves" else ""
        cells[method] = f"**{share:.1f}** (lowest family {rows['hit_pct'].min():.1f}) / {cost:.1f}{tail}"
    return cells


def _quiet() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--seeds", type=int, default=SEEDS, help="tables per family (seeds 0 .. SEEDS-1)")
    parser.add_argument(
        "--first-seed",
        type=int,
        default=0,
        help="start the seeds here (e.g. 10: held-out tables, to check a change judged on seeds 0-9)",
    )
    parser.add_argument("--budgets", default="0:0.1:0.01")
    parser.add_argument(
        "--methods",
        default="all",
        help="ours (ours only, points and curves), all, or a comma list of baselines beside ours",
    )
    parser.add_argument("--no-curves", action="store_true", help="the points replay only")
    parser.add_argument(
        "--no-points",
        action="store_true",
        help="the curves replay only (e.g. a stopping-rule change: --methods autoprumux-es)",
    )
    parser.add_argument("--large-seeds", type=int, default=SEEDS, help=f"tables per family of over {LARGE} points")
    parser.add_argument("--ray-families", default="cpu-short,additive", help="families Ray Tune runs on")
    parser.add_argument("--baseline-seeds", type=int, default=1, help="runs of each baseline per table and budget")
    parser.add_argument("--slow-seeds", type=int, default=2, help="tables per family that GP and Ray Tune run on")
    parser.add_argument("--slow-budgets", default="0.03")
    parser.add_argument("--curve-trials", type=int, default=0, help="cap on a curves baseline's trials (0: the grid)")
    parser.add_argument(
        "--exact", dest="noise_aware", action="store_false", help="do not tell our sampler the tables' eval_rows"
    )
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--out", help="write the markdown table here")
    parser.add_argument("--write", metavar="DIR", help="only write each table and its curves (CSV) to DIR")
    parser.add_argument("--csv", help="write every search here")
    args = parser.parse_args()
    _quiet()
    families = args.families.split(",")
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        parser.error(f"unknown family {unknown[0]!r}; choose from {', '.join(FAMILIES)}")
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    if args.write:
        write_tables(args.write, families, seeds)
        return
    budgets = parse_budgets(args.budgets)
    all_methods = (*POINT_BASELINES, *CURVE_OURS, *CURVE_BASELINES)
    named = tuple(args.methods.split(","))
    methods = {"ours": CURVE_OURS, "all": all_methods}.get(args.methods, tuple(dict.fromkeys((*CURVE_OURS, *named))))
    if args.no_points:
        if args.no_curves or any(method in POINT_BASELINES for method in methods):
            parser.error("--no-points replays the curves only: no --no-curves, no points baseline")
        methods = named if set(named) <= set(CURVE_OURS) else methods
    options = {
        "curves": not args.no_curves,
        "points": not args.no_points,
        "baseline_seeds": args.baseline_seeds,
        "slow_seeds": args.slow_seeds,
        "first_seed": args.first_seed,
        "slow_budgets": parse_budgets(args.slow_budgets),
        "curve_trials": args.curve_trials,
        "noise_aware": args.noise_aware,
    }
    started = time.time()
    jobs = [
        (family, seed)
        for family in families
        for seed in (seeds if FAMILIES[family].size <= LARGE else seeds[: args.large_seeds])
    ]
    with ProcessPoolExecutor(args.jobs) as pool:
        futures = [pool.submit(replay_table, f, s, budgets, methods, options) for f, s in jobs]
        rows = [row for future in futures for row in future.result()]
    ray_methods = [m for m in methods if m in RAY]
    if ray_methods and options["curves"]:
        from replay.ray_tune import local_ray

        with local_ray():
            for family in [f for f in families if f in args.ray_families.split(",")]:
                for seed in seeds[: args.slow_seeds]:
                    rows += replay_ray(family, seed, options["slow_budgets"], ray_methods, options)
    results = pd.DataFrame(rows)
    summary = summarize_families(results)
    minutes = (time.time() - started) / 60
    header = (
        f"Families {', '.join(families)}; {args.seeds} seeds each from seed {args.first_seed} ({args.large_seeds} on grids over {LARGE} points); budgets {args.budgets}; baselines "
        f"{args.baseline_seeds} run(s) per table and budget; GP on the first {args.slow_seeds} seeds "
        f"at budgets {args.slow_budgets}, Ray Tune there on {args.ray_families} only; {minutes:.1f} min with {args.jobs} process(es) ({os.cpu_count()} cores)."
    )
    text = markdown(summary, header)
    print(text)
    if args.out:
        with open(args.out, "w") as out:
            out.write(text)
    if args.csv:
        results.to_csv(args.csv, index=False)


if __name__ == "__main__":
    main()
