"""Phase 3: CoFi structured pruning with distillation, then fine-tuning of the pruned model.

The student starts as the phase-2 model; the teacher is the same model, frozen in eval
mode. Stage `prune` trains the student's weights (with a layer-distillation projection),
the L0 log_alphas (descent) and the Lagrangian lambdas (ascent), each with its own
optimiser, while the target sparsity ramps linearly from 0 to s over the Lagrangian
warm-up. The best evaluation whose realised sparsity is within `sparsity_epsilon` of s
(by validation accuracy) is kept and materialised with `prumux.prune`. Stage
`pruned_finetune` distils into that smaller model (no Lagrangian); it is the saved model.
"""

from __future__ import annotations

from pathlib import Path

import torch

from prumux import L0Module, PruMUXModel, prunable_parameters, prune
from prumux.pruning import pruned_encoder_config
from trainers.data import BatchStream, EncodedTask
from trainers.distill import LayerDistiller, distillation_loss
from trainers.evaluate import accuracy
from trainers.phases.loop import (
    BestState,
    StageContext,
    adamw,
    backward_and_step,
    finished,
    linear_schedule,
    run_stage,
    save_output,
    seed_stage,
)
from trainers.recipes import Recipe

PRUNE, PRUNED_FINETUNE = "prune", "pruned_finetune"
PRUNED_OUTPUT, FINAL_OUTPUT = "pruned", "model"
DISTILLER_FILE = "distiller.pt"
MAX_TARGET = 0.99


def train_pruned(teacher_dir: Path, sparsity: float, task: EncodedTask, ctx: StageContext) -> tuple[PruMUXModel, float]:
    """The materialised, fine-tuned model at `sparsity` (saved in `ctx.output("model")`) and the phase's wall seconds."""
    teacher = PruMUXModel.from_pretrained(teacher_dir).to(ctx.runtime.device).eval().requires_grad_(False)
    pruned, distiller, prune_seconds = _prune(teacher_dir, teacher, sparsity, task, ctx)
    model, finetune_seconds = _finetune_pruned(pruned, distiller, teacher, task, ctx)
    return model, prune_seconds + finetune_seconds


def target_sparsity(step: int, sparsity: float, warmup_steps: int) -> float:
    """The Lagrangian's target at `step`: linear from 0 to `sparsity` over the warm-up, then `sparsity`."""
    if step >= warmup_steps:
        return sparsity
    return sparsity * step / warmup_steps


def l0_optimizers(l0: L0Module, recipe: Recipe) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
    """Adam descending on the log_alphas and Adam ascending (maximize) on the Lagrangian lambdas."""
    betas = (recipe.reg_beta1, recipe.reg_beta2)
    return (
        torch.optim.AdamW(l0.mask_parameters(), lr=recipe.reg_lr, betas=betas, weight_decay=0.0),
        torch.optim.AdamW(l0.lagrangian_parameters(), lr=recipe.reg_lr, betas=betas, weight_decay=0.0, maximize=True),
    )


def realised_sparsity(l0: L0Module) -> float:
    """Fraction of the prunable parameters that the L0 module's deterministic masks remove."""
    encoder = l0.encoder_config
    return 1 - prunable_parameters(pruned_encoder_config(encoder, l0.deterministic_masks())) / prunable_parameters(encoder)


def lagrangian_target(l0: L0Module, target: float) -> float:
    """The expected-sparsity target at which the *realised* sparsity is `target`.

    The Lagrangian controls the expected sparsity, but the model we keep is cut by the
    deterministic masks, which round block gates and unit counts; while the gates are far
    from saturated the two differ by up to ~0.15. Shifting the target by the current gap
    makes the realised sparsity meet it.
    """
    with torch.no_grad():
        gap = l0.expected_sparsity().item() - realised_sparsity(l0)
    return min(max(target + gap, 0.0), MAX_TARGET)


def _prune(
    teacher_dir: Path, teacher: PruMUXModel, sparsity: float, task: EncodedTask, ctx: StageContext
) -> tuple[PruMUXModel, LayerDistiller, float]:
    output, recipe, device = ctx.output(PRUNED_OUTPUT), ctx.recipe, ctx.runtime.device
    if record := finished(output):
        pruned, distiller = _load_pruned(output, teacher, device)
        return pruned, distiller, record["seconds"]
    seed_stage(ctx, PRUNE)
    student = PruMUXModel.from_pretrained(teacher_dir).to(device).train()
    l0 = L0Module(student.config.encoder, droprate_init=recipe.droprate_init).to(device)
    hidden = student.config.encoder.hidden_size
    distiller = LayerDistiller(student.config.encoder.num_layers, hidden, hidden).to(device)
    rows = recipe.prune_batch_size * student.config.num_instances
    steps = recipe.steps(PRUNE, len(task.train), rows)
    warmup = recipe.steps("lagrangian_warmup", len(task.train), rows)
    stream = BatchStream(task.train, rows, recipe.seed)
    weights = list(student.parameters()) + list(distiller.parameters())
    optimizer = adamw(weights, recipe.prune_lr, recipe)
    scheduler = linear_schedule(optimizer, steps, recipe.warmup_ratio)
    alpha_optimizer, lambda_optimizer = l0_optimizers(l0, recipe)
    best = BestState({"student": student, "l0": l0, "distiller": distiller})
    validation = task.validation.head(recipe.eval_examples)

    def step(index: int) -> dict[str, float]:
        batch = stream.batch(index).to(device)
        target = lagrangian_target(l0, target_sparsity(index, sparsity, warmup))
        with ctx.runtime.autocast():
            out = student(**batch.inputs(), masks=l0.sample(), output_hidden_states=True)
            with torch.no_grad():
                reference = teacher(**batch.inputs(), output_hidden_states=True)
            distill = distillation_loss(out, reference, distiller, recipe)
        loss = distill + l0.lagrangian(target)
        backward_and_step(loss, [optimizer, alpha_optimizer, lambda_optimizer], weights)
        scheduler.step()
        metrics = {"loss": distill.item(), "target": target, "expected_sparsity": l0.expected_sparsity().item()}
        if best.weights is None and (index + 1) % recipe.eval_every:
            # Until one is kept, catch every eligible state, not only those at evaluation steps.
            metrics |= evaluate(index + 1, only_eligible=True)
        return metrics

    def evaluate(done: int, only_eligible: bool = False) -> dict[str, float]:
        masks = l0.deterministic_masks()
        realised = realised_sparsity(l0)
        eligible = abs(realised - sparsity) <= recipe.sparsity_epsilon
        if only_eligible and not eligible:
            return {"sparsity": realised}
        score = accuracy(student, validation, recipe.eval_batch_size, masks)
        if eligible and best.offer(score, done):
            ctx.log.info("prune: best so far at step %d (accuracy %.4f, sparsity %.4f)", done, score, realised)
        return {"accuracy": score, "sparsity": realised}

    state = {
        "student": student, "l0": l0, "distiller": distiller, "optimizer": optimizer, "scheduler": scheduler,
        "alpha_optimizer": alpha_optimizer, "lambda_optimizer": lambda_optimizer, "best": best,
    }  # fmt: skip
    seconds = run_stage(ctx, PRUNE, steps, state, step, evaluate)
    if not best.restore():
        ctx.log.warning("prune: no evaluation reached sparsity %.3f within %.3f; using the last masks", sparsity,
                        recipe.sparsity_epsilon)  # fmt: skip
    masks = l0.deterministic_masks()
    record = {"seconds": seconds, "steps": steps, "best_step": best.step, "sparsity": realised_sparsity(l0)}
    pruned = prune(student, masks)
    distiller.keep_inputs(masks["hidden_z"].nonzero().flatten())
    save_output(ctx, PRUNE, output, pruned, record, {DISTILLER_FILE: distiller.state_dict()})
    return pruned, distiller, seconds


def _load_pruned(output: Path, teacher: PruMUXModel, device: torch.device) -> tuple[PruMUXModel, LayerDistiller]:
    pruned = PruMUXModel.from_pretrained(output).to(device)
    encoder = pruned.config.encoder
    distiller = LayerDistiller(encoder.num_layers, encoder.hidden_size, teacher.config.encoder.hidden_size)
    distiller.load_state_dict(torch.load(output / DISTILLER_FILE, map_location="cpu", weights_only=True))
    return pruned, distiller.to(device)


def _finetune_pruned(
    model: PruMUXModel, distiller: LayerDistiller, teacher: PruMUXModel, task: EncodedTask, ctx: StageContext
) -> tuple[PruMUXModel, float]:
    output, recipe, device = ctx.output(FINAL_OUTPUT), ctx.recipe, ctx.runtime.device
    if record := finished(output):
        return PruMUXModel.from_pretrained(output).to(device), record["seconds"]
    seed_stage(ctx, PRUNED_FINETUNE)
    model.to(device).train()
    rows = recipe.finetune_batch_size * model.config.num_instances
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

    def evaluate(done: int) -> dict[str, float]:
        score = accuracy(model, validation, recipe.eval_batch_size)
        best.offer(score, done)
        return {"accuracy": score}

    state = {"model": model, "distiller": distiller, "optimizer": optimizer, "scheduler": scheduler, "best": best}
    seconds = run_stage(ctx, PRUNED_FINETUNE, steps, state, step, evaluate)
    best.restore()
    save_output(ctx, PRUNED_FINETUNE, output, model, {"seconds": seconds, "steps": steps, "best_step": best.step})
    return model, seconds
