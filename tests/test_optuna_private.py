"""storage.optuna_private against the installed Optuna: each private attribute it reads is still there and means
what the adapter says."""

from __future__ import annotations

from pathlib import Path

import optuna
from sqlalchemy.engine import Engine

from storage import default_url, open_storage
from storage.optuna_private import READ_FROM, storage_engine, study_id, study_storage, trial_storage_id


def test_the_installed_optuna_is_one_the_adapter_was_read_from() -> None:
    first, last = (tuple(int(part) for part in end.split(".")) for end in READ_FROM.split("-"))
    assert first <= tuple(int(part) for part in optuna.__version__.split(".")[:2]) <= last


def test_each_private_attribute_reaches_what_it_names(tmp_path: Path) -> None:
    url = default_url(tmp_path)
    storage = open_storage(url)
    study = optuna.create_study(storage=storage, study_name="private", directions=["maximize"])
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=2)
    asked = study.ask()

    used = study_storage(study)  # Optuna wraps an RDB storage in its cache
    assert used.get_study_id_from_name("private") == study_id(study)
    assert used.get_trial(trial_storage_id(study.trials[1])).number == 1
    assert used.get_trial(trial_storage_id(asked)).number == asked.number == 2
    for either in (used, storage):  # the cache's engine is the storage's own
        assert storage_engine(either) is storage.engine and isinstance(storage.engine, Engine)
