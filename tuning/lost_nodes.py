"""Lost cluster nodes on the driver's console: one line of ours, Ray's own notices to the driver log.

Ray Tune retries a trial whose worker died (``FailureConfig.max_failures``). When the cause was
its node (the raylet gone: a machine lost, a preempted instance), the driver says which node
was lost and which trial is retried on another node. The trial's error may come before the
cluster has marked the node dead (a closed connection to the trial's actor), so a retried trial
whose error names no dead node waits up to ``ATTRIBUTION_WINDOW_S`` for a node to be marked dead.

Ray's driver prints the cluster's error notices ("(raylet) The node ... has been marked dead",
"Raylet is terminated") to its stdout whatever ``log_to_driver`` says; ``notices_to_log`` sends
them to the logging system instead, whose handler writes the driver log.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import ray
import ray._private.worker as ray_worker
from ray import tune

Say = Callable[[str], None]
ATTRIBUTION_WINDOW_S = 120.0
CHECK_EVERY_S = 1.0
_NODE_DIED = re.compile(r"node (has )?died|node .*(was|is|marked) dead", re.IGNORECASE)
_ACTOR_IP = re.compile(r"^\s*ip: (\S+)\s*$", re.MULTILINE)  # in the text of Ray's ActorDiedError
_logger = logging.getLogger(__name__)


def dead_node_addresses() -> set[str]:
    """The addresses of the nodes the connected cluster lists as dead."""
    return {node["NodeManagerAddress"] for node in ray.nodes() if not node["Alive"]}


class LostNodeNotice(tune.Callback):
    """Calls ``say`` with ``node 10.0.0.3 lost; trial 2 retried on another node`` when a trial is
    retried after its node died (nodes already dead when the search started are not news)."""

    def __init__(self, say: Say) -> None:
        self.say = say
        self.known_dead = dead_node_addresses()
        self.unexplained: dict[int, float] = {}  # retried trial number -> when, its node not known dead yet
        self._checked_at = 0.0

    def on_trial_recover(self, iteration: int, trials: list, trial: tune.experiment.Trial, **info) -> None:
        number, error = trial.config["trial_number"], last_error(trial)
        _logger.info("trial %s retried after: %s", number, error.strip() or "no error text")
        named = _ACTOR_IP.search(error) if _NODE_DIED.search(error) else None
        if named and named.group(1) not in self.known_dead:
            self.known_dead.add(named.group(1))
            self._say(named.group(1), [number])
        else:
            self.unexplained[number] = time.monotonic()
            self._check()

    def on_step_end(self, iteration: int, trials: list, **info) -> None:
        if self.unexplained and time.monotonic() - self._checked_at >= CHECK_EVERY_S:
            self._check()

    def _check(self) -> None:
        """Attribute the unexplained retries to the nodes that died since the last check."""
        self._checked_at = now = time.monotonic()
        lost = dead_node_addresses() - self.known_dead
        self.known_dead |= lost
        if lost:
            for address in sorted(lost):
                self._say(address, sorted(self.unexplained))
            self.unexplained.clear()
        self.unexplained = {number: at for number, at in self.unexplained.items() if now - at < ATTRIBUTION_WINDOW_S}

    def _say(self, address: str, numbers: list[int]) -> None:
        for number in numbers:
            self.say(f"node {address} lost; trial {number} retried on another node")

    def __getstate__(self) -> dict:
        # Tune pickles its callbacks for Tuner.restore, which the driver never uses; ``say`` may hold a stream
        return {key: value for key, value in self.__dict__.items() if key != "say"}


def last_error(trial: tune.experiment.Trial) -> str:
    """The text of the trial's latest failure (Tune appends each to the trial's error file)."""
    try:
        text = Path(trial.error_file).read_text()
    except (OSError, TypeError):  # no error file (yet)
        return ""
    return text.rpartition("Failure #")[2]


@contextmanager
def notices_to_log() -> Iterator[None]:
    """While the block runs, log the cluster's error notices that Ray's driver would print
    (``ray._private.worker.listen_error_messages`` looks ``print_to_stdstream`` up at each call)."""
    printing = ray_worker.print_to_stdstream

    def log_notice(data: dict, ignore_prefix: bool = False) -> None:
        for line in data.get("lines", []):
            _logger.warning("(%s) %s", data.get("pid", "ray"), line)

    ray_worker.print_to_stdstream = log_notice
    try:
        yield
    finally:
        ray_worker.print_to_stdstream = printing
