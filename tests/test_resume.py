"""Resume: `start` again after the driver was SIGKILLed mid-training finishes the study,
leaves no RUNNING trial and retrains no finished point."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from optuna.trial import TrialState

from storage import default_url, open_study

ROOT = Path(__file__).resolve().parents[1]
# phase 3 of (1, 0.5) is long enough for the kill to land in it, after a checkpoint
SEARCH = [
    "--recipe", "smoke", "--grid-n", "1,2", "--grid-s", "0,0.5", "--budget", "0.05",
    "--set", "max_train_examples=64", "--set", "max_eval_examples=64", "--set", "eval_examples=32",
    "--set", "finetune_steps=8", "--set", "mlm_steps=2", "--set", "retrieval_steps=6",
    "--set", "prune_steps=40", "--set", "lagrangian_warmup_steps=10", "--set", "pruned_finetune_steps=2",
]  # fmt: skip
PRUNED = "N=1/s=0.5"


def start(run_dir: Path, model: Path, log: Path) -> subprocess.Popen:
    """`prumux-search start` as its own process group (the driver and the Ray it starts)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-c", "from search.cli import main; main()", "start", "--run-dir", str(run_dir),
               "--model", str(model), *SEARCH]  # fmt: skip
    with log.open("w") as output:
        return subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def wait_for(condition, process: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, "the driver ended before the point to kill it"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(1)


def train_log(run_dir: Path) -> list[str]:
    path = run_dir / "work" / "train.log"
    return path.read_text().splitlines() if path.exists() else []


def kill_driver(process: subprocess.Popen) -> None:
    """SIGKILL the driver, then whatever Ray processes of its group outlive it."""
    process.send_signal(signal.SIGKILL)
    process.wait()
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def test_resume_after_sigkill(tiny_bert_dir: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    first = start(run_dir, tiny_bert_dir, tmp_path / "first.log")
    try:
        wait_for(lambda: any(f"{PRUNED}: prune step" in line for line in train_log(run_dir)), first)
        time.sleep(2)
    finally:
        kill_driver(first)

    study = open_study(default_url(run_dir), "prumux")
    killed = study.get_trials(states=(TrialState.RUNNING,))
    assert [(t.params["N"], t.params["s"]) for t in killed] == [(1, 0.5)]
    assert [(t.params["N"], t.params["s"]) for t in study.get_trials(states=(TrialState.COMPLETE,))] == [(1, 0.0)]

    second = start(run_dir, tiny_bert_dir, tmp_path / "second.log")
    try:
        status = second.wait(timeout=600)
    finally:
        if second.poll() is None:
            kill_driver(second)
    output = (tmp_path / "second.log").read_text()
    assert status == 0 and "stopped: the search is done" in output, output
    assert f"resumed: trials [{killed[0].number}], left running by a dead driver, were marked failed" in output

    study = open_study(default_url(run_dir), "prumux")
    trials = study.get_trials()
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    failed = study.get_trials(states=(TrialState.FAIL,))
    assert [t.number for t in failed] == [killed[0].number]
    assert "is gone" in failed[0].user_attrs["failed_because"]
    complete = [(t.params["N"], t.params["s"]) for t in study.get_trials(states=(TrialState.COMPLETE,))]
    assert complete[0] == (1, 0.0) and (1, 0.5) in complete and len(set(complete)) == len(complete)

    log = train_log(run_dir)
    assert sum("N=1/s=0: result:" in line for line in log) == 1  # the dense point was trained once
    assert sum("N1-" in line and "cache miss" in line for line in log) == 1  # its phase 1-2 model too
    assert any(f"{PRUNED}: resumed prune from step" in line for line in log)  # phase 3 continued
