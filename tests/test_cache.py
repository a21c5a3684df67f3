"""The work dir's cache: entry keys, completion marker, and a lock that a killed holder releases."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time

from filelock import FileLock, Timeout

from trainers.cache import ThroughputCache, cache_entry, slug
from trainers.recipes import load_recipe

LOG = logging.getLogger("test-cache")


def test_entry_key_depends_on_phase12_values_only(tmp_path) -> None:
    smoke = load_recipe("smoke")
    entry = cache_entry(tmp_path, "rt-polarity", "minilm-l6", 2, smoke)
    assert entry == cache_entry(tmp_path, "rt-polarity", "minilm-l6", 2, load_recipe("smoke", {"prune_steps": 1}))
    assert entry != cache_entry(tmp_path, "rt-polarity", "minilm-l6", 1, smoke)
    assert entry != cache_entry(tmp_path, "rt-polarity", "minilm-l6", 2, load_recipe("smoke", {"seed": 1}))
    assert entry.directory.is_relative_to(tmp_path / "cache")


def test_entry_exists_only_after_commit(tmp_path) -> None:
    entry = cache_entry(tmp_path, "rt-polarity", "minilm-l6", 2, load_recipe("smoke"))
    with entry.locked(LOG):
        assert not entry.exists()
        entry.commit({"phase_seconds": {"retrieval": 1.0}})
    assert entry.exists() and entry.record()["phase_seconds"]["retrieval"] == 1.0


def test_slug_is_a_unique_folder_name() -> None:
    assert slug("rt-polarity") == "rt-polarity"
    assert "/" not in slug("/data/models/bert")
    assert slug("/a/b") != slug("/a-b")


def test_lock_of_a_killed_holder_is_released(tmp_path) -> None:
    entry = cache_entry(tmp_path, "rt-polarity", "minilm-l6", 2, load_recipe("smoke"))
    entry.directory.mkdir(parents=True)
    lock_path = str(entry.directory) + ".lock"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from filelock import FileLock; import time; lock = FileLock({lock_path!r}); lock.acquire(); "
            "print('held', flush=True); time.sleep(600)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        try:
            FileLock(lock_path).acquire(timeout=0.2)
            raise AssertionError("the lock should be held by the other process")
        except Timeout:
            pass
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    started = time.monotonic()
    with entry.locked(LOG):
        assert time.monotonic() - started < 5


def test_throughput_cache_round_trip(tmp_path) -> None:
    cache = ThroughputCache(tmp_path)
    assert cache.get("cpu|model|len64|fp32") is None
    cache.put("cpu|model|len64|fp32", 123.5)
    assert ThroughputCache(tmp_path).get("cpu|model|len64|fp32") == 123.5
