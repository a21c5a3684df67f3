"""Fault injection on a Ray head started by the tests (`ray start --head` on loopback): a SIGKILLed
trial worker, a SIGKILLed driver, dropped PostgreSQL connections, a search run as a Ray Job, and
a Ray Job stopped mid-search.

Each search is the 2 x 2 smoke search on the tiny model; the test asserts that the study ends
complete, every point trained and recorded once, and nothing left RUNNING.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import sqlalchemy
from optuna.trial import TrialState

from storage import default_url, open_study
from storage.optuna_private import study_id, study_storage

from conftest import FAULT_POLL_S, LONG_PRUNE, SEARCH, RayHead, train_log, wait_for

PRUNED = "N=1/s=0.5"
PASSWORD = "s3cret"


def points(study: optuna.Study, state: TrialState = TrialState.COMPLETE) -> list[tuple[int, float]]:
    """The (N, s) of the study's trials in ``state``."""
    return [(t.params["N"], t.params["s"]) for t in study.get_trials(states=(state,))]


def check_complete(study: optuna.Study, stopped_ok: bool = False) -> None:
    """Every trial complete (or, with ``stopped_ok``, stopped by the budget's early stopping), the dense point
    first, no point twice."""
    finished = (TrialState.COMPLETE, TrialState.PRUNED) if stopped_ok else (TrialState.COMPLETE,)
    trials = study.get_trials()
    assert trials and all(t.state in finished for t in trials), [t.state for t in trials]
    done = points(study)
    decided = done + (points(study, TrialState.PRUNED) if stopped_ok else [])
    assert done[0] == (1, 0.0) and len(set(decided)) == len(decided) and len(decided) >= 3


def trained_once(run_dir: Path) -> None:
    """The training log shows one result per point: nothing was trained twice."""
    results = [re.search(r"(N=\d+/s=[\d.]+): result:", line) for line in train_log(run_dir)]
    names = [match.group(1) for match in results if match]
    assert names and len(names) == len(set(names)), names


def start_args(run_dir: Path, model: Path, head: RayHead, *extra: str) -> list[str]:
    return ["start", "--run-dir", str(run_dir), "--model", str(model), "--ray-address", head.address, *SEARCH, *extra]


def test_killed_worker_is_retried_from_its_checkpoint(
    ray_head: RayHead, launch, tiny_bert_dir: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    driver = launch(*start_args(run_dir, tiny_bert_dir, ray_head, *LONG_PRUNE), log=tmp_path / "driver.log")
    checkpoints = run_dir / "work"  # a phase-3 checkpoint: the pruning stage's or the point's own
    wait_for(lambda: any(f"{PRUNED}: prune step" in line for line in train_log(run_dir)), driver, every=FAULT_POLL_S)
    wait_for(
        lambda: any(p.match("N1-s0.5-*/checkpoints/*.pt") for p in checkpoints.rglob("*.pt")),
        driver,
        every=FAULT_POLL_S,
    )
    pid = int(
        re.search(r"pid=(\d+)", next(line for line in train_log(run_dir) if f"{PRUNED}: prune step" in line)).group(1)
    )
    assert pid in ray_head.processes()  # a Ray worker of our head, not some other process
    killed_at = time.monotonic()
    os.kill(pid, signal.SIGKILL)

    assert driver.wait(timeout=300) == 0, (tmp_path / "driver.log").read_text()
    study = open_study(default_url(run_dir), "prumux")
    check_complete(study)  # the trial was retried by Ray, not failed and proposed again
    assert (1, 0.5) in points(study)
    trained_once(run_dir)
    resumed = [line for line in train_log(run_dir) if f"{PRUNED}: resumed prune from step" in line]
    assert resumed and f"pid={pid}" not in resumed[0]
    print(f"worker {pid} killed; the search ended {time.monotonic() - killed_at:.0f} s later; {resumed[0]}")


def kill_driver(process: subprocess.Popen) -> None:
    """SIGKILL the driver's process group (its trials' workers belong to the Ray head)."""
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def test_restart_after_killed_driver_finishes_the_study(
    ray_head: RayHead, launch, tiny_bert_dir: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    first = launch(*start_args(run_dir, tiny_bert_dir, ray_head, *LONG_PRUNE), log=tmp_path / "first.log")
    wait_for(
        lambda: any(p.match("N1-s0.5-*/checkpoints/*.pt") for p in (run_dir / "work").rglob("*.pt")),
        first,
        every=FAULT_POLL_S,
    )
    kill_driver(first)
    killed_at = time.monotonic()

    study = open_study(default_url(run_dir), "prumux")
    killed = study.get_trials(states=(TrialState.RUNNING,))
    assert points(study, TrialState.RUNNING) == [(1, 0.5)] and points(study) == [(1, 0.0)]

    second = launch(*start_args(run_dir, tiny_bert_dir, ray_head, *LONG_PRUNE), log=tmp_path / "second.log")
    status = second.wait(timeout=300)
    output = (tmp_path / "second.log").read_text()
    assert status == 0 and "stopped: the search is done" in output, output
    assert f"resumed: trials [{killed[0].number}], left running by a dead driver, were marked failed" in output

    study = open_study(default_url(run_dir), "prumux")
    assert not study.get_trials(states=(TrialState.RUNNING,))
    failed = study.get_trials(states=(TrialState.FAIL,))
    assert [t.number for t in failed] == [killed[0].number] and "is gone" in failed[0].user_attrs["failed_because"]
    done = points(study)
    assert done[0] == (1, 0.0) and (1, 0.5) in done and len(set(done)) == len(done)
    trained_once(run_dir)  # the dense point was not retrained
    log = train_log(run_dir)
    assert sum("N1-" in line and "cache miss" in line for line in log) == 1  # nor its phase 1-2 model
    resumed = [line for line in log if f"{PRUNED}: resumed prune from step" in line]
    assert resumed  # phase 3 continued from its checkpoint
    print(f"driver killed; the restart finished {time.monotonic() - killed_at:.0f} s later; {resumed[0]}")


def terminate_backends(postgres_url: str, pids: set[int]) -> int:
    """`pg_terminate_backend` every connection of the given processes (by application_name)."""
    names = [f"prumux-search pid={pid}" for pid in pids]
    engine = sqlalchemy.create_engine(postgres_url, poolclass=sqlalchemy.pool.NullPool)
    with engine.connect() as connection:
        rows = connection.execute(
            sqlalchemy.text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = ANY(:names)"
            ),
            {"names": names},
        ).fetchall()
    engine.dispose()
    return sum(bool(row[0]) for row in rows)


def test_dropped_database_connections_lose_nothing(
    ray_head: RayHead, launch, tiny_bert_dir: Path, tmp_path: Path, postgres_url: str, fresh_postgres_study_name: str
) -> None:
    """Connections of the driver and the workers are terminated every 2 s during the search.

    The URL carries a password (trust auth accepts any), which must show nowhere.
    """
    url = postgres_url.replace("postgres@", f"postgres:{PASSWORD}@")
    run_dir = tmp_path / "run"
    args = [*start_args(run_dir, tiny_bert_dir, ray_head), "--storage", url, "--study", fresh_postgres_study_name]
    driver = launch(*args, log=tmp_path / "driver.log")
    terminated = 0
    while driver.poll() is None:
        terminated += terminate_backends(postgres_url, {driver.pid, *ray_head.processes()})
        time.sleep(2)

    output = (tmp_path / "driver.log").read_text()
    assert driver.returncode == 0 and "stopped: the search is done" in output, output
    assert terminated >= 3  # the fault really was injected, repeatedly
    study = open_study(postgres_url, fresh_postgres_study_name)
    check_complete(study)
    trained_once(run_dir)
    print(f"terminated {terminated} connections; {len(study.trials)} trials complete")
    # the password is in no output, log, Ray log or stored text
    status = subprocess.run(
        [*STATUS, "--storage", url, "--study", fresh_postgres_study_name],
        capture_output=True,
        text=True,
        env=ray_head.env,
        check=False,
    )
    assert status.returncode == 0 and PASSWORD not in status.stdout + status.stderr
    stored = [
        str(study_storage(study).get_study_system_attrs(study_id(study))),
        str(study.user_attrs),
        *(str(t.user_attrs) for t in study.trials),
    ]
    leaks = [path for path in [*run_dir.rglob("*"), *ray_head.temp_dir.rglob("*")] if contains(path, PASSWORD)]
    assert PASSWORD not in output + "".join(stored) + ray_jobs(ray_head) and not leaks


STATUS = [sys.executable, "-m", "cli.main", "status"]


def ray_jobs(head: RayHead) -> str:
    """The head's job table as `ray job list` prints it (entrypoints, environments)."""
    listed = subprocess.run(
        ["ray", "job", "list", "--address", head.dashboard], capture_output=True, text=True, env=head.env, check=True
    )
    return listed.stdout


def contains(path: Path, text: str) -> bool:
    """Whether the file at ``path`` holds ``text`` (False for folders and unreadable files)."""
    try:
        return path.is_file() and text.encode() in path.read_bytes()
    except OSError:
        return False


def test_search_submitted_as_a_ray_job_completes_its_study(
    ray_head: RayHead, tiny_bert_dir: Path, tmp_path: Path, postgres_url: str, fresh_postgres_study_name: str
) -> None:
    run_dir = tmp_path / "run"
    url = postgres_url.replace("postgres@", f"postgres:{PASSWORD}@")
    submit = [sys.executable, "-m", "cli.main", "submit", "--address", ray_head.dashboard]
    submitted = subprocess.run(
        [
            *submit,
            "--storage",
            url,
            "--run-dir",
            str(run_dir),
            "--",
            "start",
            "--model",
            str(tiny_bert_dir),
            "--study",
            fresh_postgres_study_name,
            *SEARCH,
        ],
        capture_output=True,
        text=True,
        env=ray_head.env,
        timeout=120,
        check=False,
    )
    assert submitted.returncode == 0, submitted.stderr
    job = re.search(r"submitted (\S+) to", submitted.stdout).group(1)
    assert f"--logs {job}" in submitted.stdout
    assert "password was not sent" in submitted.stdout  # the job connects without it (trust auth here)

    followed = subprocess.run(
        [*submit, "--logs", job], capture_output=True, text=True, env=ray_head.env, timeout=400, check=False
    )

    assert followed.returncode == 0, followed.stderr
    assert "stopped: the search is done" in followed.stdout and followed.stdout.rstrip().endswith(f"{job}: SUCCEEDED")
    check_complete(open_study(postgres_url, fresh_postgres_study_name))
    trained_once(run_dir)
    # the password is in neither output nor the job's records and logs on the head
    assert PASSWORD not in submitted.stdout + submitted.stderr + followed.stdout + followed.stderr + ray_jobs(ray_head)
    assert not [path for path in ray_head.temp_dir.rglob("*") if contains(path, PASSWORD)]


def test_stopped_ray_job_is_finished_by_the_next_start(
    ray_head: RayHead, launch, tiny_bert_dir: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    submit = [sys.executable, "-m", "cli.main", "submit", "--address", ray_head.dashboard]
    submitted = subprocess.run(
        [*submit, "--run-dir", str(run_dir), "--", "start", "--model", str(tiny_bert_dir), *SEARCH, *LONG_PRUNE],
        capture_output=True,
        text=True,
        env=ray_head.env,
        timeout=120,
        check=False,
    )
    assert submitted.returncode == 0, submitted.stderr
    job = re.search(r"submitted (\S+) to", submitted.stdout).group(1)
    deadline = time.monotonic() + 300
    while not any(p.match("N1-s0.5-*/checkpoints/*.pt") for p in (run_dir / "work").rglob("*.pt")):
        assert time.monotonic() < deadline, f"the job never reached phase 3: {job_logs(ray_head, job)}"
        time.sleep(FAULT_POLL_S)

    stopped = subprocess.run([*submit, "--stop", job], capture_output=True, text=True, env=ray_head.env, timeout=60)
    followed = subprocess.run([*submit, "--logs", job], capture_output=True, text=True, env=ray_head.env, timeout=120)

    assert stopped.returncode == 0 and f"{job}: stop requested" in stopped.stdout, stopped.stderr
    assert followed.stdout.rstrip().endswith(f"{job}: STOPPED"), followed.stdout[-2000:]
    restart = launch(*start_args(run_dir, tiny_bert_dir, ray_head, *LONG_PRUNE), log=tmp_path / "restart.log")
    output = (tmp_path / "restart.log").read_text() if restart.wait(timeout=300) == 0 else ""
    assert "stopped: the search is done" in output, (tmp_path / "restart.log").read_text()
    study = open_study(default_url(run_dir), "prumux")
    assert not study.get_trials(states=(TrialState.RUNNING,))
    done = points(study)
    assert done[0] == (1, 0.0) and (1, 0.5) in done and len(set(done)) == len(done)
    trained_once(run_dir)
    assert any(f"{PRUNED}: resumed prune from step" in line for line in train_log(run_dir))


def job_logs(head: RayHead, job: str) -> str:
    """A Ray Job's status and the end of its logs, for failure messages."""
    said = [
        subprocess.run(
            ["ray", "job", command, job, "--address", head.dashboard],
            capture_output=True,
            text=True,
            env=head.env,
            check=False,
        )
        for command in ("status", "logs")
    ]
    return " | ".join((done.stdout + done.stderr)[-3000:] for done in said)
