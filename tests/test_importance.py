"""Fisher-ranked initial gates: dead units rank last, the kinds compete per parameter, hidden dims can be frozen."""

from __future__ import annotations

import pytest
import torch

from prumux import EncoderConfig, L0Module, PruMUXModel
from trainers.data import BatchStream, EncodedSplit
from trainers.importance import mask_fisher, rank_log_alphas, unit_costs
from trainers.phases.pruning import l0_optimizers, target_sparsity
from trainers.recipes import load_recipe


@pytest.fixture(scope="module")
def model(tiny_bert_dir) -> PruMUXModel:
    torch.manual_seed(0)
    model = PruMUXModel.from_pretrained(tiny_bert_dir, num_instances=2)
    head_dim = model.config.encoder.head_dim
    with torch.no_grad():  # layer 0, head 1 and FFN dim 5 can no longer change the output
        model.encoder.layers[0].attention.out.weight[:, head_dim : 2 * head_dim] = 0
        model.encoder.layers[0].ffn.down.weight[:, 5] = 0
    return model


@pytest.fixture(scope="module")
def stream() -> BatchStream:
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 30000, (64, 12), generator=generator)
    labels = torch.randint(0, 2, (64,), generator=generator)
    split = EncodedSplit(ids, torch.ones_like(ids), torch.zeros_like(ids), labels)
    return BatchStream(split, rows=16, seed=0)


def test_fisher_is_zero_exactly_for_units_that_cannot_matter(model, stream) -> None:
    fisher = mask_fisher(model, stream, batches=3, device=torch.device("cpu"))
    assert fisher["head_z"].shape == (2, 4) and fisher["intermediate_z"].shape == (2, 64)
    assert fisher["head_z"][0, 1] == 0 and fisher["intermediate_z"][0, 5] == 0
    assert (fisher["head_z"] > 0).sum() == 7 and (fisher["intermediate_z"] > 0).sum() == 127
    assert model.training  # restored


def test_ranked_gates_put_dead_units_last_and_keep_the_mean(model, stream) -> None:
    fisher = mask_fisher(model, stream, batches=3, device=torch.device("cpu"))
    l0 = L0Module(model.config.encoder)
    before = {name: log_alpha.detach().clone() for name, log_alpha in l0.log_alphas.items()}
    rank_log_alphas(l0, fisher, unit_costs(model), spread=3.0)
    shifts = {name: l0.log_alphas[name].detach() - before[name] for name in ("head_z", "intermediate_z")}
    everything = torch.cat([shift.flatten() for shift in shifts.values()])
    assert everything.min() == pytest.approx(-3.0) and everything.max() == pytest.approx(3.0)
    assert everything.mean() == pytest.approx(0.0, abs=1e-5)
    per_parameter = torch.cat([(fisher[name] / unit_costs(model)[name]).flatten() for name in shifts])
    assert torch.equal(everything.argsort(), per_parameter.argsort())
    assert torch.equal(l0.log_alphas["hidden_z"], before["hidden_z"])  # hidden dims are not ranked


def test_frozen_hidden_dims_stay_whole_while_the_lagrangian_reaches_the_target() -> None:
    torch.manual_seed(0)
    recipe = load_recipe("cpu-demo")
    config = EncoderConfig.dense(num_layers=6, hidden_size=384, num_heads=12, intermediate_size=1536)
    l0 = L0Module(config, droprate_init=recipe.droprate_init)
    l0.keep_all("hidden_z")
    alpha_optimizer, lambda_optimizer = l0_optimizers(l0, recipe)
    target, warmup = 0.7, recipe.lagrangian_warmup_steps
    for step in range(3 * warmup):
        l0.lagrangian(target_sparsity(step, target, warmup)).backward()
        for optimizer in (alpha_optimizer, lambda_optimizer):
            optimizer.step()
            optimizer.zero_grad()
    assert l0.expected_sparsity().item() == pytest.approx(target, abs=0.02)
    assert bool((l0.deterministic_masks()["hidden_z"] == 1).all())
    assert bool((l0.sample()["hidden_z"] == 1).all())
