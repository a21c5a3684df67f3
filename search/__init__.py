"""Auto-PruMUX, the algorithm: the surrogate, the sampler, the grid, learning curves and the step account.

Pure decisions over measured points: no Ray, and nothing here writes to the study.
"""

from search.sampler import AutoPruMUXSampler, SearchDone, stop_when_done, suggest_point
from search.surrogate import AutoPruMUX, Prediction

__all__ = [
    "AutoPruMUX",
    "AutoPruMUXSampler",
    "Prediction",
    "SearchDone",
    "stop_when_done",
    "suggest_point",
]
