"""How real runs end, as a user sees them: the live progress line of a running `start`, Ctrl-C
and SIGTERM during phase 3 (exit 130, Ray shut down, a rerun resumes without retraining), a
second driver on a SQLite study refused, a trial that fails the same way twice stopping the
search (exit 1, one line), and a disk that fills during a checkpoint (the previous one survives).

Each runs the real CLI in subprocesses, with a local Ray instance where the case needs Ray, on
the tiny model and the smoke recipe shortened.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from optuna.trial import TrialState

from storage import default_url, open_study
from storage.progress import ATTEMPTS_ATTR
from trainers.cache import cache_entry
from trainers.job import check_job
from trainers.tasks import load_task

from conftest import REPO, SEARCH, SHORT_LEASES, RayHead, client_env, descendants, train_log, wait_for

# phase 3 of (1, 0.5) long enough to land two signals in it after a checkpoint each (the tests poll every 0.2 s)
PHASE3 = ["--set", "prune_steps=500", "--set", "lagrangian_warmup_steps=10"]
LIVE_LINE = re.compile(r"trial \d+  N=1 s=0\.5  phase 3 prune (\d+)/500  accuracy [\d.]+  elapsed \S+  ETA \S+")
UNACTIONABLE = ("Token authentication", "Traceback")


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen]]:
    """Background processes started by a test; their process groups are killed at teardown."""
    started: list[subprocess.Popen] = []
    yield started
    for process in started:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()


def launch(processes: list[subprocess.Popen], args: list[str], log: Path, cwd: Path) -> subprocess.Popen:
    """`prumux-search ARGS` in the background in its own process group (as a shell starts it), output to ``log``."""
    with log.open("w") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "cli.main", *args],
            stdout=output,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=client_env(**SHORT_LEASES),
            start_new_session=True,
        )
    processes.append(process)
    return process


def ended(process: subprocess.Popen, children: dict[int, str], timeout: float = 180) -> tuple[int, float]:
    """Wait for ``process``; return its status and seconds, after checking its Ray processes are gone."""
    started = time.monotonic()
    status = process.wait(timeout=timeout)
    seconds = time.monotonic() - started
    deadline = time.monotonic() + 30
    while (alive := [pid for pid in children if _running(pid)]) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not alive, {pid: children[pid] for pid in alive}
    return status, seconds


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def poll(condition: Callable[[], object], process: subprocess.Popen) -> object:
    """``wait_for`` five times a second: a fast machine runs through phase 3 quickly."""
    return wait_for(condition, process, timeout=400, every=0.2)


def newest_checkpoint(run_dir: Path) -> Path | None:
    found = sorted((run_dir / "work" / "pruning").rglob("N1-s0.5-*/checkpoints/prune.pt"))
    return found[0] if found else None


def command(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """``prumux-search ARGS`` run to its end in ``cwd``, its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=client_env(**SHORT_LEASES),
        timeout=120,
        check=False,
    )


def test_interrupted_start_shows_progress_refuses_a_second_driver_and_resumes(
    tiny_bert_dir: Path, tmp_path: Path, processes: list[subprocess.Popen]
) -> None:
    """Relative paths throughout, as a new user types them: the task file and model folder in the
    working directory, the run dir `runs`."""
    load_task("rt-polarity").train.head(300).to_csv(tmp_path / "reviews.csv", index=False)
    (tmp_path / "tiny").symlink_to(tiny_bert_dir)
    args = [
        "start",
        "--run-dir",
        "runs",
        "--task",
        "reviews.csv",
        "--model",
        "tiny",
        *SEARCH,
        *PHASE3,
        "--max-trials",
        "2",
    ]
    run_dir = tmp_path / "runs"
    timings = {}

    # 1. the live line, fed by the trial itself; then Ctrl-C (SIGINT to the process group)
    first = launch(processes, args, tmp_path / "first.log", tmp_path)
    live = poll(lambda: LIVE_LINE.search((tmp_path / "first.log").read_text()), first)
    poll(lambda: newest_checkpoint(run_dir), first)
    second = command(args, tmp_path)
    children = descendants(first.pid)
    signalled = time.monotonic()
    os.killpg(first.pid, signal.SIGINT)
    status, timings["SIGINT to exit"] = ended(first, children)
    output = (tmp_path / "first.log").read_text()
    assert status == 130, output
    assert "interrupted by SIGINT: run the same command again to resume" in output
    assert second.returncode == 2 and second.stderr.count("\n") == 1, second.stderr
    assert f"is being run by another driver (pid {first.pid} on " in second.stderr
    study = open_study(default_url(run_dir), "prumux")
    assert [(t.params["s"], t.state) for t in study.trials] == [(0.0, TrialState.COMPLETE), (0.5, TrialState.FAIL)]
    assert "interrupted by SIGINT" in study.trials[1].user_attrs["failed_because"]
    assert study.trials[0].user_attrs["task"] == str(tmp_path / "reviews.csv")  # what the workers were given

    # 2. a rerun resumes phase 3 from its checkpoint; SIGTERM once it has saved a newer one
    rerun = launch(processes, args, tmp_path / "rerun.log", tmp_path)
    resumed = poll(lambda: [line for line in train_log(run_dir) if "resumed prune from step" in line], rerun)
    resumed_at = int(re.search(r"from step (\d+)", resumed[0]).group(1))
    poll(
        lambda: (saved := newest_checkpoint(run_dir)) and torch.load(saved, weights_only=True)["step"] > resumed_at,
        rerun,
    )
    children = descendants(rerun.pid)
    os.kill(rerun.pid, signal.SIGTERM)
    status, timings["SIGTERM to exit"] = ended(rerun, children)
    assert status == 130 and "interrupted by SIGTERM" in (tmp_path / "rerun.log").read_text()

    # 3. the last run finishes; nothing finished was trained again
    last = launch(processes, args, tmp_path / "last.log", tmp_path)
    status, timings["last run"] = ended(last, descendants(last.pid), timeout=600)
    output = (tmp_path / "last.log").read_text()
    assert status == 0 and "stopped: max trials (2) reached" in output, output
    noise = re.search(r"feasibility is decided on (\d+) validation rows: one row is [\d.]+ accuracy points", output)
    assert noise and "warning: the budget" in output  # a 300-row task file's split cannot resolve the budget
    shown = command(["status", "--run-dir", "runs"], tmp_path)
    assert shown.returncode == 0 and f"feasibility is decided on {noise.group(1)} validation rows" in shown.stdout
    study = open_study(default_url(run_dir), "prumux")
    complete = [(t.params["N"], t.params["s"]) for t in study.get_trials(states=(TrialState.COMPLETE,))]
    assert complete == [(1, 0.0), (1, 0.5)]
    log = train_log(run_dir)
    assert sum(": result:" in line for line in log) == 2  # each point's result once
    assert sum("N1-" in line and "cache miss" in line for line in log) == 1  # the dense model was trained once
    assert len([line for line in log if "resumed prune from step" in line]) == 2
    for name in ("first.log", "rerun.log", "last.log"):
        text = (tmp_path / name).read_text()
        assert not [word for word in UNACTIONABLE if word in text], text
    print(
        f"live line: {live.group(0)!r}; {', '.join(f'{k} {v:.0f} s' for k, v in timings.items())}; "
        f"whole test {time.monotonic() - signalled:.0f} s after the first signal"
    )


def test_a_trial_failing_the_same_way_twice_stops_the_search(
    tiny_bert_dir: Path, tmp_path: Path, run_cli, ray_head: RayHead
) -> None:
    """A damaged phase-2 checkpoint of the dense point: every attempt fails on it, so the search stops
    after one retry with exit 1 and one line naming the cause and the full log. (On the session's Ray
    head: how a local Ray ends is the interrupted start's test.)"""
    run_dir = tmp_path / "run"
    options = dict(zip(SEARCH, SEARCH[1:]))
    overrides = [value for option, value in zip(SEARCH, SEARCH[1:]) if option == "--set"]
    job = check_job("rt-polarity", str(tiny_bert_dir), options["--recipe"], overrides)
    damaged = (
        cache_entry(run_dir / "work", job.task, job.base_model, 1, job.recipe).directory / "checkpoints" / "finetune.pt"
    )
    damaged.parent.mkdir(parents=True)
    damaged.write_bytes(b"not a checkpoint")

    args = ["start", "--run-dir", str(run_dir), "--model", str(tiny_bert_dir), "--ray-address", ray_head.address]
    done, seconds = run_cli(*args, *SEARCH, timeout=400, RAY_AUTH_MODE="token")

    assert done.returncode == 1, done.stdout + done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("error: the search stopped: trial 0 (N=1, s=0) failed: ValueError: checkpoint ")
    assert f"{damaged} is corrupt" in line and f"full log: {run_dir / 'work' / 'train.log'}" in line
    assert "the same error on a retry" in line
    assert not [word for word in UNACTIONABLE if word in done.stdout + done.stderr]
    assert "Traceback" in (run_dir / "work" / "train.log").read_text()  # the tracebacks went to the trial log
    [trial] = open_study(default_url(run_dir), "prumux").trials
    assert trial.state == TrialState.FAIL and len(trial.system_attrs[ATTEMPTS_ATTR]) == 2  # no third try
    print(f"failed search ended in {seconds:.0f} s: {line[:160]}")


def file_size_limit(limit: int):
    """A preexec_fn: writes past ``limit`` bytes fail with EFBIG (as on a full disk) instead of killing the process."""

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_a_disk_that_fills_during_a_checkpoint_keeps_the_previous_one(tiny_bert_dir: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    args = [
        sys.executable,
        "-m",
        "cli.main",
        "train",
        "--task",
        "rt-polarity",
        "--model",
        str(tiny_bert_dir),
        "--n",
        "1",
        "--sparsity",
        "0.5",
        "--recipe",
        "smoke",
        "--workdir",
        str(work),
        "--quiet",
        "--set",
        "max_train_examples=64",
        "--set",
        "max_eval_examples=64",
        "--set",
        "eval_examples=32",
        "--set",
        "mlm_steps=2",
        "--set",
        "finetune_steps=8",
        "--set",
        "prune_steps=200",
        "--set",
        "lagrangian_warmup_steps=10",
        "--set",
        "pruned_finetune_steps=2",
    ]
    first = subprocess.Popen(
        args, cwd=REPO, env=client_env(**SHORT_LEASES), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        checkpoint = poll(lambda: next(work.glob("pruning/**/checkpoints/prune.pt"), None), first)
        first.kill()  # a crash right after the first phase-3 checkpoint
    finally:
        first.wait()
    saved = checkpoint.read_bytes()
    step = torch.load(checkpoint, weights_only=True)["step"]

    full = subprocess.run(
        args,
        cwd=REPO,
        env=client_env(**SHORT_LEASES),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        preexec_fn=file_size_limit(len(saved) // 2),
    )

    assert full.returncode == 1, full.stderr
    [line] = full.stderr.strip().splitlines()
    assert line == (
        f"error: training failed: OSError: cannot write checkpoint {checkpoint}: File too large; the previous "
        f"checkpoint is kept (full log: {work / 'train.log'})"
    )
    assert hashlib.sha256(checkpoint.read_bytes()).digest() == hashlib.sha256(saved).digest()
    left = [path for path in checkpoint.parent.iterdir() if path != checkpoint and f"tmp-{first.pid}" not in path.name]
    assert not left  # the failed write left no partial file (the killed run may have)

    resumed = subprocess.run(
        args, cwd=REPO, env=client_env(**SHORT_LEASES), capture_output=True, text=True, timeout=300, check=False
    )

    assert resumed.returncode == 0, resumed.stderr
    assert '"family": "cofi"' in resumed.stdout
    resumes = [line for line in (work / "train.log").read_text().splitlines() if "resumed prune from step" in line]
    assert [int(re.search(r"from step (\d+)", line).group(1)) for line in resumes] == [step, step]
    assert 0 <= json.loads(next(work.glob("points/**/result.json")).read_text())["val_accuracy"] <= 1
