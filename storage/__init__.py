"""The search's Optuna study in SQL: URLs, the database, settings, trials and heartbeats."""

from storage.artifacts import artifact_dir
from storage.artifacts import open_artifact_store
from storage.heartbeat import Heartbeat
from storage.heartbeat import fail_stale_trials
from storage.leases import Lease
from storage.rdb import database_engine
from storage.rdb import open_storage
from storage.study import StudySettings
from storage.study import open_study
from storage.study import study_settings
from storage.trials import accuracy_threshold
from storage.trials import dense_accuracy
from storage.trials import family
from storage.trials import import_points
from storage.trials import points_frame
from storage.trials import recommend
from storage.trials import record_result
from storage.urls import default_url
from storage.urls import mask_url
from storage.urls import parse_url

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
