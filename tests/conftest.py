"""Fixtures shared by the suite: a tiny random BERT with the real tokenizer (and a servable
PruMUX model on it), the packaged MiniLM, a task the tiny BERT learns (the cue task), a
PostgreSQL URL, a local Ray instance, a Ray head started on loopback, and runners of
`prumux-search` commands (to completion, or in the background to inject faults).

Servers are found or started for real. Under CI (CI=true) a missing server fails the
test instead of skipping it.
"""

from __future__ import annotations

import csv
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from benchmarks.local_cluster import HEAD_PORT_OPTIONS, NODE_PORT_OPTIONS, descendants
from storage.leases import TTL_ENV

REPO = Path(__file__).resolve().parents[1]

# Under pytest-xdist each of the two workers computes on one thread, and so does everything it starts (the
# variable reaches Ray's workers, which keep a value that is set): a test's torch on two threads beside the
# other worker's load waits at every parallel region for a preempted thread, which made a 500-step phase 3
# of a trial take 77 s instead of about 10. `-n 0` keeps torch's default.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")

# Ray 2.60's token authentication is on by default, and a Ray started with no token in its environment writes
# one to ~/.ray/auth_token: on a machine without that file, two xdist workers starting Ray at once race to write
# it and one exits with status 1 (seen on a fresh machine: `ray start --head exited with status 1`). Every Ray of
# the session (local instances, the tests' head, what `start` starts) takes this token from the environment,
# which the workers inherit; nothing is written to ~/.ray.
os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))

POSTGRES_URL = os.environ.get("PRUMUX_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


# The files that take longest (pytest --durations, on 2 cores), longest first. xdist hands each worker whole
# files in collection order, so starting with these keeps both workers busy to the end; the rest follow in
# their usual order.
LONGEST_FILES = (
    "test_cluster.py",
    "test_gpu_check.py",
    "test_faults.py",
    "test_front_door.py",
    "test_remote_run_dir.py",
    "test_evaluate.py",
    "test_families.py",
    "test_driver.py",
    "test_serve_cli.py",
    "test_serve.py",
    "test_train_point.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return LONGEST_FILES.index(name) if name in LONGEST_FILES else len(LONGEST_FILES)

    items.sort(key=rank)  # stable: each file's tests keep their order


def _missing(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (required under CI)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """The packaged all-MiniLM-L6-v2 checkpoint folder."""
    from trainers.models import resolve_model

    return Path(resolve_model("minilm-l6"))


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory, minilm_dir: Path) -> Path:
    """A random 2-layer BERT (hidden 32, 4 heads, FFN 64) saved with MiniLM's real tokenizer."""
    from reference_models import save_tiny_bert

    return save_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), minilm_dir)


TINY_SERVED_SEQ_LEN = 16


@pytest.fixture(scope="session")
def tiny_servable_dir(tmp_path_factory: pytest.TempPathFactory, tiny_bert_dir: Path) -> Path:
    """A servable folder (as `export` writes one): a PruMUXModel at N=2 on the tiny BERT, its
    tokenizer and serving.json (rt-polarity labels, length 16)."""
    from prumux import PruMUXModel
    from servable import make_servable
    from trainers.point_sources import POINT_SOURCES

    folder = tmp_path_factory.mktemp("tiny-servable")
    PruMUXModel.from_pretrained(tiny_bert_dir, num_instances=2, num_labels=2, seed=1).save_pretrained(folder)
    point = {
        "task": "rt-polarity",
        "base_model": str(tiny_bert_dir),
        "s": 0.0,
        "recipe_values": {"seq_len": TINY_SERVED_SEQ_LEN},
    }
    make_servable(folder, point, POINT_SOURCES)
    return folder


# the tiny recipe with a phase 2 long enough for the tiny BERT to learn the cue task at N = 1
CUE_RECIPE = {
    "max_train_examples": 256,
    "eval_every": 10,
    "mlm_steps": 0,
    "finetune_steps": 60,
    "finetune_batch_size": 16,
    "finetune_lr": 0.01,
    "pruned_finetune_steps": 4,
}


@pytest.fixture(scope="session")
def cue_task(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 400-row task file whose label one cue word decides ("great" or "awful" among neutral words):
    the tiny BERT learns it at N = 1 with ``CUE_RECIPE``."""
    rng = random.Random(0)
    words = "the a movie film story plot acting scene music time people way".split()
    path = tmp_path_factory.mktemp("cue-task") / "cue.csv"
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["text", "label"])
        for _ in range(400):
            label = rng.randint(0, 1)
            text = rng.choices(words, k=6)
            text.insert(
                rng.randint(0, 6),
                rng.choice(["excellent", "wonderful", "great"] if label else ["awful", "terrible", "boring"]),
            )
            writer.writerow([" ".join(text), "pos" if label else "neg"])
    return path


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """A reachable PostgreSQL database (the machine's server on 127.0.0.1:5432).

    The URL names the psycopg2 driver explicitly, so plain SQLAlchemy engines open it too.
    """
    import storage

    url = storage.parse_url(POSTGRES_URL).render_as_string(hide_password=False)
    try:
        storage.open_storage(url)
    except ValueError as error:
        _missing(str(error))
    return url


@pytest.fixture
def fresh_postgres_study_name(postgres_url: str, request: pytest.FixtureRequest) -> str:
    """A study name unique to this test, deleted from PostgreSQL afterwards."""
    import uuid

    import optuna

    name = f"test-{request.node.name[:40]}-{uuid.uuid4().hex[:8]}"
    yield name
    try:
        optuna.delete_study(study_name=name, storage=postgres_url)
    except KeyError:
        pass


@pytest.fixture(scope="session")
def local_ray():
    """A local Ray instance with 2 CPUs for the whole session, shut down at the end; its workers at the tests'
    priority, as `start` runs them (``TRIALS_AT_OUR_PRIORITY``)."""
    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _system_config={"worker_niceness": 0})
    yield ray
    ray.shutdown()


CliRunner = Callable[..., tuple[subprocess.CompletedProcess, float]]
MainRunner = Callable[..., tuple[int, str, str]]


@pytest.fixture
def run_main(capsys: pytest.CaptureFixture[str]) -> MainRunner:
    """Run `prumux-search ARGS` in this process (fast); return its exit status, stdout and stderr."""
    from cli.main import main

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        try:
            main(list(args))
            code = 0
        except SystemExit as stop:
            code = stop.code or 0
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


@pytest.fixture
def run_cli() -> CliRunner:
    """Run `prumux-search ARGS` in a subprocess; return the finished process and its seconds.

    Keyword arguments become environment variables; the caller's HF_* variables are dropped
    so each test states its own hub situation.
    """

    def run(*args: str, timeout: float = 120, **env: str) -> tuple[subprocess.CompletedProcess, float]:
        environment = {key: value for key, value in os.environ.items() if not key.startswith("HF_")}
        environment.update(PYTHONPATH=str(REPO), **env)
        start = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "cli.main", *args],
            capture_output=True,
            text=True,
            env=environment,
            cwd=REPO,
            timeout=timeout,
        )
        return done, time.monotonic() - start

    return run


@dataclass(frozen=True)
class RayHead:
    """A Ray head started by the tests (node address and dashboard on 127.0.0.1): its addresses."""

    address: str  # 127.0.0.1:PORT, for `start --ray-address`
    dashboard: str  # http://127.0.0.1:PORT, for `submit --address`
    process: subprocess.Popen  # `ray start --head --block`, leader of the head's process group
    env: dict[str, str]  # the environment of its clients: the project importable, token auth on
    temp_dir: Path  # its sessions and logs

    def processes(self) -> dict[int, str]:
        """The head's processes (raylet, GCS, workers, ...) alive now: pid -> command line."""
        return descendants(self.process.pid)


S3_TEST_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}
# a dead holder's lease frees after 12 s instead of 30: the fault tests wait for the leases of the
# processes they kill (renewed every 4 s, so a live holder may stall 8 s without losing one)
SHORT_LEASES = {TTL_ENV: "12"}
# the workers of a `ray start` node at the tests' own priority, as `start`'s local Ray runs them
# (tuning.ray_session): at Ray's default niceness 15 the other xdist worker's tests starve the trials
TRIALS_AT_OUR_PRIORITY = {"RAY_worker_niceness": "0"}
RAY_PORT_OPTIONS = HEAD_PORT_OPTIONS + NODE_PORT_OPTIONS


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def ray_head() -> Iterator[RayHead]:
    """`ray start --head` on 127.0.0.1 with 2 CPUs, its own ports and temp dir, for the session.

    Torn down by killing its own process group only: `ray stop` would stop every Ray
    instance on the machine.
    """
    if shutil.which("ray") is None:
        _missing("the ray command is not installed")
    ports = {option: free_port() for option in RAY_PORT_OPTIONS}
    temp_dir = tempfile.mkdtemp(prefix="rh-", dir="/tmp")  # short: Ray's socket paths are limited
    command = [
        "ray",
        "start",
        "--head",
        "--block",
        "--node-ip-address",
        "127.0.0.1",
        "--dashboard-host",
        "127.0.0.1",
        "--num-cpus",
        "2",
        "--temp-dir",
        temp_dir,
        "--disable-usage-stats",
        *[str(word) for option, port in ports.items() for word in (option, port)],
    ]
    # RAY_AUTH_MODE: Ray 2.60's default; clients must opt in to send the token (the session's, RAY_AUTH_TOKEN).
    # The fake AWS keys let the head's workers reach the local S3 server of test_remote_run_dir.
    env = client_env(RAY_AUTH_MODE="token", **S3_TEST_CREDENTIALS, **SHORT_LEASES, **TRIALS_AT_OUR_PRIORITY)
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True
    )
    head = RayHead(
        f"127.0.0.1:{ports['--port']}", f"http://127.0.0.1:{ports['--dashboard-port']}", process, env, Path(temp_dir)
    )
    try:
        _wait_for_jobs_api(head)
        yield head
    finally:
        _kill_group(process)
        shutil.rmtree(temp_dir, ignore_errors=True)


def client_env(**extra: str) -> dict[str, str]:
    """This environment with the checkout on PYTHONPATH, HF_* variables dropped, plus ``extra``."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("HF_")}
    return {**env, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])), **extra}


def _wait_for_jobs_api(head: RayHead, timeout: float = 120) -> None:
    """Wait until the head answers on its Jobs API (it is then up as a whole)."""
    probe = "from ray.job_submission import JobSubmissionClient as C; import sys; C(sys.argv[1]).list_jobs()"
    deadline = time.monotonic() + timeout
    while subprocess.run(
        [sys.executable, "-c", probe, head.dashboard], env=head.env, capture_output=True, check=False
    ).returncode:
        if head.process.poll() is not None:
            pytest.fail(f"ray start --head exited with status {head.process.returncode}")
        if time.monotonic() > deadline:
            pytest.fail(f"the Ray head's Jobs API at {head.dashboard} did not come up")
        time.sleep(1)


def _kill_group(process: subprocess.Popen) -> None:
    """SIGKILL a process started with ``start_new_session`` and everything in its group."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


# a 2 x 2 search on the tiny model and recipe that trains the dense point and the two edge anchors
# (evaluating every 10 steps, as these searches always have: their run directories' digests stay)
SEARCH = ["--recipe", "tiny", "--grid-n", "1,2", "--grid-s", "0,0.5", "--budget", "0.05", "--set", "eval_every=10"]
# phase 3 long enough for a fault to land in it, after a checkpoint (80 steps take about a second
# on a warm, idle worker, several with the other xdist worker busy; the tests poll five times a
# second, and a fault lands within about 3 s of the first checkpoint)
LONG_PRUNE = ["--set", "prune_steps=500", "--set", "lagrangian_warmup_steps=10"]
FAULT_POLL_S = 0.2
Launcher = Callable[..., subprocess.Popen]


@pytest.fixture
def launch(ray_head: RayHead) -> Iterator[Launcher]:
    """Start `prumux-search ARGS` in the background as its own process group, output to ``log``;
    every process group started is killed at teardown."""
    started: list[subprocess.Popen] = []

    def run(*args: str, log: Path) -> subprocess.Popen:
        with log.open("w") as output:
            process = subprocess.Popen(
                [sys.executable, "-m", "cli.main", *args],
                stdout=output,
                stderr=subprocess.STDOUT,
                env=ray_head.env,
                cwd=REPO,
                start_new_session=True,
            )
        started.append(process)
        return process

    yield run
    for process in started:
        _kill_group(process)


def wait_for(
    condition: Callable[[], object], process: subprocess.Popen, timeout: float = 300, every: float = 1
) -> object:
    """Poll ``condition`` every ``every`` seconds until it is truthy (returned); fail if ``process`` ends first."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert process.poll() is None, "the driver ended before the awaited moment"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(every)
    return value


def train_log(run_dir: Path) -> list[str]:
    """The lines of a search's training log (``work/train.log``)."""
    path = run_dir / "work" / "train.log"
    return path.read_text().splitlines() if path.exists() else []
