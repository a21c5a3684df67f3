"""Opening the SQL database a study lives in, resilient to dropped connections."""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from optuna.storages import BaseStorage, RDBStorage
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, OperationalError, PendingRollbackError

from storage.errors import first_line
from storage.urls import mask_url, parse_url, sqlite_path

CONNECT_TIMEOUT_S = 5
RETRY_DELAYS_S = (0.5, 1.0, 2.0)


class NoSuchStudy(ValueError):
    """There is no study of that name, or no study database at all, at a storage URL."""


def _is_disconnect(error: BaseException) -> bool:
    """A lost connection, or a session left unusable by one (its transaction died with the connection)."""
    cause = error if isinstance(error, DBAPIError) else error.__cause__
    return isinstance(cause, (OperationalError, PendingRollbackError)) or (
        isinstance(cause, DBAPIError) and cause.connection_invalidated
    )


def _was_dropped(error: BaseException) -> bool:
    """A connection that was made and then lost (not one that could not be made: a wrong host, port or database)."""
    return isinstance(error, DBAPIError) and error.connection_invalidated


def call_with_retry(
    call: Callable[[], Any],
    before_retry: Callable[[], None] = lambda: None,
    retry_on: Callable[[BaseException], bool] = _is_disconnect,
) -> Any:
    """Run ``call``; on a lost database connection (``retry_on``), call ``before_retry``, wait and try again."""
    for delay in RETRY_DELAYS_S:
        try:
            return call()
        except (DBAPIError, optuna.exceptions.StorageInternalError) as error:
            if not retry_on(error):
                raise
            before_retry()
            time.sleep(delay)
    return call()


def _retrying(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def call(self: RDBStorage, *args: Any, **kwargs: Any) -> Any:
        return call_with_retry(lambda: method(self, *args, **kwargs), lambda: _reset(self))

    return call


def _reset(storage: RDBStorage) -> None:
    """Drop this thread's session (its transaction may have died with its connection) and the pooled connections."""
    storage.scoped_session.remove()
    storage.engine.dispose()


# Private RDBStorage methods that Optuna's _CachedStorage (the wrapper of every study's storage)
# calls directly, bypassing the public ones.
_CACHED_STORAGE_CALLS = (
    "_get_trials",
    "_create_new_trial",
    "_set_trial_param",
    "_get_best_trial_id",
    "_get_stale_trial_ids",
)


def _retry_storage_calls(cls: type[RDBStorage]) -> type[RDBStorage]:
    public = [name for name in vars(BaseStorage) if not name.startswith("_")]
    for name in [*public, *(name for name in _CACHED_STORAGE_CALLS if hasattr(RDBStorage, name))]:
        setattr(cls, name, _retrying(getattr(RDBStorage, name)))
    return cls


@_retry_storage_calls
class RetryingRDBStorage(RDBStorage):
    """An ``RDBStorage`` whose storage calls are retried when the database connection was lost.

    Pre-ping replaces pooled connections that died while idle; the retry covers a connection
    dropped during a call (a database restart, ``pg_terminate_backend``). A write whose commit
    reached the server just before the connection dropped could be applied twice; the study
    tolerates that (a duplicate attr write is idempotent, a duplicate trial ends up stale).
    """


def open_storage(url: str, *, create: bool = True) -> RetryingRDBStorage:
    """Open the study database at ``url``.

    With ``create=False`` (read-only commands) nothing is created: a missing SQLite file or a
    database without Optuna tables raises ``ValueError("no study at ...")``. An unreachable
    database raises a one-line ``ValueError`` naming the URL with its password masked.
    """
    parsed = parse_url(url)
    path = sqlite_path(parsed)
    if path is not None:
        _check_sqlite_file(path, url, create)
    engine_kwargs = _engine_kwargs(parsed)
    has_tables = _probe(parsed, url, engine_kwargs)
    if not has_tables and not create:
        raise _no_study(url)
    try:
        return call_with_retry(
            lambda: RetryingRDBStorage(parsed.render_as_string(hide_password=False), engine_kwargs=engine_kwargs)
        )
    except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError) as error:
        raise ValueError(f"cannot open storage {mask_url(url)}: {_first_line(error)}") from None
    except RuntimeError as error:  # optuna's schema version check
        raise ValueError(f"cannot use storage {mask_url(url)}: {_first_line(error)}") from None


def _check_sqlite_file(path: Path, url: str, create: bool) -> None:
    if path.is_file():
        return
    if path.exists() or not create:
        raise _no_study(url)
    path.parent.mkdir(parents=True, exist_ok=True)


def _no_study(url: str) -> NoSuchStudy:
    return NoSuchStudy(f"no study at {mask_url(url)}")


def database_engine(url: str) -> sqlalchemy.engine.Engine:
    """A SQLAlchemy engine on the database at ``url``, connecting as ``open_storage`` does."""
    parsed = parse_url(url)
    return sqlalchemy.create_engine(parsed, **_engine_kwargs(parsed))


def application_name() -> str:
    """How this process's PostgreSQL connections are named in ``pg_stat_activity``."""
    return f"prumux-search pid={os.getpid()}"


def _engine_kwargs(url: URL) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.get_backend_name() == "postgresql":
        kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_S}
        if "application_name" not in url.query:  # a name given in the URL wins
            kwargs["connect_args"]["application_name"] = application_name()
    elif url.get_backend_name() == "mysql":
        kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_S}
    return kwargs


def _probe(parsed: URL, url: str, engine_kwargs: dict[str, Any]) -> bool:
    """Connect, fast; return whether Optuna's tables exist. A database that cannot be reached fails at once;
    a connection dropped once made is tried again."""
    try:
        engine = sqlalchemy.create_engine(parsed, poolclass=sqlalchemy.pool.NullPool, **engine_kwargs)
    except ImportError as error:
        raise ValueError(f"no database driver for {mask_url(url)}: {error}") from None
    try:
        return call_with_retry(lambda: _has_study_tables(engine), retry_on=_was_dropped)
    except sqlalchemy.exc.SQLAlchemyError as error:
        raise ValueError(f"cannot open storage {mask_url(url)}: {_first_line(error)}") from None
    finally:
        engine.dispose()


def _has_study_tables(engine: sqlalchemy.engine.Engine) -> bool:
    with engine.connect() as connection:
        return sqlalchemy.inspect(connection).has_table("studies")


def _first_line(error: BaseException) -> str:
    """The first line of the database's own error (SQLAlchemy wraps it as ``orig``)."""
    return first_line(getattr(error, "orig", None) or error)
