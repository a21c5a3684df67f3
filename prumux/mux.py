"""The multiplexer (fixed per-instance vectors, mixed by a mean) and the RSA index demultiplexer."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def gaussian_hadamard(num_instances: int, width: int, norm: float, generator: torch.Generator) -> Tensor:
    """DataMUX / MUX-PLMs vectors: Gaussian rows rescaled to L2 norm `norm`."""
    vectors = torch.randn(num_instances, width, generator=generator)
    return vectors * (norm / vectors.norm(dim=-1, keepdim=True))


def shifted_gaussian(num_instances: int, width: int, norm: float, generator: torch.Generator) -> Tensor:
    """1 + a Gaussian deviation of L2 norm `norm` per row: close to all-ones, so a pretrained encoder still
    reads each instance's embedding (a zero-mean Hadamard product flips about half its signs)."""
    return 1.0 + gaussian_hadamard(num_instances, width, norm, generator)


# variant -> (vector generator, the point the vectors' norm is measured from); names as config.MUXING_VARIANTS
VARIANTS: dict[str, tuple[Callable[[int, int, float, torch.Generator], Tensor], float]] = {
    "gaussian_hadamard": (gaussian_hadamard, 0.0),
    "shifted_gaussian": (shifted_gaussian, 1.0),
}


class Multiplexer(nn.Module):
    """Mixes N instances into one sequence: the mean over i of v_i * x_i, with fixed vectors v_i.

    The vectors are a buffer: saved with the model, never trained, and for a loaded checkpoint
    exactly as stored. With N = 1 the input passes through unchanged unless `scale_single`
    (MUX-PLMs multiply even a single instance by its vector).
    """

    def __init__(
        self,
        num_instances: int,
        width: int,
        variant: str = "gaussian_hadamard",
        norm: float = 1.0,
        seed: int = 0,
        scale_single: bool = False,
    ):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unsupported muxing_variant {variant!r}; supported: {', '.join(VARIANTS)}")
        make, self.center = VARIANTS[variant]
        self.num_instances = num_instances
        self.scale_single = scale_single
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer("vectors", make(num_instances, width, norm, generator))

    def set_norm(self, norm: float) -> None:
        """Rescale every vector's deviation from the variant's centre to L2 norm `norm`."""
        if not norm > 0:
            raise ValueError(f"mux norm must be > 0, got {norm}")
        with torch.no_grad():
            deviation = self.vectors - self.center
            self.vectors.copy_(self.center + deviation * (norm / deviation.norm(dim=-1, keepdim=True)))

    def forward(self, x: Tensor) -> Tensor:
        """[B*N, L, E] instance embeddings -> [B, L, E] mixed sequence."""
        if self.num_instances == 1 and not self.scale_single:
            return x
        rows, length, width = x.shape
        grouped = x.view(rows // self.num_instances, self.num_instances, length, width)
        return (grouped * self.vectors[:, None, :]).mean(dim=1)

    def mix_attention_mask(self, attention_mask: Tensor) -> Tensor:
        """[B*N, L] -> [B, L]: a mixed position is attended when any instance has a real token there."""
        if self.num_instances == 1:
            return attention_mask
        grouped = attention_mask.view(-1, self.num_instances, attention_mask.shape[-1])
        return grouped.to(torch.bool).any(dim=1).to(attention_mask.dtype)


class Demultiplexer(nn.Module):
    """RSA (index_pos) demux: instance i's state from the mixed state h and its learned index vector e_i.

    x = GELU(W_in [h; e_i]), then x = x + GELU(B_j x) per residual block, then the output step:
    ours a LayerNorm(x); MUX-PLMs' (`reference`) x + LayerNorm(GELU(P x)), their `pre_decoder`,
    with dropout after every hidden GELU. The reference keeps one more hidden layer that only its
    retrieval head reads (`retrieval_block`), and its index vectors have the encoder's width, so
    they are gated and pruned with the hidden dims.
    """

    def __init__(
        self,
        num_instances: int,
        input_size: int,
        hidden_size: int,
        index_size: int,
        num_blocks: int = 1,
        reference: bool = False,
        dropout: float = 0.0,
        eps: float = 1e-12,
    ):
        super().__init__()
        self.input_size = input_size
        self.reference = reference
        self.index = nn.Parameter(torch.zeros(num_instances, index_size))
        self.in_proj = nn.Linear(input_size + index_size, hidden_size)
        self.blocks = nn.ModuleList(nn.Linear(hidden_size, hidden_size) for _ in range(num_blocks))
        self.retrieval_block = nn.Linear(hidden_size, hidden_size) if reference else None
        self.pre_decoder = nn.Linear(hidden_size, hidden_size) if reference else None
        self.norm = nn.LayerNorm(hidden_size, eps=eps)
        self.dropout = nn.Dropout(dropout)

    def forward(self, hidden: Tensor, hidden_z: Tensor | None = None) -> Tensor:
        """[B, ..., H_in] mixed states -> [B, N, ..., H] one state per instance."""
        h = F.linear(hidden, self.in_proj.weight[:, : self.input_size]).unsqueeze(1)
        e = self._project_index(self._gated_index(hidden_z))
        e = e.view(e.shape[0], *([1] * (hidden.dim() - 2)), e.shape[-1])
        return self._finish(h + e)

    def select(self, hidden: Tensor, instance: Tensor, hidden_z: Tensor | None = None) -> Tensor:
        """[M, H_in] mixed states and [M] instance indices -> [M, H] demultiplexed states."""
        return self._finish(self.project_input(hidden, instance, hidden_z))

    def project_input(self, hidden: Tensor, instance: Tensor, hidden_z: Tensor | None = None) -> Tensor:
        """W_in [h; e_i] for [M, H_in] states and [M] instances, before the activation."""
        h = F.linear(hidden, self.in_proj.weight[:, : self.input_size])
        return h + self._project_index(self._gated_index(hidden_z)[instance])

    def hidden_layers(self) -> list[nn.Linear]:
        """The hidden layers in MUX-PLMs' order (dense_1, dense_2, ...), as the retrieval heads read them."""
        tail = [] if self.retrieval_block is None else [self.retrieval_block]
        return [self.in_proj, *self.blocks, *tail]

    def _gated_index(self, hidden_z: Tensor | None) -> Tensor:
        if hidden_z is None or not self.reference:
            return self.index
        return self.index * hidden_z

    def _project_index(self, index: Tensor) -> Tensor:
        # Linear([h, e]) = W_h h + (W_e e + b): the index half is computed once per instance.
        return F.linear(index, self.in_proj.weight[:, self.input_size :], self.in_proj.bias)

    def _finish(self, x: Tensor) -> Tensor:
        x = self.dropout(F.gelu(x))
        for block in self.blocks:
            x = x + self.dropout(F.gelu(block(x)))
        if self.pre_decoder is None:
            return self.norm(x)
        return x + self.norm(F.gelu(self.pre_decoder(x)))
