"""`evaluate` measures checkpoints as the paper does and hands them to Auto-PruMUX (`--into-study`, `predict`)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from test_checkpoints import cofi_zs

from reference_models import (
    TOKENIZER_FILES,
    backbone_state,
    bert_config,
    cofi_fold_and_prune,
    mux_config,
    mux_plm_state,
    save_checkpoint,
)

LABELS = {"0": "negative", "1": "positive"}
FAST = ["--task", "rt-polarity", "--seq-len", "32", "--batches", "1", "--max-eval-examples", "64"]


def with_tokenizer(folder: Path, tokenizer_dir: Path) -> str:
    for name in TOKENIZER_FILES:
        shutil.copy(tokenizer_dir / name, folder / name)
    return str(folder)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, tiny_bert_dir) -> dict[str, str]:
    """A dense BERT classifier, its CoFi pruning, a fine-tuned MUX-BERT (N=2) and its PruMUX pruning."""
    root = tmp_path_factory.mktemp("published")
    base = bert_config(vocab=30522, positions=64)
    dense = base | {"architectures": ["BertForSequenceClassification"], "id2label": LABELS}
    generator = torch.Generator().manual_seed(7)
    state = backbone_state(dense, "bert.", generator, pooler=True)
    state |= {"classifier.weight": torch.randn(2, 32, generator=generator), "classifier.bias": torch.zeros(2)}
    binary = {name: (value != 0).float() for name, value in cofi_zs(dense, 7).items()}
    mux = mux_config(base, 2, num_labels=2) | {"id2label": LABELS}
    mux_state = mux_plm_state(mux, 8, task_head=True)
    folders = {
        "dense": save_checkpoint(root / "dense", dense, state),
        "cofi": save_checkpoint(root / "cofi", dense, cofi_fold_and_prune(state, binary, dense)),
        "mux": save_checkpoint(root / "mux", mux, mux_state),
        "prumux": save_checkpoint(root / "prumux", mux, cofi_fold_and_prune(mux_state, cofi_zs(mux, 8), mux)),
    }
    return {name: with_tokenizer(folder, tiny_bert_dir) for name, folder in folders.items()}


def test_evaluate_prints_one_point(run_cli, checkpoints):
    done, _ = run_cli("evaluate", "--model", checkpoints["prumux"], *FAST, "--format", "json", timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    point = json.loads(done.stdout)
    assert point["N"] == 2 and point["layout"] == "mux-plm" and 0.3 < point["sparsity"] < 0.9
    assert point["speedup"] > 0 and 0 <= point["val_accuracy"] <= 1 and point["s"] == round(point["sparsity"], 2)


def test_evaluate_into_study_then_predict(run_cli, checkpoints, tmp_path):
    run = ["--run-dir", str(tmp_path), "--grid-n", "1,2", "--grid-s", "0,0.5", "--budget", "0.2"]
    for name, s in (("dense", "0"), ("cofi", "0.5"), ("mux", "0"), ("prumux", "0.5")):
        done, _ = run_cli("evaluate", "--model", checkpoints[name], *FAST, "--into-study", *run, "--s", s, timeout=300)
        assert done.returncode == 0, (name, done.stderr[-2000:])
        assert "recorded as a point of study 'prumux'" in done.stdout
    done, _ = run_cli("status", "--run-dir", str(tmp_path), "--format", "json")
    trials = json.loads(done.stdout)["trials"]
    assert sorted((t["N"], t["s"]) for t in trials) == [(1, 0.0), (1, 0.5), (2, 0.0), (2, 0.5)]
    done, _ = run_cli("predict", "--run-dir", str(tmp_path), "--format", "json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["budget"] == 0.2 and json.loads(done.stdout)["top"]


def test_bad_evaluations_fail_in_one_line_and_store_nothing(run_cli, checkpoints, tmp_path, tiny_bert_dir):
    cases = [
        (
            [
                "--model",
                checkpoints["mux"],
                *FAST,
                "--into-study",
                "--run-dir",
                str(tmp_path),
                "--grid-n",
                "1,2",
                "--grid-s",
                "0,0.5",
            ],
            "has no dense (N=1, s=0) point yet",
        ),
        (
            [
                "--model",
                checkpoints["prumux"],
                *FAST,
                "--into-study",
                "--run-dir",
                str(tmp_path),
                "--grid-n",
                "1,2",
                "--grid-s",
                "0,0.9",
            ],
            "is not on the study's grid",
        ),
        (["--model", str(tiny_bert_dir), *FAST], "has no task head"),
        (["--model", "muxbert-base", *FAST], "is a model family: give the width N"),
    ]
    for arguments, message in cases:
        done, _ = run_cli("evaluate", *arguments, timeout=300)
        assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert list(tmp_path.iterdir()) == []
