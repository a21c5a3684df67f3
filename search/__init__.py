"""Auto-PruMUX search: the surrogate, the Optuna sampler and the replay benchmark."""

from search.replay import ReplayResult, replay, replay_many, summarize
from search.sampler import AutoPruMUXSampler, SearchDone, stop_when_done, suggest_point
from search.surrogate import AutoPruMUX, Prediction

__all__ = [
    "AutoPruMUX",
    "AutoPruMUXSampler",
    "Prediction",
    "ReplayResult",
    "SearchDone",
    "replay",
    "replay_many",
    "stop_when_done",
    "suggest_point",
    "summarize",
]
