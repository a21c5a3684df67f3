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

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from prumux.config import EncoderConfig


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
    """Word + position + token type embeddings, then LayerNorm and dropout.

    `add_positions` is the same module applied to already-embedded (mixed) states, as
    MUX-PLMs' second embedding pass does.
    """

    def __init__(self, config: EncoderConfig):
        super().__init__()
        width = config.embedding_width
        self.config = config
        self.word = nn.Embedding(config.vocab_size, width, padding_idx=config.pad_token_id)
        self.position = nn.Embedding(config.max_position_embeddings, width)
        self.token_type = nn.Embedding(config.type_vocab_size, width)
        self.norm = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout)

    def forward(
        self, input_ids: Tensor, token_type_ids: Tensor | None = None, hidden_z: Tensor | None = None
    ) -> Tensor:
        x = self.word(input_ids)
        # In-place adds of small [L, H] tables: the [B*N, L, H] tensor is the multiplexer's main cost.
        if self.config.positions == "roberta":
            x += self.position(self._roberta_positions(input_ids))
        else:
            x += self.position(torch.arange(input_ids.shape[1], device=input_ids.device))
        if token_type_ids is None:
            x += self.token_type.weight[0]
        else:
            x += self.token_type(token_type_ids)
        return self.dropout(masked_layer_norm(x, self.norm, hidden_z))

    def add_positions(self, x: Tensor, hidden_z: Tensor | None = None) -> Tensor:
        """Embedded states [B, L, H] + absolute positions + token type 0, LayerNorm, dropout."""
        positions = torch.arange(x.shape[1], device=x.device)
        x = x + self.position(positions) + self.token_type.weight[0]
        return self.dropout(masked_layer_norm(x, self.norm, hidden_z))

    def _roberta_positions(self, input_ids: Tensor) -> Tensor:
        """RoBERTa's: real tokens count from pad_token_id + 1, padding sits at pad_token_id."""
        pad = self.config.pad_token_id
        real = input_ids.ne(pad).int()
        return torch.cumsum(real, dim=1) * real + pad


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
    """BERT-family embeddings (+ ELECTRA's projection when narrower) and layers, returning [B, L, H]."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.project = nn.Linear(config.embedding_width, config.hidden_size) if config.projects_embeddings else None
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
        x = self.embed(input_ids, token_type_ids, (masks or {}).get("hidden_z"))
        return self.encode(x, attention_mask, masks)[0]

    def embed(self, input_ids: Tensor, token_type_ids: Tensor | None = None, hidden_z: Tensor | None = None) -> Tensor:
        """Token embeddings [B, L, E] (E = the embedding width; hidden_z gates them when E is the hidden width)."""
        return self.embeddings(input_ids, token_type_ids, self._embedding_z(hidden_z))

    def embed_mixed(self, x: Tensor, hidden_z: Tensor | None = None) -> Tensor:
        """MUX-PLMs' second embedding pass over mixed states [B, L, E]."""
        return self.embeddings.add_positions(x, self._embedding_z(hidden_z))

    def encode(
        self,
        x: Tensor,
        attention_mask: Tensor | None = None,
        masks: dict[str, Tensor] | None = None,
        output_hidden_states: bool = False,
    ) -> tuple[Tensor, list[Tensor] | None]:
        """Run the layers on embedded states [B, L, E]; optionally return every layer's input/output."""
        masks = masks or {}
        if masks:
            self.config.check_masks(masks)
        if self.project is not None:
            x = self.project(x)
            if masks.get("hidden_z") is not None:
                x = x * masks["hidden_z"]
        attn_bias = attention_bias(attention_mask, x.dtype)
        hidden_states = [x] if output_hidden_states else None
        for index, layer in enumerate(self.layers):
            x = layer(x, attn_bias, layer_masks(masks, index))
            if hidden_states is not None:
                hidden_states.append(x)
        return x, hidden_states

    def _embedding_z(self, hidden_z: Tensor | None) -> Tensor | None:
        return None if self.config.projects_embeddings else hidden_z

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path) -> Encoder:
        """The encoder of a HF BERT-family checkpoint (BERT, RoBERTa, ELECTRA; hub name or folder)."""
        from prumux.checkpoints import find_checkpoint
        from prumux.checkpoints.hf import dense_encoder_config, encoder_config, encoder_state

        files = find_checkpoint(name_or_path)
        dense_encoder_config(files.hf_config, files.source)
        config = encoder_config(files.hf_config, files.shapes(), files.source)
        encoder = cls(config)
        state = encoder_state(files.state(), config)
        encoder.load_state_dict({key.removeprefix("encoder."): value for key, value in state.items()}, strict=True)
        return encoder


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
