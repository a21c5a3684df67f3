"""The whole-job check and what hangs on it: resolved paths, the study's record of them, `submit`'s
rewriting of a search for the cluster, `import` reading its grid from the points, and the pieces
of the live progress line (the trainers' records, the console's lines)."""

from __future__ import annotations

import io
import json
import shlex
from pathlib import Path

import pandas as pd
import pytest

from cli.commands.submit import checked_start_arguments
from cli.console import SearchConsole, duration, progress_line
from storage import default_url, open_study, study_settings
from trainers.job import check_job, check_writable_dir
from trainers.models import check_model
from trainers.progress import StageProgress, reporting_progress
from trainers.recipes import RECIPES

FAST = ["--recipe", "smoke", "--grid-n", "1,2", "--grid-s", "0,0.5"]


@pytest.fixture
def workspace(tmp_path: Path, tiny_bert_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory holding a task file, a model folder and a recipe file, all named relatively."""
    rows = 40
    pd.DataFrame({"text": [f"review number {i}" for i in range(rows)], "label": ["pos", "neg"] * (rows // 2)}).to_csv(
        tmp_path / "reviews.csv", index=False
    )
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "tiny").symlink_to(tiny_bert_dir)
    (tmp_path / "mine.json").write_text(RECIPES["smoke"].read_text())
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_relative_inputs_resolve_against_the_working_directory(workspace: Path, tiny_bert_dir: Path) -> None:
    job = check_job("reviews.csv", "models/tiny", "mine.json", ["prune_steps=3"], grid_N=(1, 2), grid_s=(0.0, 0.5))

    assert job.task == str(workspace / "reviews.csv")
    assert job.base_model == str(tiny_bert_dir.resolve())  # a folder is its absolute (resolved) path
    assert job.recipe_label == f"{workspace / 'mine.json'} prune_steps=3" and job.recipe.prune_steps == 3
    assert job.given == {"task": "reviews.csv", "base_model": "models/tiny", "recipe": "mine.json"}
    assert job.data.spec.label_names == ("neg", "pos") and sum(job.data.sizes().values()) == 40
    assert job.model.checkpoints == {1: job.base_model, 2: job.base_model}
    assert set(job.local_inputs()) == {"task file", "model folder", "recipe file"}
    # the same text from another directory names other files
    other = workspace / "elsewhere"
    other.mkdir()
    with pytest.raises(OSError, match=f"looked for {other / 'reviews.csv'}"):
        check_job("reviews.csv", "models/tiny", "smoke", cwd=other)


def test_registered_names_stay_names_and_aliases_resolve_per_n() -> None:
    job = check_job("rt-polarity", "minilm-l6", "smoke", grid_N=(1, 5))
    assert (job.task, job.base_model, job.recipe_label, job.local_inputs()) == ("rt-polarity", "minilm-l6", "smoke", {})
    model = check_model("minilm-l6", (1, 2, 5))
    assert sorted(model.checkpoints) == [1, 2, 5] and len(set(model.checkpoints.values())) == 1
    assert model.max_length == 512


def test_a_recipe_too_long_for_the_model_and_bad_points_are_refused(tiny_bert_dir: Path) -> None:
    with pytest.raises(ValueError, match=r"seq_len 256 is longer than base model .* takes \(128 positions\)"):
        check_job("rt-polarity", str(tiny_bert_dir), "smoke", ["seq_len=256"])
    with pytest.raises(ValueError, match="N must be an integer >= 1"):
        check_job("rt-polarity", str(tiny_bert_dir), "smoke", grid_N=(0,))
    with pytest.raises(ValueError, match="sparsity s must be in"):
        check_job("rt-polarity", str(tiny_bert_dir), "smoke", grid_s=(1.0,))


def test_writable_dir_check_creates_nothing(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "run"
    assert check_writable_dir(target, "run directory") == target
    assert not (tmp_path / "a").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(OSError, match=f"{tmp_path / 'file'} is a file"):
        check_writable_dir(tmp_path / "file" / "run", "run directory")


def test_the_study_stores_resolved_paths_and_the_text_given(workspace: Path, run_main) -> None:
    code, _, err = run_main(
        "import",
        "--run-dir",
        "runs",
        "--task",
        "reviews.csv",
        "--model",
        "models/tiny",
        "--recipe",
        "smoke",
        "--points",
        "points.csv",
    )
    assert code == 2 and "no such points file" in err  # the points file is checked too, before anything is written
    assert not (workspace / "runs").exists()
    (workspace / "points.csv").write_text("N,s,accuracy,throughput\n1,0,0.9,100\n3,0,0.85,250\n1,0.6,0.88,200\n")

    code, out, err = run_main(
        "import",
        "--run-dir",
        "runs",
        "--task",
        "reviews.csv",
        "--model",
        "models/tiny",
        "--recipe",
        "smoke",
        "--points",
        "points.csv",
    )

    assert code == 0, err
    settings = study_settings(open_study(default_url(workspace / "runs"), "prumux"))
    assert settings.task == str(workspace / "reviews.csv") and Path(settings.base_model).is_absolute()
    assert settings.given == {"task": "reviews.csv", "base_model": "models/tiny", "recipe": "smoke"}
    # no --grid-n/--grid-s: a new study's grid is the points' N and s values, not the default grid
    assert (settings.grid_N, settings.grid_s) == ((1, 3), (0.0, 0.6))
    # and a later import into that study uses the study's grid
    (workspace / "more.csv").write_text("N,s,accuracy,throughput\n3,0.6,0.8,400\n")
    code, _, err = run_main(
        "import",
        "--run-dir",
        "runs",
        "--task",
        "reviews.csv",
        "--model",
        "models/tiny",
        "--recipe",
        "smoke",
        "--points",
        "more.csv",
    )
    assert code == 0, err


def test_submit_gives_the_job_absolute_paths(workspace: Path) -> None:
    arguments = checked_start_arguments(
        (
            "start",
            "--task",
            "reviews.csv",
            "--model",
            "models/tiny",
            *FAST,
            "--set",
            "prune_steps=4",
            "--budget",
            "0.05",
        ),
        None,
        "runs",
        "http://127.0.0.1:8265",
    )
    given = dict(zip(arguments[1::2], arguments[2::2]))
    assert arguments[0] == "start" and given["--task"] == str(workspace / "reviews.csv")
    assert Path(given["--model"]).is_absolute() and given["--run-dir"] == str(workspace / "runs")
    assert given["--set"] == "prune_steps=4" and given["--budget"] == "0.05" and given["--recipe"] == "smoke"
    assert "--max-trials" not in given  # options not given stay the job's defaults
    shlex.join(arguments)


def test_submit_to_a_remote_cluster_refuses_files_only_this_machine_has(workspace: Path) -> None:
    remote = "http://10.1.2.3:8265"
    shared = workspace / "shared"
    shared.mkdir()
    (shared / "reviews.csv").write_text((workspace / "reviews.csv").read_text())
    with pytest.raises(ValueError, match=rf"task file {workspace / 'reviews.csv'} is only on this machine"):
        checked_start_arguments(
            ("start", "--task", "reviews.csv", "--model", "minilm-l6", *FAST), None, str(shared), remote
        )
    arguments = checked_start_arguments(
        ("start", "--task", "shared/reviews.csv", "--model", "sentence-transformers/all-MiniLM-L6-v2", *FAST),
        None,
        str(shared),
        remote,
    )
    assert str(shared / "reviews.csv") in arguments  # inside the shared run dir: accepted; the hub model: the job's


def test_stages_send_progress_records_with_eta_and_last_evaluation() -> None:
    records: list[dict] = []
    with reporting_progress(records.append):
        bar = StageProgress("task/model/N=2/s=0.5 prune", total=10, initial=4, enabled=False)
        bar.update(5, {"loss": 0.5})
        bar.update(6, {"loss": 0.4, "accuracy": 0.75, "sparsity": 0.3})
        bar.update(7, {"loss": 0.3})
    StageProgress("no sink", total=2, initial=0, enabled=False).update(1, {})  # no sink: nothing sent

    assert [r["step"] for r in records] == [4, 5, 6, 7] and records[0]["eta"] is None
    last = records[-1]
    assert (last["stage"], last["phase"], last["total"], last["accuracy"], last["loss"]) == ("prune", 3, 10, 0.75, 0.3)
    assert last["eta"] >= 0
    json.dumps(records)


def test_progress_lines_and_how_a_log_shows_them() -> None:
    record = {
        "N": 2,
        "s": 0.5,
        "stage": "prune",
        "phase": 3,
        "step": 120,
        "total": 800,
        "accuracy": 0.6123,
        "elapsed": 65.0,
        "eta": 190.0,
        "time": 1000.0,
    }
    assert progress_line(3, record, now=1000.0) == (
        "trial 3  N=2 s=0.5  phase 3 prune 120/800  accuracy 0.612  elapsed 1m05s  ETA 3m10s"
    )
    assert duration(4000) == "1h06m" and duration(7) == "7s"
    log = io.StringIO()
    console = SearchConsole(log, live=False, log_every_s=3600)
    console.progress({3: record})
    console.progress({3: {**record, "step": 130}})  # same stage, soon after: not repeated in a log
    console.line("trial 3  N=2 s=0.5  accuracy 0.6  speed-up 2.00x  feasible yes  trainings used 2")
    console.progress({4: {**record, "stage": "pruned_finetune", "step": 1, "total": 10, "eta": None}})
    lines = log.getvalue().splitlines()
    assert len(lines) == 3 and "prune 120/800" in lines[0] and lines[2].startswith("trial 4") and "ETA" not in lines[2]
    terminal = io.StringIO()
    live = SearchConsole(terminal, live=True)
    live.progress({3: record})
    live.line("a line that stays")
    live.close()
    assert terminal.getvalue().count("prune 120/800") == 2 and terminal.getvalue().endswith("\x1b[F\x1b[2K")
