"""`prumux-search serve`: the found model behind a tenant-safe, multiplexing HTTP endpoint on Ray Serve.

Everything is checked before Ray starts: the model source, the key file, the host, the
options and the port. The command serves until Ctrl-C (or SIGTERM), then removes the
application (and stops the local Ray instance it started).
"""

from __future__ import annotations

import logging
import signal
import socket
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import click

from cli.errors import one_line
from cli.options import runtime_option, study_options
from prumux.inference import check_runtime
from serving.keys import LOCAL_TENANT, check_exposure, read_keys
from serving.model import DEFAULT_RUNTIME
from storage import open_study, points_frame, recommend
from storage.trials import complete_trial

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial


@click.command("serve")
@study_options
@click.option("--model", "model_dir", default=None, help="A servable model folder (from `export`), or its URI.")
@click.option("--trial", "number", type=int, default=None, help="Serve this trial of the study.")
@click.option("--best", is_flag=True, help="Serve the study's recommended model.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address of the HTTP endpoint.")
@click.option("--port", default=8000, show_default=True, type=int, help="Port of the HTTP endpoint.")
@click.option(
    "--keys",
    "keys_file",
    type=click.Path(path_type=Path),
    default=None,
    help="API keys, one `tenant key` line each; requests then need `Authorization: Bearer KEY`.",
)
@click.option("--allow-remote", is_flag=True, help="Allow a non-loopback --host (needs --keys).")
@click.option("--replicas", type=int, default=1, show_default=True, help="Model replicas.")
@click.option(
    "--max-batch", type=int, default=None, help="Instances per batch, a multiple of N [default: 32 groups of N]."
)
@click.option(
    "--max-wait-ms",
    type=float,
    default=10.0,
    show_default=True,
    help="How long a batch waits to fill after its first request.",
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda[:K].")
@runtime_option(
    "the replicas run the model on [default: a trial's, the runtime its search measured it on; else eager]",
    parameter="runtime",
    default=None,
)
@click.option(
    "--cpus-per-replica",
    type=float,
    default=None,
    help="CPUs (and torch threads) per replica [default: the cluster's CPUs shared by the replicas].",
)
@click.option("--max-body-bytes", type=int, default=1 << 20, show_default=True, help="Larger bodies get 413.")
@click.option("--max-inputs", type=int, default=1024, show_default=True, help="More inputs in one request get 413.")
@click.option("--access-log", is_flag=True, help="Log every request in Ray Serve's logs (costs throughput).")
@click.option(
    "--ray-address",
    default=None,
    help="Ray cluster to serve on: auto or HOST:6379 [default: a local instance]. The model folder must "
    "then be a path every node sees, or a URI.",
)
def serve(
    run_dir: Path | str,
    storage: str,
    study: str,
    model_dir: str | None,
    number: int | None,
    best: bool,
    host: str,
    port: int,
    keys_file: Path | None,
    allow_remote: bool,
    replicas: int,
    max_batch: int | None,
    max_wait_ms: float,
    device: str,
    runtime: str,
    cpus_per_replica: float | None,
    max_body_bytes: int,
    max_inputs: int,
    access_log: bool,
    ray_address: str | None,
) -> None:
    """Serve a model on POST /v1/classify (with GET /v1/health and /v1/stats) until Ctrl-C."""
    try:
        from serving.app import ServeOptions, batch_instances, prepare, run
    except ImportError as missing:
        raise click.ClickException(f"serve needs Ray Serve ({missing}): pip install 'prumux-search[serve]'") from None

    check_exposure(host, keys_file, allow_remote)
    if not 0 < port < 65536:
        raise ValueError(f"port must be in 1..65535, got {port}")
    keys = read_keys(keys_file) if keys_file else None
    if runtime is not None:
        check_runtime(runtime)
    with _model_source(model_dir, number, best, storage, study, runtime) as (location, what, runtime):
        options = ServeOptions(
            model=location,
            keys=keys,
            max_batch=max_batch,
            max_wait_ms=max_wait_ms,
            replicas=replicas,
            device=device,
            runtime=runtime,
            cpus_per_replica=cpus_per_replica,
            max_body_bytes=max_body_bytes,
            max_inputs=max_inputs,
            access_log=access_log,
        )
        spec = prepare(options)
        if ray_address is None:
            _check_port_free(host, port)
        url = f"http://{host}:{port}"
        tenants = (
            f"{len(set(keys.values()))} tenant(s) from {keys_file}" if keys else f"one tenant ({LOCAL_TENANT}), no keys"
        )
        on = "" if runtime == DEFAULT_RUNTIME else f" ({runtime} runtime)"
        click.echo(f"starting Ray Serve: loading {what}{on} on {replicas} replica(s)")
        with _ray(ray_address):
            try:
                run(options, spec, host, port)
            except RuntimeError as failed:  # Serve gave up starting a deployment
                where = "see the replica logs in logs/serve of Ray's session dir"
                raise click.ClickException(f"{one_line(failed)} ({where})") from None
            click.echo(
                f"serving {what} (N={spec.N}, s={spec.s:g}, {spec.task}, length {spec.seq_len}) "
                f"on {replicas} replica(s), batches of up to {batch_instances(max_batch, spec.N)} instances "
                f"or {max_wait_ms:g} ms; {tenants}"
            )
            click.echo(f"POST {url}/v1/classify  GET {url}/v1/health  GET {url}/v1/stats  (Ctrl-C stops)")
            _wait_for_stop()
            click.echo("stopping: removing the application")


@contextmanager
def _model_source(
    model_dir: str | None, number: int | None, best: bool, storage: str, study: str, runtime: str | None
) -> Iterator[tuple[str, str, str]]:
    """(location of a servable folder, what it is, the runtime to serve it on): --model as given, or a study's
    trial exported to a temporary folder (with its ONNX graph when the runtime may run it). Without ``runtime``
    a trial is served on the runtime its search measured it on (the speed the search recorded), else eager."""
    from prumux.inference import onnx_available
    from servable import export_servable
    from trainers.point_sources import POINT_SOURCES

    if sum([model_dir is not None, number is not None, best]) != 1:
        raise ValueError("give exactly one of --model DIR, --trial K or --best")
    if model_dir is not None:
        yield model_dir, f"model {model_dir}", runtime or DEFAULT_RUNTIME
        return
    trial = _study_trial(storage, study, number)
    if runtime is None:
        runtime = trial.user_attrs.get("inference_runtime", DEFAULT_RUNTIME)
        check_runtime(runtime)
    with tempfile.TemporaryDirectory(prefix="prumux-serve-") as folder:
        point, graph = {**trial.user_attrs, **trial.params}, runtime in ("onnx", "auto") and onnx_available()
        export_servable(point, Path(folder) / "model", POINT_SOURCES, f"trial {trial.number}", graph=graph)
        yield str(Path(folder) / "model"), f"trial {trial.number} of study {study!r}", runtime


def _study_trial(storage: str, study: str, number: int | None) -> FrozenTrial:
    """The study's complete trial ``number``, or its recommended one when ``number`` is None."""
    opened = open_study(storage, study)
    if number is None:
        row = recommend(points_frame(opened))
        if row is None:
            raise ValueError(f"study {study!r} has no feasible trial yet")
        number = int(row["number"])
    return complete_trial(opened, number)


def _check_port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as probe:
        try:
            probe.bind((host.strip("[]"), port))
        except OSError as error:
            raise OSError(f"cannot listen on {host}:{port}: {error.strerror}") from None


@contextmanager
def _ray(address: str | None) -> Iterator[None]:
    """Connect to the cluster at ``address`` or start a local one (no dashboard); remove the application
    on exit and stop what was started here (a local instance ends with its Serve proxy and controller)."""
    from ray import serve as ray_serve

    from serving.app import APP_NAME
    from tuning.ray_session import connect_ray

    with connect_ray(address):
        logging.getLogger("ray.serve").setLevel(logging.WARNING)  # its INFO lines describe our own steps
        try:
            yield
        finally:
            ray_serve.delete(APP_NAME)


def _wait_for_stop() -> None:
    """Block until SIGINT or SIGTERM."""
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stop.wait(1):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
