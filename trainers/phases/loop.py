"""The resumable training stage every phase is made of, and what stages share.

A stage is a fixed number of optimiser steps. It checkpoints every
`checkpoint_every_seconds` (and resumes from its checkpoint), evaluates every `eval_every`
steps, shows a progress bar and logs; when the pause check (``trainers.progress.pausing``) asks,
it evaluates there (after the scheduled evaluation, if one falls there: on the rows of the final
evaluation, because a pause is where a bracket decides, and selecting no kept state, so a paused
stage trains exactly as one that is not), saves its checkpoint and raises ``Paused``. Its result is an output folder written through a
temporary folder and one rename, with `stage.json` inside; a stage whose output exists is
finished and never runs again.

Every evaluation's validation accuracy and cross-entropy go to the evaluation sink (`trainers.progress`)
and are kept with the stage: in its checkpoint, then in `stage.json` (`evaluations`: [[step, accuracy,
cross_entropy], ...]; records written before the cross-entropy was kept have [step, accuracy]). A
resumed or finished stage reports its earlier evaluations again, so whoever listens sees the whole
curve however often the job was restarted.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import time
import zlib
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from copy import deepcopy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from safetensors import SafetensorError
from torch import Tensor, nn

from prumux import PruMUXModel
from storage.errors import first_line
from trainers.checkpoint import load_checkpoint, restore_rng_state, save_checkpoint
from trainers.data import Batch, BatchStream, EncodedSplit
from trainers.progress import Paused, StageProgress, pause_requested, report_evaluation
from trainers.recipes import Recipe

# A stage's evaluation after `done` steps. `scheduled`: on the `eval_every` schedule, on the recipe's
# `eval_examples` rows, and it may select the state the stage keeps (a pruning stage's best masks);
# else a pause's: on the rows of the final evaluation, and it selects nothing.
Evaluate = Callable[[int, bool], dict[str, float]]
MAX_GRAD_NORM = 1.0
STAGE_RECORD = "stage.json"
EVALUATIONS = "evaluations"


class Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> Any: ...


@dataclass(frozen=True)
class Runtime:
    """Where training runs: the device, and whether forward passes use bf16 autocast."""

    device: torch.device
    bf16: bool = False

    @classmethod
    def create(cls, device: str | None = None, bf16: bool = False) -> Runtime:
        """The given device, else CUDA when present, else the CPU."""
        chosen = device or ("cuda" if torch.cuda.is_available() else "cpu")
        try:
            resolved = torch.device(chosen)
        except RuntimeError:
            raise ValueError(f"unknown device {chosen!r}; use cpu, cuda or cuda:K") from None
        if resolved.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {chosen!r} requested but CUDA is not available here")
        return cls(resolved, bf16)

    def autocast(self) -> AbstractContextManager:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)


@dataclass(frozen=True)
class StageContext:
    """What the stages of one job share: recipe, runtime, output folder, job identity, log."""

    recipe: Recipe
    runtime: Runtime
    directory: Path
    job: str
    log: logging.Logger
    progress: bool = True
    evaluations: dict[str, list[list[float]]] = field(default_factory=dict)  # stage -> [[step, accuracy, ce], ...]

    def output(self, name: str) -> Path:
        return self.directory / name

    def checkpoint(self, stage: str) -> Path:
        return self.directory / "checkpoints" / f"{stage}.pt"


def run_stage(
    ctx: StageContext,
    stage: str,
    steps: int,
    state: dict[str, Stateful],
    step: Callable[[int], dict[str, float]],
    evaluate: Evaluate | None = None,
) -> float:
    """Run steps 0..steps-1 of `stage`, resuming from its checkpoint; return the stage's total wall seconds."""
    checkpoint = ctx.checkpoint(stage)
    job = f"{ctx.job}/{stage}"
    first, elapsed = 0, 0.0
    evaluations = ctx.evaluations.setdefault(stage, [])
    evaluations.clear()
    if checkpoint.exists():
        payload = load_checkpoint(checkpoint, job)
        for name, item in state.items():
            item.load_state_dict(payload["state"][name])
        restore_rng_state(payload["rng"])
        first, elapsed = payload["step"], payload["elapsed"]
        _report_again(stage, payload.get(EVALUATIONS, []), evaluations)
        ctx.log.info("resumed %s from step %d of %d (%s)", stage, first, steps, checkpoint)
    else:
        seed_stage(ctx, stage)
        ctx.log.info("started %s: %d steps", stage, steps)
    started = last_saved = time.monotonic()
    bar = StageProgress(f"{ctx.job} {stage}", steps, first, ctx.progress)

    def save(done: int) -> None:
        states = {k: v.state_dict() for k, v in state.items()}
        elapsed_now = elapsed + time.monotonic() - started
        save_checkpoint(checkpoint, job, done, elapsed_now, states, {EVALUATIONS: evaluations})

    def record(done: int, metrics: dict[str, float]) -> dict[str, float]:
        kept = [done, metrics["accuracy"], metrics.get("cross_entropy")]
        evaluations[:] = [e for e in evaluations if e[0] != done] + [kept]
        report_evaluation(stage, *kept)
        ctx.log.info("%s step %d: %s", stage, done, _format(metrics))
        return metrics

    try:
        if pause_requested(stage, first):  # already there: resumed at the pause, or stopped before training
            _pause(ctx, stage, first, steps)
        for index in range(first, steps):
            metrics = step(index)
            done = index + 1
            pause = pause_requested(stage, done)
            if evaluate is not None and (done % ctx.recipe.eval_every == 0 or done == steps):
                metrics |= record(done, evaluate(done, True))
            if evaluate is not None and pause:
                metrics |= record(done, evaluate(done, False))
            bar.update(done, metrics)
            if pause:
                save(done)
                _pause(ctx, stage, done, steps)
            if time.monotonic() - last_saved >= ctx.recipe.checkpoint_every_seconds and done < steps:
                save(done)
                last_saved = time.monotonic()
    finally:
        bar.close()
    seconds = elapsed + time.monotonic() - started
    ctx.log.info("finished %s in %.1f s", stage, seconds)
    return seconds


def _pause(ctx: StageContext, stage: str, done: int, steps: int) -> None:
    ctx.log.info("paused %s at step %d of %d", stage, done, steps)
    raise Paused(f"{stage} paused at step {done}")


def finished(output: Path) -> dict[str, Any] | None:
    """The record of a finished stage output, or None if the stage has not finished."""
    record = output / STAGE_RECORD
    return json.loads(record.read_text()) if record.is_file() else None


def resume_finished(output: Path) -> dict[str, Any] | None:
    """Like `finished`, and a finished stage reports its recorded evaluations again."""
    record = finished(output)
    if record is not None and "stage" in record:
        _report_again(record["stage"], record.get(EVALUATIONS, []))
    return record


def _report_again(stage: str, recorded: list[list[float]], into: list[list[float]] | None = None) -> None:
    for step, value, *cross_entropy in recorded:
        kept = [int(step), value, *cross_entropy]
        report_evaluation(stage, *kept, again=True)
        if into is not None:
            into.append(kept)


def save_output(
    ctx: StageContext,
    stage: str,
    output: Path,
    model: PruMUXModel,
    record: dict[str, Any],
    extras: dict[str, Any] | None = None,
) -> None:
    """Atomically publish a stage's model (plus `extras` saved with torch.save) and record; drop its checkpoint.

    A failed write (a full disk) removes the partial output and raises a one-line OSError; the
    stage's checkpoint stays, so a rerun resumes the stage from it.
    """
    tmp = output.with_name(f".{output.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    record = {"stage": stage, **record, EVALUATIONS: ctx.evaluations.get(stage, [])}
    try:
        model.save_pretrained(tmp)
        for name, value in (extras or {}).items():
            torch.save(value, tmp / name)
        (tmp / STAGE_RECORD).write_text(json.dumps(record, indent=2))
        os.replace(tmp, output)
    except (OSError, RuntimeError, SafetensorError) as error:  # torch and safetensors wrap the OSError
        shutil.rmtree(tmp, ignore_errors=True)
        raise OSError(
            f"cannot write the {stage} output {output}: {first_line(error)}; a rerun resumes the stage from its last checkpoint"
        ) from None
    ctx.checkpoint(stage).unlink(missing_ok=True)


def train_model_stage(
    model: PruMUXModel,
    stage: str,
    output_name: str,
    train: EncodedSplit,
    rows: int,
    lr: float,
    mux_norm: float | None,
    loss_of: Callable[[Batch], Tensor],
    evaluate: Evaluate | None,
    ctx: StageContext,
) -> tuple[PruMUXModel, float]:
    """One stage optimising `loss_of(batch)` over all of the model's weights, its mux vectors at `mux_norm`
    (None: as they are)."""
    output = ctx.output(output_name)
    if record := resume_finished(output):
        return PruMUXModel.from_pretrained(output).to(ctx.runtime.device), record["seconds"]
    recipe = ctx.recipe
    if mux_norm is not None:
        model.set_mux_norm(mux_norm)
    model.to(ctx.runtime.device).train()
    steps = recipe.steps(stage, len(train), rows)
    stream = BatchStream(train, rows, recipe.seed)
    optimizer = adamw(model.parameters(), lr, recipe)
    scheduler = linear_schedule(optimizer, steps, recipe.warmup_ratio)
    parameters = list(model.parameters())

    def step(index: int) -> dict[str, float]:
        batch = stream.batch(index).to(ctx.runtime.device)
        with ctx.runtime.autocast():
            loss = loss_of(batch)
        backward_and_step(loss, [optimizer], parameters)
        scheduler.step()
        return {"loss": loss.item()}

    state = {"model": model, "optimizer": optimizer, "scheduler": scheduler}
    seconds = run_stage(ctx, stage, steps, state, step, evaluate)
    save_output(ctx, stage, output, model, {"seconds": seconds, "steps": steps})
    return model, seconds


class BestState:
    """The best-scoring weights seen so far (part of the checkpoint, so a resumed stage keeps them)."""

    def __init__(self, modules: dict[str, nn.Module]):
        self.modules = modules
        self.score = -math.inf
        self.step = -1
        self.weights: dict[str, dict[str, torch.Tensor]] | None = None

    def offer(self, score: float, step: int) -> bool:
        """Keep the modules' current weights if `score` beats the best; return whether it did."""
        if score <= self.score:
            return False
        self.score, self.step = score, step
        self.weights = {name: deepcopy(module.state_dict()) for name, module in self.modules.items()}
        return True

    def restore(self) -> bool:
        """Load the best weights into the modules; False (modules untouched) when nothing was kept."""
        if self.weights is None:
            return False
        for name, module in self.modules.items():
            module.load_state_dict(self.weights[name])
        return True

    def state_dict(self) -> dict[str, Any]:
        return {"score": self.score, "step": self.step, "weights": self.weights}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.score, self.step, self.weights = state["score"], state["step"], state["weights"]


def adamw(parameters: Iterable[nn.Parameter], lr: float, recipe: Recipe) -> torch.optim.AdamW:
    return torch.optim.AdamW([p for p in parameters if p.requires_grad], lr=lr, weight_decay=recipe.weight_decay)


def linear_schedule(
    optimizer: torch.optim.Optimizer, steps: int, warmup_ratio: float
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over `warmup_ratio` of the steps, then linear decay to zero."""
    warmup = math.ceil(steps * warmup_ratio)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (steps - step) / max(1, steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def backward_and_step(loss: torch.Tensor, optimizers: list[torch.optim.Optimizer], clip: list[nn.Parameter]) -> None:
    """Backpropagate, clip the gradient norm of `clip`, step and reset every optimiser."""
    loss.backward()
    torch.nn.utils.clip_grad_norm_(clip, MAX_GRAD_NORM)
    for optimizer in optimizers:
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def seed_stage(ctx: StageContext, stage: str) -> None:
    """Seed python, numpy and torch from the recipe's seed and the stage name: a fresh stage always starts alike."""
    seed = ctx.recipe.seed * 7919 + zlib.crc32(stage.encode())
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _format(metrics: dict[str, float]) -> str:
    return " ".join(f"{key}={value:.4g}" for key, value in metrics.items())
