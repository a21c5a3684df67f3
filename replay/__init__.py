"""The offline replay benchmark: searches replayed on measured or generated tables, ours beside the stock baselines."""

from replay.curves import CurveReplayResult, replay_curves
from replay.families import FAMILIES, Family, FamilyTable, generate, generate_family
from replay.family_curves import generate_curves
from replay.points import ReplayResult, replay, replay_many, summarize

__all__ = [
    "FAMILIES",
    "CurveReplayResult",
    "Family",
    "FamilyTable",
    "ReplayResult",
    "generate",
    "generate_curves",
    "generate_family",
    "replay",
    "replay_curves",
    "replay_many",
    "summarize",
]
