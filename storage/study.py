"""The search's Optuna study and the settings it was created with."""

from __future__ import annotations

import dataclasses
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.storages import BaseStorage

from storage.rdb import NoSuchStudy, open_storage
from storage.urls import mask_url

SETTINGS_ATTR = "settings"
VALIDATION_ROWS_ATTR = "validation_rows"  # study user attr: the rows every final accuracy is measured on
SETTINGS_WAIT_SECONDS = 10.0
DIRECTIONS = ("maximize", "maximize")
METRIC_NAMES = ["accuracy", "throughput"]
# fields that may differ when a study is resumed: they describe, not define, the search
_NOT_COMPARED = ("command", "given")


@dataclass(frozen=True)
class StudySettings:
    """What defines a search: task, base model, recipe, accuracy budget and (N, s) grid.

    A local task, model or recipe is stored as its absolute path, so a resume from another
    working directory trains the same data; ``given`` keeps the text that was typed for them.
    ``command`` records the command line that created the study (passwords masked).
    """

    task: str
    base_model: str
    recipe: str
    budget: float
    grid_N: tuple[int, ...]
    grid_s: tuple[float, ...]
    command: str = ""
    given: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "budget", float(self.budget))
        object.__setattr__(self, "grid_N", tuple(int(n) for n in self.grid_N))
        object.__setattr__(self, "grid_s", tuple(float(s) for s in self.grid_s))
        object.__setattr__(self, "command", mask_url(self.command))

    def to_dict(self) -> dict[str, Any]:
        """Return the settings as JSON-safe values."""
        values = dataclasses.asdict(self)
        return {**values, "grid_N": list(self.grid_N), "grid_s": list(self.grid_s)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> StudySettings:
        """Build settings from ``to_dict`` output; unknown keys are ignored."""
        names = {field.name for field in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in values.items() if key in names})

    def differences(self, other: StudySettings) -> list[str]:
        """Describe each compared field whose value differs, as ``"field: mine != other"``."""
        return [
            f"{field.name}: {getattr(self, field.name)!r} != {getattr(other, field.name)!r}"
            for field in dataclasses.fields(self)
            if field.name not in _NOT_COMPARED and getattr(self, field.name) != getattr(other, field.name)
        ]


def find_study(storage_url: str, name: str) -> optuna.Study | None:
    """The study ``name`` at ``storage_url``, or None when there is none; never creates anything."""
    try:
        return open_study(storage_url, name)
    except NoSuchStudy:
        return None


def open_study(
    storage: str | BaseStorage,
    name: str,
    settings: StudySettings | None = None,
    create: bool = False,
    sampler: optuna.samplers.BaseSampler | None = None,
) -> optuna.Study:
    """Load study ``name``, or create it when ``create`` is set and it does not exist.

    A new study maximises ``[accuracy, throughput]`` and stores ``settings``. When ``settings``
    are given for an existing study, they must match the stored ones; a mismatch raises
    ``ValueError`` naming the differing fields, and the study is left untouched.
    """
    if isinstance(storage, str):
        storage = open_storage(storage, create=create)
    if name not in _study_names(storage):
        if not create:
            raise NoSuchStudy(_unknown_study_message(storage, name))
        return _create(storage, name, settings, sampler)
    study = optuna.load_study(study_name=name, storage=storage, sampler=sampler)
    if settings is not None:
        _check_settings(study, settings)
    return study


def study_settings(study: optuna.Study) -> StudySettings | None:
    """Return the settings stored with ``study``, or None for a study created elsewhere."""
    values = study.user_attrs.get(SETTINGS_ATTR)
    return None if values is None else StudySettings.from_dict(values)


def record_validation_rows(study: optuna.Study, rows: int) -> None:
    """Keep the validation rows every final accuracy is measured on in the study, for ``status`` (written once)."""
    if study.user_attrs.get(VALIDATION_ROWS_ATTR) != rows:
        study.set_user_attr(VALIDATION_ROWS_ATTR, int(rows))


def study_validation_rows(study: optuna.Study) -> int | None:
    """The validation rows ``start`` recorded (None before it did)."""
    rows = study.user_attrs.get(VALIDATION_ROWS_ATTR)
    return None if rows is None else int(rows)


def _settings_of_new_study(study: optuna.Study) -> StudySettings | None:
    """The stored settings; for a study without trials, waited for a while: a driver that has just
    created it (two drivers starting together on a shared study) stores them a moment later."""
    deadline = time.monotonic() + SETTINGS_WAIT_SECONDS
    while (stored := study_settings(study)) is None and not study.trials and time.monotonic() < deadline:
        time.sleep(0.2)
    return stored


def _study_names(storage: BaseStorage) -> list[str]:
    return [summary.study_name for summary in storage.get_all_studies()]


def _unknown_study_message(storage: BaseStorage, name: str) -> str:
    names = _study_names(storage)
    known = f"existing studies: {', '.join(sorted(names))}" if names else "the storage has no studies"
    return f"no study named {name!r}; {known}"


def _create(
    storage: BaseStorage,
    name: str,
    settings: StudySettings | None,
    sampler: optuna.samplers.BaseSampler | None,
) -> optuna.Study:
    study = optuna.create_study(
        storage=storage, study_name=name, directions=list(DIRECTIONS), sampler=sampler, load_if_exists=True
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(METRIC_NAMES)
    if settings is not None and SETTINGS_ATTR in study.user_attrs:  # another driver won the race
        _check_settings(study, settings)
    elif settings is not None:
        study.set_user_attr(SETTINGS_ATTR, settings.to_dict())
    return study


def _check_settings(study: optuna.Study, settings: StudySettings) -> None:
    stored = _settings_of_new_study(study)
    if stored is None:
        raise ValueError(f"study {study.study_name!r} has no stored settings; use another --study name")
    differences = stored.differences(settings)
    if differences:
        raise ValueError(
            f"study {study.study_name!r} was created with other settings (stored != given): {'; '.join(differences)}"
        )
