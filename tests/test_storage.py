"""storage/: the study in SQL on real SQLite files and the real PostgreSQL server."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import uuid
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import sqlalchemy
from optuna.trial import TrialState

import storage
from storage import StudySettings

SETTINGS = StudySettings(
    task="rt-polarity",
    base_model="minilm-l6",
    recipe="smoke",
    budget=0.03,
    grid_N=(1, 2, 5),
    grid_s=(0.0, 0.5, 0.7),
    command="prumux-search start --storage postgresql://u:hunter2@db/x",
)
THRESHOLD = 0.83
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return storage.default_url(tmp_path / "run")
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def study_name(url: str, request: pytest.FixtureRequest) -> str:
    if url.startswith("sqlite"):
        return "prumux"
    return request.getfixturevalue("fresh_postgres_study_name")


def ask(study: optuna.Study, N: int, s: float) -> optuna.Trial:
    """Ask a trial at (N, s) the way the driver does."""
    study.enqueue_trial({"N": N, "s": s})
    trial = study.ask()
    trial.suggest_categorical("N", [1, 2, 5])
    trial.suggest_categorical("s", [0.0, 0.5, 0.7])
    return trial


def result(accuracy: float, throughput: float, **extra: object) -> dict:
    return {"val_accuracy": accuracy, "test_accuracy": accuracy - 0.01, "throughput": throughput, **extra}


def test_mask_url_hides_every_password() -> None:
    assert storage.mask_url("postgresql://user:s3cr:et@host:5432/db") == "postgresql://user:***@host:5432/db"
    assert storage.mask_url("postgresql://user@host/db") == "postgresql://user@host/db"
    assert storage.mask_url("sqlite:////tmp/x/study.db") == "sqlite:////tmp/x/study.db"
    command = "start --storage mysql+pymysql://a:b@h/db --ray-address ray://x:1"
    assert storage.mask_url(command) == "start --storage mysql+pymysql://a:***@h/db --ray-address ray://x:1"


def test_default_url_is_the_run_directory_sqlite_file(tmp_path: Path) -> None:
    assert storage.default_url(tmp_path) == f"sqlite:///{tmp_path.resolve()}/study.db"


@pytest.mark.parametrize("bad", ["nonsense", "://nohost", "nodb+x://a/b"])
def test_malformed_url_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="storage URL"):
        storage.open_storage(bad)


def test_round_trip_with_constraints(url: str, study_name: str) -> None:
    study = storage.open_study(url, study_name, SETTINGS, create=True)
    dense = ask(study, 1, 0.0)
    storage.record_result(study, dense, result(0.86, 100.0, speedup=1.0, model_dir=Path("/m/0")), THRESHOLD)
    fast_but_wrong = ask(study, 5, 0.7)
    storage.record_result(study, fast_but_wrong.number, result(np.float64(0.70), 900.0), THRESHOLD)
    points = pd.DataFrame({"N": [2, 2], "s": [0.5, 0.7], "accuracy": [0.85, 0.84], "throughput": [300.0, 450.0]})
    storage.import_points(study, points, THRESHOLD)

    reopened = storage.open_study(url, study_name, SETTINGS)
    best = {(t.params["N"], t.params["s"]) for t in reopened.best_trials}
    assert best == {(1, 0.0), (2, 0.5), (2, 0.7)}  # (5, 0.7) is fastest but infeasible
    frame = storage.points_frame(reopened).set_index(["N", "s"])
    assert list(frame["family"]) == ["dense", "prumux", "prumux", "prumux"]
    assert not frame.loc[(5, 0.7), "feasible"]
    assert frame.loc[(2, 0.7), "speedup"] == pytest.approx(4.5)
    assert frame.loc[(1, 0.0), "model_dir"] == "/m/0"
    assert storage.accuracy_threshold(reopened) == pytest.approx(THRESHOLD)
    assert storage.study_settings(reopened) == SETTINGS
    assert "hunter2" not in str(reopened.user_attrs)


def test_settings_mismatch_is_refused_without_touching_the_file(tmp_path: Path) -> None:
    url = storage.default_url(tmp_path)
    study = storage.open_study(url, "prumux", SETTINGS, create=True)
    storage.record_result(study, ask(study, 1, 0.0), result(0.86, 100.0), THRESHOLD)
    del study
    before = (tmp_path / "study.db").read_bytes()
    other = StudySettings(**{**SETTINGS.to_dict(), "budget": 0.05, "grid_N": [1, 2]})
    with pytest.raises(ValueError, match="budget: 0.03 != 0.05; grid_N") as error:
        storage.open_study(url, "prumux", other)
    assert "\n" not in str(error.value)
    assert (tmp_path / "study.db").read_bytes() == before
    resumed = StudySettings(**{**SETTINGS.to_dict(), "command": "prumux-search start --max-trials 3"})
    assert storage.open_study(url, "prumux", resumed).user_attrs["settings"]["command"] == SETTINGS.command


def test_a_driver_starting_together_waits_for_the_creators_settings(url: str, study_name: str, tmp_path: Path) -> None:
    (tmp_path / "run").mkdir(exist_ok=True)
    bare = optuna.create_study(storage=url, study_name=study_name, directions=["maximize", "maximize"])
    later = threading.Timer(0.5, bare.set_user_attr, ("settings", SETTINGS.to_dict()))
    later.start()
    assert storage.open_study(url, study_name, SETTINGS).user_attrs["settings"] == SETTINGS.to_dict()
    later.join()


def test_a_study_made_elsewhere_is_refused_after_the_wait(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("storage.study.SETTINGS_WAIT_SECONDS", 0.3)
    url = storage.default_url(tmp_path)
    optuna.create_study(storage=url, study_name="theirs")
    with pytest.raises(ValueError, match="study 'theirs' has no stored settings; use another --study name"):
        storage.open_study(url, "theirs", SETTINGS)


def test_unknown_study_lists_the_existing_ones(tmp_path: Path) -> None:
    url = storage.default_url(tmp_path)
    storage.open_study(url, "first", SETTINGS, create=True)
    with pytest.raises(ValueError, match="no study named 'second'; existing studies: first"):
        storage.open_study(url, "second")


def test_read_only_open_creates_nothing(tmp_path: Path) -> None:
    url = storage.default_url(tmp_path / "run")
    with pytest.raises(ValueError, match="no study at"):
        storage.open_study(url, "prumux")
    assert not (tmp_path / "run").exists()


def test_unreachable_database_is_one_masked_line() -> None:
    with pytest.raises(ValueError) as error:
        storage.open_storage("postgresql://postgres:topsecret@127.0.0.1:1/test")
    message = str(error.value)
    assert message.startswith("cannot open storage postgresql://postgres:***@127.0.0.1:1/test")
    assert "topsecret" not in message and "\n" not in message


def test_an_unreachable_database_is_not_tried_again(monkeypatch: pytest.MonkeyPatch) -> None:
    waits: list[float] = []
    monkeypatch.setattr("storage.rdb.time.sleep", waits.append)
    with pytest.raises(ValueError, match="cannot open storage"):
        storage.open_storage("postgresql://postgres@127.0.0.1:1/test")
    assert waits == []


def test_a_connection_dropped_while_opening_is_made_again(postgres_url: str, fresh_postgres_study_name: str) -> None:
    """The first statement of the first connection finds its backend terminated (as the fault test's every-2-s
    ``pg_terminate_backend`` can, while a driver opens its storage); the open goes on, on a new connection."""
    tag = f"prumux-test-{uuid.uuid4().hex[:8]}"
    admin = sqlalchemy.create_engine(postgres_url, poolclass=sqlalchemy.pool.NullPool)
    terminated: list[int] = []

    def terminate_first(connection, cursor, statement, parameters, context, executemany) -> None:
        if not terminated and connection.engine.url.query.get("application_name") == tag:
            with admin.connect() as other:
                terminated.append(
                    other.execute(
                        sqlalchemy.text(
                            "select count(pg_terminate_backend(pid)) from pg_stat_activity where application_name = :tag"
                        ),
                        {"tag": tag},
                    ).scalar()
                )

    sqlalchemy.event.listen(sqlalchemy.engine.Engine, "before_cursor_execute", terminate_first)
    try:
        study = storage.open_study(
            f"{postgres_url}?application_name={tag}", fresh_postgres_study_name, SETTINGS, create=True
        )
    finally:
        sqlalchemy.event.remove(sqlalchemy.engine.Engine, "before_cursor_execute", terminate_first)
        admin.dispose()
    assert terminated == [1]
    assert study.user_attrs


def test_import_refuses_duplicates_and_writes_nothing(tmp_path: Path) -> None:
    study = storage.open_study(storage.default_url(tmp_path), "prumux", SETTINGS, create=True)
    storage.record_result(study, ask(study, 1, 0.0), result(0.86, 100.0), THRESHOLD)
    running = ask(study, 2, 0.7)
    cases = {
        "already in study": {"N": [2, 1], "s": [0.5, 0.0], "accuracy": [0.8, 0.86], "throughput": [1.0, 2.0]},
        "(N=2, s=0.7) is already": {"N": [2], "s": [0.7], "accuracy": [0.8], "throughput": [1.0]},
        "more than once": {"N": [5, 5], "s": [0.5, 0.5], "accuracy": [0.8, 0.8], "throughput": [1.0, 1.0]},
        "not on the study's grid": {"N": [3], "s": [0.5], "accuracy": [0.8], "throughput": [1.0]},
        "missing: throughput": {"N": [5], "s": [0.5], "accuracy": [0.8]},
        "NaN": {"N": [5], "s": [0.5], "accuracy": [np.nan], "throughput": [1.0]},
        "fraction": {"N": [5], "s": [0.5], "accuracy": [80.0], "throughput": [1.0]},
    }
    for message, columns in cases.items():
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
            storage.import_points(study, pd.DataFrame(columns), THRESHOLD)
    assert len(study.trials) == 2 and running.number == 1


def test_stale_trials_of_dead_drivers_only_are_failed(tmp_path: Path) -> None:
    url = storage.default_url(tmp_path)
    study = storage.open_study(url, "prumux", SETTINGS, create=True)
    dead_driver = textwrap.dedent(
        f"""
        import optuna, storage
        study = storage.open_study({url!r}, "prumux")
        study.enqueue_trial({{"N": 2, "s": 0.5}})
        trial = study.ask()
        trial.suggest_categorical("N", [1, 2, 5]); trial.suggest_categorical("s", [0.0, 0.5, 0.7])
        storage.Heartbeat(study, interval=3600).start().claim(trial)
        """
    )
    subprocess.run([sys.executable, "-c", dead_driver], cwd=REPO, check=True, env={"PYTHONPATH": str(REPO)})
    with storage.Heartbeat(study, interval=3600) as heartbeat:
        mine = ask(study, 1, 0.0)
        heartbeat.claim(mine)
        unowned = ask(study, 5, 0.7)
        assert storage.fail_stale_trials(study) == [0]
        assert study.trials[0].user_attrs["failed_because"].endswith("is gone")
        assert storage.fail_stale_trials(study, grace_period=1e9) == []
    assert storage.fail_stale_trials(study, grace_period=0) == [mine.number, unowned.number]
    assert [t.state for t in study.trials] == [TrialState.FAIL] * 3


def test_dropped_postgres_connection_is_reconnected(postgres_url: str, fresh_postgres_study_name: str) -> None:
    tag = f"prumux-test-{uuid.uuid4().hex[:8]}"
    study = storage.open_study(
        f"{postgres_url}?application_name={tag}", fresh_postgres_study_name, SETTINGS, create=True
    )
    storage.record_result(study, ask(study, 1, 0.0), result(0.86, 100.0), THRESHOLD)
    admin = sqlalchemy.create_engine(postgres_url, poolclass=sqlalchemy.pool.NullPool)
    with admin.connect() as connection:
        killed = connection.execute(
            sqlalchemy.text(
                "select count(pg_terminate_backend(pid)) from pg_stat_activity where application_name = :tag"
            ),
            {"tag": tag},
        ).scalar()
    admin.dispose()
    assert killed >= 1
    storage.record_result(study, ask(study, 2, 0.5), result(0.85, 300.0), THRESHOLD)
    assert len(storage.points_frame(study)) == 2
