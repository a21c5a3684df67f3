"""Storage URLs: the default location, validation, and password masking."""

from __future__ import annotations

import importlib.util
import ipaddress
import re
from pathlib import Path

import sqlalchemy
from sqlalchemy.engine import URL
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

# scheme://user:password@ -> the password, up to the last "@" before the host
_PASSWORD = re.compile(r"([A-Za-z][\w+.-]*://[^:/@\s]*):[^\s/]*@")


def default_url(run_dir: str | Path) -> str:
    """Return the URL of the SQLite study file of a run directory."""
    return f"sqlite:///{Path(run_dir).expanduser().resolve() / 'study.db'}"


def mask_url(text: str) -> str:
    """Return ``text`` with the password of every URL in it replaced by ``***``.

    Works on a single URL and on any text holding URLs (a command line, an error message).
    """
    return _PASSWORD.sub(r"\1:***@", text)


def parse_url(url: str) -> URL:
    """Return the parsed SQLAlchemy URL, or raise ``ValueError`` if it is malformed.

    A PostgreSQL URL without a driver gets psycopg2 when psycopg 3 (SQLAlchemy 2.1's
    default) is not installed.
    """
    example = "e.g. sqlite:///prumux-runs/study.db or postgresql://user@host:5432/db"
    try:
        parsed = sqlalchemy.make_url(url)
        parsed.get_dialect()
    except ArgumentError:
        raise ValueError(f"malformed storage URL {mask_url(url)!r}: expected {example}") from None
    except NoSuchModuleError:
        raise ValueError(f"unsupported database in storage URL {mask_url(url)!r}: expected {example}") from None
    if parsed.drivername == "postgresql" and not _installed("psycopg") and _installed("psycopg2"):
        return parsed.set(drivername="postgresql+psycopg2")
    return parsed


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def sqlite_path(url: URL) -> Path | None:
    """Return the file of a SQLite URL, or None for other databases and in-memory SQLite."""
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return Path(url.database)


def is_loopback_host(host: str) -> bool:
    """Whether a host name or address (``[::1]`` brackets allowed) reaches this machine only:
    ``localhost``, 127.0.0.0/8 or ::1."""
    try:
        return host == "localhost" or ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
