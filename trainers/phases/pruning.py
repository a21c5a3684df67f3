"""Phase 3: CoFi structured pruning with distillation, then fine-tuning of the pruned model.

The student starts as the phase-2 model; the teacher is the same model, frozen in eval
mode. Stage `prune` trains the student's weights (with a layer-distillation projection),
the L0 log_alphas (descent) and the Lagrangian lambdas (ascent), each with its own
optimiser, while the target sparsity ramps linearly over the Lagrangian warm-up from the
initial masks' expected sparsity (about 0.4 with droprate_init 0.5) to s. Evaluations
after the warm-up use `masks_at_sparsity`: the top-scoring units that fill exactly the
budget of s, so the realised sparsity meets s even while the gates are not saturated.
The best of them (by validation accuracy) is kept and materialised with `prumux.prune`. Stage
`pruned_finetune` distils into that smaller model (no Lagrangian); it is the saved model.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from prumux import L0Module, PruMUXModel, prune
from prumux.config import realised_sparsity as shape_sparsity
from prumux.l0 import DETERMINISTIC_SHARPNESS, fill_budget
from prumux.pruning import pruned_encoder_config
from trainers.data import BatchStream, EncodedTask
from trainers.distill import LayerDistiller, distillation_loss
from trainers.evaluate import scores
from trainers.importance import mask_fisher, rank_log_alphas, unit_costs
from trainers.phases.loop import (
    BestState,
    StageContext,
    adamw,
    backward_and_step,
    linear_schedule,
    resume_finished,
    run_stage,
    save_output,
    seed_stage,
)
from trainers.recipes import Recipe

PRUNE, PRUNED_FINETUNE = "prune", "pruned_finetune"
PRUNED_OUTPUT, FINAL_OUTPUT = "pruned", "model"
DISTILLER_FILE = "distiller.pt"


def train_pruned(
    teacher_dir: Path, sparsity: float, task: EncodedTask, ctx: StageContext, pruning_dir: Path
) -> tuple[PruMUXModel, float]:
    """The materialised, fine-tuned model at `sparsity` (saved in `ctx.output("model")`) and the phase's wall
    seconds; the pruning stage trains in `pruning_dir` (``trainers.cache.pruning_directory``: jobs share it)."""
    teacher = PruMUXModel.from_pretrained(teacher_dir).to(ctx.runtime.device).eval().requires_grad_(False)
    pruned, distiller, prune_seconds = _prune(teacher_dir, teacher, sparsity, task, replace(ctx, directory=pruning_dir))
    model, finetune_seconds = _finetune_pruned(pruned, distiller, teacher, task, ctx)
    return model, prune_seconds + finetune_seconds


def target_sparsity(step: int, sparsity: float, warmup_steps: int, start: float = 0.0) -> float:
    """The Lagrangian's target at `step`: linear from `start` to `sparsity` over the warm-up, then `sparsity`."""
    if step >= warmup_steps:
        return sparsity
    return start + (sparsity - start) * step / warmup_steps


def l0_optimizers(l0: L0Module, recipe: Recipe) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
    """Adam descending on the log_alphas and Adam ascending (maximize) on the Lagrangian lambdas."""
    betas = (recipe.reg_beta1, recipe.reg_beta2)
    return (
        torch.optim.AdamW(l0.mask_parameters(), lr=recipe.reg_lr, betas=betas, weight_decay=0.0),
        torch.optim.AdamW(l0.lagrangian_parameters(), lr=recipe.reg_lr, betas=betas, weight_decay=0.0, maximize=True),
    )


def realised_sparsity(l0: L0Module, masks: dict[str, torch.Tensor] | None = None) -> float:
    """Fraction of the prunable parameters that `masks` (default: the L0 module's deterministic masks) remove."""
    encoder = l0.encoder_config
    masks = l0.deterministic_masks() if masks is None else masks
    return shape_sparsity(pruned_encoder_config(encoder, masks), encoder)


@torch.no_grad()
def masks_at_sparsity(l0: L0Module, sparsity: float) -> dict[str, torch.Tensor]:
    """Deterministic masks keeping the top-scoring heads and FFN dims that fit in (1 - sparsity) of the parameters.

    `L0Module.deterministic_masks` rounds each group to its expected count, and a block
    gate to 0 or 1: while the gates are far from saturated (always, in a short run) that
    realises a sparsity up to ~0.15 away from the expected one. Here heads and FFN dims
    are ranked across layers by P(kept) times their block's P(kept) and taken greedily
    while they fit (opening a block costs its output bias), so the realised sparsity is
    `sparsity` to within one unit. Hidden dims and kept values are the deterministic masks'.
    """
    scores, deterministic = l0.scores(), l0.deterministic_masks()
    hidden = int(deterministic["hidden_z"].sum())
    head_scores = scores["head_z"] * scores["head_layer_z"][:, None]
    ffn_scores = scores["intermediate_z"] * scores["mlp_z"][:, None]
    budget = (1 - sparsity) * l0.prunable_parameters
    kept = fill_budget(head_scores, ffn_scores, hidden, l0.encoder_config.head_dim, budget)
    soft = {
        name: torch.sigmoid(log_alpha / l0.temperature * DETERMINISTIC_SHARPNESS)
        for name, log_alpha in l0.log_alphas.items()
    }
    return {
        "head_z": soft["head_z"] * kept[0],
        "head_layer_z": soft["head_layer_z"] * kept[0].any(-1),
        "intermediate_z": soft["intermediate_z"] * kept[1],
        "mlp_z": soft["mlp_z"] * kept[1].any(-1),
        "hidden_z": deterministic["hidden_z"],
    }


def _prune(
    teacher_dir: Path, teacher: PruMUXModel, sparsity: float, task: EncodedTask, ctx: StageContext
) -> tuple[PruMUXModel, LayerDistiller, float]:
    output, recipe, device = ctx.output(PRUNED_OUTPUT), ctx.recipe, ctx.runtime.device
    if record := resume_finished(output):
        pruned, distiller = _load_pruned(output, teacher, device, recipe.layer_distill_version)
        return pruned, distiller, record["seconds"]
    seed_stage(ctx, PRUNE)
    student = PruMUXModel.from_pretrained(teacher_dir).to(device).train()
    l0 = L0Module(student.config.encoder, droprate_init=recipe.droprate_init).to(device)
    rows = recipe.batch_rows(PRUNE, student.config.num_instances)
    stream = BatchStream(task.train, rows, recipe.seed)
    _start_masks(l0, teacher, stream, ctx)
    with torch.no_grad():  # the initial masks' (seeded, so also on resume)
        start = min(l0.expected_sparsity().item(), sparsity)
    hidden = student.config.encoder.hidden_size
    distiller = LayerDistiller(student.config.encoder.num_layers, hidden, hidden, recipe.layer_distill_version)
    distiller = distiller.to(device)
    steps = recipe.steps(PRUNE, len(task.train), rows)
    warmup = recipe.steps("lagrangian_warmup", len(task.train), rows)
    weights = list(student.parameters()) + list(distiller.parameters())
    optimizer = adamw(weights, recipe.prune_lr, recipe)
    scheduler = linear_schedule(optimizer, steps, recipe.warmup_ratio)
    alpha_optimizer, lambda_optimizer = l0_optimizers(l0, recipe)
    best = BestState({"student": student, "l0": l0, "distiller": distiller})
    validation = task.validation.head(recipe.eval_examples)

    def step(index: int) -> dict[str, float]:
        batch = stream.batch(index).to(device)
        target = target_sparsity(index, sparsity, warmup, start)
        with ctx.runtime.autocast():
            out = student(**batch.inputs(), masks=l0.sample(), output_hidden_states=True)
            with torch.no_grad():
                reference = teacher(**batch.inputs(), output_hidden_states=True)
            distill = distillation_loss(out, reference, distiller, recipe)
        loss = distill + l0.lagrangian(target)
        backward_and_step(loss, [optimizer, alpha_optimizer, lambda_optimizer], weights)
        scheduler.step()
        return {"loss": distill.item(), "target": target, "expected_sparsity": l0.expected_sparsity().item()}

    def evaluate(done: int, scheduled: bool) -> dict[str, float]:
        masks = masks_at_sparsity(l0, sparsity)
        realised = realised_sparsity(l0, masks)
        eligible = scheduled and done >= warmup and abs(realised - sparsity) <= recipe.sparsity_epsilon
        metrics = scores(student, validation if scheduled else task.validation, recipe.eval_batch_size, masks)
        if eligible and best.offer(metrics["accuracy"], done):
            ctx.log.info(
                "prune: best so far at step %d (accuracy %.4f, sparsity %.4f)", done, metrics["accuracy"], realised
            )
        return metrics | {"sparsity": realised}

    state = {
        "student": student,
        "l0": l0,
        "distiller": distiller,
        "optimizer": optimizer,
        "scheduler": scheduler,
        "alpha_optimizer": alpha_optimizer,
        "lambda_optimizer": lambda_optimizer,
        "best": best,
    }
    seconds = run_stage(ctx, PRUNE, steps, state, step, evaluate)
    if not best.restore():
        ctx.log.warning(
            "prune: no evaluation reached sparsity %.3f within %.3f; using the last masks",
            sparsity,
            recipe.sparsity_epsilon,
        )
    masks = masks_at_sparsity(l0, sparsity)
    record = {"seconds": seconds, "steps": steps, "best_step": best.step, "sparsity": realised_sparsity(l0, masks)}
    pruned = prune(student, masks)
    distiller.keep_inputs(masks["hidden_z"].nonzero().flatten())
    save_output(ctx, PRUNE, output, pruned, record, {DISTILLER_FILE: distiller.state_dict()})
    return pruned, distiller, seconds


def _start_masks(l0: L0Module, teacher: PruMUXModel, stream: BatchStream, ctx: StageContext) -> None:
    """Rank the initial gates by Fisher importance and freeze the hidden dims, as the recipe says."""
    recipe = ctx.recipe
    if not recipe.prune_hidden:
        l0.keep_all("hidden_z")
    if recipe.mask_init_batches and not ctx.checkpoint(PRUNE).exists():
        fisher = mask_fisher(teacher, stream, recipe.mask_init_batches, ctx.runtime.device)
        rank_log_alphas(l0, fisher, unit_costs(teacher), recipe.mask_init_spread)


def _load_pruned(
    output: Path, teacher: PruMUXModel, device: torch.device, version: int | None
) -> tuple[PruMUXModel, LayerDistiller]:
    pruned = PruMUXModel.from_pretrained(output).to(device)
    encoder = pruned.config.encoder
    distiller = LayerDistiller(encoder.num_layers, encoder.hidden_size, teacher.config.encoder.hidden_size, version)
    distiller.load_state_dict(torch.load(output / DISTILLER_FILE, map_location="cpu", weights_only=True))
    return pruned, distiller.to(device)


def _finetune_pruned(
    model: PruMUXModel, distiller: LayerDistiller, teacher: PruMUXModel, task: EncodedTask, ctx: StageContext
) -> tuple[PruMUXModel, float]:
    output, recipe, device = ctx.output(FINAL_OUTPUT), ctx.recipe, ctx.runtime.device
    if record := resume_finished(output):
        return PruMUXModel.from_pretrained(output).to(device), record["seconds"]
    seed_stage(ctx, PRUNED_FINETUNE)
    model.to(device).train()
    rows = recipe.batch_rows(PRUNED_FINETUNE, model.config.num_instances)
    steps = recipe.steps(PRUNED_FINETUNE, len(task.train), rows)
    stream = BatchStream(task.train, rows, recipe.seed)
    weights = list(model.parameters()) + list(distiller.parameters())
    optimizer = adamw(weights, recipe.pruned_finetune_lr, recipe)
    scheduler = linear_schedule(optimizer, steps, recipe.warmup_ratio)
    best = BestState({"model": model})
    validation = task.validation.head(recipe.eval_examples)

    def step(index: int) -> dict[str, float]:
        batch = stream.batch(index).to(device)
        with ctx.runtime.autocast():
            out = model(**batch.inputs(), output_hidden_states=True)
            with torch.no_grad():
                reference = teacher(**batch.inputs(), output_hidden_states=True)
            loss = distillation_loss(out, reference, distiller, recipe)
        backward_and_step(loss, [optimizer], weights)
        scheduler.step()
        return {"loss": loss.item()}

    def evaluate(done: int, scheduled: bool) -> dict[str, float]:
        metrics = scores(model, validation if scheduled else task.validation, recipe.eval_batch_size)
        if scheduled:
            best.offer(metrics["accuracy"], done)
        return metrics

    state = {"model": model, "distiller": distiller, "optimizer": optimizer, "scheduler": scheduler, "best": best}
    seconds = run_stage(ctx, PRUNED_FINETUNE, steps, state, step, evaluate)
    best.restore()
    save_output(ctx, PRUNED_FINETUNE, output, model, {"seconds": seconds, "steps": steps, "best_step": best.step})
    return model, seconds
