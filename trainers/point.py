"""One grid point (N, s): train it through the phases it needs, evaluate it, measure its speed.

    (1, 0) dense    phase 2 with N = 1
    (N, 0) DataMUX  phases 1-2
    (1, s) CoFi     phase 2 with N = 1 (the dense model, also the teacher), then phase 3
    (N, s) PruMUX   phases 1-2-3

Phases 1-2 come from the work dir's cache (trained under its lock when missing); phase 3
lives in the point's own folder under the point's lock. Every stage resumes from its
checkpoint, so rerunning a killed job continues it; rerunning a finished job returns its
stored result.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from prumux import EncoderConfig, PruMUXConfig, PruMUXModel, hardware_name, measure_throughput, prunable_parameters
from prumux.model import CONFIG_FILE
from trainers.cache import ThroughputCache, cache_entry, locked, slug, write_json_atomic
from trainers.data import EncodedTask, encode_task
from trainers.evaluate import accuracy
from trainers.job import check_point
from trainers.models import load_tokenizer, resolve_model
from trainers.phases.loop import Runtime, StageContext
from trainers.phases.multiplexed import train_multiplexed
from trainers.phases.pruning import train_pruned
from trainers.phases.retrieval import train_retrieval
from trainers.progress import job_log
from trainers.recipes import Recipe, load_recipe
from trainers.tasks import load_task

PHASES = ("retrieval", "multiplexed", "pruning", "measure")
RESULT_FILE = "result.json"
# Interleaved throughput measurements of the point and the dense model (best of each).
MEASURE_ROUNDS = 2


@dataclass
class PointResult:
    """What one trained (N, s) point scored and how fast it runs (accuracies are fractions).

    `speedup` is measured side by side: the point's model and the dense (1, 0) model are
    timed interleaved in the same process (best of each), so the ratio holds whatever the
    machine's load. `dense_throughput` is the per-hardware dense reference cached in the
    work dir (its first measurement) and `throughput` = speedup * dense_throughput, so
    absolute throughputs in a study are normalised to one load condition.
    """

    task: str
    base_model: str
    recipe: str
    N: int
    s: float
    val_accuracy: float
    test_accuracy: float
    throughput: float  # instances per second, normalised: speedup * dense_throughput
    dense_throughput: float  # the dense (1, 0) reference: first measured on this hardware (work dir's cache)
    speedup: float  # over the dense model measured side by side in this process (exactly 1 for the dense point)
    sparsity: float  # realised fraction of prunable encoder parameters removed
    prunable_parameters: int  # kept in this model
    total_parameters: int
    phase_seconds: dict[str, float]
    model_dir: str
    hardware: str
    family: str  # dense, cofi, datamux or prumux
    cache_hit: bool = False  # phases 1-2 were reused from the work dir's cache
    recipe_values: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PointResult:
        return cls(**values)


def point_directory(workdir: str | Path, task: str, base_model: str, N: int, s: float, recipe: Recipe) -> Path:
    """Where the point's phase-3 checkpoints, models and result live."""
    name = f"N{N}-s{s:g}-r{recipe.digest()}-seed{recipe.seed}"
    return Path(workdir).expanduser().resolve() / "points" / slug(task) / slug(base_model) / name


def family(N: int, s: float) -> str:
    """The method a grid point stands for."""
    return {(False, False): "dense", (False, True): "cofi", (True, False): "datamux", (True, True): "prumux"}[(N > 1, s > 0)]


@dataclass(frozen=True)
class _Job:
    """The identity of one point's job and where it runs."""

    task: str
    base_model: str
    N: int
    s: float
    recipe: Recipe
    workdir: Path
    runtime: Runtime


def train_point(
    task: str,
    base_model: str,
    N: int,
    s: float,
    recipe: Recipe | str,
    workdir: str | Path,
    progress: bool = True,
    *,
    device: str | None = None,
    bf16: bool = False,
) -> PointResult:
    """Train (or resume, or reuse) the point (N, s) of `task` on `base_model` and measure it."""
    check_point(N, s)
    recipe = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    job = _Job(task, base_model, N, s, recipe, _writable_workdir(workdir), Runtime.create(device, bf16))
    data = load_task(task, seed=recipe.seed)
    tokenizer = load_tokenizer(base_model)
    encoded = encode_task(data, tokenizer, recipe)
    label = f"{task}/{base_model}/N={N}/s={s:g}"
    point_dir = point_directory(job.workdir, task, base_model, N, s, recipe)
    with job_log(job.workdir, label) as log, locked(point_dir, log):
        if (point_dir / RESULT_FILE).is_file():
            log.info("already trained: %s", point_dir / RESULT_FILE)
            return PointResult.from_dict(json.loads((point_dir / RESULT_FILE).read_text()))
        ctx = StageContext(recipe, job.runtime, point_dir, label, log, progress)
        seconds = dict.fromkeys(PHASES, 0.0)
        phase2_dir, cache_hit = _phase12(job, data.spec.num_labels, encoded, tokenizer, ctx, seconds)
        model_dir = phase2_dir
        if s > 0:
            _, seconds["pruning"] = train_pruned(phase2_dir, s, encoded, ctx)
            model_dir = ctx.output("model")
        result = _measure(job, encoded, model_dir, _saved_config(phase2_dir).encoder, seconds, log)
        result.cache_hit = cache_hit
        write_json_atomic(point_dir / RESULT_FILE, result.to_dict())
        log.info("result: %s", json.dumps(result.to_dict()))
        return result


def _phase12(
    job: _Job, num_labels: int, encoded: EncodedTask, tokenizer, ctx: StageContext, seconds: dict[str, float]
) -> tuple[Path, bool]:
    """The cached phase 1-2 model folder (training it under the entry's lock if missing) and whether it was a hit."""
    entry = cache_entry(job.workdir, job.task, job.base_model, job.N, job.recipe)
    with entry.locked(ctx.log):
        if entry.exists():
            ctx.log.info("phases 1-2 cache hit: %s", entry.directory)
            seconds.update(entry.record()["phase_seconds"])
            return entry.model_dir, True
        ctx.log.info("phases 1-2 cache miss: training %s", entry.directory)
        entry_ctx = StageContext(job.recipe, job.runtime, entry.directory, f"{ctx.job} phase1-2", ctx.log, ctx.progress)
        special = list(tokenizer.all_special_ids)
        model = PruMUXModel.from_pretrained(
            resolve_model(job.base_model), num_instances=job.N, num_labels=num_labels,
            mux_norm=job.recipe.task_mux_norm, seed=job.recipe.seed,
        )  # fmt: skip
        if job.N > 1:
            model, seconds["retrieval"] = train_retrieval(model, encoded.train, special, entry_ctx)
        _, seconds["multiplexed"] = train_multiplexed(model, encoded, special, tokenizer.mask_token_id, entry_ctx)
        entry.commit({"phase_seconds": {phase: seconds[phase] for phase in ("retrieval", "multiplexed")}})
        return entry.model_dir, False


def _measure(
    job: _Job, encoded: EncodedTask, model_dir: Path, base_encoder: EncoderConfig, seconds: dict[str, float], log
) -> PointResult:
    """Evaluate the saved model (reloaded from disk) and measure its speed-up over the dense model side by side."""
    started = time.monotonic()
    recipe, kind = job.recipe, family(job.N, job.s)
    model = PruMUXModel.from_pretrained(model_dir).to(job.runtime.device)
    val = accuracy(model, encoded.validation, recipe.eval_batch_size)
    test = accuracy(model, encoded.test, recipe.eval_batch_size)
    if kind == "dense":  # the dense point is its own baseline
        speedup, dense = 1.0, max(_throughput(model, recipe, job.runtime) for _ in range(MEASURE_ROUNDS))
    else:
        speedup, dense = _side_by_side(model, _dense_model(job, model.config.num_labels), recipe, job.runtime)
    cache, key = ThroughputCache(job.workdir), _throughput_key(job.base_model, recipe, job.runtime)
    if (reference := cache.get(key)) is None:
        log.info("dense reference throughput for %s: %.1f instances/s", key, dense)
        cache.put(key, dense)
        reference = dense
    seconds["measure"] = time.monotonic() - started
    kept = prunable_parameters(model.config.encoder)
    return PointResult(
        task=job.task, base_model=job.base_model, recipe=recipe.name, N=job.N, s=job.s,
        val_accuracy=val, test_accuracy=test, throughput=speedup * reference, dense_throughput=reference,
        speedup=speedup, sparsity=1 - kept / prunable_parameters(base_encoder), prunable_parameters=kept,
        total_parameters=sum(p.numel() for p in model.parameters()),
        phase_seconds={phase: round(value, 2) for phase, value in seconds.items()}, model_dir=str(model_dir),
        hardware=hardware_name(job.runtime.device), family=kind, recipe_values=recipe.to_dict(),
    )  # fmt: skip


def _throughput(model: PruMUXModel, recipe: Recipe, runtime: Runtime) -> float:
    """Instances per second with prumux's protocol (128*N instances per batch) at the recipe's length."""
    result = measure_throughput(
        model, seq_len=recipe.seq_len, num_batches=recipe.throughput_batches, warmup=recipe.throughput_warmup,
        device=runtime.device, dtype=torch.bfloat16 if runtime.bf16 else None,
    )  # fmt: skip
    return result.examples_per_second


def _side_by_side(model: PruMUXModel, dense: PruMUXModel, recipe: Recipe, runtime: Runtime) -> tuple[float, float]:
    """(speed-up of `model` over `dense`, dense throughput), measured interleaved in this process, best of each.

    Interleaving puts both under the same load, so their ratio holds even when the machine's
    load changes between jobs (absolute throughputs do not).
    """
    point = dense_speed = 0.0
    for _ in range(MEASURE_ROUNDS):
        point = max(point, _throughput(model, recipe, runtime))
        dense_speed = max(dense_speed, _throughput(dense, recipe, runtime))
    return point / dense_speed, dense_speed


def _dense_model(job: _Job, num_labels: int) -> PruMUXModel:
    """The dense (1, 0) model: the cached phase-2 model if trained, else the base checkpoint (same shape, same speed)."""
    entry = cache_entry(job.workdir, job.task, job.base_model, 1, job.recipe)
    if entry.exists():
        model = PruMUXModel.from_pretrained(entry.model_dir)
    else:
        model = PruMUXModel.from_pretrained(resolve_model(job.base_model), num_labels=num_labels)
    return model.to(job.runtime.device).eval()


def _throughput_key(base_model: str, recipe: Recipe, runtime: Runtime) -> str:
    precision = "bf16" if runtime.bf16 else "fp32"
    return f"{hardware_name(runtime.device)}|{resolve_model(base_model)}|len{recipe.seq_len}|{precision}"


def _saved_config(model_dir: Path) -> PruMUXConfig:
    return PruMUXConfig.from_dict(json.loads((model_dir / CONFIG_FILE).read_text()))


def _writable_workdir(workdir: str | Path) -> Path:
    path = Path(workdir).expanduser().resolve()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OSError(f"cannot create work dir {path}: {error.strerror}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise OSError(f"work dir {path} is not writable")
    return path
