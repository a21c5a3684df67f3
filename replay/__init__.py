"""The offline replay benchmark: searches replayed on measured or generated tables, ours beside the stock baselines."""

from replay.curves import CurveReplayResult, replay_curves
from replay.points import ReplayResult, replay, replay_many, summarize

__all__ = ["CurveReplayResult", "ReplayResult", "replay", "replay_curves", "replay_many", "summarize"]
