"""Click options shared by every command that works on a study."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from storage.remote import is_uri
from storage.urls import default_url, parse_url

DEFAULT_RUN_DIR = "./prumux-runs"
DEFAULT_STUDY = "prumux"


class RunDirectory(click.ParamType):
    """A run directory: a local path (``Path``) or a pyarrow URI (``str``, kept as given)."""

    name = "path or URI"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Path | str:
        if isinstance(value, Path) or not is_uri(value):
            return Path(value)
        return str(value)


def study_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--run-dir``, ``--storage`` and ``--study`` to a click command.

    The command receives ``run_dir`` (a Path, or a URI string), ``storage`` (a validated URL; default: the run
    directory's SQLite file) and ``study`` (the study name).
    """

    @functools.wraps(command)
    def resolved(*args: Any, run_dir: Path | str, storage: str | None, study: str, **kwargs: Any) -> Any:
        if storage is None and is_uri(run_dir):
            raise ValueError("a run directory at a URI cannot hold the SQLite study: give --storage URL")
        storage = storage or default_url(run_dir)
        parse_url(storage)
        return command(*args, run_dir=run_dir, storage=storage, study=study, **kwargs)

    options = [
        click.option(
            "--run-dir",
            type=RunDirectory(),
            default=DEFAULT_RUN_DIR,
            show_default=True,
            help="Run directory: study database (by default), checkpoints, artifacts; a path, or a pyarrow URI "
            "(s3://BUCKET/PATH, gs://..., file://...) with --storage.",
        ),
        click.option(
            "--storage",
            default=None,
            metavar="URL",
            help="SQLAlchemy URL of the study database [default: sqlite:///RUN_DIR/study.db].",
        ),
        click.option("--study", default=DEFAULT_STUDY, show_default=True, help="Study name."),
    ]
    for option in reversed(options):
        resolved = option(resolved)
    return resolved


def runtime_option(
    what: str, parameter: str = "inference_runtime", default: str | None = "eager"
) -> Callable[..., Any]:
    """``--runtime`` (one of prumux.inference.RUNTIMES): the runtime ``what`` runs the model on."""
    from prumux.inference import RUNTIMES

    return click.option(
        "--runtime",
        parameter,
        type=click.Choice(RUNTIMES),
        default=default,
        show_default=default is not None,
        help=f"Runtime {what}: eager (the model as trained; the paper's protocol), torch (pruned widths padded, CUDA "
        "graphs on a GPU), onnx (the ONNX graph on ONNX Runtime; the onnx extra) or auto (the faster of torch and "
        "onnx per batch shape).",
    )
