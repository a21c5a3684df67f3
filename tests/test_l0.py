"""L0Module: CoFi's parameter count, hard-concrete samples, Lagrangian control, deterministic masks."""

from __future__ import annotations

import pytest
import torch

from prumux import EncoderConfig, L0Module, prunable_parameters
from prumux.pruning import pruned_encoder_config

torch.set_num_threads(1)

SMALL = EncoderConfig.dense(3, 16, 4, 32, vocab_size=60, max_position_embeddings=16)


def test_prunable_parameters_match_cofi_counts():
    assert prunable_parameters(EncoderConfig.dense(12, 768, 12, 3072)) == 85_017_600
    assert prunable_parameters(EncoderConfig.dense(6, 384, 12, 1536)) == 10_637_568
    assert L0Module(SMALL).prunable_parameters == prunable_parameters(SMALL)


def test_hard_concrete_sample_has_exact_zeros_and_ones():
    torch.manual_seed(0)
    module = L0Module(SMALL)
    with torch.no_grad():
        for log_alpha in module.mask_parameters():
            log_alpha.normal_(0, 3)
    values = torch.cat([mask.flatten() for _ in range(20) for mask in module.sample().values()])
    assert values.min() >= 0 and values.max() <= 1
    assert (values == 0).any() and (values == 1).any()
    assert ((values > 0) & (values < 1)).any()


def test_expected_sparsity_at_init_and_gradient():
    module = L0Module(SMALL)
    sparsity = module.expected_sparsity()
    assert 0 < sparsity.item() < 1
    sparsity.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in module.mask_parameters())


def test_lagrangian_moves_expected_sparsity_to_target():
    torch.manual_seed(0)
    module = L0Module(SMALL)
    target = 0.8
    masks_opt = torch.optim.Adam(module.mask_parameters(), lr=0.1)
    lambda_opt = torch.optim.Adam(module.lagrangian_parameters(), lr=0.1, maximize=True)
    start = abs(module.expected_sparsity().item() - target)
    for _ in range(30):
        masks_opt.zero_grad()
        lambda_opt.zero_grad()
        module.lagrangian(target).backward()
        masks_opt.step()
        lambda_opt.step()
    end = abs(module.expected_sparsity().item() - target)
    assert end < start / 2


def test_lagrangian_formula():
    module = L0Module(SMALL)
    with torch.no_grad():
        module.lambda_1.fill_(2.0)
        module.lambda_2.fill_(3.0)
    gap = module.expected_sparsity() - 0.5
    assert torch.allclose(module.lagrangian(0.5), 2 * gap + 3 * gap**2)


def test_deterministic_masks_keep_expected_counts():
    torch.manual_seed(1)
    module = L0Module(SMALL)
    with torch.no_grad():
        for log_alpha in module.mask_parameters():
            log_alpha.normal_(0, 3)
    masks = module.deterministic_masks()
    scores = module.scores()
    assert torch.equal((masks["head_z"] > 0).sum(-1), scores["head_z"].sum(-1).round().long())
    assert int((masks["hidden_z"] > 0).sum()) == round(scores["hidden_z"].sum().item())
    assert set(masks["hidden_z"].unique().tolist()) <= {0.0, 1.0}
    kept_heads = (masks["head_z"] > 0) & (scores["head_z"] < scores["head_z"].min(-1, keepdim=True).values)
    assert not kept_heads.any()


@pytest.mark.parametrize("sparsity", [0.0, 0.6, 0.95])
def test_at_sparsity_realises_the_target(sparsity):
    config = EncoderConfig.dense(6, 384, 12, 1536)
    module = L0Module.at_sparsity(config, sparsity, seed=3)
    masks = module.deterministic_masks()
    realised = 1 - prunable_parameters(pruned_encoder_config(config, masks)) / prunable_parameters(config)
    assert sparsity <= realised < sparsity + 0.002
    assert abs(module.expected_sparsity().item() - realised) < 1e-3


def test_bad_sparsity_raises():
    for bad in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError, match="sparsity"):
            L0Module.at_sparsity(SMALL, bad)


def test_wrong_mask_shapes_raise():
    with pytest.raises(ValueError, match="head_z"):
        SMALL.check_masks({"head_z": torch.ones(3, 5)})
    with pytest.raises(ValueError, match="unknown mask"):
        SMALL.check_masks({"heads": torch.ones(3, 4)})
