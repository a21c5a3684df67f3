"""Leases: cross-node mutual exclusion through a row in the study's database.

A lease is a row of ``prumux_leases(key, holder, expires_at)``. It is taken with one atomic
statement, an ``INSERT`` of a new key or an ``UPDATE ... WHERE expires_at < now`` of an
expired one, so of several processes on any hosts exactly one holds it. Its holder renews it
from a background thread every ``ttl / 3`` seconds and deletes the row when done; a holder
that crashed stops renewing, and its lease is free for the next process ``ttl`` seconds
later. Times are the hosts' clocks, which are assumed to agree within the ttl. The ttl is 30 s
unless the environment variable ``PRUMUX_LEASE_TTL_S`` says otherwise (on every node): shorter
lets the work of a crashed holder resume sooner, longer tolerates longer stalls of a live one.

Used where a filesystem lock is not enough: a run directory shared by the nodes of a
cluster (the phase 1-2 cache), and several drivers proposing trials to one study.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from typing import Self, TypeVar

import optuna
import sqlalchemy
from sqlalchemy import Column, Float, MetaData, String, Table
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, IntegrityError

from storage.optuna_private import storage_engine, study_storage
from storage.periodic import Periodic
from storage.rdb import call_with_retry

DEFAULT_TTL_S = 30.0
TTL_ENV = "PRUMUX_LEASE_TTL_S"
POLL_S = 0.5

_metadata = MetaData()
LEASES = Table(
    "prumux_leases",
    _metadata,
    Column("key", String(512), primary_key=True),
    Column("holder", String(255), nullable=False),
    Column("expires_at", Float, nullable=False),
)
_logger = logging.getLogger(__name__)
T = TypeVar("T")


def lease_ttl() -> float:
    """The seconds a lease outlives its holder's last renewal: ``PRUMUX_LEASE_TTL_S`` if set, else 30.

    Raises ``ValueError`` (one line) unless the variable is a positive number.
    """
    value = os.environ.get(TTL_ENV)
    if value is None:
        return DEFAULT_TTL_S
    try:
        ttl = float(value)
    except ValueError:
        ttl = float("nan")
    if not 0 < ttl < float("inf"):
        raise ValueError(f"{TTL_ENV} must be a positive number of seconds, got {value!r}")
    return ttl


class LeaseLost(RuntimeError):
    """The lease expired or was taken over before its holder released it."""


class Lease:
    """The lease ``key`` in the database of ``engine``; a context manager that waits for it.
    ``ttl``: [default: ``lease_ttl()``]."""

    def __init__(self, engine: Engine, key: str, ttl: float | None = None) -> None:
        ttl = lease_ttl() if ttl is None else ttl
        if ttl <= 0:
            raise ValueError(f"lease ttl must be positive, got {ttl}")
        self.engine = engine
        self.key = key
        self.ttl = ttl
        self.holder = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._renewer = Periodic(
            self._renew_round,
            ttl / 3,
            name="prumux-lease",
            failed=f"renewing lease {key} failed",
            logger=_logger,
            tolerated=(sqlalchemy.exc.SQLAlchemyError,),
        )
        _create_table(engine)

    def try_acquire(self) -> bool:
        """Take the lease if it is free or expired; return whether this holder has it now."""
        return self._retrying(self._try_acquire)

    def _try_acquire(self) -> bool:
        now = time.time()
        try:
            with self.engine.begin() as connection:
                connection.execute(LEASES.insert().values(key=self.key, holder=self.holder, expires_at=now + self.ttl))
            return True
        except IntegrityError:
            pass
        with self.engine.begin() as connection:
            taken = connection.execute(
                LEASES.update()
                .where(LEASES.c.key == self.key)
                .where((LEASES.c.expires_at < now) | (LEASES.c.holder == self.holder))
                .values(holder=self.holder, expires_at=now + self.ttl)
            )
        return taken.rowcount == 1

    def acquire(self, timeout: float | None = None) -> None:
        """Wait until the lease is taken (``TimeoutError`` after ``timeout`` s), then keep it renewed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.try_acquire():
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"lease {self.key!r} is held by {self.current_holder()}")
            time.sleep(POLL_S)
        self._renewer.start()

    def renew(self) -> None:
        """Push the expiry ``ttl`` seconds ahead; ``LeaseLost`` if another holder has the lease."""
        if not self._retrying(self._renew):
            raise LeaseLost(f"lease {self.key!r} was lost by {self.holder}")

    def release(self) -> None:
        """Stop renewing (if ``acquire`` started it) and free the lease; a no-op if it was lost."""
        self._renewer.stop()
        self._retrying(self._delete)

    def current_holder(self) -> str:
        """Who holds the lease now, for messages."""
        with self.engine.connect() as connection:
            row = connection.execute(sqlalchemy.select(LEASES.c.holder).where(LEASES.c.key == self.key)).first()
        return row[0] if row else "nobody"

    def __enter__(self) -> Self:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def _renew(self) -> bool:
        with self.engine.begin() as connection:
            renewed = connection.execute(
                LEASES.update()
                .where((LEASES.c.key == self.key) & (LEASES.c.holder == self.holder))
                .values(expires_at=time.time() + self.ttl)
            )
        return renewed.rowcount == 1

    def _delete(self) -> None:
        with self.engine.begin() as connection:
            connection.execute(LEASES.delete().where((LEASES.c.key == self.key) & (LEASES.c.holder == self.holder)))

    def _retrying(self, statement: Callable[[], T]) -> T:
        """Run ``statement``, again on a fresh connection if the database connection was lost."""
        return call_with_retry(statement, self.engine.dispose)

    def _renew_round(self) -> bool:
        """One renewal of the background thread; False (stop renewing) once the lease is lost."""
        try:
            self.renew()
        except LeaseLost:
            _logger.error("lease %s was lost (this process stalled over %.0f s)", self.key, self.ttl)
            return False
        return True


def study_lease(study: optuna.Study, name: str, ttl: float | None = None) -> Lease:
    """The lease ``name:<study name>`` in the database of ``study``."""
    storage = study_storage(study)
    return Lease(storage_engine(storage), f"{name}:{study.study_name}", ttl)


def _create_table(engine: Engine) -> None:
    """Create ``prumux_leases`` unless it exists (another process may be creating it now)."""
    try:
        _metadata.create_all(engine, checkfirst=True)
    except DBAPIError:
        if not sqlalchemy.inspect(engine).has_table(LEASES.name):
            raise
