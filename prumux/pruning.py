"""Materialise CoFi masks: physically remove pruned heads, FFN dims, blocks and hidden dims."""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from prumux.config import EncoderConfig, PruMUXConfig

if TYPE_CHECKING:  # the model calls `prune` when it loads pruned weights: only its type is needed here
    from prumux.model import PruMUXModel


@dataclass
class Kept:
    """Indices that survive pruning, and the full mask values folded into the kept weights."""

    hidden: Tensor
    heads: list[Tensor]
    ffn: list[Tensor]
    masks: dict[str, Tensor]


def full_masks(config: EncoderConfig, masks: dict[str, Tensor]) -> dict[str, Tensor]:
    """`masks` validated, detached, on CPU, with every missing kind filled with ones."""
    config.check_masks(masks)
    filled = {name: torch.ones(shape) for name, shape in config.mask_shapes().items()}
    filled.update({name: mask.detach().float().cpu() for name, mask in masks.items()})
    return filled


def kept_units(config: EncoderConfig, masks: dict[str, Tensor]) -> Kept:
    """Which hidden dims, heads and FFN dims a mask dict keeps (a closed block keeps nothing)."""
    z = full_masks(config, masks)
    heads = [torch.nonzero(row * block).flatten() for row, block in zip(z["head_z"], z["head_layer_z"])]
    ffn = [torch.nonzero(row * block).flatten() for row, block in zip(z["intermediate_z"], z["mlp_z"])]
    return Kept(torch.nonzero(z["hidden_z"]).flatten(), heads, ffn, z)


def pruned_encoder_config(config: EncoderConfig, masks: dict[str, Tensor]) -> EncoderConfig:
    """The encoder shape left after pruning with `masks`."""
    kept = kept_units(config, masks)
    return replace(
        config,
        hidden_size=len(kept.hidden),
        num_heads=[len(h) for h in kept.heads],
        intermediate_sizes=[len(f) for f in kept.ffn],
    )


@torch.no_grad()
def prune(model: PruMUXModel, masks: dict[str, Tensor]) -> PruMUXModel:
    """A new, smaller PruMUXModel computing what `model` computes under (deterministic) `masks`."""
    encoder_config = model.config.encoder
    kept = kept_units(encoder_config, masks)
    if len(kept.hidden) == 0:
        raise ValueError("hidden_z removes every hidden dim; nothing would remain")
    if not torch.all(kept.masks["hidden_z"][kept.hidden] == 1):
        raise ValueError("hidden_z must be 0 or 1 to be pruned exactly (use L0Module.deterministic_masks)")
    config = replace(
        copy.deepcopy(model.config),
        encoder=pruned_encoder_config(encoder_config, masks),
        dense_shape=model.config.dense_shape or encoder_config.uniform_shape(),
    )
    state = {key: value.detach().cpu() for key, value in model.state_dict().items()}
    return _rebuilt(model, config, _slice_state(state, model, kept))


def _rebuilt(model: PruMUXModel, config: PruMUXConfig, state: dict[str, Tensor]) -> PruMUXModel:
    """A new model of `config` holding `state`, on `model`'s device and dtype, in its train/eval mode."""
    rebuilt = type(model)(config)
    rebuilt.load_state_dict(state, strict=True)
    parameter = next(model.parameters())
    return rebuilt.to(device=parameter.device, dtype=parameter.dtype).train(model.training)


def _slice_state(state: dict[str, Tensor], model: PruMUXModel, kept: Kept) -> dict[str, Tensor]:
    hidden = kept.hidden
    out = {key: value for key, value in state.items() if not key.startswith(("encoder.", "multiplexer."))}
    if model.encoder.project is not None:  # embeddings stay at their own width; the projection's outputs are pruned
        out |= {key: value for key, value in state.items() if key.startswith(("encoder.embeddings.", "multiplexer."))}
        out["encoder.project.weight"] = state["encoder.project.weight"][hidden]
        out["encoder.project.bias"] = state["encoder.project.bias"][hidden]
    else:
        for name in ("word", "position", "token_type"):
            out[f"encoder.embeddings.{name}.weight"] = state[f"encoder.embeddings.{name}.weight"][:, hidden]
        out.update(_norm(state, "encoder.embeddings.norm", hidden))
        out["multiplexer.vectors"] = state["multiplexer.vectors"][:, hidden]
    for index, layer in enumerate(model.encoder.layers):
        if layer.attention is not None and len(kept.heads[index]):
            out.update(_attention(state, f"encoder.layers.{index}.attention", index, kept, layer.attention.head_dim))
        if layer.ffn is not None and len(kept.ffn[index]):
            out.update(_ffn(state, f"encoder.layers.{index}.ffn", index, kept))
    for key in _encoder_readers(model):
        out[key] = state[key][:, hidden]
    if model.demultiplexer is not None:
        out.update(_demultiplexer(state, model, hidden))
    return out


def _demultiplexer(state: dict[str, Tensor], model: PruMUXModel, hidden: Tensor) -> dict[str, Tensor]:
    """The demux input columns that read encoder dims; MUX-PLMs' index vectors have the encoder's width too."""
    weight = state["demultiplexer.in_proj.weight"]
    width = model.demultiplexer.input_size
    features, index = weight[:, :width][:, hidden], weight[:, width:]
    out = {}
    if model.config.is_reference_layout:
        index = index[:, hidden]
        out["demultiplexer.index"] = state["demultiplexer.index"][:, hidden]
    out["demultiplexer.in_proj.weight"] = torch.cat([features, index], dim=1)
    return out


def _encoder_readers(model: PruMUXModel) -> list[str]:
    """Weights whose input columns are encoder hidden dims when no demux sits in between (ours at N = 1)."""
    if model.demultiplexer is not None:
        return []
    first = {"pooler": "pooler.weight", "electra": "classifier_dense.weight", "linear": "classifier.weight"}
    return [first[model.config.classifier_head], "token_head.dense.weight"]


def _norm(state: dict[str, Tensor], prefix: str, hidden: Tensor) -> dict[str, Tensor]:
    return {f"{prefix}.{part}": state[f"{prefix}.{part}"][hidden] for part in ("weight", "bias")}


def _attention(state: dict[str, Tensor], prefix: str, index: int, kept: Kept, head_dim: int) -> dict[str, Tensor]:
    heads, hidden = kept.heads[index], kept.hidden
    block = kept.masks["head_layer_z"][index]
    qkv_w = state[f"{prefix}.qkv.weight"]
    qkv_w = qkv_w.view(3, -1, head_dim, qkv_w.shape[-1])[:, heads][..., hidden].reshape(-1, len(hidden))
    qkv_b = state[f"{prefix}.qkv.bias"].view(3, -1, head_dim)[:, heads].reshape(-1)
    out_w = state[f"{prefix}.out.weight"]
    out_w = out_w.view(out_w.shape[0], -1, head_dim) * (kept.masks["head_z"][index] * block).view(1, -1, 1)
    out_w = out_w[hidden][:, heads].reshape(len(hidden), -1)
    return {
        f"{prefix}.qkv.weight": qkv_w,
        f"{prefix}.qkv.bias": qkv_b,
        f"{prefix}.out.weight": out_w,
        f"{prefix}.out.bias": (state[f"{prefix}.out.bias"] * block)[hidden],
        **_norm(state, f"{prefix}.norm", hidden),
    }


def _ffn(state: dict[str, Tensor], prefix: str, index: int, kept: Kept) -> dict[str, Tensor]:
    dims, hidden = kept.ffn[index], kept.hidden
    block = kept.masks["mlp_z"][index]
    down_w = state[f"{prefix}.down.weight"] * (kept.masks["intermediate_z"][index] * block)
    return {
        f"{prefix}.up.weight": state[f"{prefix}.up.weight"][dims][:, hidden],
        f"{prefix}.up.bias": state[f"{prefix}.up.bias"][dims],
        f"{prefix}.down.weight": down_w[hidden][:, dims],
        f"{prefix}.down.bias": (state[f"{prefix}.down.bias"] * block)[hidden],
        **_norm(state, f"{prefix}.norm", hidden),
    }


@torch.no_grad()
def pad_ffn(model: PruMUXModel, multiple: int) -> PruMUXModel:
    """A copy of `model` whose FFN widths are rounded up to a multiple of `multiple` with zero units.

    It computes exactly what `model` computes (an added unit's output weights are zero), but its
    matrices have widths that GPU matrix kernels take on their fast paths: CoFi leaves widths such as
    1342 or 221, whose rows are not 16-byte aligned in bf16.
    """
    encoder = model.config.encoder
    widths = [_round_up(width, multiple) for width in encoder.intermediate_sizes]
    return _padded(model, replace(encoder, intermediate_sizes=widths))


@torch.no_grad()
def pad_hidden(model: PruMUXModel, multiple: int) -> PruMUXModel:
    """A copy of `model` whose encoder hidden width is rounded up to a multiple of `multiple` with zero units.

    The added units stay exactly zero along the residual stream: their embedding columns, output rows and
    biases are zero, and every encoder LayerNorm becomes a `KeptLayerNorm` over the kept units only (zero on
    the added ones), so the copy computes what `model` computes. An inference-only model: its config's
    hidden width is the padded one, which a saved copy would not normalise the same way.
    """
    encoder = model.config.encoder
    kept, width = encoder.hidden_size, _round_up(encoder.hidden_size, multiple)
    padded = _padded(model, replace(encoder, hidden_size=width))
    if width == kept:
        return padded
    norms = [layer.attention for layer in padded.encoder.layers] + [layer.ffn for layer in padded.encoder.layers]
    if not encoder.projects_embeddings:
        norms.append(padded.encoder.embeddings)
    for block in filter(None, norms):
        block.norm = KeptLayerNorm(block.norm, kept)
    return padded


class KeptLayerNorm(nn.LayerNorm):
    """A LayerNorm over the first `kept` units of a zero-padded width; its output is zero on the others."""

    def __init__(self, norm: nn.LayerNorm, kept: int):
        super().__init__(norm.normalized_shape, eps=norm.eps, device=norm.weight.device, dtype=norm.weight.dtype)
        self.load_state_dict(norm.state_dict())
        self.kept = kept

    def forward(self, x: Tensor) -> Tensor:
        kept = self.kept
        out = F.layer_norm(x[..., :kept], (kept,), self.weight[:kept], self.bias[:kept], self.eps)
        return F.pad(out, (0, self.normalized_shape[0] - kept))


def _round_up(width: int, multiple: int) -> int:
    if multiple < 1:
        raise ValueError(f"multiple must be at least 1, got {multiple}")
    return -(-width // multiple) * multiple


def _padded(model: PruMUXModel, encoder: EncoderConfig) -> PruMUXModel:
    """`model` rebuilt with the (wider) `encoder` shape, every weight zero-padded at the end of each widened dim.

    The demux input projection reads [encoder state; index vector]: its encoder columns are padded in the middle.
    """
    config = replace(copy.deepcopy(model.config), encoder=encoder)
    shapes = {key: value.shape for key, value in type(model)(config).state_dict().items()}
    state = {key: value.detach().cpu() for key, value in model.state_dict().items()}
    padded = {key: _pad_to(value, shapes[key]) for key, value in state.items()}
    if model.demultiplexer is not None:
        width, weight = model.demultiplexer.input_size, state["demultiplexer.in_proj.weight"]
        features, index = weight[:, :width], weight[:, width:]
        index_width = shapes["demultiplexer.index"][-1]
        padded["demultiplexer.in_proj.weight"] = torch.cat(
            [_pad_to(features, (len(weight), encoder.hidden_size)), _pad_to(index, (len(weight), index_width))], dim=1
        )
    return _rebuilt(model, config, padded)


def _pad_to(tensor: Tensor, shape: tuple[int, ...]) -> Tensor:
    """`tensor` with zeros appended at the end of every dim up to `shape`."""
    extra = [size - own for own, size in zip(tensor.shape, shape)]
    return F.pad(tensor, [side for more in reversed(extra) for side in (0, more)]) if any(extra) else tensor
