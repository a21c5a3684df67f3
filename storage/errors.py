"""One line of an error for another message: what every layer quotes of an exception it reports."""

from __future__ import annotations

from storage.urls import mask_url


def first_line(error: BaseException, limit: int | None = None) -> str:
    """The first line of ``error``'s message (its type's name when it has none), white space folded,
    passwords masked, cut to ``limit`` characters with an ellipsis."""
    lines = str(error).strip().splitlines()
    text = mask_url(" ".join(lines[0].split())) if lines else type(error).__name__
    return text if limit is None or len(text) <= limit else text[: limit - 1] + "…"
