"""A compact BERT encoder with per-layer head counts, per-layer FFN sizes and a pruned hidden width.

CoFi masks are applied in the forward pass when a mask dict is given:
- head_z scales each head's context, head_layer_z the attention block output;
- intermediate_z scales the FFN activations, mlp_z the FFN block output;
- hidden_z gates the residual stream: every LayerNorm normalises over the kept dims only
  (statistics weighted by hidden_z) and its output is multiplied by hidden_z.
A block whose gates are all exactly zero is skipped, LayerNorm included, which is what a
pruned layer with no heads (or no FFN) computes. Together these make the masked model and
`prune(model, masks)` compute the same function.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from prumux.config import EncoderConfig

SUPPORTED_MODEL_TYPES = ("bert",)


def masked_layer_norm(x: Tensor, norm: nn.LayerNorm, hidden_z: Tensor | None) -> Tensor:
    """LayerNorm over the dims kept by hidden_z (weighted by it), output gated by hidden_z."""
    if hidden_z is None:
        return norm(x)
    weights = hidden_z / hidden_z.sum()
    mean = (x * weights).sum(-1, keepdim=True)
    centred = x - mean
    var = (centred.square() * weights).sum(-1, keepdim=True)
    return (centred * torch.rsqrt(var + norm.eps) * norm.weight + norm.bias) * hidden_z


def add_residual(out: Tensor, x: Tensor) -> Tensor:
    """out + x, written into `out`: a block's fresh output, which no backward pass needs."""
    return out.add_(x)


def gelu(x: Tensor) -> Tensor:
    """GELU, in place when no gradient flows through `x` (saves a [tokens, d_ff] allocation)."""
    return F.gelu(x) if x.requires_grad else torch.ops.aten.gelu_(x)


def skip_if_closed(gate: Tensor | None, new: Tensor, old: Tensor) -> Tensor:
    """`new` where the block's gate is open, `old` (block skipped) where it is exactly zero."""
    if gate is None:
        return new
    return torch.where(gate != 0, new, old)


class Embeddings(nn.Module):
    """Word + absolute position + token type embeddings, then LayerNorm and dropout."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.word = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout)

    def forward(
        self, input_ids: Tensor, token_type_ids: Tensor | None = None, hidden_z: Tensor | None = None
    ) -> Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.word(input_ids)
        # In-place adds of small [L, H] tables: the [B*N, L, H] tensor is the multiplexer's main cost.
        if token_type_ids is None:
            x += self.position(positions) + self.token_type.weight[0]
        else:
            x += self.position(positions)
            x += self.token_type(token_type_ids)
        return self.dropout(masked_layer_norm(x, self.norm, hidden_z))


class Attention(nn.Module):
    """Multi-head self-attention with fused QKV projection, output projection and post-LayerNorm."""

    def __init__(self, config: EncoderConfig, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = config.head_dim
        inner = num_heads * config.head_dim
        self.qkv = nn.Linear(config.hidden_size, 3 * inner)
        self.out = nn.Linear(inner, config.hidden_size)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout)
        self.attention_dropout = config.attention_dropout

    def forward(
        self,
        x: Tensor,
        attn_bias: Tensor | None,
        head_z: Tensor | None = None,
        head_layer_z: Tensor | None = None,
        hidden_z: Tensor | None = None,
    ) -> Tensor:
        batch, length, _ = x.shape
        qkv = self.qkv(x).view(batch, length, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        dropout = self.attention_dropout if self.training else 0.0
        context = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias, dropout_p=dropout)
        if head_z is not None:
            context = context * head_z.view(1, -1, 1, 1)
        out = self.out(context.transpose(1, 2).reshape(batch, length, -1))
        if head_layer_z is not None:
            out = out * head_layer_z
        new = masked_layer_norm(add_residual(self.dropout(out), x), self.norm, hidden_z)
        gate = _block_gate(head_z, head_layer_z)
        return skip_if_closed(gate, new, x)


class FeedForward(nn.Module):
    """Position-wise FFN (GELU) with post-LayerNorm."""

    def __init__(self, config: EncoderConfig, intermediate_size: int):
        super().__init__()
        self.up = nn.Linear(config.hidden_size, intermediate_size)
        self.down = nn.Linear(intermediate_size, config.hidden_size)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout)

    def forward(
        self,
        x: Tensor,
        intermediate_z: Tensor | None = None,
        mlp_z: Tensor | None = None,
        hidden_z: Tensor | None = None,
    ) -> Tensor:
        h = gelu(self.up(x))
        if intermediate_z is not None:
            h = h * intermediate_z
        out = self.down(h)
        if mlp_z is not None:
            out = out * mlp_z
        new = masked_layer_norm(add_residual(self.dropout(out), x), self.norm, hidden_z)
        return skip_if_closed(_block_gate(intermediate_z, mlp_z), new, x)


def _block_gate(unit_z: Tensor | None, block_z: Tensor | None) -> Tensor | None:
    """Zero exactly when the block is closed: its own gate is zero or all its units are."""
    if unit_z is None:
        return block_z
    gate = unit_z.amax()
    return gate if block_z is None else gate * block_z


class Layer(nn.Module):
    """One Transformer layer; a block of size 0 is absent and passes its input through."""

    def __init__(self, config: EncoderConfig, num_heads: int, intermediate_size: int):
        super().__init__()
        self.attention = Attention(config, num_heads) if num_heads > 0 else None
        self.ffn = FeedForward(config, intermediate_size) if intermediate_size > 0 else None

    def forward(self, x: Tensor, attn_bias: Tensor | None, masks: dict[str, Tensor | None]) -> Tensor:
        if self.attention is not None:
            x = self.attention(x, attn_bias, masks.get("head_z"), masks.get("head_layer_z"), masks.get("hidden_z"))
        if self.ffn is not None:
            x = self.ffn(x, masks.get("intermediate_z"), masks.get("mlp_z"), masks.get("hidden_z"))
        return x


class Encoder(nn.Module):
    """BERT embeddings + layers, returning the last hidden state [B, L, H]."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.layers = nn.ModuleList(
            Layer(config, heads, ffn) for heads, ffn in zip(config.num_heads, config.intermediate_sizes)
        )

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        masks: dict[str, Tensor] | None = None,
    ) -> Tensor:
        if masks:
            self.config.check_masks(masks)
        x = self.embeddings(input_ids, token_type_ids, (masks or {}).get("hidden_z"))
        return self.encode(x, attention_mask, masks)[0]

    def encode(
        self,
        x: Tensor,
        attention_mask: Tensor | None = None,
        masks: dict[str, Tensor] | None = None,
        output_hidden_states: bool = False,
    ) -> tuple[Tensor, list[Tensor] | None]:
        """Run the layers on embedded states [B, L, H]; optionally return every layer's input/output."""
        masks = masks or {}
        if masks:
            self.config.check_masks(masks)
        attn_bias = attention_bias(attention_mask, x.dtype)
        hidden_states = [x] if output_hidden_states else None
        for index, layer in enumerate(self.layers):
            x = layer(x, attn_bias, layer_masks(masks, index))
            if hidden_states is not None:
                hidden_states.append(x)
        return x, hidden_states

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path) -> Encoder:
        """Load a HF BERT-family checkpoint (hub name or folder) into our modules."""
        config, state = load_hf_checkpoint(name_or_path)
        encoder = cls(config)
        encoder.load_hf_state_dict(state)
        return encoder

    def load_hf_state_dict(self, state: dict[str, Tensor]) -> None:
        """Copy weights from a HF BERT state dict (keys without the `bert.` prefix)."""
        self.load_state_dict(map_hf_state_dict(state, self.config), strict=True)


def layer_masks(masks: dict[str, Tensor], index: int) -> dict[str, Tensor | None]:
    """The slice of a mask dict that layer `index` uses."""
    return {
        "head_z": _row(masks.get("head_z"), index),
        "head_layer_z": _row(masks.get("head_layer_z"), index),
        "intermediate_z": _row(masks.get("intermediate_z"), index),
        "mlp_z": _row(masks.get("mlp_z"), index),
        "hidden_z": masks.get("hidden_z"),
    }


def _row(mask: Tensor | None, index: int) -> Tensor | None:
    return None if mask is None else mask[index]


def attention_bias(attention_mask: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    """Additive key mask [B, 1, 1, L]: 0 for real tokens, the dtype's minimum for padding."""
    if attention_mask is None:
        return None
    keep = attention_mask[:, None, None, :].to(torch.bool)
    return torch.zeros(keep.shape, dtype=dtype, device=keep.device).masked_fill(~keep, torch.finfo(dtype).min)


def map_hf_state_dict(state: dict[str, Tensor], config: EncoderConfig) -> dict[str, Tensor]:
    """Rename (and fuse QKV of) a HF BERT encoder state dict into this module's names."""
    mapped = {
        "embeddings.word.weight": state["embeddings.word_embeddings.weight"],
        "embeddings.position.weight": state["embeddings.position_embeddings.weight"],
        "embeddings.token_type.weight": state["embeddings.token_type_embeddings.weight"],
        "embeddings.norm.weight": state["embeddings.LayerNorm.weight"],
        "embeddings.norm.bias": state["embeddings.LayerNorm.bias"],
    }
    for i in range(config.num_layers):
        src, dst = f"encoder.layer.{i}.", f"layers.{i}."
        for part in ("weight", "bias"):
            mapped[f"{dst}attention.qkv.{part}"] = torch.cat(
                [state[f"{src}attention.self.{name}.{part}"] for name in ("query", "key", "value")]
            )
            mapped[f"{dst}attention.out.{part}"] = state[f"{src}attention.output.dense.{part}"]
            mapped[f"{dst}attention.norm.{part}"] = state[f"{src}attention.output.LayerNorm.{part}"]
            mapped[f"{dst}ffn.up.{part}"] = state[f"{src}intermediate.dense.{part}"]
            mapped[f"{dst}ffn.down.{part}"] = state[f"{src}output.dense.{part}"]
            mapped[f"{dst}ffn.norm.{part}"] = state[f"{src}output.LayerNorm.{part}"]
    return mapped


def encoder_config_from_hf(hf_config: dict[str, Any], source: str) -> EncoderConfig:
    """Our EncoderConfig for a HF BERT config dict; ValueError for other architectures."""
    model_type = hf_config.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ValueError(
            f"{source} is a {model_type!r} checkpoint; only BERT-family ({', '.join(SUPPORTED_MODEL_TYPES)}) is supported"
        )
    if (
        hf_config.get("position_embedding_type", "absolute") != "absolute"
        or hf_config.get("hidden_act", "gelu") != "gelu"
    ):
        raise ValueError(f"{source}: only absolute positions and GELU activations are supported")
    return EncoderConfig.dense(
        num_layers=hf_config["num_hidden_layers"],
        hidden_size=hf_config["hidden_size"],
        num_heads=hf_config["num_attention_heads"],
        intermediate_size=hf_config["intermediate_size"],
        vocab_size=hf_config["vocab_size"],
        max_position_embeddings=hf_config["max_position_embeddings"],
        type_vocab_size=hf_config["type_vocab_size"],
        layer_norm_eps=hf_config["layer_norm_eps"],
        hidden_dropout=hf_config["hidden_dropout_prob"],
        attention_dropout=hf_config["attention_probs_dropout_prob"],
        pad_token_id=hf_config.get("pad_token_id") or 0,
    )


def load_hf_checkpoint(name_or_path: str | Path) -> tuple[EncoderConfig, dict[str, Tensor]]:
    """Config and full state dict (`bert.` prefix stripped) of a HF BERT checkpoint."""
    source = str(name_or_path)
    config = encoder_config_from_hf(json.loads(Path(_checkpoint_file(source, ("config.json",))).read_text()), source)
    weights = _checkpoint_file(source, ("model.safetensors", "pytorch_model.bin"))
    if weights.endswith(".safetensors"):
        from safetensors.torch import load_file

        state = load_file(weights)
    else:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    return config, {key.removeprefix("bert."): value for key, value in state.items()}


def _checkpoint_file(source: str, candidates: tuple[str, ...]) -> str:
    """Path of the first existing candidate file in a folder, or downloaded from the hub."""
    folder = Path(source)
    if folder.is_dir():
        for name in candidates:
            if (folder / name).is_file():
                return str(folder / name)
        raise OSError(f"{source} has none of {', '.join(candidates)}")
    from huggingface_hub import hf_hub_download

    errors = []
    for name in candidates:
        try:
            return hf_hub_download(source, name)
        except Exception as error:  # noqa: BLE001 - try the next file name, report all at the end
            errors.append(f"{name}: {type(error).__name__}")
    raise OSError(f"cannot load {source} ({'; '.join(errors)})")
