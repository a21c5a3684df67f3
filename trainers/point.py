"""One grid point (N, s): train it through the phases it needs, evaluate it, measure its speed.

    (1, 0) dense    phase 2 with N = 1
    (N, 0) DataMUX  phases 1-2
    (1, s) CoFi     phase 2 with N = 1 (the dense model, also the teacher), then phase 3
    (N, s) PruMUX   phases 1-2-3

A point starts from the base model's checkpoint for its N (`trainers.families`). What that
checkpoint already learnt is not trained again: a MUX-PLM (pretrained with multiplexing)
skips phase 1 and MLM; one fine-tuned on the task (its labels checked against the task's)
is only evaluated in phase 2, and phase 3 prunes it with itself as the teacher, which is
the PruMUX paper's pipeline. `PointResult.phases` says what ran and from which checkpoint.

Phases 1-2 come from the work dir's cache (trained under its lock when missing); phase 3
lives in the point's own folder under the point's lock. Every stage resumes from its
checkpoint, so rerunning a killed job continues it; rerunning a finished job returns its
stored result.

Every evaluation reaches ``on_evaluation`` at the point's own cumulative step
(``trainers.curve``), the cached phase 1-2 evaluations included, and the whole curve is kept in
the result (``curve``: ``[step, accuracy, stage]`` rows, ``total_steps``).

``train_point(..., stop_at_step=k)`` trains a point only up to step k, evaluates it there on the
final evaluation's validation rows (an evaluation that selects no kept state, so training is
exactly as without the stop), saves the running stage's checkpoint and returns a ``PausedPoint``;
called again (with a later step, or none) it resumes there. The configurations of a sweep are
trained so, rung by rung (``tuning.bracket``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from prumux import EncoderConfig, PruMUXConfig, PruMUXModel, hardware_name, prunable_parameters, realised_sparsity
from prumux.checkpoints import inspect_checkpoint
from prumux.model import CONFIG_FILE
from storage.points import DENSE_POINT, family, is_dense
from trainers.cache import (
    LockFactory,
    ThroughputCache,
    cache_entry,
    locked,
    pruning_directory,
    slug,
    write_json_atomic,
)
from trainers.curve import STAGE_ORDER, Evaluation, PointCurve, point_stages
from trainers.data import EncodedTask, encode_task
from trainers.evaluate import accuracy, check_label_order
from trainers.families import model_for, tokenizer_for
from trainers.job import check_writable_dir
from trainers.measure import served_throughput
from trainers.models import load_tokenizer, resolve_model
from trainers.phases.loop import Runtime, StageContext, resume_finished, save_output
from trainers.phases.multiplexed import train_multiplexed
from trainers.phases.pruning import train_pruned
from trainers.phases.retrieval import train_retrieval
from trainers.point_spec import PointSpec
from trainers.progress import Paused, job_log, pausing, reporting_evaluations
from trainers.recipes import Recipe
from trainers.tasks import TaskSpec, load_task

PHASES = ("retrieval", "multiplexed", "pruning", "measure")
PHASE12_PHASES = PHASES[:2]  # the phase_seconds of phases 1-2: a cached model's are copied from its entry
RESULT_FILE = "result.json"
TRAINED, SKIPPED, EVALUATED = "trained", "skipped", "evaluated"


@dataclass
class PointResult:
    """What one trained (N, s) point scored and how fast it runs (accuracies are fractions).

    `speedup` is measured side by side: the point's model and the dense (1, 0) model are
    timed interleaved in the same process (best of each), so the ratio holds whatever the
    machine's load. `dense_throughput` is the per-hardware dense reference cached in the
    work dir (its first measurement) and `throughput` = speedup * dense_throughput, so
    absolute throughputs in a study are normalised to one load condition. Both are measured on
    `inference_runtime` (the runtime the point will be served with); `eager_throughput` and
    `eager_speedup` are the paper's protocol (eager PyTorch) beside them.
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
    checkpoint: str = ""  # the checkpoint phases 1-2 started from
    phases: dict[str, str] = field(default_factory=dict)  # retrieval, mlm, finetune, pruning: trained/skipped/evaluated
    total_steps: int = 0  # the point's own training steps, shared phases 1-2 included
    train_size: int = 0  # rows of the task's training split (a stage set in epochs takes its steps from it)
    curve: list[list] = field(default_factory=list)  # [step, validation accuracy, stage] per evaluation, by step
    inference_runtime: str = "eager"  # the runtime throughput and speedup were measured on (auto: its pick)
    eager_throughput: float | None = None  # eager PyTorch, normalised as throughput is (None: as throughput)
    eager_speedup: float | None = None  # eager PyTorch, side by side (None: as speedup)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def phase12_steps(self) -> int:
        """The point's phase 1-2 steps."""
        return self.steps_through("finetune")

    def steps_through(self, stage: str) -> int:
        """The point's steps at the end of ``stage`` (of phases 1-2's at ``finetune``; every stage evaluates at its end)."""
        stages = STAGE_ORDER[: STAGE_ORDER.index(stage) + 1]
        return max((step for step, _, name in self.curve if name in stages), default=0)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PointResult:
        return cls(**values)


def point_directory(workdir: str | Path, task: str, base_model: str, N: int, s: float, recipe: Recipe) -> Path:
    """Where the point's phase-3 checkpoints, models and result live."""
    name = f"N{N}-s{s:g}-r{recipe.digest()}-seed{recipe.seed}"
    return Path(workdir).expanduser().resolve() / "points" / slug(task) / slug(base_model) / name


@dataclass(frozen=True)
class _Job:
    """One point's job: the point, where it runs, how it locks and what its speed is measured on."""

    point: PointSpec  # its work dir checked and created
    runtime: Runtime
    lock: LockFactory | None = None  # the work dir's cross-process lock; None: lock files
    inference_runtime: str = "eager"  # what the throughput is measured on (prumux.inference.RUNTIMES)

    @property
    def workdir(self) -> Path:
        return Path(self.point.workdir)


@dataclass(frozen=True)
class PausedPoint:
    """A point stopped before its end (``train_point`` with ``stop_at_step``): its stages (name, steps) in order
    and the rows of its task's training split (which the stages' steps follow from)."""

    stages: tuple[tuple[str, int], ...]
    train_size: int

    @property
    def total_steps(self) -> int:
        return sum(steps for _, steps in self.stages)


def train_point(
    point: PointSpec,
    progress: bool = True,
    *,
    device: str | None = None,
    bf16: bool = False,
    lock: LockFactory | None = None,
    on_evaluation: Callable[[Evaluation], None] | None = None,
    stop_at_step: int | None = None,
    inference_runtime: str = "eager",
) -> PointResult | PausedPoint:
    """Train (or resume, or reuse) the point and measure it;
    hand every evaluation to `on_evaluation` as it is made.

    With ``stop_at_step``, training stops at that step of the point (at once if it is there or past it),
    evaluated there where its stage evaluates: the running stage saves its checkpoint and a
    ``PausedPoint`` is returned (a later call resumes there).
    Without it, the point always trains to its end and its result is returned.

    ``lock`` locks the point's folder and the phase 1-2 cache entries while this job uses them
    (`trainers.cache.locked`; default: lock files, for nodes that share a filesystem with locks).

    ``inference_runtime`` (`prumux.inference.RUNTIMES`) is the runtime the throughput is measured on, eager
    beside it; a finished point's stored result measured on another runtime is measured again (not trained)."""
    task, base_model, N, s, recipe = point.task, point.base_model, point.N, point.s, point.recipe
    point = point.in_workdir(_writable_workdir(point.workdir))
    job = _Job(point, Runtime.create(device, bf16), lock, inference_runtime)
    data = load_task(task, seed=recipe.seed)
    tokenizer = load_tokenizer(tokenizer_for(base_model, N))
    encoded = encode_task(data, tokenizer, recipe)
    label = point.label
    point_dir = point_directory(job.workdir, task, base_model, N, s, recipe)
    curve = PointCurve(on_evaluation)
    pause = None if stop_at_step is None else curve.reached(stop_at_step)
    with job_log(job.workdir, label) as log, locked(point_dir, log, job.lock), reporting_evaluations(curve):
        if (point_dir / RESULT_FILE).is_file():
            log.info("already trained: %s", point_dir / RESULT_FILE)
            stored = PointResult.from_dict(json.loads((point_dir / RESULT_FILE).read_text()))
            if inference_runtime == stored.inference_runtime:
                return stored
            saved = PruMUXModel.from_pretrained(stored.model_dir).to(job.runtime.device).eval()
            measured = replace(stored, **_speed(job, saved, log))
            write_json_atomic(point_dir / RESULT_FILE, measured.to_dict())
            return measured
        ctx = StageContext(recipe, job.runtime, point_dir, label, log, progress)
        seconds = dict.fromkeys(PHASES, 0.0)
        try:
            with pausing(pause):
                phase2_dir, cache_hit, record = _phase12(job, data.spec, encoded, tokenizer, ctx, seconds, curve)
                model_dir = phase2_dir
                if s > 0:
                    pruning_dir = pruning_directory(job.workdir, task, base_model, N, s, recipe)
                    with locked(pruning_dir, log, job.lock):
                        _, seconds["pruning"] = train_pruned(phase2_dir, s, encoded, ctx, pruning_dir)
                    model_dir = ctx.output("model")
        except Paused:
            return PausedPoint(tuple(curve.stages_), len(encoded.train))
        result = _measure(job, encoded, model_dir, _saved_config(phase2_dir).dense_encoder(), seconds, log)
        result.cache_hit, result.checkpoint = cache_hit, record["checkpoint"]
        result.phases = record["phases"] | {"pruning": TRAINED if s > 0 else SKIPPED}
        result.total_steps, result.curve = curve.total_steps_, curve.rows()
        write_json_atomic(point_dir / RESULT_FILE, result.to_dict())
        log.info("result: %s", json.dumps(result.to_dict()))
        return result


def _phase12(
    job: _Job,
    spec: TaskSpec,
    encoded: EncodedTask,
    tokenizer,
    ctx: StageContext,
    seconds: dict[str, float],
    curve: PointCurve | None = None,
) -> tuple[Path, bool, dict[str, Any]]:
    """The cached phase 1-2 model folder (training it under the entry's lock if missing), whether it was a hit,
    and the entry's record (phase seconds, the phases that ran, the starting checkpoint); `curve` is given
    the point's stages once the phases are known."""
    entry = cache_entry(job.workdir, job.point.task, job.point.base_model, job.point.N, job.point.recipe)
    with entry.locked(ctx.log, job.lock):
        if entry.exists():
            ctx.log.info("phases 1-2 cache hit: %s", entry.directory)
            record = {"checkpoint": "", "phases": {}} | entry.record()
            seconds.update(record["phase_seconds"])
            if curve is not None:
                curve.plan(_point_stages(job, len(encoded.train), record["phases"]))
                resume_finished(entry.model_dir)  # the cached fine-tuning's evaluations, reported again
            return entry.model_dir, True, record
        ctx.log.info("phases 1-2 cache miss: training %s", entry.directory)
        # named by the entry's own identity: every point of its N, at any s, resumes its checkpoints
        entry_job = f"{job.point.task}/{job.point.base_model}/N={job.point.N} phase1-2"
        entry_ctx = StageContext(job.point.recipe, job.runtime, entry.directory, entry_job, ctx.log, ctx.progress)
        special = list(tokenizer.all_special_ids)
        start = _starting_point(job, spec, encoded, tokenizer, ctx)
        model, phases = start.model, start.phases(job.point.N, job.point.recipe)
        if curve is not None:
            curve.plan(_point_stages(job, len(encoded.train), phases))
        if phases["retrieval"] == TRAINED:
            model, seconds["retrieval"] = train_retrieval(model, encoded.train, special, entry_ctx)
        if phases["finetune"] == EVALUATED:
            save_output(entry_ctx, "finetune", entry.model_dir, model, {"seconds": 0.0, "steps": 0})
        else:
            _, seconds["multiplexed"] = train_multiplexed(
                model, encoded, special, tokenizer.mask_token_id, entry_ctx, mlm=phases["mlm"] == TRAINED
            )
        record = {
            "phase_seconds": {phase: seconds[phase] for phase in PHASE12_PHASES},
            "checkpoint": start.checkpoint,
            "phases": phases,
        }
        entry.commit(record)
        return entry.model_dir, False, record


def _point_stages(job: _Job, train_size: int, phases: dict[str, str]) -> list[tuple[str, int]]:
    trained = [stage for stage, state in phases.items() if state == TRAINED]
    return point_stages(job.point.recipe, job.point.N, job.point.s, train_size, trained)


@dataclass
class _StartingPoint:
    """The model phases 1-2 start from, and what its checkpoint already learnt."""

    model: PruMUXModel
    checkpoint: str
    multiplexed: bool  # pretrained with multiplexing at this N: no retrieval warm-up or MLM
    fine_tuned: bool  # fine-tuned on this task: phase 2 only evaluates it

    def phases(self, N: int, recipe: Recipe) -> dict[str, str]:
        adapt = N > 1 and not self.multiplexed  # retrieval and MLM teach a plain base to multiplex
        return {
            "retrieval": TRAINED if adapt and recipe.runs("retrieval") else SKIPPED,
            "mlm": TRAINED if adapt and recipe.runs("mlm") else SKIPPED,
            "finetune": EVALUATED if self.fine_tuned else TRAINED,
        }


def _starting_point(job: _Job, spec: TaskSpec, encoded: EncodedTask, tokenizer, ctx: StageContext) -> _StartingPoint:
    """The checkpoint of the base model for the job's N, loaded, with a fine-tuned one's labels checked.

    A plain checkpoint at N > 1 with the recipe's `mux_start` "dense" starts from the dense (1, 0)
    model instead, trained first if the cache lacks it.
    """
    source = resolve_model(model_for(job.point.base_model, job.point.N))
    recipe = job.point.recipe
    if (Path(source) / CONFIG_FILE).is_file():  # one of ours: a trained classifier
        stored_N, head = _saved_config(Path(source)).num_instances, True
    else:
        info = inspect_checkpoint(source, job.point.N, spec.num_labels)
        stored_N, head = info.config.num_instances if info.multiplexed else 1, info.has_task_head
    # a dense classifier widened to N is trained
    multiplexed, fine_tuned = stored_N > 1, head and stored_N == job.point.N
    if job.point.N > 1 and not multiplexed and recipe.mux_start == "dense":
        with reporting_evaluations(None), pausing(None):  # the dense model's curve is the dense point's, not this one's
            dense = replace(job, point=job.point.at(*DENSE_POINT))
            source, _, _ = _phase12(dense, spec, encoded, tokenizer, ctx, dict.fromkeys(PHASES, 0.0))
        fine_tuned = False  # its head is the dense model's, trained again with the new mux and demux
    model = PruMUXModel.from_pretrained(
        source,
        num_instances=job.point.N,
        num_labels=spec.num_labels,
        mux_norm=recipe.task_mux_norm,
        seed=recipe.seed,
        muxing_variant=recipe.muxing_variant,
    )
    if fine_tuned:
        check_label_order(model, spec.label_names, encoded.validation, recipe.eval_batch_size, source)
    elif model.config.label_names is None:
        model.config.label_names = list(spec.label_names)
    ctx.log.info(
        "phases 1-2 start from %s (multiplexed: %s, fine-tuned on the task: %s)", source, multiplexed, fine_tuned
    )
    return _StartingPoint(model.to(job.runtime.device), str(source), multiplexed, fine_tuned)


def _measure(
    job: _Job, encoded: EncodedTask, model_dir: Path, base_encoder: EncoderConfig, seconds: dict[str, float], log
) -> PointResult:
    """Evaluate the saved model (reloaded from disk) and measure its speed-up over the dense model side by side."""
    started = time.monotonic()
    recipe = job.point.recipe
    model = PruMUXModel.from_pretrained(model_dir).to(job.runtime.device)
    val = accuracy(model, encoded.validation, recipe.eval_batch_size)
    test = accuracy(model, encoded.test, recipe.eval_batch_size)
    speed = _speed(job, model.eval(), log)
    seconds["measure"] = time.monotonic() - started
    kept = prunable_parameters(model.config.encoder)
    return PointResult(
        task=job.point.task,
        base_model=job.point.base_model,
        recipe=recipe.name,
        N=job.point.N,
        s=job.point.s,
        val_accuracy=val,
        test_accuracy=test,
        sparsity=realised_sparsity(model.config.encoder, base_encoder),
        prunable_parameters=kept,
        total_parameters=sum(p.numel() for p in model.parameters()),
        phase_seconds={phase: round(value, 2) for phase, value in seconds.items()},
        model_dir=str(model_dir),
        hardware=hardware_name(job.runtime.device),
        family=family(job.point.N, job.point.s),
        recipe_values=recipe.to_dict(),
        train_size=len(encoded.train),
        **speed,
    )


def _speed(job: _Job, model: PruMUXModel, log) -> dict[str, Any]:
    """The model's throughput fields: its speed-up over the dense model on the job's inference runtime and
    eager, measured side by side, each normalised by its runtime's dense reference (the work dir's first)."""
    recipe = job.point.recipe
    dense_model = None if is_dense(job.point.N, job.point.s) else _dense_model(job, model.config.num_labels)
    shape = (recipe.seq_len, recipe.throughput_batches, recipe.throughput_warmup, job.runtime)
    served = served_throughput(model, dense_model, *shape, job.inference_runtime)
    reference = _dense_reference(job, served.inference_runtime, served.dense_throughput, log)
    eager_reference = _dense_reference(job, "eager", served.eager_dense_throughput, log)
    return {
        "throughput": served.speedup * reference,
        "dense_throughput": reference,
        "speedup": served.speedup,
        "inference_runtime": served.inference_runtime,
        "eager_throughput": served.eager_speedup * eager_reference,
        "eager_speedup": served.eager_speedup,
    }


def _dense_reference(job: _Job, inference_runtime: str, measured: float, log) -> float:
    """The dense model's throughput on ``inference_runtime`` that this work dir measured first (``measured`` if none)."""
    cache = ThroughputCache(job.workdir)
    key = _throughput_key(job.point.base_model, job.point.recipe, job.runtime, inference_runtime)
    if (reference := cache.get(key)) is None:
        log.info("dense reference throughput for %s: %.1f instances/s", key, measured)
        cache.put(key, measured)
        reference = measured
    return reference


def _dense_model(job: _Job, num_labels: int) -> PruMUXModel:
    """The dense (1, 0) model: the cached phase-2 model if trained, else the base checkpoint (same shape, same speed)."""
    entry = cache_entry(job.workdir, job.point.task, job.point.base_model, 1, job.point.recipe)
    if entry.exists():
        model = PruMUXModel.from_pretrained(entry.model_dir)
    else:
        model = PruMUXModel.from_pretrained(resolve_model(model_for(job.point.base_model, 1)), num_labels=num_labels)
    return model.to(job.runtime.device).eval()


def _throughput_key(base_model: str, recipe: Recipe, runtime: Runtime, inference_runtime: str = "eager") -> str:
    precision = "bf16" if runtime.bf16 else "fp32"
    key = f"{hardware_name(runtime.device)}|{resolve_model(model_for(base_model, 1))}|len{recipe.seq_len}|{precision}"
    return key if inference_runtime == "eager" else f"{key}|{inference_runtime}"  # eager: the key before runtimes


def _saved_config(model_dir: Path) -> PruMUXConfig:
    return PruMUXConfig.from_dict(json.loads((model_dir / CONFIG_FILE).read_text()))


def _writable_workdir(workdir: str | Path) -> Path:
    """The work dir, checked (`check_writable_dir`) and created."""
    path = check_writable_dir(workdir, "work dir")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OSError(f"cannot create work dir {path}: {error.strerror}") from None
    return path
