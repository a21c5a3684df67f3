"""`prumux-search submit`: run a search on a Ray cluster as a Ray Job.

The job's runtime environment carries our packages (Ray uploads them to every node), so
the cluster needs only the dependencies installed. The study must live in a database that
every node can reach: a SQLite file on this machine is refused for a remote cluster. A
database password is not sent (Ray shows a job's command line to everyone who can list the
cluster's jobs): the nodes get it from PGPASSWORD or ~/.pgpass, as libpq reads them.

The search is checked here, as `start` checks it, before anything is submitted, and its
relative paths (task file or folder, model folder, recipe file, run dir) are resolved against
this working directory: the job gets absolute paths. A remote cluster's nodes see only what
they share: a local task, model or recipe must lie inside the run directory (a path on the
filesystem the nodes and this machine mount alike), else it is refused here; hub tasks and
models are left to the job's own check on the cluster.
"""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import click
from click.core import ParameterSource

from storage.errors import first_line
from storage.urls import is_loopback_host

PACKAGES = ("cli", "prumux", "trainers", "search", "storage", "dashboards", "serving")


def is_loopback_address(address: str) -> bool:
    """Whether a Ray dashboard address (``http://HOST:PORT``) points at this machine."""
    host = urlparse(address if "://" in address else f"http://{address}").hostname or ""
    return is_loopback_host(host)


def check_storage_reachable_from_cluster(storage_url: str | None, address: str) -> None:
    """Refuse a study that the cluster's other nodes could not open."""
    if is_loopback_address(address):
        return
    if storage_url is None or storage_url.startswith("sqlite"):
        raise ValueError(
            "a SQLite study on this machine cannot be reached from the nodes of a remote Ray "
            "cluster; pass --storage postgresql://USER@HOST:5432/DB (a server every node reaches)"
        )


def checked_start_arguments(
    start_args: tuple[str, ...], storage_url: str | None, run_dir: str | None, address: str, cwd: Path | None = None
) -> list[str]:
    """Check the search `start_args` define, as `start` would, and return them with every path
    absolute (the run dir included); refuse inputs a remote cluster's nodes cannot read."""
    from cli.commands.study import check_search, start
    from storage import parse_url
    from storage.remote import is_uri
    from trainers.job import check_writable_dir

    _require_start(start_args)
    root = Path(cwd or Path.cwd())
    context = start.make_context("start", list(start_args[1:]))
    params = context.params
    if storage_url or params["storage"]:
        parse_url(storage_url or params["storage"])
    remote = not is_loopback_address(address)
    run = str(run_dir or params["run_dir"])
    if not is_uri(run):  # a remote cluster's run dir is on its shared filesystem, which this machine may not mount
        local = (root / Path(run).expanduser()).resolve()
        run = str(local if remote else check_writable_dir(run, "run directory", root))
    _, job = check_search(
        params["task"],
        params["model"],
        params["recipe"],
        params["overrides"],
        params["grid_n"],
        params["grid_s"],
        params["budget"],
        "",
        cwd=root,
        hub=not remote,
    )
    if remote:
        _check_shared(job.local_inputs(), run, address)
    recipe = str(job.recipe_file or params["recipe"])
    resolved = {"task": job.task, "model": job.base_model, "recipe": recipe, "run_dir": run}
    return _start_arguments(context, resolved)


def _check_shared(inputs: dict[str, Path], run_dir: str, address: str) -> None:
    """Refuse a local input outside the run directory: the remote cluster's nodes could not read it."""
    for what, path in inputs.items():
        if Path(run_dir) not in path.parents:
            raise ValueError(
                f"{what} {path} is only on this machine: the nodes of the Ray cluster at {address} cannot read it; "
                f"put it inside the run directory {run_dir} on the filesystem they share (or use a registered "
                "task or a hub model)"
            )


def _start_arguments(context: click.Context, resolved: dict[str, str]) -> list[str]:
    """`start` and the options given on its command line, with the ``resolved`` values in place."""
    words = ["start"]
    for parameter in context.command.params:
        name = parameter.name
        if name in resolved:
            words += [parameter.opts[0], resolved[name]]
        elif context.get_parameter_source(name) == ParameterSource.COMMANDLINE:
            value = context.params[name]
            if getattr(parameter, "is_flag", False):  # an on/off flag: the spelling of the value given
                words.append(parameter.opts[0] if value else parameter.secondary_opts[0])
                continue
            for item in value if isinstance(value, tuple) else (value,):
                words += [parameter.opts[0], str(item)]
    return words


def _require_start(start_args: tuple[str, ...] | list[str]) -> None:
    if not start_args or start_args[0] != "start":
        raise ValueError("submit runs a search: give `-- start [start options]` after the submit options")


def build_entrypoint(start_args: tuple[str, ...] | list[str], storage_url: str | None, run_dir: str | None) -> str:
    """The shell command the Ray Job runs: `prumux-search start ...` through our CLI module."""
    _require_start(start_args)
    arguments = list(start_args)
    if storage_url and "--storage" not in arguments:
        arguments += ["--storage", storage_url]
    if run_dir and "--run-dir" not in arguments:
        arguments += ["--run-dir", run_dir]
    if "--ray-address" not in arguments:
        arguments += ["--ray-address", "auto"]
    return shlex.join(["python3", "-m", "cli.main", *arguments])


def without_password(storage_url: str | None) -> str | None:
    """The storage URL the job is given: without its password, which Ray would show to anyone
    who can list the cluster's jobs (entrypoint, environment) and write into the job's logs."""
    if storage_url is None:
        return None
    from sqlalchemy.engine import URL

    from storage import parse_url

    url = parse_url(storage_url)
    bare = URL.create(url.drivername, url.username, None, url.host, url.port, url.database, url.query)
    return bare.render_as_string(hide_password=False)


def runtime_environment() -> dict:
    """A runtime env that ships this checkout's packages to every node.

    The Jobs API takes package folders (module objects only work with ``ray.init``).
    """
    project = Path(__file__).resolve().parents[2]
    return {
        "py_modules": [str(project / name) for name in PACKAGES],
        "excludes": ["__pycache__", "*.pyc"],
        "env_vars": {"PYTHONUNBUFFERED": "1"},
    }


def _client(address: str):
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address)
    except (ConnectionError, RuntimeError) as error:
        raise ValueError(f"cannot reach the Ray Jobs API at {address}: {error}") from None


def _mask(url: str | None) -> str:
    from storage import mask_url

    return mask_url(url) if url else "the run directory's SQLite file"


@click.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option(
    "--address",
    default="http://127.0.0.1:8265",
    show_default=True,
    help="Ray dashboard (Jobs API) address of the cluster head.",
)
@click.option("--storage", "storage_url", default=None, help="SQLAlchemy URL of the study; every node must reach it.")
@click.option(
    "--run-dir",
    default=None,
    help="Run directory on a shared filesystem (or a pyarrow URI) for checkpoints and caches.",
)
@click.option(
    "--logs",
    "logs_job",
    default=None,
    metavar="JOB",
    help="Print a submitted job's logs and follow them until it ends.",
)
@click.option("--stop", "stop_job", default=None, metavar="JOB", help="Stop a submitted job.")
@click.argument("start_args", nargs=-1, type=click.UNPROCESSED)
def submit(
    address: str,
    storage_url: str | None,
    run_dir: str | None,
    logs_job: str | None,
    stop_job: str | None,
    start_args: tuple[str, ...],
) -> None:
    """Submit `start` to a Ray cluster as a Ray Job, or follow / stop one.

    Example: prumux-search submit --address http://HEAD:8265 --storage postgresql://... -- start --task sst2
    """
    if logs_job:
        follow_logs(_client(address), logs_job)
        return
    if stop_job:
        stopped = _client(address).stop_job(stop_job)
        click.echo(f"{stop_job}: {'stop requested' if stopped else 'already finished'}")
        return
    check_storage_reachable_from_cluster(storage_url, address)
    arguments = checked_start_arguments(start_args, storage_url, run_dir, address)
    entrypoint = build_entrypoint(arguments, without_password(storage_url), None)
    job_id = _client(address).submit_job(entrypoint=entrypoint, runtime_env=runtime_environment())
    click.echo(f"submitted {job_id} to {address} (study in {_mask(storage_url)})")
    if storage_url and storage_url != without_password(storage_url):
        click.echo("the database password was not sent: give it to the nodes as PGPASSWORD or in ~/.pgpass")
    click.echo(f"follow it:  prumux-search submit --address {address} --logs {job_id}")
    click.echo(f"stop it:    prumux-search submit --address {address} --stop {job_id}")


def follow_logs(client, job_id: str, poll_seconds: float = 2.0) -> str:
    """Print a job's logs as they grow until the job ends; return its final status."""
    printed = 0
    while True:
        try:
            status = client.get_job_status(job_id)
            logs = client.get_job_logs(job_id)
        except RuntimeError as error:
            raise ValueError(f"no job {job_id!r} on this cluster: {first_line(error)}") from None
        sys.stdout.write(logs[printed:])
        sys.stdout.flush()
        printed = len(logs)
        if status.is_terminal():
            click.echo(f"{job_id}: {status.value}")
            return status.value
        time.sleep(poll_seconds)
