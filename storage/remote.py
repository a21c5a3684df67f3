"""A run directory at a pyarrow URI (``s3://``, ``gs://``, ``hdfs://``, ``file://``, ...).

Training reads and writes local files, so each process works in a local mirror of the
remote folder: ``pull`` copies a remote subfolder down before it is used, ``push`` copies the
files that changed since the last push back up, and ``pushing`` does so every few seconds
while a block runs (a retry on another node then finds the latest checkpoint). Only whole
files move and each remote write replaces one object, so a reader sees an old or a new file,
never half of one; files that mark a folder complete are pushed after everything else.

A file counts as unchanged while its size and modification time match those of its last
copy either way. Object stores keep times to the second, which suffices here: a folder is
written only by the holder of its lease, and the next holder writes seconds after taking it.

Temporary files (names starting with "."), lock files and lock holders stay local: locks
across nodes are leases in the study's database (``storage.leases``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from urllib.parse import parse_qsl

from pyarrow import fs

from storage.errors import first_line
from storage.periodic import Periodic

LOCAL_ONLY_SUFFIXES = (".lock",)
LOCAL_ONLY_NAMES = ("holder.json",)
SECRET_OPTIONS = {"access_key", "secret_key", "session_token"}
_logger = logging.getLogger(__name__)


def is_uri(location: str | os.PathLike) -> bool:
    """Whether a run directory is given as a URI rather than a local or shared path."""
    return "://" in str(location)


def mirror_dir(uri: str) -> Path:
    """The local folder that mirrors ``uri`` on this machine (stable across processes)."""
    digest = hashlib.sha256(uri.partition("?")[0].rstrip("/").encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / "prumux-mirrors" / digest


def child_uri(uri: str, name: str) -> str:
    """The URI of ``name`` inside the folder at ``uri`` (its filesystem options kept)."""
    location, separator, query = uri.partition("?")
    return f"{location.rstrip('/')}/{name}{separator}{query}"


def check_uri(uri: str) -> None:
    """Raise ``ValueError`` with one line unless pyarrow can open ``uri``; credentials in it are
    refused (they would be recorded with every trial's model location)."""
    options = {key.lower() for key, _ in parse_qsl(uri.partition("?")[2])}
    if options & SECRET_OPTIONS or "@" in uri.partition("://")[2].partition("/")[0]:
        raise ValueError(
            "run directory URIs must not carry credentials: give them to every node through the "
            "environment (e.g. AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY) or the cloud's own config"
        )
    try:
        fs.FileSystem.from_uri(uri)
    except (ValueError, OSError, ImportError) as error:
        raise ValueError(f"cannot open run directory {uri}: {first_line(error)}") from None


class RemoteFolder:
    """The folder at ``uri`` and its local mirror ``local``."""

    def __init__(self, uri: str, local: str | os.PathLike) -> None:
        location, _, self.query = uri.partition("?")  # query: filesystem options (endpoint, region, ...)
        self.uri = location.rstrip("/")
        self.filesystem, root = fs.FileSystem.from_uri(uri)
        self.root = PurePosixPath(root)
        self.local = Path(local)
        # relative path -> (local, remote) signatures when the file was last copied either way
        self._synced: dict[str, tuple[tuple[int, int], tuple[int, float | None]]] = {}
        self._lock = threading.Lock()

    def uri_of(self, path: str | os.PathLike) -> str:
        """The URI of a file or folder of the local mirror."""
        relative = Path(path).resolve().relative_to(self.local.resolve()).as_posix()
        location = self.uri if relative == "." else f"{self.uri}/{relative}"
        return f"{location}?{self.query}" if self.query else location

    def exists(self, relative: str | os.PathLike) -> bool:
        """Whether the remote folder has the file ``relative``."""
        return self.filesystem.get_file_info(str(self._remote(relative))).type == fs.FileType.File

    def pull(self, relative: str | os.PathLike = ".") -> int:
        """Copy the remote files under ``relative`` that the mirror lacks or has in another
        version; return how many were copied."""
        with self._lock:
            copied = 0
            for info in self._remote_files(relative):
                name = PurePosixPath(info.path).relative_to(self.root).as_posix()
                target = self.local / name
                if target.is_file() and self._synced.get(name) == (_signature(target), _remote_signature(info)):
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                fs.copy_files(
                    info.path,
                    str(target),
                    source_filesystem=self.filesystem,
                    destination_filesystem=fs.LocalFileSystem(),
                )
                self._synced[name] = (_signature(target), _remote_signature(info))
                copied += 1
            return copied

    def push(self, relative: str | os.PathLike = ".", last: Collection[str] = ()) -> int:
        """Copy the mirror's files under ``relative`` that changed since they were last synced,
        files named in ``last`` after all others; return how many were copied."""
        with self._lock:
            changed = [path for path in self._local_files(relative) if self._local_changed(path)]
            changed.sort(key=lambda path: path.name in last)
            for path in changed:
                signature, name = _signature(path), self._name(path)
                remote = self._remote(name)
                self.filesystem.create_dir(str(remote.parent), recursive=True)
                fs.copy_files(
                    str(path),
                    str(remote),
                    source_filesystem=fs.LocalFileSystem(),
                    destination_filesystem=self.filesystem,
                )
                self._synced[name] = (signature, _remote_signature(self.filesystem.get_file_info(str(remote))))
            return len(changed)

    @contextmanager
    def pushing(self, relative: str | os.PathLike, every_s: float, last: Collection[str] = ()) -> Iterator[None]:
        """Push ``relative`` every ``every_s`` seconds while the block runs, and once at its end."""
        pusher = Periodic(
            lambda: self.push(relative, last),
            every_s,
            name="prumux-push",
            failed=f"pushing {relative} failed",
            logger=_logger,
            tolerated=(OSError,),  # the store is unreachable for now: the next round retries
        )
        try:
            with pusher:
                yield
        finally:
            self.push(relative, last)

    def _remote(self, relative: str | os.PathLike) -> PurePosixPath:
        return self.root / PurePosixPath(Path(relative).as_posix())

    def _local_changed(self, path: Path) -> bool:
        synced = self._synced.get(self._name(path))
        return synced is None or synced[0] != _signature(path)

    def _name(self, path: Path) -> str:
        return path.relative_to(self.local).as_posix()

    def _remote_files(self, relative: str | os.PathLike) -> list[fs.FileInfo]:
        location = self.filesystem.get_file_info(str(self._remote(relative)))
        if location.type != fs.FileType.Directory:
            return [location] if location.type == fs.FileType.File else []
        selector = fs.FileSelector(location.path, recursive=True)
        return [info for info in self.filesystem.get_file_info(selector) if info.type == fs.FileType.File]

    def _local_files(self, relative: str | os.PathLike) -> list[Path]:
        folder = self.local / relative
        files = [folder] if folder.is_file() else folder.rglob("*") if folder.is_dir() else []
        return [path for path in files if path.is_file() and _mirrored(path)]


def _mirrored(path: Path) -> bool:
    return (
        not path.name.startswith(".")
        and not path.name.endswith(LOCAL_ONLY_SUFFIXES)
        and path.name not in LOCAL_ONLY_NAMES
    )


def _signature(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


def _remote_signature(info: fs.FileInfo) -> tuple[int, float | None]:
    return info.size, info.mtime.timestamp() if info.mtime is not None else None
