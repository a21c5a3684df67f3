"""The `prumux-search` command line: one group, commands living beside the code they drive.

Commands are imported lazily so `prumux-search --help` does not pay for torch or Ray.
Bad input anywhere (a ValueError or OSError raised by our code) becomes one line on
stderr and exit status 2, never a traceback. Exit statuses: 0 done, 1 a job that ran and
failed (`cli.errors.JobFailed`), 2 bad input, 130 interrupted.
"""

from __future__ import annotations

import importlib
import sys

import click

from cli.errors import one_line

# command name -> "module:attribute" of a click.Command
COMMANDS: dict[str, str] = {
    "tasks": "cli.commands.train:tasks",
    "models": "cli.commands.train:models",
    "recipes": "cli.commands.train:recipes",
    "train": "cli.commands.train:train",
    "start": "cli.commands.study:start",
    "status": "cli.commands.study:status",
    "best": "cli.commands.study:best",
    "export": "cli.commands.study:export",
    "import": "cli.commands.study:import_points",
    "evaluate": "cli.commands.evaluate:evaluate",
    "predict": "cli.commands.offline:predict",
    "replay": "cli.commands.offline:replay",
    "dashboard": "cli.commands.dashboard:dashboard",
    "report": "cli.commands.dashboard:report",
    "submit": "cli.commands.submit:submit",
    "serve": "cli.commands.serve:serve",
}

HELP = {
    "tasks": "List the classification tasks with split sizes and label balance.",
    "models": "List the known base models with their shapes.",
    "recipes": "List the recipes, or show one with its sweep and configuration count.",
    "train": "Train one (N, s) point and print its result.",
    "start": "Run (or resume) an Auto-PruMUX search on Ray Tune.",
    "status": "Show the study's trials, feasibility and current top-3.",
    "best": "Show the recommended model of a study.",
    "export": "Export a trial's trained model with a model card.",
    "import": "Import measured (N, s) points into a study.",
    "evaluate": "Measure a trained checkpoint (accuracy, throughput, sparsity); optionally record it in a study.",
    "predict": "Fit the surrogate on measured points and print the top-k per budget.",
    "replay": "Replay the search against a fully measured grid table.",
    "dashboard": "Serve optuna-dashboard on the study's storage.",
    "report": "Write a self-contained HTML report of a study.",
    "submit": "Submit a search to a Ray cluster as a Ray Job.",
    "serve": "Serve a found model on a tenant-safe, multiplexing endpoint.",
}


class LazyGroup(click.Group):
    """A click group whose commands are imported only when invoked."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module_name, attribute = COMMANDS[name].split(":")
        return getattr(importlib.import_module(module_name), attribute)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, HELP[name]) for name in self.list_commands(ctx)])


EXIT_CODES = (
    "Exit status: 0 done (for start: a recommendation, or its time or trial budget reached); "
    "1 the search (or training) ran and failed, with one error line naming the cause and the full log; "
    "2 bad input, nothing started or stored; 130 interrupted by Ctrl-C or SIGTERM (a rerun resumes)."
)


@click.group(cls=LazyGroup, epilog=EXIT_CODES)
@click.version_option(package_name="prumux-search")
def cli() -> None:
    """Search (N, s) for the fastest PruMUX classifier within an accuracy budget."""


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning bad input into one line and exit status 2."""
    try:
        status = cli.main(args=argv, prog_name="prumux-search", standalone_mode=False)
        if isinstance(status, int) and status:  # click returns the code of a `click.exceptions.Exit`
            sys.exit(status)
    except click.exceptions.Exit as stop:
        sys.exit(stop.exit_code)
    except click.Abort:
        click.echo("error: interrupted", err=True)
        sys.exit(130)
    except click.ClickException as error:
        click.echo(f"error: {one_line(error.format_message())}", err=True)
        sys.exit(2 if isinstance(error, click.UsageError) else error.exit_code)
    except (ValueError, OSError) as error:
        click.echo(f"error: {one_line(error)}", err=True)
        sys.exit(2)
    except Exception as error:  # noqa: BLE001 - a bug: one line here, the traceback in a file
        click.echo(
            f"error: {one_line(f'{type(error).__name__}: {error}')} (an internal error; "
            f"traceback in {_save_traceback()})",
            err=True,
        )
        sys.exit(1)


def _save_traceback() -> str:
    """Write the current exception's traceback to a temporary file; return its path."""
    import tempfile
    import traceback

    with tempfile.NamedTemporaryFile("w", prefix="prumux-search-error-", suffix=".log", delete=False) as file:
        traceback.print_exc(file=file)
    return file.name


if __name__ == "__main__":
    main()
