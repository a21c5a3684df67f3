"""CoFi's `zs.pt` masks beside full-size weights (CoFi and PruMUX pruning-stage outputs, "format A").

The stored mask values are soft (kept heads at 0.35-0.99, say). CoFi evaluates such a model by
folding them into the weights first (its `update_params`) and then removing the zero units, so
loading does exactly that: `fold_masks` scales our state dict the way CoFi scales its own, and
returns the 0/1 masks that `prumux.prune` then materialises.

Folding rules (CoFi, PruMUX `utils/cofi_utils.py`): head_z scales the value rows of its head;
head_layer_z the attention output projection (weight and bias); intermediate_z the FFN output
projection's columns, mlp_z its weight and bias; hidden_z the input columns of every embedding
table, mux vector, demux input, Q/K/V, FFN-up and pooler weight, and the output rows of the
attention output projection (weight and bias) and of the FFN output projection (weight only).
LayerNorms are not scaled.
"""

from __future__ import annotations

import torch
from torch import Tensor

from prumux.config import EncoderConfig, PruMUXConfig


def stored_mask_shapes(encoder: EncoderConfig) -> dict[str, tuple[tuple[int, ...], ...]]:
    """The shapes each mask may have in zs.pt: CoFi's broadcastable ones, or ours."""
    layers, heads = encoder.num_layers, encoder.num_heads[0]
    ffn, hidden = encoder.intermediate_sizes[0], encoder.hidden_size
    return {
        "head_z": ((layers, 1, heads, 1, 1), (layers, heads)),
        "head_layer_z": ((layers,),),
        "intermediate_z": ((layers, 1, 1, ffn), (layers, ffn)),
        "mlp_z": ((layers,),),
        "hidden_z": ((hidden,),),
    }


def check_mask_shapes(shapes: dict[str, tuple[int, ...]], encoder: EncoderConfig, source: str) -> None:
    """Raise a one-line ValueError unless zs.pt's masks fit the full-size encoder of the weights."""
    if encoder.projects_embeddings or not encoder.is_uniform() or not encoder.num_layers:
        raise ValueError(f"{source}: zs.pt needs the full-size weights of a BERT-shaped encoder beside it")
    allowed = stored_mask_shapes(encoder)
    for name, shape in shapes.items():
        if name not in allowed:
            raise ValueError(f"{source}: zs.pt has an unknown mask {name!r} (known: {', '.join(allowed)})")
        if tuple(shape) not in allowed[name]:
            raise ValueError(f"{source}: zs.pt mask {name} has shape {tuple(shape)}, expected {allowed[name][0]}")


def our_masks(stored: dict[str, Tensor], encoder: EncoderConfig) -> dict[str, Tensor]:
    """zs.pt's masks reshaped to ours ([layers, heads], [layers, d_ff], [H], [layers], [layers])."""
    shapes = encoder.mask_shapes()
    return {name: value.reshape(shapes[name]) for name, value in stored.items()}


@torch.no_grad()
def fold_masks(state: dict[str, Tensor], masks: dict[str, Tensor], config: PruMUXConfig) -> dict[str, Tensor]:
    """`state` (our keys, full size) with the soft mask values folded in, as CoFi folds them."""
    state = dict(state)
    encoder = config.encoder
    for layer in range(encoder.num_layers):
        _fold_layer(state, masks, layer, encoder)
    hidden_z = masks.get("hidden_z")
    if hidden_z is not None:
        _fold_hidden(state, hidden_z, config)
    return state


def binary_masks(masks: dict[str, Tensor]) -> dict[str, Tensor]:
    """Which units the soft masks keep (value != 0), as 0/1 masks for `prumux.prune`."""
    return {name: (value != 0).float() for name, value in masks.items()}


def _fold_layer(state: dict[str, Tensor], masks: dict[str, Tensor], layer: int, encoder: EncoderConfig) -> None:
    attention, ffn = f"encoder.layers.{layer}.attention.", f"encoder.layers.{layer}.ffn."
    if "head_z" in masks:
        inner = encoder.num_heads[layer] * encoder.head_dim
        value_rows = masks["head_z"][layer].repeat_interleave(encoder.head_dim)
        scale = torch.cat([torch.ones(2 * inner), value_rows])
        _scale(state, attention + "qkv.weight", scale[:, None])
        _scale(state, attention + "qkv.bias", scale)
    if "head_layer_z" in masks:
        _scale(state, attention + "out.weight", masks["head_layer_z"][layer])
        _scale(state, attention + "out.bias", masks["head_layer_z"][layer])
    if "intermediate_z" in masks:
        _scale(state, ffn + "down.weight", masks["intermediate_z"][layer][None, :])
    if "mlp_z" in masks:
        _scale(state, ffn + "down.weight", masks["mlp_z"][layer])
        _scale(state, ffn + "down.bias", masks["mlp_z"][layer])


def _fold_hidden(state: dict[str, Tensor], hidden_z: Tensor, config: PruMUXConfig) -> None:
    columns = [f"encoder.embeddings.{name}.weight" for name in ("word", "position", "token_type")]
    columns += ["multiplexer.vectors", "pooler.weight"]
    for layer in range(config.encoder.num_layers):
        columns += [f"encoder.layers.{layer}.attention.qkv.weight", f"encoder.layers.{layer}.ffn.up.weight"]
        _scale(state, f"encoder.layers.{layer}.attention.out.weight", hidden_z[:, None])
        _scale(state, f"encoder.layers.{layer}.attention.out.bias", hidden_z)
        _scale(state, f"encoder.layers.{layer}.ffn.down.weight", hidden_z[:, None])
    for key in columns:
        if key in state and state[key].shape[-1] == hidden_z.numel():
            _scale(state, key, hidden_z)
    if config.is_reference_layout and "demultiplexer.in_proj.weight" in state:
        _scale(state, "demultiplexer.in_proj.weight", torch.cat([hidden_z, hidden_z]))


def _scale(state: dict[str, Tensor], key: str, factor: Tensor) -> None:
    if key in state:
        state[key] = state[key] * factor
