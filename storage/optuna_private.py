"""The private parts of Optuna this project uses, behind one small adapter.

Optuna has no public way to reach a study's storage, the storage id of a trial or study, or the
engine of a cached RDB storage, yet writing a trial's attributes from another process (a Ray
worker holding only the trial's number) needs them. Each function names the attribute it reads and
the Optuna versions it was read from; ``tests/test_optuna_private.py`` checks each against the
installed Optuna, so an upgrade that moves one fails there, not inside a search.
"""

from __future__ import annotations

import optuna
from optuna.storages import BaseStorage
from optuna.trial import BaseTrial, FrozenTrial
from sqlalchemy.engine import Engine

# The Optuna releases these attributes were read from (and the tests run against).
READ_FROM = "5.0-5.1"


def study_storage(study: optuna.Study) -> BaseStorage:
    """The storage a study reads and writes (``Study._storage``, Optuna 3.0-5.1)."""
    return study._storage


def study_id(study: optuna.Study) -> int:
    """The study's id in its storage (``Study._study_id``, Optuna 3.0-5.1)."""
    return study._study_id


def trial_storage_id(trial: BaseTrial | FrozenTrial) -> int:
    """The trial's id in its storage, not its number (``Trial._trial_id`` / ``FrozenTrial._trial_id``, Optuna 3.0-5.1)."""
    return trial._trial_id


def storage_engine(storage: BaseStorage) -> Engine:
    """The SQLAlchemy engine of an RDB storage, unwrapped from Optuna's cache
    (``_CachedStorage._backend``, Optuna 3.0-5.1; ``RDBStorage.engine`` is public)."""
    return getattr(storage, "_backend", storage).engine
