"""What a command prints when it fails: one `error:` line, and the exit status of a job that failed."""

from __future__ import annotations

import click

MAX_ERROR_CHARS = 1000


class JobFailed(click.ClickException):
    """A job that was checked and started, then failed: printed as one `error:` line, exit status 1."""

    exit_code = 1


def one_line(error: BaseException | str) -> str:
    """An error (or text) as one line: white space folded, the type's name if it says nothing, at most
    ``MAX_ERROR_CHARS`` characters."""
    text = " ".join((str(error).strip() or type(error).__name__).split())
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"
