"""How fast a plain pretrained model learns to multiplex: phase-2 variants side by side in one run.

    PYTHONPATH=. python3 benchmarks/mux_warm_start.py                      # every variant at N = 2, 5, 10 (~1.5 h on 2 cores)
    PYTHONPATH=. python3 benchmarks/mux_warm_start.py --widths 2 --seeds 0,1,2 --variants cpu-demo
    PYTHONPATH=. python3 benchmarks/mux_warm_start.py --quick              # 2 variants, N = 2, 20 steps: tries the script
    PYTHONPATH=. python3 benchmarks/mux_warm_start.py --widths 2 --variants reference,cpu-demo --steps 60,100

The cpu-demo setting: MiniLM-L6 (packaged), rt-polarity, length 64, 32 mixed sequences per step.
The dense (1, 0) model is trained first exactly as a search trains it (`train_point`, cpu-demo
recipe) and its validation accuracy is the reference. Each variant then trains an N-wide model
for the longest of `--steps` steps (one linear schedule with the recipe's warm-up, AdamW,
gradient clipping at 1, as phase 2 does) and is evaluated on the whole validation split (1,709
rows) after each of `--steps`; wall seconds count training only (evaluation excluded).

Variants (`--variants`, comma-separated names; default all):
- reference: DataMUX's zero-mean Gaussian vectors (norm 20), from the base checkpoint, 40 retrieval steps first (the old cpu-demo path)
- shifted-base: 1 + a Gaussian deviation (norm `--norm`), from the base checkpoint
- shifted-dense: the same vectors, from the dense (1, 0) model (the cpu-demo recipe's path)
- shifted-dense-retrieval: shifted-dense after 40 retrieval steps
- shifted-dense-distill: shifted-dense + distillation of the dense model: KL on the logits (T = 2) and
  MSE between each instance's demultiplexed state and the dense model's CLS state for it
- shifted-dense-newlr: shifted-dense with learning rate 1e-3 for the multiplexer's and demultiplexer's parameters
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from prumux import PruMUXModel
from trainers.cache import cache_entry
from trainers.data import Batch, BatchStream, EncodedTask, encode_task
from trainers.distill import kl_loss
from trainers.evaluate import accuracy
from trainers.models import load_tokenizer, resolve_model
from trainers.phases.loop import MAX_GRAD_NORM, linear_schedule
from trainers.point import train_point
from trainers.point_spec import PointSpec
from trainers.recipes import Recipe, load_recipe
from trainers.tasks import load_task

TASK, MODEL = "rt-polarity", "minilm-l6"
NEW_PARTS = ("multiplexer.", "demultiplexer.")


@dataclass(frozen=True)
class Variant:
    muxing_variant: str = "shifted_gaussian"
    norm: float | None = None  # None: --norm
    start: str = "dense"
    retrieval_steps: int = 0
    mlm_steps: int = 0  # multiplexed MLM on the task's text after the retrieval warm-up (the paper's path)
    distill: bool = False
    new_parts_lr: float | None = None


VARIANTS = {
    "reference": Variant("gaussian_hadamard", norm=20.0, start="base", retrieval_steps=40),
    "shifted-base": Variant(start="base"),
    "shifted-dense": Variant(),
    "shifted-dense-retrieval": Variant(retrieval_steps=40),
    "shifted-dense-distill": Variant(distill=True),
    "shifted-dense-newlr": Variant(new_parts_lr=1e-3),
}
ALIASES = {"cpu-demo": "shifted-dense"}


def dense_model(workdir: Path, recipe: Recipe, model: str = MODEL) -> tuple[Path, float]:
    """The dense (1, 0) model as a search trains it, and its validation accuracy."""
    result = train_point(PointSpec(TASK, model, 1, 0.0, recipe, workdir), progress=False)
    return cache_entry(workdir, TASK, model, 1, recipe).model_dir, result.val_accuracy


def start_model(variant: Variant, n: int, norm: float, dense_dir: Path, seed: int, model: str = MODEL) -> PruMUXModel:
    source = dense_dir if variant.start == "dense" else resolve_model(model)
    return PruMUXModel.from_pretrained(
        source,
        num_instances=n,
        num_labels=2,
        mux_norm=variant.norm or norm,
        seed=seed,
        muxing_variant=variant.muxing_variant,
    )


def retrieval_warm_up(model: PruMUXModel, task: EncodedTask, steps: int, special: list[int], recipe: Recipe) -> None:
    """The cpu-demo recipe's phase 1: retrieval at lr 5e-4, 16 mixed sequences per step."""

    def loss(batch: dict) -> Tensor:
        return model.retrieval_loss(**batch, ignore_token_ids=special)

    warm_up(model, task, steps, recipe.retrieval_lr, recipe, loss)


def mlm_warm_up(
    model: PruMUXModel, task: EncodedTask, steps: int, special: list[int], mask_token_id: int, recipe: Recipe
) -> None:
    """Multiplexed MLM on the task's training text at the recipe's MLM learning rate (phase 2's continuation)."""

    def loss(batch: dict) -> Tensor:
        return model.mlm_loss(
            **batch, mask_token_id=mask_token_id, ignore_token_ids=special, mlm_probability=recipe.mlm_probability
        )

    warm_up(model, task, steps, recipe.mlm_lr, recipe, loss)


def warm_up(model: PruMUXModel, task: EncodedTask, steps: int, lr: float, recipe: Recipe, loss) -> None:
    """``steps`` AdamW steps of ``loss(batch inputs)`` on the task's training text, pretraining batches."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    stream = BatchStream(task.train, recipe.pretrain_batch_size * model.num_instances, recipe.seed)
    device = next(model.parameters()).device
    model.train()
    for step in range(steps):
        loss(stream.batch(step).to(device).inputs()).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def instance_states(model: PruMUXModel, batch: Batch) -> Tensor:
    """Each instance's demultiplexed CLS state (what the classifier head reads)."""
    return model.demultiplexer(model.encode(**batch.inputs()).last[:, 0]).flatten(0, 1)[: len(batch)]


def distillation(states: Tensor, logits: Tensor, teacher: PruMUXModel, batch: Batch) -> Tensor:
    """KL to the dense model's logits, plus MSE of each instance's demuxed CLS state to its dense CLS state."""
    with torch.no_grad():
        reference = teacher.encoder(**batch.inputs())[:, 0]
        teacher_logits = teacher.classify(reference)
    return kl_loss(logits, teacher_logits, 2.0) + F.mse_loss(states, reference)


def train_variant(
    model: PruMUXModel,
    variant: Variant,
    task: EncodedTask,
    recipe: Recipe,
    steps: list[int],
    teacher: PruMUXModel | None,
) -> list[dict]:
    total = max(steps)
    new = [p for name, p in model.named_parameters() if name.startswith(NEW_PARTS) and p.requires_grad]
    old = [p for name, p in model.named_parameters() if not name.startswith(NEW_PARTS) and p.requires_grad]
    groups = [
        {"params": old, "lr": recipe.finetune_lr},
        {"params": new, "lr": variant.new_parts_lr or recipe.finetune_lr},
    ]
    optimizer = torch.optim.AdamW(groups, weight_decay=recipe.weight_decay)
    scheduler = linear_schedule(optimizer, total, recipe.warmup_ratio)
    stream = BatchStream(task.train, recipe.finetune_batch_size * model.num_instances, recipe.seed)
    device = next(model.parameters()).device
    rows, trained = [], 0.0
    model.train()
    for step in range(total):
        started = time.monotonic()
        batch = stream.batch(step).to(device)
        states = instance_states(model, batch)
        logits = model.classify(states)
        loss = F.cross_entropy(logits, batch.labels)
        if teacher is not None:
            loss = loss + distillation(states, logits, teacher, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        trained += time.monotonic() - started
        if step + 1 in steps:
            rows.append(
                {
                    "steps": step + 1,
                    "accuracy": accuracy(model, task.validation, recipe.eval_batch_size),
                    "seconds": trained,
                }
            )
            model.train()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", default="2,5,10")
    parser.add_argument("--steps", default="50,100,200,400")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument(
        "--norm", type=float, default=None, help="shifted vectors' deviation norm [default: cpu-demo's]"
    )
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--workdir", default=None, help="where the dense model is trained (reused when there)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--format", choices=["table", "json"], default="table")
    args = parser.parse_args()
    recipe = load_recipe("cpu-demo")
    if args.quick:
        args.widths, args.steps, args.variants = "2", "10,20", "reference,shifted-dense"
        recipe = replace(recipe, finetune_steps=20, eval_examples=64)
    norm = args.norm or recipe.task_mux_norm
    widths, steps = [int(n) for n in args.widths.split(",")], [int(k) for k in args.steps.split(",")]
    names = [ALIASES.get(name, name) for name in args.variants.split(",")]
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="mux-warm-start-"))
    data = load_task(TASK, seed=recipe.seed)
    tokenizer = load_tokenizer(MODEL)
    task = encode_task(data, tokenizer, recipe)
    if args.quick:
        task = EncodedTask(task.train, task.validation.head(256), task.test)
    dense_dir, dense_accuracy = dense_model(workdir, recipe)
    special = list(tokenizer.all_special_ids)
    results = []
    for n in widths:
        for name in names:
            variant = VARIANTS[name]
            for seed in (int(s) for s in args.seeds.split(",")):
                model = start_model(variant, n, norm, dense_dir, seed)
                retrieval_warm_up(model, task, variant.retrieval_steps, special, recipe)
                mlm_warm_up(model, task, variant.mlm_steps, special, tokenizer.mask_token_id, recipe)
                teacher = PruMUXModel.from_pretrained(dense_dir).eval() if variant.distill else None
                for row in train_variant(model, variant, task, recipe, steps, teacher):
                    results.append({"variant": name, "N": n, "seed": seed, **row})
                    if args.format == "json":
                        print(json.dumps(results[-1]), flush=True)
    if args.format == "json":
        return
    print(f"dense (1, 0) validation accuracy: {dense_accuracy:.4f} (cpu-demo recipe; {len(task.validation)} rows)")
    labels = task.validation.labels
    print(f"majority class: {labels.bincount().max().item() / len(labels):.4f} of the validation rows")
    print("| variant | N | seed | " + " | ".join(f"{k} steps" for k in steps) + " |")
    print("|---|---|---|" + "---|" * len(steps))
    for key in dict.fromkeys((r["variant"], r["N"], r["seed"]) for r in results):
        cells = [r for r in results if (r["variant"], r["N"], r["seed"]) == key]
        shown = " | ".join(f"{r['accuracy']:.3f} ({r['seconds']:.0f} s)" for r in cells)
        print(f"| {key[0]} | {key[1]} | {key[2]} | {shown} |")


if __name__ == "__main__":
    main()
