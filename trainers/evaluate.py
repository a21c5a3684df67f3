"""Task accuracy of a model on a tokenised split, and whether a fine-tuned checkpoint's labels are the task's."""

from __future__ import annotations

import torch
from torch import Tensor

from prumux import PruMUXModel
from trainers.data import EncodedSplit, eval_batches

# A permutation of the labels this much more accurate (a fraction of the rows) than the stored order means a mix-up.
LABEL_ORDER_MARGIN = 0.1


@torch.no_grad()
def logits(model: PruMUXModel, split: EncodedSplit, batch_size: int, masks: dict[str, Tensor] | None = None) -> Tensor:
    """The model's logits per row of `split` (float32, on the CPU), in eval mode, `batch_size` mixed sequences at a time."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        rows = batch_size * model.config.num_instances
        outputs = [
            model(**batch.to(device).inputs(), masks=masks).logits.float().cpu() for batch in eval_batches(split, rows)
        ]
    finally:
        model.train(was_training)
    return torch.cat(outputs)


def predict(model: PruMUXModel, split: EncodedSplit, batch_size: int, masks: dict[str, Tensor] | None = None) -> Tensor:
    """Predicted label per row of `split`."""
    return logits(model, split, batch_size, masks).argmax(dim=-1)


def accuracy(model: PruMUXModel, split: EncodedSplit, batch_size: int, masks: dict[str, Tensor] | None = None) -> float:
    """Fraction of rows of `split` whose predicted label is right (optionally under L0 masks)."""
    return scores(model, split, batch_size, masks)["accuracy"]


def scores(
    model: PruMUXModel, split: EncodedSplit, batch_size: int, masks: dict[str, Tensor] | None = None
) -> dict[str, float]:
    """The model's ``accuracy`` on `split` and its ``cross_entropy``, the mean of -log p(right label)."""
    if len(split) == 0:
        raise ValueError("cannot compute accuracy on an empty split")
    outputs = logits(model, split, batch_size, masks)
    return {
        "accuracy": float((outputs.argmax(dim=-1) == split.labels).float().mean()),
        "cross_entropy": float(torch.nn.functional.cross_entropy(outputs, split.labels)),
    }


def check_label_names(names: list[str], label_names: tuple[str, ...], source: str) -> None:
    """Raise a one-line ValueError unless a checkpoint's named labels are the task's, in the task's order."""
    ours, task = [name.lower() for name in names], [name.lower() for name in label_names]
    if ours == task:
        return
    if sorted(ours) == sorted(task):
        raise ValueError(f"{source} orders its labels {list(names)}, the task {list(label_names)}; they must agree")
    raise ValueError(f"{source} predicts labels {list(names)}, not the task's {list(label_names)}")


def check_label_order(
    model: PruMUXModel, label_names: tuple[str, ...], validation: EncodedSplit, batch_size: int, source: str
) -> None:
    """Raise a one-line ValueError unless a fine-tuned checkpoint's labels are the task's, in the task's order.

    Named labels are compared by name. Unnamed ones (transformers' LABEL_i) are checked on the
    validation split: if relabelling the predictions by some other permutation is right much
    more often than taking them as they are, the checkpoint was trained with another order
    (as CoFi's MNLI models were).
    """
    if model.config.label_names is not None:
        check_label_names(model.config.label_names, label_names, source)
        return
    from scipy.optimize import linear_sum_assignment

    count = len(label_names)
    predictions = predict(model, validation, batch_size)
    confusion = torch.zeros(count, count)
    confusion.index_put_((predictions, validation.labels), torch.ones(len(predictions)), accumulate=True)
    rows, columns = linear_sum_assignment(confusion.numpy(), maximize=True)
    as_is, best = confusion.trace().item(), confusion[rows, columns].sum().item()
    if best - as_is > LABEL_ORDER_MARGIN * len(predictions):
        mapping = ", ".join(f"{label_names[column]} at {row}" for row, column in zip(rows, columns))
        raise ValueError(
            f"{source} seems to order its labels differently from the task: its predictions score "
            f"{as_is / len(predictions):.3f} as they are and {best / len(predictions):.3f} read as {mapping}"
        )
