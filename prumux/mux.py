"""DataMUX multiplexer (fixed Gaussian Hadamard vectors) and RSA index demultiplexer."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Multiplexer(nn.Module):
    """Mixes N instances into one sequence: mean over i of v_i * x_i, with fixed v_i of L2 norm `norm`.

    The vectors are a buffer, so they are saved with the model and never trained.
    With N = 1 the input passes through unchanged.
    """

    def __init__(self, num_instances: int, hidden_size: int, norm: float = 1.0, seed: int = 0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.num_instances = num_instances
        self.register_buffer("vectors", torch.randn(num_instances, hidden_size, generator=generator))
        self.set_norm(norm)

    def set_norm(self, norm: float) -> None:
        """Rescale every vector to L2 norm `norm`."""
        if not norm > 0:
            raise ValueError(f"mux norm must be > 0, got {norm}")
        with torch.no_grad():
            self.vectors.mul_(norm / self.vectors.norm(dim=-1, keepdim=True))

    def forward(self, x: Tensor) -> Tensor:
        """[B*N, L, H] instance embeddings -> [B, L, H] mixed sequence."""
        if self.num_instances == 1:
            return x
        rows, length, hidden = x.shape
        grouped = x.view(rows // self.num_instances, self.num_instances, length, hidden)
        return (grouped * self.vectors[:, None, :]).mean(dim=1)

    def mix_attention_mask(self, attention_mask: Tensor) -> Tensor:
        """[B*N, L] -> [B, L]: a mixed position is attended when any instance has a real token there."""
        if self.num_instances == 1:
            return attention_mask
        grouped = attention_mask.view(-1, self.num_instances, attention_mask.shape[-1])
        return grouped.to(torch.bool).any(dim=1).to(attention_mask.dtype)


class Demultiplexer(nn.Module):
    """RSA demux: for instance i, LayerNorm(residual MLP(GELU(Linear([h, e_i])))) with learned index e_i."""

    def __init__(self, num_instances: int, input_size: int, hidden_size: int, num_layers: int = 1, eps: float = 1e-12):
        super().__init__()
        self.input_size = input_size
        self.index = nn.Parameter(torch.zeros(num_instances, hidden_size))
        self.in_proj = nn.Linear(input_size + hidden_size, hidden_size)
        self.blocks = nn.ModuleList(nn.Linear(hidden_size, hidden_size) for _ in range(num_layers))
        self.norm = nn.LayerNorm(hidden_size, eps=eps)

    def forward(self, hidden: Tensor) -> Tensor:
        """[B, ..., H_in] mixed states -> [B, N, ..., H] one state per instance."""
        h = F.linear(hidden, self.in_proj.weight[:, : self.input_size]).unsqueeze(1)
        e = self._project_index(self.index)
        e = e.view(e.shape[0], *([1] * (hidden.dim() - 2)), e.shape[-1])
        return self._finish(h + e)

    def select(self, hidden: Tensor, instance: Tensor) -> Tensor:
        """[M, H_in] mixed states and [M] instance indices -> [M, H] demultiplexed states."""
        h = F.linear(hidden, self.in_proj.weight[:, : self.input_size])
        return self._finish(h + self._project_index(self.index[instance]))

    def _project_index(self, index: Tensor) -> Tensor:
        # Linear([h, e]) = W_h h + (W_e e + b): the index half is computed once per instance.
        return F.linear(index, self.in_proj.weight[:, self.input_size :], self.in_proj.bias)

    def _finish(self, x: Tensor) -> Tensor:
        x = F.gelu(x)
        for block in self.blocks:
            x = x + F.gelu(block(x))
        return self.norm(x)
