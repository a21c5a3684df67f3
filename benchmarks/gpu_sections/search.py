"""Section 2: the default search, whole, as README's `start` runs it; and section 5's Ray Tune search
with fractional GPUs (four trials sharing the device)."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from gpu_sections.common import REPO, Plan, Section, TimeBox
from prumux import hardware_name

DEFAULT_TITLE = "2. The default search on this device (README's `start`)"
TUNE_TITLE = "5b. Ray Tune: a tiny search, four trials sharing the device"
# The default search on 2 CPU cores (README, 2026-12-04): done after 12 min 51 s, 540 training steps.
CPU_SEARCH_SECONDS, CPU_SEARCH_STEPS = 771.0, 540
SEARCH_SECONDS_TARGET = 180.0  # issue 36: the default search on a GPU within 3 minutes
QUICK_START = ["--recipe", "tiny", "--grid-n", "1,2", "--grid-s", "0,0.5"]  # --quick: and a tiny random BERT
TRIALS_AT_ONCE = 4
BUDGET = 0.05


def cli(*args: str, timeout: float) -> subprocess.CompletedProcess:
    """``prumux-search ARGS`` in a child process, from the repository."""
    environment = os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.run(
        [sys.executable, "-m", "cli", *args], cwd=REPO, env=environment, capture_output=True, text=True, timeout=timeout
    )


def default_search_section(plan: Plan, run_dir: Path, tiny_model: Path | None, box: TimeBox) -> Section:
    """`prumux-search start` on a fresh run directory (early stopping on, as by default), ended by the
    section's time box; then its trials, training compute and recommendation as `status` and `best` give them."""
    section = Section(DEFAULT_TITLE)
    budget = max(30.0, box.left() - 20)  # `status` and `best` after it
    extra = ["--model", str(tiny_model), *QUICK_START] if plan.quick else []
    command = ["start", "--run-dir", str(run_dir), "--time-budget", f"{budget:.0f}", *extra]
    started = time.perf_counter()
    done = cli(*command, timeout=budget + 90)
    seconds = time.perf_counter() - started
    lines = done.stdout.splitlines()
    stop = next((line for line in lines if line.startswith("stopped: ")), "no `stopped:` line")
    section.lines += [f"`prumux-search {' '.join(command)}`: exit {done.returncode}, {seconds:.0f} s; {stop}", ""]
    if done.returncode != 0:
        section.lines.append(f"failed: {(done.stderr.strip() or done.stdout.strip()).splitlines()[-1]}")
        return section
    status = json.loads(cli("status", "--run-dir", str(run_dir), "--format", "json", timeout=120).stdout)
    best = cli("best", "--run-dir", str(run_dir), "--format", "json", timeout=120)
    recommended = json.loads(best.stdout) if best.returncode == 0 else None
    steps = (status.get("compute") or {}).get("spent") or 0
    grid = (status.get("compute") or {}).get("grid")
    section.lines += trial_table(status["trials"])
    gpu_rate, cpu_rate = steps / seconds, CPU_SEARCH_STEPS / CPU_SEARCH_SECONDS
    section.lines += [
        "",
        f"training compute: {steps} steps" + (f" of the exhaustive grid's {grid}" if grid else ""),
        f"training steps per wall second of the whole search: {gpu_rate:.2f} here, {cpu_rate:.2f} on 2 CPU cores "
        f"(README's default search, {CPU_SEARCH_STEPS} steps in {CPU_SEARCH_SECONDS:.0f} s): {gpu_rate / cpu_rate:.1f}x",
        "recommended: "
        + (
            f"trial {recommended['trial']}, (N={recommended['N']}, s={recommended['s']:g}) {recommended['family']}, "
            f"accuracy {recommended['accuracy']:.4f} (dense {recommended['dense_accuracy']}), "
            f"{recommended['speedup']:.2f}x dense on {recommended['hardware']}"
            if recommended
            else "none (" + (best.stderr.strip().splitlines() or ["no feasible point"])[-1] + ")"
        ),
    ]
    where = "see: the trials' seconds above and the steps per second against the CPU's"
    if "search is done" not in stop:
        section.short.append(f"the default search did not finish in its {budget:.0f} s ({stop}); {where}")
    elif seconds > SEARCH_SECONDS_TARGET and not plan.quick:
        section.short.append(f"the default search took {seconds:.0f} s, over {SEARCH_SECONDS_TARGET:.0f} s; {where}")
    return section


def trial_table(trials: list[dict]) -> list[str]:
    """Markdown: each trial of `status --format json` with its outcome, training seconds and hardware."""
    lines = [
        "| trial | N | s | state | accuracy | speed-up | feasible | training seconds | hardware | stopped because |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for trial in trials:
        phases = trial.get("phase_seconds") or {}
        training = sum(value for key, value in phases.items() if key != "measure" and value)
        lines.append(
            f"| {trial['number']} | {trial['N']} | {trial['s']:g} | {trial['state']} | {number(trial.get('accuracy'))} | "
            f"{number(trial.get('speedup'), 'x')} | {trial.get('feasible', '-')} | {training:.0f} | "
            f"{trial.get('hardware') or '-'} | {trial.get('stopped_because') or trial.get('pruned_reason') or '-'} |"
        )
    return lines


def number(value: float | None, suffix: str = "") -> str:
    return "-" if value is None or value != value else f"{value:.3f}{suffix}"


def tune_section(plan: Plan, device: torch.device, folder: Path, tiny_model: Path) -> Section:
    """The tiny recipe's search with fractional resources per trial, its run directory ``folder/tune``."""
    from storage import StudySettings, default_url
    from trainers.recipes import load_recipe
    from tuning.driver import SearchOptions, run_search

    section = Section(TUNE_TITLE)
    run_dir = folder / "tune"
    grid_N, grid_s = plan.tune_grid
    settings = StudySettings("rt-polarity", str(tiny_model), "tiny", BUDGET, grid_N, grid_s)
    share = (
        {"gpus_per_trial": 1 / TRIALS_AT_ONCE}
        if device.type == "cuda"
        else {"gpus_per_trial": 0.0, "cpus_per_trial": 0.5, "concurrency": TRIALS_AT_ONCE}
    )
    options = SearchOptions(
        run_dir=str(run_dir),
        storage_url=default_url(run_dir),
        study_name="gpu-check",
        time_budget_s=None if plan.quick else plan.boxes["tune"],
        early_stopping=False,  # this section measures trials sharing the device: every point trains to its end
        **share,
    )
    outcome = run_search(settings, load_recipe("tiny"), options)
    trials = outcome.study.get_trials(deepcopy=False)
    expected = hardware_name(device) if device.type == "cuda" else None
    at_once = most_at_once([(t.datetime_start, t.datetime_complete) for t in trials])
    section.lines += [
        f"grid N {grid_N} x s {grid_s}; {', '.join(f'{k} {v:g}' for k, v in share.items())}; "
        f"outcome: {outcome.stop_reason} in {outcome.seconds:.0f} s; most trials running at once: {at_once}",
        "",
        "| trial | N | s | state | hardware | accuracy | instances/s | seconds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for trial in trials:
        seconds = (
            (trial.datetime_complete - trial.datetime_start).total_seconds()
            if trial.datetime_complete
            else float("nan")
        )
        accuracy, speed = trial.values or (float("nan"), float("nan"))
        section.lines.append(
            f"| {trial.number} | {trial.params['N']} | {trial.params['s']:g} | {trial.state.name} | "
            f"{trial.user_attrs.get('hardware', '-')} | {accuracy:.3f} | {speed:,.0f} | {seconds:.0f} |"
        )
    states = {trial.state.name for trial in trials}
    where = "see: the trial table and RUN_DIR/driver.log"
    if states != {"COMPLETE"} or outcome.failed or outcome.interrupted:
        section.short.append(
            f"the study did not complete cleanly: states {sorted(states)}, stop: {outcome.stop_reason}; {where}"
        )
    if expected and any(trial.user_attrs.get("hardware") != expected for trial in trials):
        section.short.append(f"not every trial recorded {expected} as its hardware; {where}")
    if at_once < TRIALS_AT_ONCE:
        section.short.append(f"at most {at_once} trials ran at once, not {TRIALS_AT_ONCE}; {where}")
    return section


def most_at_once(spans: list[tuple[datetime.datetime | None, datetime.datetime | None]]) -> int:
    """The largest number of (start, end) spans open at one moment (an open end: still running)."""
    events = sorted([(start, 1) for start, _ in spans if start] + [(end, -1) for _, end in spans if end])
    running = most = 0
    for _, step in events:  # at equal times an end (-1) sorts before a start
        running += step
        most = max(most, running)
    return most
