"""Ray start-up for every command that needs Ray (``start``, ``serve``): one way to connect or
start a local instance, with the process title's passwords masked first."""

from __future__ import annotations

import logging
import os
import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import ray

from storage import mask_url
from storage.errors import first_line


@contextmanager
def connect_ray(address: str | None = None, log: Path | None = None) -> Iterator[None]:
    """Connect to the Ray cluster at ``address`` (``auto`` or ``HOST:PORT``), or
    start a local one without a dashboard. Ray's own ports listen on every interface (Ray
    resolves a loopback node address to the routable one); Ray 2.60's token authentication,
    on by default, guards them.

    With ``log``, what this process logs (Ray's notices, such as the token-auth one on every
    local start, failed trials' tracebacks, our own warnings) goes to that file instead of the
    console; without, Ray's warnings go to the console.

    An instance already initialised in this process is used as is and left running; one
    started here is shut down on exit. Workers get this checkout on their PYTHONPATH, so the
    project need not be pip-installed. A local instance runs its workers at this process's
    priority: Ray's default (niceness 15) lets any other process on the machine starve the
    trials (measured in the default search with one busy process on one of 2 cores: 7.7 s a
    dense training step against 1.1 s, so the search's answer moved with the machine's load).
    """
    if ray.is_initialized():
        yield
        return
    runtime_env = {"env_vars": {"PYTHONPATH": _python_path()}}
    logging_options = {"configure_logging": False} if log else {"logging_level": "warning"}
    _mask_process_title()
    with _ray_logs_to(log):
        try:
            if address:
                ray.init(address=address, runtime_env=runtime_env, log_to_driver=False, **logging_options)
            else:
                ray.init(
                    address="local",
                    num_cpus=os.cpu_count(),
                    include_dashboard=False,
                    runtime_env=runtime_env,
                    _system_config={"worker_niceness": 0},
                    log_to_driver=False,
                    **logging_options,
                )
        except ConnectionError as error:
            raise ValueError(f"cannot connect to Ray at {address}: {first_line(error)}") from None
        try:
            yield
        finally:
            ray.shutdown()


@contextmanager
def _ray_logs_to(path: Path | None) -> Iterator[None]:
    """Send this process's log records, Ray's included, to the file ``path`` instead of the console
    while the block runs (None: leave logging as it is).

    ``ray.init(configure_logging=False)`` empties the "ray" logger's handlers, so its records go
    up to the root logger, which holds the file's handler.
    """
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    ray_logger, root = logging.getLogger("ray"), logging.getLogger()
    saved = ray_logger.handlers[:], ray_logger.propagate
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    ray_logger.handlers.clear()
    ray_logger.propagate = True
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()
        ray_logger.handlers[:], ray_logger.propagate = saved


def _mask_process_title() -> None:
    """Hide database passwords in this process's command line (``ps``, /proc): Ray reads it
    from /proc and shows it as the job's entrypoint to everyone who can list the cluster's jobs."""
    try:
        command = Path("/proc/self/cmdline").read_bytes().decode().rstrip("\0").split("\0")
    except OSError:  # no /proc on this system
        return
    masked = mask_url(shlex.join(command))
    if masked != shlex.join(command):
        ray._raylet.setproctitle(masked)


def _python_path() -> str:
    project = str(Path(__file__).resolve().parents[1])
    existing = os.environ.get("PYTHONPATH")
    return f"{project}{os.pathsep}{existing}" if existing else project
