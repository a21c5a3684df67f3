"""The `prumux-search` command line: one group, commands living beside the code they drive.

Commands are imported lazily so `prumux-search --help` does not pay for torch or Ray.
Bad input anywhere (a ValueError or OSError raised by our code) becomes one line on
stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import importlib
import sys

import click

# command name -> "module:attribute" of a click.Command
COMMANDS: dict[str, str] = {
    "tasks": "trainers.cli:tasks",
    "models": "trainers.cli:models",
    "train": "trainers.cli:train",
    "start": "search.commands.study:start",
    "status": "search.commands.study:status",
    "best": "search.commands.study:best",
    "export": "search.commands.study:export",
    "import": "search.commands.study:import_points",
    "predict": "search.commands.offline:predict",
    "replay": "search.commands.offline:replay",
    "dashboard": "dashboards.cli:dashboard",
    "report": "dashboards.cli:report",
    "submit": "search.submit:submit",
    "serve": "serving.cli:serve",
}

HELP = {
    "tasks": "List the classification tasks with split sizes and label balance.",
    "models": "List the known base models with their shapes.",
    "train": "Train one (N, s) point and print its result.",
    "start": "Run (or resume) an Auto-PruMUX search on Ray Tune.",
    "status": "Show the study's trials, feasibility and current top-3.",
    "best": "Show the recommended model of a study.",
    "export": "Export a trial's trained model with a model card.",
    "import": "Import measured (N, s) points into a study.",
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


@click.group(cls=LazyGroup)
@click.version_option(package_name="prumux-search")
def cli() -> None:
    """Search (N, s) for the fastest PruMUX classifier within an accuracy budget."""


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning bad input into one line and exit status 2."""
    try:
        cli.main(args=argv, prog_name="prumux-search", standalone_mode=False)
    except click.exceptions.Exit as stop:
        sys.exit(stop.exit_code)
    except click.Abort:
        click.echo("error: aborted", err=True)
        sys.exit(130)
    except click.ClickException as error:
        click.echo(f"error: {_one_line(error.format_message())}", err=True)
        sys.exit(2 if isinstance(error, click.UsageError) else error.exit_code)
    except (ValueError, OSError) as error:
        click.echo(f"error: {_one_line(error)}", err=True)
        sys.exit(2)


def _one_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return " ".join(text.split())


if __name__ == "__main__":
    main()
