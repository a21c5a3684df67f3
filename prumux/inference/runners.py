"""PyTorch runners of a trained (N, s) model: eager as trained, and padded + graph-captured for serving.

A runner is called like the model, `runner(input_ids, attention_mask, token_type_ids)`, and returns
float32 logits [rows, C], one per input row; any number of rows (the model groups them by N).
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from prumux.inference.graphs import CudaGraphs
from prumux.model import PruMUXModel
from prumux.pruning import pad_ffn, pad_hidden

# Pruned widths are padded to a multiple of this on CUDA (tensor-core kernels' fast paths); on CPU not at all.
CUDA_PAD_MULTIPLE = 64
# TorchRunner keeps the columns up to the last real token of any row, rounded up to a multiple of this
# (a few shapes per length, which auto times and CUDA graphs capture once each).
COLUMN_MULTIPLE = 8


class EagerRunner:
    """The model's own forward pass, in inference mode, on `device` in `dtype` (float32 by default)."""

    name = "eager"

    def __init__(self, model: PruMUXModel, device: str | torch.device = "cpu", dtype: torch.dtype | None = None):
        self.device = torch.device(device)
        self.dtype = dtype or torch.float32
        self.model = _moved(model, self.device, self.dtype).eval()
        self.num_instances = model.config.num_instances
        self.vocab_size = model.config.encoder.vocab_size

    @torch.inference_mode()
    def __call__(self, input_ids: Tensor, attention_mask: Tensor | None = None, token_type_ids: Tensor | None = None):
        ids = input_ids.to(self.device)
        mask = torch.ones_like(ids) if attention_mask is None else attention_mask.to(self.device)
        types = None if token_type_ids is None else token_type_ids.to(self.device)
        return self._forward(ids, mask, types).float()

    def _forward(self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor | None) -> Tensor:
        return self.model(input_ids, attention_mask, token_type_ids).logits


class TorchRunner(EagerRunner):
    """The model with every pruned width padded, emptied layers dropped, padding columns cut, bf16 and CUDA
    graphs on a GPU.

    FFN and hidden widths are zero-padded to a multiple of `pad_multiple` (default 64 on CUDA, none on
    CPU; the LayerNorms still normalise over the kept hidden units only), so it computes what the
    model computes. Columns after every row's last real token are cut (`cut_padding`) where the model
    masks padding (not the MUX-PLM layout, which attends it). On CUDA with `graphs`, the forward pass is
    captured as one CUDA graph per input shape on its first call and replayed afterwards.
    """

    name = "torch"

    def __init__(
        self,
        model: PruMUXModel,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
        graphs: bool = True,
        pad_multiple: int | None = None,
    ):
        device = torch.device(device)
        cuda = device.type == "cuda"
        super().__init__(
            padded(model, pad_multiple or (CUDA_PAD_MULTIPLE if cuda else 1)),
            device,
            dtype or (torch.bfloat16 if cuda else torch.float32),
        )
        self.graphs = CudaGraphs(super()._forward) if graphs and cuda else None
        self.masks_padding = not model.config.is_reference_layout

    def cut_padding(
        self, input_ids: Tensor, attention_mask: Tensor | None, token_type_ids: Tensor | None
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """`cut_padding` of the inputs where the model masks padding, else the inputs as given."""
        if not self.masks_padding:
            return input_ids, attention_mask, token_type_ids
        return cut_padding(input_ids, attention_mask, token_type_ids)

    def __call__(
        self, input_ids: Tensor, attention_mask: Tensor | None = None, token_type_ids: Tensor | None = None
    ) -> Tensor:
        return super().__call__(*self.cut_padding(input_ids, attention_mask, token_type_ids))

    def _forward(self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor | None) -> Tensor:
        if self.graphs is None:
            return super()._forward(input_ids, attention_mask, token_type_ids)
        return self.graphs(input_ids, attention_mask, token_type_ids)


def cut_padding(
    input_ids: Tensor, attention_mask: Tensor | None, token_type_ids: Tensor | None
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """The inputs without the columns after the last real token of every row, kept up to a multiple of
    COLUMN_MULTIPLE: the same logits from a model that masks padding out of attention (every layout but
    MUX-PLM's); as given without a mask."""
    if attention_mask is None:
        return input_ids, attention_mask, token_type_ids
    length = input_ids.shape[1]
    real = attention_mask.ne(0).any(dim=0).nonzero()
    last = int(real[-1]) + 1 if len(real) else 1
    kept = min(length, -(-last // COLUMN_MULTIPLE) * COLUMN_MULTIPLE)
    if kept == length:
        return input_ids, attention_mask, token_type_ids
    types = None if token_type_ids is None else token_type_ids[:, :kept]
    return input_ids[:, :kept], attention_mask[:, :kept], types


def padded(model: PruMUXModel, multiple: int) -> PruMUXModel:
    """An inference copy of `model`: FFN and hidden widths padded to `multiple`, layers pruning emptied dropped."""
    copied = pad_hidden(pad_ffn(model, multiple), multiple) if multiple > 1 else copy.deepcopy(model)
    layers = copied.encoder.layers
    copied.encoder.layers = nn.ModuleList(
        layer for layer in layers if layer.attention is not None or layer.ffn is not None
    )
    return copied


def _moved(model: PruMUXModel, device: torch.device, dtype: torch.dtype) -> PruMUXModel:
    """`model` itself when already on `device` in `dtype`, else a moved copy."""
    parameter = next(model.parameters())
    if (parameter.device, parameter.dtype) == (device, dtype):
        return model
    return copy.deepcopy(model).to(device=device, dtype=dtype)
