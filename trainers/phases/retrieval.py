"""Phase 1: the retrieval warm-up that teaches a multiplexed model to tell its N inputs apart.

Trained on the task's training text (labels unused), with the mux vectors at the recipe's
retrieval norm. The loss is the model's `retrieval_loss`: per position a random instance,
cross-entropy of that instance's token there; padding and special tokens are ignored.
"""

from __future__ import annotations

from torch import Tensor

from prumux import PruMUXModel
from trainers.data import Batch, EncodedSplit
from trainers.phases.loop import StageContext, train_model_stage

STAGE = "retrieval"


def train_retrieval(
    model: PruMUXModel, train: EncodedSplit, ignore_token_ids: list[int], ctx: StageContext
) -> tuple[PruMUXModel, float]:
    """The model after the retrieval warm-up (saved in `ctx.output("retrieval")`) and the phase's wall seconds."""
    recipe = ctx.recipe

    def loss(batch: Batch) -> Tensor:
        return model.retrieval_loss(**batch.inputs(), ignore_token_ids=ignore_token_ids)

    rows = recipe.pretrain_batch_size * model.config.num_instances
    return train_model_stage(
        model, STAGE, STAGE, train, rows, recipe.retrieval_lr, recipe.retrieval_mux_norm, loss, None, ctx
    )
