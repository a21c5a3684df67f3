"""Hugging Face checkpoints onto PruMUXModel: plain BERT-family bases, CoFi's pruned models, MUX-PLMs, PruMUX.

`inspect_checkpoint` decides from config.json and the weights' shapes alone (no tensor is
loaded) what a checkpoint is and which PruMUXConfig holds it, so a job can be checked before
it starts; `load_checkpoint` then maps its tensors onto our names.

| checkpoint | recognised by | layout |
| --- | --- | --- |
| BERT / RoBERTa / ELECTRA base or classifier | plain config.json | ours (N, labels as asked) |
| CoFi pruned (`princeton-nlp/CoFi-*`) | weights smaller than config.json | ours, N = 1 |
| MUX-BERT / MUX-ELECTRA, pretrained or fine-tuned | `num_instances`, `muxing_variant` in config.json | mux-plm |
| PruMUX, pruned weights ("format B") | mux-plm config, smaller weights | mux-plm |
| CoFi / PruMUX with `zs.pt` ("format A") | zs.pt beside full-size weights | folded, then pruned |
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from torch import Tensor

from prumux.checkpoints.cofi import binary_masks, check_mask_shapes, fold_masks, our_masks
from prumux.checkpoints.files import CheckpointFiles, find_checkpoint
from prumux.checkpoints.hf import (
    base_head_state,
    base_model_config,
    dense_encoder_config,
    encoder_config,
    encoder_state,
)
from prumux.checkpoints.muxplm import is_mux_plm, mux_plm_config, mux_plm_state
from prumux.config import PruMUXConfig

# Our keys a checkpoint may leave at their initialisation, per kind.
FRESH_PREFIXES = {
    "base": ("multiplexer.", "demultiplexer.", "pooler.", "classifier", "token_head."),
    "mux-plm": ("classifier", "demultiplexer.retrieval_block.", "token_head."),
}


@dataclass(frozen=True)
class CheckpointInfo:
    """What a checkpoint is: its model config and how it was trained."""

    files: CheckpointFiles
    config: PruMUXConfig
    kind: str  # "base" (ours on a BERT-family backbone) or "mux-plm"
    has_task_head: bool  # a classifier is stored (fine-tuned on some task)
    has_masks: bool  # a CoFi zs.pt is folded in and pruned on load

    @property
    def source(self) -> str:
        return self.files.source

    @property
    def multiplexed(self) -> bool:
        """Pretrained with multiplexing (a MUX-PLM): retrieval warm-up and MLM are already done."""
        return self.kind == "mux-plm"

    @property
    def pruned(self) -> bool:
        return self.has_masks or self.config.dense_shape is not None


@dataclass
class LoadedCheckpoint:
    """A checkpoint's config and tensors under our names, and the masks to prune with once loaded."""

    info: CheckpointInfo
    state: dict[str, Tensor]
    masks: dict[str, Tensor] | None = None
    fresh: tuple[str, ...] = field(default=())

    @property
    def config(self) -> PruMUXConfig:
        return self.info.config

    def fitting(self, model_state: dict[str, Tensor]) -> dict[str, Tensor]:
        """The tensors to load: a base's optional head weights of another shape are left out (they stay fresh)."""
        return {
            key: value
            for key, value in self.state.items()
            if not key.startswith(self.fresh) or key not in model_state or model_state[key].shape == value.shape
        }

    def check_keys(self, missing: list[str], unexpected: list[str]) -> None:
        """Raise a one-line ValueError if the weights left a part of the model empty that must come from them."""
        if unexpected:
            raise ValueError(f"{self.info.source}: weights for no part of the model: {unexpected[0]}")
        required = [key for key in missing if not key.startswith(self.fresh)]
        if required:
            raise ValueError(f"{self.info.source}: the weights hold nothing for {required[0]}")


def inspect_checkpoint(
    name_or_path: str | Path,
    num_instances: int | None = None,
    num_labels: int | None = None,
    mux_norm: float = 1.0,
    muxing_variant: str = "gaussian_hadamard",
) -> CheckpointInfo:
    """What the checkpoint is, from config.json and the weights' shapes (and zs.pt's); nothing else is loaded."""
    files = find_checkpoint(name_or_path)
    hf, source = files.hf_config, files.source
    dense_encoder_config(hf, source)  # an unsupported architecture is named before the weights are read
    shapes = files.shapes()
    encoder = encoder_config(hf, shapes, source)
    if is_mux_plm(hf):
        config = mux_plm_config(hf, shapes, encoder, num_instances, num_labels, source)
        kind, head = "mux-plm", any(key.startswith("classifier.") for key in shapes)
    else:
        config = base_model_config(hf, shapes, encoder, num_instances, num_labels, mux_norm, muxing_variant, source)
        kind, head = "base", "classifier.weight" in shapes
    masks = files.masks()
    if masks is not None:
        check_mask_shapes({name: tuple(value.shape) for name, value in masks.items()}, encoder, source)
    return CheckpointInfo(files, config, kind, head, masks is not None)


def load_checkpoint(
    name_or_path: str | Path,
    num_instances: int | None = None,
    num_labels: int | None = None,
    mux_norm: float = 1.0,
    muxing_variant: str = "gaussian_hadamard",
) -> LoadedCheckpoint:
    """The checkpoint's config and its tensors under our names (soft zs.pt masks folded in)."""
    info = inspect_checkpoint(name_or_path, num_instances, num_labels, mux_norm, muxing_variant)
    raw = info.files.state()
    try:
        state = encoder_state(raw, info.config.encoder)
        state |= mux_plm_state(raw, info.config) if info.multiplexed else base_head_state(raw, info.config)
    except KeyError as missing:
        raise ValueError(f"{info.source}: the weights have no {missing.args[0]}") from None
    masks = None
    stored = info.files.masks()
    if stored is not None:
        soft = our_masks(stored, info.config.encoder)
        state, masks = fold_masks(state, soft, info.config), binary_masks(soft)
    return LoadedCheckpoint(info, state, masks, FRESH_PREFIXES[info.kind])


__all__ = ["CheckpointInfo", "LoadedCheckpoint", "find_checkpoint", "inspect_checkpoint", "load_checkpoint"]
