"""A search's run directory: where it lives (a local or shared path, or a URI), how workers lock its work folder.

The work folder holds point checkpoints and the phase 1-2 cache. A run directory at a URI is trained
in a local mirror on each node (``storage.remote.mirror_dir``: this node's temporary folder, since
nodes share no disk): a folder is pulled when its lease is taken and pushed while and after it is held.
With the ``database`` lock (a work folder shared by the nodes of a cluster) the cache entries and point
folders are locked with leases in the study's database instead of lock files.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import Engine

from storage import Lease, database_engine, parse_url
from storage.remote import RemoteFolder, child_uri, is_uri, mirror_dir
from trainers.cache import ENTRY_FILE, THROUGHPUT_FILE, LockFactory
from trainers.point import RESULT_FILE

DRIVER_LOG = "driver.log"
LOCK_KINDS = ("file", "database")
CACHE_LOCKS = ("auto", *LOCK_KINDS)
COMPLETION_FILES = (ENTRY_FILE, RESULT_FILE)  # written last: a folder is complete once they exist


@dataclass(frozen=True)
class RunDir:
    """A run directory at ``location`` (a path, or a pyarrow URI) whose work folder is locked by ``lock_kind``."""

    location: str
    lock_kind: str = "file"  # "file" (lock files) or "database" (leases in the study's database)

    @classmethod
    def for_search(cls, location: str, cache_lock: str, storage_url: str) -> RunDir:
        """The run directory of a search, a local path made absolute here (the driver's working directory, not
        a worker's); ``cache_lock`` "auto" locks with the database unless the run directory is local and the
        study SQLite (nothing else shares it)."""
        if cache_lock == "auto":
            shared = is_uri(location) or parse_url(storage_url).get_backend_name() != "sqlite"
            cache_lock = "database" if shared else "file"
        return cls(location if is_uri(location) else str(Path(location).expanduser().resolve()), cache_lock)

    @property
    def is_uri(self) -> bool:
        return is_uri(self.location)

    @property
    def root(self) -> Path:
        """The run directory on this machine: the path itself, or this node's mirror of the URI."""
        return mirror_dir(self.location) if self.is_uri else Path(self.location).expanduser().resolve()

    @property
    def work_dir(self) -> Path:
        """Point checkpoints and the phase 1-2 cache, on this machine."""
        return self.root / "work"

    @property
    def work_uri(self) -> str | None:
        """The work folder's URI when the run directory is a URI."""
        return child_uri(self.location, "work") if self.is_uri else None

    @property
    def driver_log(self) -> Path:
        """Where Ray's own log lines of the driver go."""
        return self.root / DRIVER_LOG

    def tune_storage(self, ray_storage: str | None = None) -> str:
        """Ray Tune's storage path (an absolute path or a URI): ``ray_storage``, else ``<run dir>/ray``."""
        if ray_storage and is_uri(ray_storage):
            return ray_storage
        if not ray_storage and self.is_uri:
            return child_uri(self.location, "ray")
        return str(Path(ray_storage or Path(self.location) / "ray").expanduser().resolve())

    def remote_work(self) -> RemoteFolder | None:
        """The work folder at its URI, mirrored in ``work_dir``; None for a local run directory."""
        return RemoteFolder(self.work_uri, self.work_dir) if self.work_uri else None

    @contextmanager
    def work_locks(
        self, storage_url: str, push_every_s: float
    ) -> Iterator[tuple[RemoteFolder | None, LockFactory | None]]:
        """The remote work folder (None if local) and the lock of the work folder's entries for ``train_point``
        (None: lock files); with a URI the lock also mirrors the folders it locks, pushed every ``push_every_s``."""
        if self.lock_kind != "database":
            yield None, None
            return
        engine = database_engine(storage_url)
        remote = self.remote_work()
        lock = lease_lock(engine, self.work_dir)
        try:
            if remote is not None:
                remote.pull(THROUGHPUT_FILE)
            yield remote, mirrored_lock(lock, remote, push_every_s) if remote else lock
            if remote is not None:
                remote.push(THROUGHPUT_FILE)
        finally:
            engine.dispose()


def mirrored_lock(lock: LockFactory, remote: RemoteFolder, push_every_s: float) -> LockFactory:
    """A lock factory that takes ``lock`` and keeps the locked folder in sync with ``remote``:
    pulled once the lock is held, pushed every ``push_every_s`` seconds and before it is freed."""

    @contextmanager
    def locked_and_mirrored(directory: Path, log: logging.Logger) -> Iterator[None]:
        relative = Path(directory).resolve().relative_to(remote.local.resolve())
        with lock(directory, log):
            log.info("pulled %d files of %s", remote.pull(relative), remote.uri_of(directory))
            with remote.pushing(relative, push_every_s, last=COMPLETION_FILES):
                yield

    return locked_and_mirrored


def lease_lock(engine: Engine, workdir: str | Path) -> LockFactory:
    """A cache lock factory: a lease in the database of ``engine`` per folder of the work dir.

    The key is the folder relative to the work dir, so nodes mounting the shared folder at
    different paths agree on it.
    """
    root = Path(workdir).resolve()

    def lock(directory: Path, log: logging.Logger) -> Lease:
        key = f"work:{Path(directory).resolve().relative_to(root)}"
        log.info("locking with the database lease %s", key)
        return Lease(engine, key)

    return lock
