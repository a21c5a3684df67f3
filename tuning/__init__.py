"""The search run on Ray Tune: the driver, the searcher, budget-aware stopping, the trainable and the point sweep."""

from tuning.driver import SearchOptions, SearchOutcome, run_search

__all__ = ["SearchOptions", "SearchOutcome", "run_search"]
