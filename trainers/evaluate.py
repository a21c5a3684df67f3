"""Task accuracy of a model on a tokenised split."""

from __future__ import annotations

import torch
from torch import Tensor

from prumux import PruMUXModel
from trainers.data import EncodedSplit, eval_batches


@torch.no_grad()
def predict(model: PruMUXModel, split: EncodedSplit, batch_size: int, masks: dict[str, Tensor] | None = None) -> Tensor:
    """Predicted label per row of `split`, in eval mode, `batch_size` mixed sequences at a time."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        rows = batch_size * model.config.num_instances
        predictions = [
            model(**batch.to(device).inputs(), masks=masks).logits.argmax(dim=-1).cpu()
            for batch in eval_batches(split, rows)
        ]
    finally:
        model.train(was_training)
    return torch.cat(predictions)


def accuracy(model: PruMUXModel, split: EncodedSplit, batch_size: int, masks: dict[str, Tensor] | None = None) -> float:
    """Fraction of rows of `split` whose predicted label is right (optionally under L0 masks)."""
    if len(split) == 0:
        raise ValueError("cannot compute accuracy on an empty split")
    return float((predict(model, split, batch_size, masks) == split.labels).float().mean())
