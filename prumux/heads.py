"""Token-prediction heads: ours after the demultiplexer, and MUX-PLMs' retrieval / MLM head through it."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from prumux.mux import Demultiplexer


class TokenHead(nn.Module):
    """BERT-style token prediction head on demultiplexed states: dense -> GELU -> LayerNorm -> vocabulary logits."""

    def __init__(self, input_size: int, hidden_size: int, vocab_size: int, eps: float):
        super().__init__()
        self.dense = nn.Linear(input_size, hidden_size)
        self.norm = nn.LayerNorm(hidden_size, eps=eps)
        self.decoder = nn.Linear(hidden_size, vocab_size)

    def forward(self, states: Tensor) -> Tensor:
        return self.decoder(self.norm(F.gelu(self.dense(states))))


class RetrievalHead(nn.Module):
    """MUX-PLMs' retrieval / MLM head: the demux's hidden layers, each followed by its own LayerNorm.

    `generic=False` (MUX-BERT): exactly the first two demux layers, no residuals, then
    pre_decoder -> GELU -> LayerNorm -> decoder. `generic=True` (MUX-ELECTRA): every demux
    layer with a residual from the second on, then pre_decoder -> GELU -> LayerNorm plus a
    residual, then the decoder. The demux's own classification path reads the same Linear
    layers without these LayerNorms.
    """

    def __init__(self, num_layers: int, hidden_size: int, vocab_size: int, eps: float, generic: bool):
        super().__init__()
        self.generic = generic
        self.norms = nn.ModuleList(nn.LayerNorm(hidden_size, eps=eps) for _ in range(num_layers if generic else 2))
        self.pre_decoder = nn.Linear(hidden_size, hidden_size)
        self.pre_decoder_norm = nn.LayerNorm(hidden_size, eps=eps)
        self.decoder = nn.Linear(hidden_size, vocab_size)

    def forward(self, projected: Tensor, demultiplexer: Demultiplexer) -> Tensor:
        """Vocabulary logits from `demultiplexer.project_input(...)` (W_in [h; e_i], before its GELU)."""
        layers = demultiplexer.hidden_layers()[: len(self.norms)]
        x = self.norms[0](F.gelu(projected))
        for dense, norm in zip(layers[1:], self.norms[1:]):
            x = self._residual(norm(F.gelu(dense(x))), x)
        x = self._residual(self.pre_decoder_norm(F.gelu(self.pre_decoder(x))), x)
        return self.decoder(x)

    def _residual(self, new: Tensor, old: Tensor) -> Tensor:
        return new + old if self.generic else new
