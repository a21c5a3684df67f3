"""Leases in the study's database: two processes contending for the phase 1-2 cache lock on
PostgreSQL take turns, and the lease of a SIGKILLed holder is free once its ttl (set through
the environment) expires."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from storage import Lease, database_engine
from storage.leases import DEFAULT_TTL_S, LEASES, TTL_ENV, lease_ttl

from conftest import client_env

# hold the work dir's cache lock (as a worker of a search with --cache-lock database) for 2 s
HOLD = """
import json, logging, sys, time
from pathlib import Path
from tuning.run_dir import lease_lock
from storage import database_engine
from trainers.cache import locked
url, workdir, out = sys.argv[1:]
with locked(Path(workdir) / "cache" / "entry", logging.getLogger("hold"), lease_lock(database_engine(url), workdir)):
    began = time.time()
    time.sleep(2)
Path(out).write_text(json.dumps([began, time.time()]))
"""


@pytest.fixture
def lease_key(postgres_url: str) -> str:
    """The key of the cache entry the processes contend for, its lease row deleted afterwards."""
    key = "work:cache/entry"
    yield key
    engine = database_engine(postgres_url)
    with engine.begin() as connection:
        connection.execute(LEASES.delete().where(LEASES.c.key == key))
    engine.dispose()


def hold(postgres_url: str, workdir: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", HOLD, postgres_url, str(workdir), str(out)],
        env=client_env(),
    )


def test_two_processes_take_turns(postgres_url: str, lease_key: str, tmp_path: Path) -> None:
    holders = [hold(postgres_url, tmp_path / "work", tmp_path / f"{i}.json") for i in range(2)]
    assert [holder.wait(timeout=120) for holder in holders] == [0, 0]
    first, second = sorted(json.loads((tmp_path / f"{i}.json").read_text()) for i in range(2))
    assert first[1] <= second[0]  # never held by both at once
    assert Lease(database_engine(postgres_url), lease_key).current_holder() == "nobody"  # released


def test_lease_of_a_killed_holder_expires(postgres_url: str, lease_key: str) -> None:
    engine = database_engine(postgres_url)
    script = (
        "import sys, time; from storage import Lease, database_engine; "
        "Lease(database_engine(sys.argv[1]), sys.argv[2]).acquire(); print('held', flush=True); time.sleep(60)"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", script, postgres_url, lease_key],
        env=client_env(**{TTL_ENV: "3"}),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    time.sleep(4)  # the holder renews every second: alive, it keeps the lease past its ttl
    waiting = Lease(engine, lease_key, ttl=3)
    assert not waiting.try_acquire()
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    killed = time.monotonic()

    waiting.acquire(timeout=30)
    waited = time.monotonic() - killed
    assert waiting.current_holder() == waiting.holder
    waiting.release()
    assert 1.5 < waited <= 3 + 2  # free once the last renewal (at most 1 s before the kill) expired
    engine.dispose()


def test_the_ttl_comes_from_the_environment_and_a_bad_one_is_refused_before_a_search(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from tuning import SearchOptions

    monkeypatch.delenv(TTL_ENV, raising=False)
    assert lease_ttl() == DEFAULT_TTL_S == 30
    monkeypatch.setenv(TTL_ENV, "7.5")
    assert lease_ttl() == 7.5
    for bad in ("0", "-1", "soon", "inf", "nan"):
        monkeypatch.setenv(TTL_ENV, bad)
        with pytest.raises(ValueError, match=f"^{TTL_ENV} must be a positive number of seconds, got '{bad}'$"):
            lease_ttl()
    with pytest.raises(ValueError, match=f"^{TTL_ENV} must be"):  # the search's options, checked before Ray starts
        SearchOptions(run_dir=str(tmp_path / "run"), storage_url=f"sqlite:///{tmp_path}/study.db", study_name="s")
