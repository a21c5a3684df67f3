"""Model families: each grid N gets its checkpoint, and a point skips what that checkpoint already learnt."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trainers.families import FAMILIES, family, model_for, tokenizer_for

from reference_models import tiny_mux_family

TEMPLATE = "testorg/tiny-mux-rt-{N}"


def test_published_families_map_every_width_to_its_hub_id():
    assert model_for("muxbert-base", 5) == "princeton-nlp/muxbert_base_gaussian_hadamard_index_pos_5"
    assert model_for("muxbert-base-sst2", 2) == "princeton-nlp/muxbert_base_sst2_gaussian_hadamard_index_pos_2"
    assert model_for("muxelectra-base", 10) == "princeton-nlp/muxelectra_base_gaussian_hadamard_index_pos_10"
    assert model_for("muxbert-base", 1) == "bert-base-uncased" == tokenizer_for("muxbert-base", 10)
    assert model_for("muxbert-small", 1) == "google/bert_uncased_L-4_H-512_A-8"
    assert model_for("org/name_{N}", 3) == "org/name_3" and model_for("minilm-l6", 5) == "minilm-l6"
    assert {"muxbert-large", "muxbert-base-mnli", "muxbert-base-qnli", "muxbert-base-qqp"} <= set(FAMILIES)


def test_a_width_the_family_lacks_is_refused():
    with pytest.raises(
        ValueError, match=r"model family 'muxbert-base' has no N = 3 checkpoint \(it has N = 1, 2, 5, 10\)"
    ):
        family("muxbert-base").check_widths([1, 2, 3])
    with pytest.raises(ValueError, match="must hold"):
        family("org/{N}_{N}")


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory, tiny_bert_dir) -> Path:
    cache = tmp_path_factory.mktemp("hub") / "hub"
    tiny_mux_family(
        cache, tiny_bert_dir, TEMPLATE, {1: "plain", 2: "fine-tuned", 3: "pretrained"}, ("negative", "positive")
    )
    tiny_mux_family(cache, tiny_bert_dir, "testorg/tiny-mux-swapped-{N}", {2: "fine-tuned"}, ("positive", "negative"))
    return cache


def train(run_cli, cache: Path, workdir: Path, model: str, N: int, s: float):
    done, _ = run_cli(
        "train",
        "--task",
        "rt-polarity",
        "--model",
        model,
        "--n",
        str(N),
        "--sparsity",
        str(s),
        "--recipe",
        "smoke",
        "--workdir",
        str(workdir),
        "--quiet",
        "--set",
        "prune_steps=20",
        "--set",
        "lagrangian_warmup_steps=10",
        timeout=600,
        HF_HUB_OFFLINE="1",
        HF_HUB_CACHE=str(cache),
    )
    return done


def result_of(done) -> dict:
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout[done.stdout.index("\n{") :])


def test_fine_tuned_checkpoint_is_evaluated_then_pruned_with_itself_as_teacher(run_cli, hub_cache, tmp_path):
    result = result_of(train(run_cli, hub_cache, tmp_path, TEMPLATE, 2, 0.5))
    assert result["phases"] == {"retrieval": "skipped", "mlm": "skipped", "finetune": "evaluated", "pruning": "trained"}
    assert result["checkpoint"] == "testorg/tiny-mux-rt-2" and result["sparsity"] == pytest.approx(0.5, abs=0.02)
    assert result["phase_seconds"]["retrieval"] == 0 and result["phase_seconds"]["multiplexed"] == 0


def test_pretrained_mux_checkpoint_skips_retrieval_and_mlm(run_cli, hub_cache, tmp_path):
    result = result_of(train(run_cli, hub_cache, tmp_path, TEMPLATE, 3, 0.0))
    assert result["phases"] == {"retrieval": "skipped", "mlm": "skipped", "finetune": "trained", "pruning": "skipped"}
    plain = result_of(train(run_cli, hub_cache, tmp_path, TEMPLATE, 1, 0.0))
    assert plain["checkpoint"] == "testorg/tiny-mux-rt-1"
    assert plain["phases"] == {"retrieval": "skipped", "mlm": "skipped", "finetune": "trained", "pruning": "skipped"}


def test_a_checkpoint_with_the_task_labels_in_another_order_is_refused(run_cli, hub_cache, tmp_path):
    done = train(run_cli, hub_cache, tmp_path, "testorg/tiny-mux-swapped-{N}", 2, 0.0)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "orders its labels ['positive', 'negative'], the task ['negative', 'positive']" in done.stderr


def test_a_search_on_a_family_skips_what_each_checkpoint_learnt(run_cli, hub_cache, tmp_path):
    """A real (smoke) `start` whose N = 2 points start from a task-fine-tuned MUX checkpoint in the hub cache."""
    done, _ = run_cli(
        "start",
        "--run-dir",
        str(tmp_path),
        "--task",
        "rt-polarity",
        "--model",
        TEMPLATE,
        "--recipe",
        "smoke",
        "--grid-n",
        "1,2",
        "--grid-s",
        "0",
        "--budget",
        "0.5",
        timeout=900,
        HF_HUB_OFFLINE="1",
        HF_HUB_CACHE=str(hub_cache),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    status, _ = run_cli("status", "--run-dir", str(tmp_path), "--format", "json")
    trials = {(t["N"], t["s"]): t for t in json.loads(status.stdout)["trials"]}
    assert sorted(trials) == [(1, 0.0), (2, 0.0)]
    assert trials[(1, 0.0)]["phases"]["finetune"] == "trained"
    assert trials[(2, 0.0)]["checkpoint"] == "testorg/tiny-mux-rt-2"
    assert trials[(2, 0.0)]["phases"] == {
        "retrieval": "skipped",
        "mlm": "skipped",
        "finetune": "evaluated",
        "pruning": "skipped",
    }
