"""A real multi-node Ray cluster on this machine (``benchmarks.local_cluster``): a head with no
CPUs and worker nodes of one CPU each, every node a separate `ray start` on its own loopback
address, temp dir and TMPDIR. The run directory is a URI on a local S3 server (moto's), so no
node reads another's disk, and the study is PostgreSQL. One cluster serves the module:

- placement: a search submitted with `submit` runs trials on both workers, and the phase 1-2
  model one node trained is reused by a trial on the other, through the bucket and the leases;
- a node lost mid-trial: its raylet and workers SIGKILLed in phase 3, after a checkpoint; the
  trial resumes on the other node from that checkpoint, once the dead node's lease expired,
  and the study ends with the undisturbed run's points and accuracies;
- a node joining mid-search receives trials;
- the job's driver SIGKILLed: `submit` again finishes the study from its checkpoints.

Every node and Ray component stays on loopback: the nodes Ray lists have 127.x addresses, and
no process the tests started has a connection to another address.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState
from pyarrow import fs
from test_remote_run_dir import s3_uri  # noqa: F401 - the module's S3 server

from benchmarks.local_cluster import LocalCluster, Node, kill_pids
from storage import open_study
from storage.remote import child_uri, mirror_dir
from storage.study import find_study

from conftest import REPO, S3_TEST_CREDENTIALS, SEARCH, SHORT_LEASES, TRIALS_AT_OUR_PRIORITY

pytestmark = pytest.mark.timeout(600)
# two trials at once, every N > 1 starting from the dense model (phase 1-2 models shared across
# points and nodes), phase 3 long enough for a fault after a checkpoint even on a loaded machine
# The cluster tests are about placement and faults, not early stopping: every point trains to its end.
CLUSTER_SEARCH = [
    *SEARCH,
    "--no-early-stopping",
    "--set",
    "prune_steps=200",
    "--set",
    "lagrangian_warmup_steps=10",
    "--set",
    "mux_start=dense",
    "--concurrency",
    "2",
]
DRIVER_KILLED_PRUNE_STEPS = 1000
PRUNED = "N=1/s=0.5"
COMPARED = ("val_accuracy", "test_accuracy", "sparsity")  # printed: this run's / the undisturbed run's


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    """A head (127.0.0.2, no CPUs) and two workers (127.0.0.3, 127.0.0.4), for the module."""
    root = Path(tempfile.mkdtemp(prefix="rc-", dir="/tmp"))  # short: Ray's socket paths are limited
    env = {
        **S3_TEST_CREDENTIALS,
        **SHORT_LEASES,
        **TRIALS_AT_OUR_PRIORITY,
        # the AWS SDK asks the cloud's instance metadata address for credentials unless told not to
        "AWS_EC2_METADATA_DISABLED": "true",
        "PYTHONPATH": str(REPO),
    }
    cluster = LocalCluster(root, extra_env=env)
    try:
        cluster.start_head()
        cluster.add_workers(2)
        yield cluster
    finally:
        cluster.stop()


def submit(
    cluster: LocalCluster, run_uri: str, postgres_url: str, study: str, model: Path, extra: tuple[str, ...] = ()
) -> str:
    """`submit` the cluster search (``extra``: more `start` options); return the job id."""
    submitted = subprocess.run(
        [
            sys.executable,
            "-m",
            "cli.main",
            "submit",
            "--address",
            cluster.dashboard,
            "--storage",
            postgres_url,
            "--run-dir",
            run_uri,
            "--",
            "start",
            "--model",
            str(model),
            "--study",
            study,
            *CLUSTER_SEARCH,
            *extra,
        ],
        capture_output=True,
        text=True,
        env=cluster.env,
        cwd=REPO,
        timeout=120,
        check=False,
    )
    assert submitted.returncode == 0, submitted.stderr
    return re.search(r"submitted (\S+) to", submitted.stdout).group(1)


def follow(cluster: LocalCluster, job: str, timeout: float = 400) -> str:
    """Follow the job to its end (`submit --logs`); return what it printed."""
    followed = subprocess.run(
        [sys.executable, "-m", "cli.main", "submit", "--address", cluster.dashboard, "--logs", job],
        capture_output=True,
        text=True,
        env=cluster.env,
        cwd=REPO,
        timeout=timeout,
        check=False,
    )
    return followed.stdout + followed.stderr


class Watch:
    """Polls a running job once a second, and records the remote address of every connection
    that a process of the cluster holds meanwhile."""

    def __init__(self, cluster: LocalCluster, job: str) -> None:
        self.cluster, self.job = cluster, job
        self.addresses: set[str] = set()

    def until(self, condition: Callable[[], object], timeout: float = 300) -> object:
        """Poll ``condition`` until it is truthy (returned); fail if the job ends first."""
        deadline = time.monotonic() + timeout
        while not (value := condition()):
            assert self.running(), f"job {self.job} ended first: {follow(self.cluster, self.job)[-3000:]}"
            assert time.monotonic() < deadline, "timed out"
            time.sleep(1)
        return value

    def running(self) -> bool:
        self.addresses |= remote_addresses(self.cluster.processes())
        return self.cluster.job_status(self.job) in ("PENDING", "RUNNING")

    def to_the_end(self, timeout: float = 400) -> str:
        """Wait for the job to end; return its output."""
        deadline = time.monotonic() + timeout
        while self.running():
            assert time.monotonic() < deadline, "timed out"
            time.sleep(1)
        return follow(self.cluster, self.job)


def remote_addresses(pids) -> set[str]:
    """The remote IP addresses of the TCP and UDP sockets that the processes ``pids`` hold (from /proc)."""
    inodes: set[str] = set()
    for pid in pids:
        try:
            links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        except OSError:
            continue
        inodes.update(link[len("socket:[") : -1] for link in links if link.startswith("socket:["))
    found = set()
    for table in ("tcp", "tcp6", "udp", "udp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            address = fields[2].split(":")[0]
            if fields[9] in inodes and int(address, 16):  # 0: not connected (listening)
                found.add(_ip(address))
    return found


def _ip(hex_address: str) -> str:
    """An address of /proc/net/{tcp,udp}{,6} (32-bit words in host order) as text."""
    raw = bytes.fromhex(hex_address)
    address = ipaddress.ip_address(b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4)))
    return str(address.ipv4_mapped or address) if address.version == 6 else str(address)


def node_log(node: Node, run_uri: str) -> list[str]:
    """The lines of the training log in ``node``'s own mirror of the run directory."""
    path = node.tmp_dir / mirror_dir(run_uri).relative_to(tempfile.gettempdir()) / "work" / "train.log"
    return path.read_text().splitlines() if path.exists() else []


def driver_log(cluster: LocalCluster, run_uri: str) -> str:
    """The job driver's log (it runs on the head), in the head's mirror of the run directory."""
    path = cluster.head.tmp_dir / mirror_dir(run_uri).relative_to(tempfile.gettempdir()) / "driver.log"
    return path.read_text()


def all_logs(cluster: LocalCluster, run_uri: str) -> list[str]:
    return [line for node in cluster.workers for line in node_log(node, run_uri)]


def trained_once(cluster: LocalCluster, run_uri: str, entries: bool = True) -> None:
    """Across every node's log: one result per point and (``entries``) one phase 1-2 training per cache entry."""
    logs = all_logs(cluster, run_uri)
    results = [re.search(r"(N=\d+/s=[\d.]+): result:", line) for line in logs]
    names = [match.group(1) for match in results if match]
    misses = [line.split("training ")[-1] for line in logs if entries and "phases 1-2 cache miss" in line]
    assert names and len(names) == len(set(names)) and len(misses) == len(set(misses)), (names, misses)


def pushed(run_uri: str, pattern: str) -> list[str]:
    """The files under the run directory's URI whose path matches the regular expression ``pattern``."""
    filesystem, root = fs.FileSystem.from_uri(run_uri)
    listed = filesystem.get_file_info(fs.FileSelector(root, recursive=True, allow_not_found=True))
    return [info.path[len(root) + 1 :] for info in listed if re.search(pattern, info.path)]


def lease_holders(postgres_url: str, key_part: str) -> dict[str, str]:
    """The leases whose key contains ``key_part`` now: key -> holder (other tests may hold some too)."""
    engine = sqlalchemy.create_engine(postgres_url, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                sqlalchemy.text("SELECT key, holder FROM prumux_leases WHERE key LIKE :key"), {"key": f"%{key_part}%"}
            ).fetchall()
    except sqlalchemy.exc.ProgrammingError:  # no lease table yet
        return {}
    finally:
        engine.dispose()
    return dict(rows)


def holder_other_than(postgres_url: str, key: str, pid: int) -> str | None:
    """The holder of the lease ``key`` now, unless there is none or it is process ``pid``."""
    holder = lease_holders(postgres_url, key).get(key)
    return holder if holder and f"-{pid}-" not in holder else None


def pruning_with_a_checkpoint(run_uri: str, postgres_url: str, study: str) -> bool:
    """Whether the (1, 0.5) trial runs and has pushed a phase-3 checkpoint."""
    checkpoint = pushed(run_uri, r"/(points|pruning)/.*/N1-s0\.5-.*/checkpoints/.*\.pt$")
    return bool(checkpoint) and (1, 0.5) in [(t.params["N"], t.params["s"]) for t in running(postgres_url, study)]


def running(postgres_url: str, study: str) -> list[optuna.trial.FrozenTrial]:
    """The study's RUNNING trials (none while the job has not created the study yet)."""
    found = find_study(postgres_url, study)
    return found.get_trials(states=(TrialState.RUNNING,)) if found else []


def finished(postgres_url: str, study: str) -> dict[tuple[int, float], optuna.trial.FrozenTrial]:
    """The study's trials, each complete (nothing RUNNING, nothing failed), by point."""
    trials = open_study(postgres_url, study).get_trials()
    assert trials and all(t.state == TrialState.COMPLETE for t in trials), [(t.number, t.state) for t in trials]
    return {(t.params["N"], t.params["s"]): t for t in trials}


@pytest.fixture(scope="module")
def undisturbed(cluster: LocalCluster, s3_uri: str, postgres_url: str, tiny_bert_dir: Path) -> Iterator[dict]:
    """The cluster search run once without faults: its trials by point, run dir and output."""
    run_uri, study = child_uri(s3_uri, "undisturbed"), f"cluster-{uuid.uuid4().hex[:8]}"
    watch = Watch(cluster, submit(cluster, run_uri, postgres_url, study, tiny_bert_dir))
    started = time.monotonic()
    output = watch.to_the_end()
    print(f"undisturbed search: {time.monotonic() - started:.0f} s\n{output}")
    try:
        yield {"trials": finished(postgres_url, study), "run_uri": run_uri, "output": output, "watch": watch}
    finally:
        optuna.delete_study(study_name=study, storage=postgres_url)


def test_everything_stays_on_loopback(cluster: LocalCluster, undisturbed: dict) -> None:
    nodes = cluster.listed_nodes()
    assert {node["ip"] for node in nodes} == {"127.0.0.2", "127.0.0.3", "127.0.0.4"}
    assert all(node["ip"].startswith("127.") for node in nodes)
    seen = undisturbed["watch"].addresses
    assert seen and all(ip.startswith("127.") or ip == "::1" for ip in seen), seen


def test_trials_run_on_both_nodes_and_reuse_each_others_models(cluster: LocalCluster, undisturbed: dict) -> None:
    trials, run_uri = undisturbed["trials"], undisturbed["run_uri"]
    assert "stopped: the search is done" in undisturbed["output"] and undisturbed["output"].rstrip().endswith(
        "SUCCEEDED"
    )
    assert {t.user_attrs["node"] for t in trials.values()} == {"127.0.0.3", "127.0.0.4"}
    dense_entry = json.loads(read_pushed(run_uri, pushed(run_uri, r"/cache/.*/N1-.*/entry\.json$")[0]))
    trained_on = dense_entry["trained_by"]["node"]  # by the first of the two trials that took its lease
    reused_elsewhere = [t for t in trials.values() if t.user_attrs["cache_hit"] and t.user_attrs["node"] != trained_on]
    assert reused_elsewhere, {point: (t.user_attrs["node"], t.user_attrs["cache_hit"]) for point, t in trials.items()}
    trained_once(cluster, run_uri)


def read_pushed(run_uri: str, path: str) -> str:
    filesystem, root = fs.FileSystem.from_uri(run_uri)
    with filesystem.open_input_stream(f"{root}/{path}") as stream:
        return stream.read().decode()


def test_a_node_lost_mid_trial(
    cluster: LocalCluster,
    undisturbed: dict,
    s3_uri: str,
    postgres_url: str,
    fresh_postgres_study_name: str,
    tiny_bert_dir: Path,
) -> None:
    run_uri = child_uri(s3_uri, "node-lost")
    watch = Watch(cluster, submit(cluster, run_uri, postgres_url, fresh_postgres_study_name, tiny_bert_dir))
    watch.until(lambda: pruning_with_a_checkpoint(run_uri, postgres_url, fresh_postgres_study_name))
    victim = next(
        node for node in cluster.workers if any(f"{PRUNED}: prune step" in line for line in node_log(node, run_uri))
    )
    line = next(line for line in node_log(victim, run_uri) if f"{PRUNED}: prune step" in line)
    pid = int(re.search(r"pid=(\d+)", line).group(1))
    assert pid in victim.raylet_and_workers()  # the trial's worker, on that node
    # the point folder's lease (the pid also holds its pruning stage's, under work:pruning/)
    [lease] = [
        key
        for key, holder in lease_holders(postgres_url, "work:points/").items()
        if f"-{pid}-" in holder and "/N1-s0.5-" in key
    ]

    killed = kill_pids(victim.raylet_and_workers())
    lost_at = time.monotonic()
    taken_over = watch.until(lambda: holder_other_than(postgres_url, lease, pid))
    taken_over_after = time.monotonic() - lost_at
    output = watch.to_the_end()
    victim.kill()
    print(output, driver_log(cluster, run_uri)[-6000:], sep="\n")

    assert output.rstrip().endswith("SUCCEEDED"), output[-3000:]
    trials = finished(postgres_url, fresh_postgres_study_name)
    retried = trials[(1, 0.5)]
    assert f"node {victim.ip} lost; trial {retried.number} retried on another node" in output
    assert retried.user_attrs["node"] != victim.ip
    assert "marked dead" not in output and "marked dead" in driver_log(cluster, run_uri)  # Ray's notice
    resumed = [line for line in all_logs(cluster, run_uri) if f"{PRUNED}: resumed prune from step" in line]
    assert resumed and f"pid={pid}" not in resumed[0]
    assert int(re.search(r"from step (\d+)", resumed[0]).group(1)) > 0  # its step counter did not restart
    reference = undisturbed["trials"]
    assert set(trials) == set(reference)
    assert {p: t.values[0] for p, t in trials.items()} == {p: t.values[0] for p, t in reference.items()}
    for point, trial in sorted(trials.items()):
        print(point, *(f"{key} {trial.user_attrs[key]} / {reference[point].user_attrs[key]}" for key in COMPARED))
    trained_once(cluster, run_uri)
    print(
        f"node {victim.ip} (pids {killed}) lost; the lease was "
        f"taken over after {taken_over_after:.0f} s by {taken_over}; {resumed[0]}; the search ended "
        f"{time.monotonic() - lost_at:.0f} s after the loss"
    )


def test_a_node_joining_mid_search_then_the_driver_killed(
    cluster: LocalCluster, s3_uri: str, postgres_url: str, fresh_postgres_study_name: str, tiny_bert_dir: Path
) -> None:
    """One worker left for two concurrent trials, so a trial waits for a CPU until a node joins;
    then the job's driver is SIGKILLed, and `submit` again finishes the study from its checkpoints."""
    for node in [node for node in cluster.workers if node.process.poll() is None][1:]:
        node.kill()  # (the node-lost test leaves one already)
    run_uri, study = child_uri(s3_uri, "driver-killed"), fresh_postgres_study_name
    # a phase 3 that outlasts the node's joining even on a fast machine (200 steps took 10 s on one)
    longer = ("--set", f"prune_steps={DRIVER_KILLED_PRUNE_STEPS}")
    first = Watch(cluster, submit(cluster, run_uri, postgres_url, study, tiny_bert_dir, longer))
    first.until(lambda: running(postgres_url, study))
    joined = cluster.add_workers(1)[0]
    first.until(lambda: node_log(joined, run_uri))  # the node that joined trains a point
    first.until(lambda: pruning_with_a_checkpoint(run_uri, postgres_url, study))
    drivers = {pid: command for pid, command in cluster.head.processes().items() if "cli.main start" in command}
    assert drivers  # the job's driver (and the shell that runs it), on the head
    kill_pids(drivers)
    killed_at = time.monotonic()
    deadline = killed_at + 120
    while (status := cluster.job_status(first.job)) in ("PENDING", "RUNNING"):
        assert time.monotonic() < deadline, "the job outlived its driver"
        time.sleep(1)
    assert status == "FAILED"
    left_running = running(postgres_url, study)
    assert (1, 0.5) in [(t.params["N"], t.params["s"]) for t in left_running]

    second = Watch(cluster, submit(cluster, run_uri, postgres_url, study, tiny_bert_dir, longer))
    output = second.to_the_end()

    assert output.rstrip().endswith("SUCCEEDED") and "stopped: the search is done" in output, output[-3000:]
    numbers = sorted(t.number for t in left_running)
    assert f"resumed: trials {numbers}, left running by a dead driver, were marked failed" in output
    trials = open_study(postgres_url, study).get_trials()
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert sorted(t.number for t in trials if t.state == TrialState.FAIL) == numbers
    done = [(t.params["N"], t.params["s"]) for t in trials if t.state == TrialState.COMPLETE]
    assert (1, 0.0) in done and (1, 0.5) in done and len(done) == len(set(done))
    trained_once(cluster, run_uri, entries=False)  # an entry interrupted mid-training resumes: a second "miss"
    logs = all_logs(cluster, run_uri)
    assert sum("N=1/s=0:" in line and "cache miss" in line for line in logs) == 1  # the dense model was trained once
    resumed = [line for line in logs if f"{PRUNED}: resumed prune from step" in line]
    assert resumed and int(re.search(r"from step (\d+)", resumed[0]).group(1)) > 0
    print(
        f"driver killed; the second submit finished the study {time.monotonic() - killed_at:.0f} s later; {resumed[0]}"
    )
