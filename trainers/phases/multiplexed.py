"""Phase 2: multiplexed training, an optional MLM continuation and then task fine-tuning.

Both stages run at the task mux norm (a published MUX-PLM model keeps its vectors as stored).
Fine-tuning feeds batches of `finetune_batch_size * N` instance rows (grouped by N in order)
and takes the cross-entropy over every instance.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from prumux import PruMUXModel
from trainers.data import Batch, EncodedSplit, EncodedTask
from trainers.evaluate import scores
from trainers.phases.loop import StageContext, train_model_stage
from trainers.recipes import Recipe

MLM, FINETUNE = "mlm", "finetune"
FINETUNE_OUTPUT = "model"


def train_multiplexed(
    model: PruMUXModel,
    task: EncodedTask,
    ignore_token_ids: list[int],
    mask_token_id: int,
    ctx: StageContext,
    mlm: bool = True,
) -> tuple[PruMUXModel, float]:
    """The task-fine-tuned multiplexed model (saved in `ctx.output("model")`) and the phase's wall seconds.

    `mlm=False` skips the MLM continuation (a model pretrained with multiplexing has had it).
    """
    seconds = 0.0
    if mlm and ctx.recipe.runs(MLM):
        model, seconds = _train_mlm(model, task.train, ignore_token_ids, mask_token_id, ctx)
    model, finetune_seconds = _finetune(model, task, ctx)
    return model, seconds + finetune_seconds


def _train_mlm(
    model: PruMUXModel, train: EncodedSplit, ignore_token_ids: list[int], mask_token_id: int, ctx: StageContext
) -> tuple[PruMUXModel, float]:
    recipe = ctx.recipe

    def loss(batch: Batch) -> Tensor:
        return model.mlm_loss(
            **batch.inputs(),
            mask_token_id=mask_token_id,
            ignore_token_ids=ignore_token_ids,
            mlm_probability=recipe.mlm_probability,
        )

    rows = recipe.batch_rows(MLM, model.config.num_instances)
    return train_model_stage(model, MLM, MLM, train, rows, recipe.mlm_lr, _task_norm(model, recipe), loss, None, ctx)


def _finetune(model: PruMUXModel, task: EncodedTask, ctx: StageContext) -> tuple[PruMUXModel, float]:
    recipe = ctx.recipe
    validation = task.validation.head(recipe.eval_examples)

    def loss(batch: Batch) -> Tensor:
        return F.cross_entropy(model(**batch.inputs()).logits, batch.labels)

    def evaluate(step: int, scheduled: bool) -> dict[str, float]:
        return scores(model, validation if scheduled else task.validation, recipe.eval_batch_size)

    rows = recipe.batch_rows(FINETUNE, model.config.num_instances)
    return train_model_stage(
        model,
        FINETUNE,
        FINETUNE_OUTPUT,
        task.train,
        rows,
        recipe.finetune_lr,
        _task_norm(model, recipe),
        loss,
        evaluate,
        ctx,
    )


def _task_norm(model: PruMUXModel, recipe: Recipe) -> float | None:
    """The recipe's task mux norm; None (the vectors as stored) for a published MUX-PLM model."""
    return None if model.config.is_reference_layout else recipe.task_mux_norm
