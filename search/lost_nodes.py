"""One line of ours when a cluster node dies under a trial: Ray's own notices of it go to the driver log.

Ray Tune retries a trial whose worker died (``FailureConfig.max_failures``); when the cause was
its node (the raylet gone: a machine lost, a preempted instance), the driver says which node
was lost and which trial is retried on another node.
"""

from __future__ import annotations

from collections.abc import Callable

import ray
from ray import tune

Say = Callable[[str], None]


def dead_node_addresses() -> set[str]:
    """The addresses of the nodes the connected cluster lists as dead."""
    return {node["NodeManagerAddress"] for node in ray.nodes() if not node["Alive"]}


class LostNodeNotice(tune.Callback):
    """Calls ``say`` with ``node 10.0.0.3 lost; trial 2 retried on another node`` when a trial is
    retried after a node died (nodes already dead when the search started are not news)."""

    def __init__(self, say: Say) -> None:
        self.say = say
        self.known_dead = dead_node_addresses()

    def on_trial_recover(self, iteration: int, trials: list, trial: tune.experiment.Trial, **info) -> None:
        lost = dead_node_addresses() - self.known_dead
        self.known_dead |= lost
        for address in sorted(lost):
            self.say(f"node {address} lost; trial {trial.config['trial_number']} retried on another node")

    def __getstate__(self) -> dict:
        # Tune pickles its callbacks for Tuner.restore, which the driver never uses; ``say`` may hold a stream
        return {key: value for key, value in self.__dict__.items() if key != "say"}
