"""The search's Optuna study in SQL: URLs, the database, settings, trials and heartbeats."""

from storage.artifacts import artifact_dir, open_artifact_store
from storage.heartbeat import Heartbeat, fail_stale_trials
from storage.leases import Lease
from storage.rdb import database_engine, open_storage
from storage.study import StudySettings, open_study, study_settings
from storage.trials import (
    accuracy_threshold,
    dense_accuracy,
    family,
    import_points,
    points_frame,
    recommend,
    record_result,
)
from storage.urls import default_url, mask_url, parse_url

__all__ = [
    "Heartbeat",
    "Lease",
    "StudySettings",
    "accuracy_threshold",
    "dense_accuracy",
    "artifact_dir",
    "database_engine",
    "default_url",
    "fail_stale_trials",
    "family",
    "import_points",
    "mask_url",
    "open_artifact_store",
    "open_storage",
    "open_study",
    "parse_url",
    "points_frame",
    "recommend",
    "record_result",
    "study_settings",
]
