"""prune(): the materialised model computes what the masked model computes, and saves/reloads."""

from __future__ import annotations

import pytest
import torch

from prumux import (
    EncoderConfig,
    L0Module,
    PruMUXConfig,
    PruMUXModel,
    pad_ffn,
    prunable_parameters,
    prune,
)
from prumux.pruning import pruned_encoder_config

torch.set_num_threads(1)

ENCODER = EncoderConfig.dense(4, 16, 4, 24, vocab_size=60, max_position_embeddings=16)


def random_model(num_instances: int, pooler: bool = True, muxing_variant: str = "gaussian_hadamard") -> PruMUXModel:
    head = "pooler" if pooler else "linear"
    config = PruMUXConfig(
        encoder=ENCODER,
        num_instances=num_instances,
        num_labels=3,
        hidden_size=16,
        classifier_head=head,
        muxing_variant=muxing_variant,
        mux_norm=5.0,
    )
    model = PruMUXModel(config, seed=num_instances)
    with torch.no_grad():  # LayerNorm affine terms away from (1, 0) so slicing mistakes show
        for name, parameter in model.named_parameters():
            if "norm" in name:
                parameter.add_(0.3 * torch.randn_like(parameter))
    return model.eval()


def random_masks(seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    module = L0Module(ENCODER)
    with torch.no_grad():
        for log_alpha in module.mask_parameters():
            log_alpha.normal_(1.0, 2.0)
        module.log_alphas["head_layer_z"][0] = -20  # attention block of layer 0 removed
        module.log_alphas["head_z"][1] = -20  # every head of layer 1 pruned, block gate open
        module.log_alphas["head_layer_z"][1] = 20
        module.log_alphas["mlp_z"][2] = -20  # FFN of layer 2 removed
    masks = module.deterministic_masks()
    assert masks["hidden_z"].sum() < 16
    return masks


def inputs():
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 60, (5, 9), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, 4:] = 0
    mask[4, 6:] = 0
    return ids, mask


@pytest.mark.parametrize(
    "num_instances,pooler,seed,variant",
    [
        (1, True, 0, "gaussian_hadamard"),
        (1, False, 1, "gaussian_hadamard"),
        (2, True, 2, "gaussian_hadamard"),
        (3, True, 3, "gaussian_hadamard"),
        (2, True, 2, "shifted_gaussian"),
        (3, False, 3, "shifted_gaussian"),
    ],
)
def test_masked_equals_pruned(num_instances, pooler, seed, variant):
    model = random_model(num_instances, pooler, variant)
    masks = random_masks(seed)
    pruned = prune(model, masks)
    shapes = pruned.config.encoder
    assert pruned.encoder.layers[0].attention is None and pruned.encoder.layers[1].attention is None
    assert pruned.encoder.layers[2].ffn is None and shapes.hidden_size == int(masks["hidden_z"].sum())
    ids, mask = inputs()
    with torch.no_grad():
        expected = model(ids, mask, masks=masks).logits
        actual = pruned(ids, mask).logits
    assert (actual - expected).abs().max().item() < 1e-4
    assert model.config.encoder == ENCODER  # the source model is untouched
    assert torch.equal(pruned.multiplexer.vectors, model.multiplexer.vectors[:, masks["hidden_z"] > 0])


def test_pruned_parameter_count_matches_masks():
    model = random_model(2)
    masks = random_masks(4)
    pruned = prune(model, masks)
    counted = sum(
        parameter.numel()
        for name, parameter in pruned.encoder.named_parameters()
        if any(part in name for part in ("qkv", "attention.out", "ffn.up", "ffn.down"))
    )
    assert (
        counted
        == prunable_parameters(pruned.config.encoder)
        == prunable_parameters(pruned_encoder_config(ENCODER, masks))
    )


def test_at_sparsity_structure_prunes_to_target():
    module = L0Module.at_sparsity(ENCODER, 0.7, seed=1)
    pruned = prune(random_model(2), module.deterministic_masks())
    realised = 1 - prunable_parameters(pruned.config.encoder) / prunable_parameters(ENCODER)
    assert 0.7 <= realised < 0.75


def test_pruned_model_round_trips(tmp_path):
    pruned = prune(random_model(2), random_masks(5))
    pruned.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / "prumux_config.json").is_file()
    loaded = PruMUXModel.from_pretrained(tmp_path).eval()
    assert loaded.config == pruned.config
    ids, mask = inputs()
    with torch.no_grad():
        assert torch.equal(loaded(ids, mask).logits, pruned(ids, mask).logits)


def test_padded_ffn_widths_compute_what_the_pruned_model_computes():
    pruned = prune(random_model(2), random_masks(2))
    widths = pruned.config.encoder.intermediate_sizes
    padded = pad_ffn(pruned, 8)
    assert padded.config.encoder.intermediate_sizes == [-(-width // 8) * 8 for width in widths] != widths
    assert 0 in widths and all(width % 8 == 0 for width in padded.config.encoder.intermediate_sizes)
    ids, mask = inputs()
    with torch.no_grad():
        assert torch.allclose(padded(ids, mask).logits, pruned(ids, mask).logits, atol=1e-6)
    assert pruned.config.encoder.intermediate_sizes == widths  # the source model is untouched
    with pytest.raises(ValueError, match="multiple"):
        pad_ffn(pruned, 0)


def test_bad_masks_raise():
    model = random_model(2)
    with pytest.raises(ValueError, match="intermediate_z"):
        prune(model, {"intermediate_z": torch.ones(4, 23)})
    with pytest.raises(ValueError, match="hidden_z"):
        model(*inputs(), masks={"hidden_z": torch.ones(15)})
    with pytest.raises(ValueError, match="hidden_z"):
        prune(model, {"hidden_z": torch.full((16,), 0.5)})
