"""The search's Optuna study in SQL (URLs, the database, settings, trials, heartbeats) and a point's domain facts."""

from storage.artifacts import artifact_dir, open_artifact_store
from storage.heartbeat import Heartbeat, fail_stale_trials
from storage.leases import Lease
from storage.points import DENSE_POINT, dense_row, family, is_dense, is_feasible, threshold
from storage.rdb import database_engine, open_storage
from storage.study import StudySettings, open_study, study_settings
from storage.trials import (
    accuracy_threshold,
    dense_accuracy,
    import_points,
    points_frame,
    recommend,
    record_result,
)
from storage.urls import default_url, mask_url, parse_url

__all__ = [
    "DENSE_POINT",
    "Heartbeat",
    "Lease",
    "StudySettings",
    "accuracy_threshold",
    "dense_accuracy",
    "artifact_dir",
    "database_engine",
    "dense_row",
    "default_url",
    "fail_stale_trials",
    "family",
    "import_points",
    "is_dense",
    "is_feasible",
    "mask_url",
    "open_artifact_store",
    "open_storage",
    "open_study",
    "parse_url",
    "points_frame",
    "recommend",
    "record_result",
    "study_settings",
    "threshold",
]
