"""Multiplexer variants (pruned in test_pruning): what each reduces to, saving, widening, and a plain base that learns to multiplex."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from prumux import EncoderConfig, PruMUXConfig, PruMUXModel
from prumux.config import MUXING_VARIANTS
from prumux.mux import Multiplexer
from trainers.cache import cache_entry
from trainers.data import encode_task
from trainers.models import load_tokenizer
from trainers.point import train_point
from trainers.point_spec import PointSpec
from trainers.recipes import load_recipe
from trainers.tasks import load_task

from conftest import CUE_RECIPE

torch.set_num_threads(1)
os.environ["HF_HUB_OFFLINE"] = "1"

ENCODER = EncoderConfig.dense(2, 16, 4, 24, vocab_size=60, max_position_embeddings=16)


def random_model(num_instances: int, variant: str, mux_norm: float = 5.0) -> PruMUXModel:
    config = PruMUXConfig(
        encoder=ENCODER,
        num_instances=num_instances,
        num_labels=3,
        hidden_size=16,
        muxing_variant=variant,
        mux_norm=mux_norm,
    )
    return PruMUXModel(config, seed=num_instances).eval()


def batch(rows: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 60, (rows, 9), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, 4:] = 0
    return ids, mask


@pytest.mark.parametrize("variant", MUXING_VARIANTS)
def test_one_instance_is_the_plain_model(variant):
    model = random_model(1, variant)
    ids, mask = batch(4)
    with torch.no_grad():
        plain = model.classify(model.encoder(ids, mask)[:, 0])
        assert torch.equal(model(ids, mask).logits, plain)


@pytest.mark.parametrize("variant", MUXING_VARIANTS)
def test_the_published_layout_scales_even_one_instance(variant):
    x = torch.randn(3, 5, 8)
    multiplexer = Multiplexer(1, 8, variant, norm=2.0, seed=0, scale_single=True)
    assert torch.equal(multiplexer(x), x * multiplexer.vectors[0])


def test_gaussian_hadamard_vectors_are_datamux_ones():
    multiplexer = Multiplexer(3, 8, "gaussian_hadamard", norm=20.0, seed=7)
    drawn = torch.randn(3, 8, generator=torch.Generator().manual_seed(7))
    assert torch.allclose(multiplexer.vectors, drawn * (20.0 / drawn.norm(dim=-1, keepdim=True)))
    multiplexer.set_norm(4.0)
    assert torch.allclose(multiplexer.vectors, drawn * (4.0 / drawn.norm(dim=-1, keepdim=True)))


def test_shifted_vectors_stay_near_all_ones_at_their_norm():
    multiplexer = Multiplexer(2, 384, "shifted_gaussian", norm=5.0, seed=0)
    deviation = multiplexer.vectors - 1.0
    assert torch.allclose(deviation.norm(dim=-1), torch.full((2,), 5.0))
    assert (multiplexer.vectors < 0).float().mean() < 0.01  # a zero-mean vector flips about half the signs
    multiplexer.set_norm(2.5)
    assert torch.allclose((multiplexer.vectors - 1.0).norm(dim=-1), torch.full((2,), 2.5))
    assert torch.allclose((multiplexer.vectors - 1.0) * 2, deviation, atol=1e-6)
    with pytest.raises(ValueError, match="unsupported muxing_variant 'ones'"):
        Multiplexer(2, 8, "ones")


@pytest.mark.parametrize("variant", MUXING_VARIANTS)
def test_variant_survives_save_and_reload(tmp_path, variant):
    model = random_model(2, variant)
    model.save_pretrained(tmp_path)
    loaded = PruMUXModel.from_pretrained(tmp_path).eval()
    assert loaded.config.muxing_variant == variant and loaded.config == model.config
    assert torch.equal(loaded.multiplexer.vectors, model.multiplexer.vectors)
    ids, mask = batch(6)
    with torch.no_grad():
        assert torch.equal(loaded(ids, mask).logits, model(ids, mask).logits)


def test_a_dense_classifier_widened_keeps_its_weights(tmp_path):
    dense = random_model(1, "gaussian_hadamard")
    dense.save_pretrained(tmp_path)
    wide = PruMUXModel.from_pretrained(tmp_path, num_instances=2, mux_norm=5.0, muxing_variant="shifted_gaussian")
    assert wide.config.muxing_variant == "shifted_gaussian" and wide.num_instances == 2
    kept = dense.state_dict()
    for name, value in wide.state_dict().items():
        if name in kept and not name.startswith("multiplexer."):
            assert torch.equal(value, kept[name]), name
    assert torch.allclose((wide.multiplexer.vectors - 1.0).norm(dim=-1), torch.full((2,), 5.0))


def test_the_cpu_demo_method_multiplexes_the_dense_model_above_the_majority_class(
    tiny_bert_dir: Path, cue_task: Path, tmp_path: Path
) -> None:
    """cpu-demo's way to multiplex a plain base (shifted vectors, N > 1 started from the dense (1, 0) model, no
    retrieval), on the tiny BERT and the cue task, where DataMUX's vectors from the base stay at the majority class
    (test_early_stopping). Its figure on MiniLM and rt-polarity is a benchmark:
    `benchmarks/mux_warm_start.py --widths 2 --variants reference,cpu-demo`."""
    demo = load_recipe("cpu-demo")
    method = {name: getattr(demo, name) for name in ("muxing_variant", "mux_start", "task_mux_norm", "retrieval_steps")}
    assert (method["muxing_variant"], method["mux_start"]) == ("shifted_gaussian", "dense")
    recipe = load_recipe("tiny", CUE_RECIPE | method)
    task, model = str(cue_task), str(tiny_bert_dir)
    result = train_point(PointSpec(task, model, 2, 0.0, recipe, tmp_path), progress=False)
    assert result.phases["retrieval"] == "skipped" and result.phases["finetune"] == "trained"
    assert cache_entry(tmp_path, task, model, 1, recipe).model_dir.as_posix() in result.checkpoint
    labels = encode_task(load_task(task, seed=recipe.seed), load_tokenizer(model), recipe).validation.labels
    majority = labels.bincount().max().item() / len(labels)
    assert result.val_accuracy > majority + 0.1, (result.val_accuracy, majority)
