"""What a work dir shares between jobs: the phase 1-2 models, the pruning stages and the dense throughput.

The phase 1-2 model depends only on (task, base model, N, phase 1-2 recipe values, seed),
so it is trained once and reused by every sparsity s, by restarts and by concurrent jobs.
The dense (1, 0) phase-2 model is the entry with N = 1, which is also the teacher of the
CoFi-only points (1, s). Likewise a pruning stage depends only on (task, base model, N, s, the
recipe's values but the pruned fine-tuning's, seed): the configurations of a sweep that differ
only in the pruned model's fine-tuning train one (``pruning_directory``).

Locking. Each entry has a lock file taken with `filelock.FileLock`, an `flock` on Linux.
The kernel drops the lock when its holder exits in any way (crash, SIGKILL, OOM), so a dead
holder never blocks the next job; the lock file itself may stay on disk and means nothing.
On a shared NFSv4 filesystem the lock is held under the client's lease: if the holding
machine dies, the server frees it when the lease expires (90 s by default). A job that
finds an entry locked waits, logging who holds it, then uses the entry the holder wrote.
An entry counts as present only once its `entry.json` exists; it is written last.

Nodes that share the work dir over a filesystem without reliable locks use another lock
instead: the job is given a `LockFactory` (`train_point(..., lock=factory)`), and `locked`
(entries and point folders alike) takes `factory(directory, log)`, e.g. a lease row in the
study's database (`storage.leases`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from trainers.recipes import PHASE12_FIELDS, Recipe, fields_through

LOCK_POLL_SECONDS = 30.0
ENTRY_FILE = "entry.json"
THROUGHPUT_FILE = "throughput-cache.json"

LockFactory = Callable[[Path, logging.Logger], AbstractContextManager[object]]
_origin: dict[str, str] = {}  # set with `record_origin`: where this process trains, beside host and pid


@dataclass(frozen=True)
class CacheEntry:
    """One phase 1-2 model of the cache: its folder, lock and completion record."""

    directory: Path

    @property
    def model_dir(self) -> Path:
        return self.directory / "model"

    @property
    def work_dir(self) -> Path:
        """Checkpoints and intermediate models of an entry being trained."""
        return self.directory / "work"

    @property
    def record_path(self) -> Path:
        return self.directory / ENTRY_FILE

    def exists(self) -> bool:
        return self.record_path.is_file()

    def record(self) -> dict[str, Any]:
        """What the trainer stored with the finished entry (phase seconds, ...)."""
        return json.loads(self.record_path.read_text())

    def commit(self, record: dict[str, Any]) -> None:
        """Mark the entry finished; call after its model is saved in `model_dir`. The record
        gets ``trained_by``: this host, pid and what `record_origin` set (e.g. the cluster node)."""
        origin = {"host": socket.gethostname(), "pid": os.getpid(), **_origin}
        write_json_atomic(self.record_path, record | {"trained_by": origin})

    def locked(self, log: logging.Logger, lock: LockFactory | None = None) -> AbstractContextManager[object]:
        """Hold the entry's cross-process lock (see `locked`)."""
        return locked(self.directory, log, lock)


def cache_entry(workdir: str | Path, task: str, base_model: str, N: int, recipe: Recipe) -> CacheEntry:
    """The entry of the phase 1-2 model for (task, base model, N, recipe's phase 1-2 values, seed)."""
    key = f"N{N}-r{recipe.digest(PHASE12_FIELDS)}-seed{recipe.seed}"
    return CacheEntry(Path(workdir) / "cache" / slug(task) / slug(base_model) / key)


def pruning_directory(workdir: str | Path, task: str, base_model: str, N: int, s: float, recipe: Recipe) -> Path:
    """The folder of the pruning stage (its checkpoint and pruned model) for (task, base model, N, s, the
    recipe's values up to the pruning's end, seed); hold ``locked`` on it while training there."""
    key = f"N{N}-s{s:g}-r{recipe.digest(fields_through('prune'))}-seed{recipe.seed}"
    return Path(workdir).expanduser().resolve() / "pruning" / slug(task) / slug(base_model) / key


class ThroughputCache:
    """Dense (1, 0) throughput per (hardware, base model, length, precision), in `<workdir>/throughput-cache.json`."""

    def __init__(self, workdir: str | Path):
        self.path = Path(workdir) / THROUGHPUT_FILE

    def get(self, key: str) -> float | None:
        return self._read().get(key)

    def put(self, key: str, examples_per_second: float) -> None:
        with FileLock(str(self.path) + ".lock"):
            values = self._read()
            values[key] = examples_per_second
            write_json_atomic(self.path, values)

    def _read(self) -> dict[str, float]:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except json.JSONDecodeError:
            raise ValueError(
                f"{self.path} is not valid JSON; delete it to measure the dense throughput again"
            ) from None


def record_origin(**where: str) -> None:
    """Say where this process trains (e.g. ``node="10.0.0.3"``): committed entries record it."""
    _origin.update(where)


def locked(directory: Path, log: logging.Logger, lock: LockFactory | None = None) -> AbstractContextManager[object]:
    """Hold the lock of `directory`: ``lock(directory, log)``, by default the lock file beside it (`file_locked`)."""
    directory.mkdir(parents=True, exist_ok=True)
    return (lock or file_locked)(directory, log)


@contextmanager
def file_locked(directory: Path, log: logging.Logger) -> Iterator[None]:
    """Hold the lock file beside `directory`, waiting and logging the holder while another job has it."""
    directory.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(directory) + ".lock")
    holder = directory / "holder.json"
    while True:
        try:
            lock.acquire(timeout=LOCK_POLL_SECONDS)
            break
        except Timeout:
            log.info("waiting for %s, held by %s", directory, _read_text(holder))
    try:
        write_json_atomic(holder, {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()})
        yield
    finally:
        holder.unlink(missing_ok=True)
        lock.release()


def slug(name: str) -> str:
    """A folder name for a task or model name (which may be a path), unique per name."""
    clean = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")[-40:]
    if clean == name:
        return clean
    return f"{clean}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def write_json_atomic(path: Path, value: Any) -> None:
    """Write `value` as JSON at `path` through a temporary file and `os.replace`."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(value, indent=2))
    os.replace(tmp, path)


def _read_text(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return "an unknown job"
