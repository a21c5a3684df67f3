"""The study commands: import + status + best on hand-made points, export of a trained model,
and bad input (one-line error, exit status 2, the stored study byte-identical)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cli.main import main
from storage import default_url, open_study

ROOT = Path(__file__).resolve().parents[1]
GRID = ["--grid-n", "1,2", "--grid-s", "0,0.5", "--budget", "0.03"]
POINTS = "N,s,accuracy,throughput\n1,0,0.90,100\n1,0.5,0.88,180\n2,0,0.86,190\n2,0.5,0.85,300\n"
FAST = ["--recipe", "tiny"]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """`prumux-search ARGS` in a fresh process, as a user runs it."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-c", "from cli.main import main; main()", *args]
    return subprocess.run(command, check=False, capture_output=True, text=True, env=env, timeout=300)


def file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def imported(tmp_path: Path) -> Path:
    """A run directory whose study holds the four hand-made points of ``POINTS``."""
    csv = tmp_path / "points.csv"
    csv.write_text(POINTS)
    result = run_cli("import", "--run-dir", str(tmp_path), "--points", str(csv), *GRID)
    assert result.returncode == 0, result.stderr
    assert "imported 4 points" in result.stdout
    return tmp_path


def test_import_then_status_and_best(imported: Path) -> None:
    status = run_cli("status", "--run-dir", str(imported), "--format", "json")
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["threshold"] == pytest.approx(0.87)
    feasible = {(row["N"], row["s"]): row["feasible"] for row in report["trials"]}
    assert feasible == {(1, 0.0): True, (1, 0.5): True, (2, 0.0): False, (2, 0.5): False}
    # measured grid points are predicted exactly; only (1, 0.5) and (1, 0) reach 0.87
    assert [(row["N"], row["s"]) for row in report["top"]] == [(1, 0.5), (1, 0.0)]

    best = run_cli("best", "--run-dir", str(imported), "--format", "json")
    chosen = json.loads(best.stdout)
    assert (chosen["N"], chosen["s"], chosen["accuracy"]) == (1, 0.5, 0.88)
    assert chosen["speedup"] == pytest.approx(1.8)
    assert chosen["dense_accuracy"] == 0.9

    text = run_cli("status", "--run-dir", str(imported))
    assert "current top-3" in text.stdout and "datamux" in text.stdout


def test_export_reloads_and_predicts(local_ray, tiny_bert_dir: Path, tmp_path: Path, capsys) -> None:
    from prumux import PruMUXModel
    from trainers.models import load_tokenizer

    main(["start", "--run-dir", str(tmp_path), "--model", str(tiny_bert_dir), *FAST, *GRID, "--max-trials", "1"])
    progress = capsys.readouterr().out
    assert "trial 0  N=1 s=0  accuracy" in progress and "recommended: trial 0" in progress

    out = tmp_path / "exported"
    main(["export", "--run-dir", str(tmp_path), "--trial", "0", "--out", str(out)])
    card = (out / "README.md").read_text()
    assert "one tenant" in card and "N=1, s=0" in card
    assert "prumux-search serve --model" in card and "/v1/classify" in card
    from servable import read_servable

    spec = read_servable(out)  # self-contained: tokenizer, labels, length
    assert (spec.N, spec.seq_len, spec.label_names) == (1, 32, ("negative", "positive"))
    assert (
        load_tokenizer(str(out))("a fine film")["input_ids"]
        == load_tokenizer(str(tiny_bert_dir))("a fine film")["input_ids"]
    )

    trial = open_study(default_url(tmp_path), "prumux").trials[0]
    original = PruMUXModel.from_pretrained(trial.user_attrs["model_dir"]).eval()
    exported = PruMUXModel.from_pretrained(out).eval()
    batch = load_tokenizer(str(tiny_bert_dir))(["a fine film", "dull and long"], return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = exported(batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        expected = original(batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert logits.shape == (2, 2)
    torch.testing.assert_close(logits, expected)
