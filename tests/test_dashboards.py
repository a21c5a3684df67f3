"""dashboards/: figures from a real study, publishing, the report and the dashboard command."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import optuna
import pandas as pd
import pytest

import storage
from cli.main import main
from dashboards import frontier_figure, publish, summarize, surrogate_figure
from dashboards.figures import INFEASIBLE_COLOR
from dashboards.publish import FRONTIER_ID, SURROGATE_ID
from storage import StudySettings
from storage.optuna_private import study_id, study_storage

REPO = Path(__file__).resolve().parents[1]
SETTINGS = StudySettings(
    task="rt-polarity",
    base_model="minilm-l6",
    recipe="smoke",
    budget=0.03,
    grid_N=(1, 2, 5),
    grid_s=(0.0, 0.5, 0.7, 0.9),
    command="prumux-search start --storage postgresql://alice:pa55word@db/prumux",
)
DENSE_ACCURACY = 0.86
THRESHOLD = DENSE_ACCURACY - SETTINGS.budget
# (N, s): accuracy, throughput; measured by "training" (record_result) or imported
TRAINED = {
    (1, 0.0): (DENSE_ACCURACY, 100.0),
    (2, 0.5): (0.845, 340.0),
    (5, 0.9): (0.70, 2600.0),
    (1, 0.9): (0.80, 480.0),
}
IMPORTED = {(1, 0.5): (0.852, 170.0), (2, 0.0): (0.85, 190.0), (5, 0.0): (0.82, 430.0), (2, 0.7): (0.834, 560.0)}
HARDWARE = "2x CPU (test)"


def seed_study(url: str, name: str = "prumux") -> optuna.Study:
    """A real study with 8 complete trials of all families (3 infeasible), 1 failed, 1 running."""
    study = storage.open_study(url, name, SETTINGS, create=True)
    for (N, s), (accuracy, throughput) in TRAINED.items():
        trial = _ask(study, N, s)
        measured = {
            "val_accuracy": accuracy,
            "throughput": throughput,
            "speedup": throughput / 100.0,
            "hardware": HARDWARE,
        }
        storage.record_result(study, trial, measured, THRESHOLD)
    frame = pd.DataFrame(
        [(N, s, a, t) for (N, s), (a, t) in IMPORTED.items()], columns=["N", "s", "accuracy", "throughput"]
    )
    storage.import_points(study, frame, THRESHOLD)
    study.tell(_ask(study, 5, 0.5), state=optuna.trial.TrialState.FAIL)
    _ask(study, 5, 0.7)
    return study


def _ask(study: optuna.Study, N: int, s: float) -> optuna.Trial:
    study.enqueue_trial({"N": N, "s": s})
    trial = study.ask()
    trial.suggest_categorical("N", list(SETTINGS.grid_N))
    trial.suggest_categorical("s", list(SETTINGS.grid_s))
    return trial


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("run")
    seed_study(storage.default_url(folder))
    return folder


@pytest.fixture
def study(run_dir: Path) -> optuna.Study:
    return storage.open_study(storage.default_url(run_dir), "prumux")


def cli(*args: str) -> int:
    """Run the real CLI in-process; return its exit status."""
    try:
        main(list(args))
    except SystemExit as stop:
        return stop.code
    return 0


def test_frontier_draws_every_trial_once_in_its_family(study: optuna.Study) -> None:
    summary = summarize(study)
    figure = frontier_figure(summary.points, summary.threshold, summary.recommended_point())
    measured = {**TRAINED, **IMPORTED}
    drawn = {}
    for trace in figure.data:
        if trace.meta and "family" in trace.meta:
            for label, (number, feasible), color in zip(trace.text, trace.customdata, trace.marker.color):
                trial = study.trials[int(number)]
                point = (trial.params["N"], trial.params["s"])
                assert point not in drawn
                drawn[point] = label
                assert storage.family(*point) == trace.meta["family"]
                assert bool(feasible) == (measured[point][0] >= THRESHOLD)
                assert (color == INFEASIBLE_COLOR) == (not feasible)
    assert drawn.keys() == measured.keys()
    assert drawn[(2, 0.7)] == "(2, 0.7)"
    recommended = [t for t in figure.data if t.meta == {"role": "recommended"}]
    assert summary.recommended_point() == (2, 0.7) and recommended[0].y == (5.6,)
    frontier = next(t for t in figure.data if t.meta == {"role": "frontier"})
    assert list(frontier.x) == [0.86, 0.852, 0.85, 0.845, 0.834]
    assert figure.layout.xaxis.autorange == "reversed" and figure.layout.yaxis.type == "log"
    assert figure.layout.shapes[0].x0 == pytest.approx(THRESHOLD)


def test_surrogate_map_covers_the_grid(study: optuna.Study) -> None:
    surrogate = summarize(study).surrogate
    figure = surrogate_figure(surrogate, SETTINGS.grid_N, SETTINGS.grid_s, SETTINGS.budget, next_point=(5, 0.5))
    accuracy, throughput = [t for t in figure.data if t.type == "heatmap"]
    assert len(accuracy.z) == len(SETTINGS.grid_s) and len(accuracy.z[0]) == len(SETTINGS.grid_N)
    assert accuracy.z[0][0] == pytest.approx(DENSE_ACCURACY)  # exact at a measured point
    assert throughput.z[2][1] == pytest.approx(560.0)
    measured = [t for t in figure.data if t.meta == {"role": "measured"}]
    assert len(measured) == 2 and len(measured[0].x) == len(TRAINED) + len(IMPORTED)
    proposed = next(t for t in figure.data if t.meta == {"role": "next"})
    assert (proposed.x[0], round(proposed.y[0])) == (2, 1)
    region = [t for t in figure.data if t.meta == {"role": "feasible-region"}]
    assert region and all(len(t.x) > 0 for t in region)
    assert region[0].name == f"feasible (accuracy >= {THRESHOLD:.3f})"  # the measured dense accuracy's threshold


def test_publish_stores_both_figures_and_a_masked_note(tmp_path: Path) -> None:
    study = seed_study(storage.default_url(tmp_path))
    publish(study, next_point=(5, 0.5))
    attrs = study_storage(study).get_study_system_attrs(study_id(study))
    assert any(key.startswith(f"dashboard:plot_data:{FRONTIER_ID}:") for key in attrs)
    assert any(key.startswith(f"dashboard:plot_data:{SURROGATE_ID}:") for key in attrs)
    from optuna_dashboard import get_note

    note = get_note(study)
    assert "rt-polarity" in note and "(2, 0.7) trial 7" in note and "1 fail" in note
    assert "alice:***@db" in note and "pa55word" not in note


def test_report_of_a_study(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    assert cli("report", "--run-dir", str(run_dir), "--out", str(out)) == 0
    page = out.read_text()
    assert page.count("Plotly.newPlot") == 2 and "<script src=" not in page
    assert HARDWARE in page and "prumux-search start --storage postgresql://alice:***@db/prumux" in page
    assert "pa55word" not in page
    assert "(2, 0.7) 5.60x" in page  # top of the 0.03 budget


def test_report_of_an_empty_study_says_nothing_yet(tmp_path: Path) -> None:
    storage.open_study(storage.default_url(tmp_path), "empty", SETTINGS, create=True)
    out = tmp_path / "report.html"
    assert cli("report", "--run-dir", str(tmp_path), "--study", "empty", "--out", str(out)) == 0
    assert "Nothing yet" in out.read_text()


def test_report_on_a_missing_run_dir_creates_nothing(tmp_path: Path, capsys) -> None:
    assert cli("report", "--run-dir", str(tmp_path / "none"), "--out", str(tmp_path / "r.html")) == 2
    assert "no study at" in capsys.readouterr().err and not (tmp_path / "none").exists()


def test_dashboard_serves_the_study_on_loopback(run_dir: Path) -> None:
    publish(storage.open_study(storage.default_url(run_dir), "prumux"))
    with _dashboard(run_dir) as (_, line):
        url = re.search(r"(http://127\.0\.0\.1:\d+)/dashboard/studies/(\d+)", line)
        assert url, line
        detail = _get_json(f"{url[1]}/api/studies/{url[2]}")
    assert detail["name"] == "prumux"
    states = [trial["state"] for trial in detail["trials"]]
    assert states.count("Complete") == 8 and states.count("Fail") == 1 and states.count("Running") == 1
    assert {graph["id"] for graph in detail["plotly_graph_objects"]} == {FRONTIER_ID, SURROGATE_ID}
    assert "rt-polarity" in detail["note"]["body"]


def test_dashboard_on_a_remote_host_warns_of_no_authentication(run_dir: Path) -> None:
    with _dashboard(run_dir, "--host", "0.0.0.0", "--allow-remote") as (server, line):
        assert "at http://0.0.0.0:" in line
        server.terminate()  # the warning precedes the line read: it is all in the pipe
        assert "no authentication" in server.stderr.read()


@contextlib.contextmanager
def _dashboard(run_dir: Path, *args: str) -> Iterator[tuple[subprocess.Popen, str]]:
    """The real `prumux-search dashboard` on a free port, and the line saying where it serves."""
    command = [sys.executable, "-c", "from cli.main import main; main()", "dashboard", "--run-dir", str(run_dir)]
    server = subprocess.Popen(
        [*command, "--port", "0", *args],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield server, server.stdout.readline()
    finally:
        server.terminate()
        server.wait(timeout=30)
        server.stdout.close()
        server.stderr.close()


def _get_json(url: str, attempts: int = 50) -> dict:
    for _ in range(attempts):
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return json.loads(response.read())
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer")
