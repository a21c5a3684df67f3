"""The ``dashboard`` and ``report`` commands."""

from __future__ import annotations

from pathlib import Path

import click

from cli.options import study_options
from dashboards.report import write_report
from dashboards.server import NO_AUTH_WARNING, check_host, make_server, server_url
from storage import mask_url, open_artifact_store, open_storage, open_study
from storage.optuna_private import study_id
from storage.urls import is_loopback_host


@click.command()
@study_options
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535), help="Port (0: any free port).")
@click.option("--allow-remote", is_flag=True, help="Allow a non-loopback --host (the dashboard has no authentication).")
def dashboard(run_dir: Path | str, storage: str, study: str, host: str, port: int, allow_remote: bool) -> None:
    """Serve optuna-dashboard on the study's storage until interrupted."""
    check_host(host, allow_remote)
    rdb = open_storage(storage, create=False)
    number = study_id(open_study(rdb, study))
    server = make_server(rdb, host, port, open_artifact_store(run_dir, create=False))
    url = server_url(server)
    if not is_loopback_host(host):
        click.echo(NO_AUTH_WARNING.format(url=url), err=True)
    click.echo(f"serving study {study!r} of {mask_url(storage)} at {url}/dashboard/studies/{number}")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


@click.command()
@study_options
@click.option(
    "--out", "out_path", required=True, type=click.Path(dir_okay=False, path_type=Path), help="HTML file to write."
)
@click.option(
    "--png", "png_dir", type=click.Path(file_okay=False, path_type=Path), help="Also write the figures as PNG here."
)
def report(run_dir: Path | str, storage: str, study: str, out_path: Path, png_dir: Path | None) -> None:
    """Write a self-contained HTML report of the study."""
    loaded = open_study(open_storage(storage, create=False), study)
    click.echo(f"wrote {write_report(loaded, out_path, png_dir)}")
