"""One driver per SQLite study: a second `start` on a study that a live driver runs is refused.

A SQLite file cannot be shared by drivers on several machines, and two drivers on one machine
would propose points from two samplers over one file. So a driver of a SQLite study holds an
exclusive ``flock`` on ``<database>.<study>.driver`` for its whole run; the kernel drops it
when the process exits in any way, so a crashed driver never blocks the next one. The holder
writes who it is into the file, which a refused driver names. PostgreSQL studies are shared by
design (``storage.leases``) and take no such lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from storage.urls import mask_url, parse_url, sqlite_path


@contextlib.contextmanager
def sole_driver(storage_url: str, study_name: str, command: str = "") -> Iterator[None]:
    """Hold the driver lock of a SQLite study while the block runs (a no-op for other databases).

    Raises ``ValueError`` naming the live driver when another process holds it; then nothing
    is written.
    """
    database = sqlite_path(parse_url(storage_url))
    if database is None:
        yield
        return
    path = lock_path(database, study_name)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # no O_TRUNC: the holder's record stays
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(
                f"study {study_name!r} in {mask_url(storage_url)} is being run by another driver "
                f"({_holder(path)}); a SQLite study has one driver at a time: wait for it to end, stop it, "
                "or put the study in PostgreSQL (--storage) to share it"
            ) from None
        record = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(), "command": mask_url(command)}
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, json.dumps(record).encode(), 0)
        yield
    finally:
        os.close(descriptor)  # releases the lock


def lock_path(database: Path, study_name: str) -> Path:
    """The lock file of study ``study_name`` in the SQLite file ``database``."""
    safe = "".join(char if char.isalnum() or char in "-_." else "_" for char in study_name)
    return database.with_name(f"{database.name}.{safe}.driver")


def _holder(path: Path) -> str:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return "a process that has not said who it is yet"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record["since"]))
    command = f": {record['command']}" if record.get("command") else ""
    return f"pid {record['pid']} on {record['host']} since {since}{command}"
