"""Access to the Hugging Face hub that fails at once, in one line, when there is no network.

Without a network, transformers and datasets retry for many seconds and end in a long
traceback. Here the hub is probed once per process (a 1.5 s socket connect); when it cannot
be reached the libraries are switched to offline mode, so they answer from the local cache
or fail immediately, and their failure becomes a one-line ValueError naming the offline
alternatives.
"""

from __future__ import annotations

import functools
import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlparse

from storage.errors import first_line

PROBE_TIMEOUT_S = 1.5
_TRUE = {"1", "true", "yes", "on"}


@functools.cache
def hub_reachable() -> bool:
    """Whether the hub answers: False when HF_HUB_OFFLINE is set or a TCP connect fails."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE:
        return False
    endpoint = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    port = endpoint.port or (80 if endpoint.scheme == "http" else 443)
    try:
        socket.create_connection((endpoint.hostname, port), timeout=PROBE_TIMEOUT_S).close()
    except OSError:
        return False
    return True


def configure_offline() -> bool:
    """Switch transformers/datasets to offline mode if the hub is unreachable; return True if offline."""
    if hub_reachable():
        return False
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    # Both libraries read the variables once, at import; patch them if already imported.
    if "huggingface_hub.constants" in sys.modules:
        sys.modules["huggingface_hub.constants"].HF_HUB_OFFLINE = True
    if "datasets.config" in sys.modules:
        sys.modules["datasets.config"].HF_HUB_OFFLINE = True
        sys.modules["datasets.config"].HF_DATASETS_OFFLINE = True
    return True


def hub_cached(repo_id: str, filename: str, repo_type: str = "model") -> bool:
    """Whether `filename` of a hub repository is in the local hub cache."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, filename, repo_type=repo_type)
    except ValueError:  # not a valid repository id
        return False
    return isinstance(found, str)


def offline_error(what: str, alternatives: str) -> ValueError:
    """The one-line error for something that needs the unreachable hub."""
    return ValueError(
        f"{what} needs the Hugging Face hub, which cannot be reached from here "
        f"(offline, and not in the local cache); use {alternatives} instead"
    )


@contextmanager
def hub_errors(what: str, alternatives: str) -> Iterator[None]:
    """Run a hub call in offline mode when needed, turning its failure into a one-line ValueError."""
    offline = configure_offline()
    try:
        yield
    except OSError as error:  # ConnectionError, HTTP errors and missing repositories are all OSErrors
        if offline:
            raise offline_error(what, alternatives) from None
        raise ValueError(
            f"{what} could not be loaded from the Hugging Face hub: {first_line(error)} "
            f"(offline alternatives: {alternatives})"
        ) from None
