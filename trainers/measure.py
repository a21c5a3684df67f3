"""Throughput measured side by side with the dense model, on the runtime a point is served with and eager as the
paper measures it (`served_throughput`), and a checkpoint measured as a point (`measure_checkpoint`, `evaluate`).

Interleaving the model and the dense (1, 0) model in one process puts both under the same
load, so their ratio holds even on a shared, noisy machine (absolute throughputs do not).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from prumux import PruMUXConfig, PruMUXModel, hardware_name
from prumux.checkpoints import inspect_checkpoint
from prumux.inference import Runner, load_runner, measure_runner
from prumux.model import CONFIG_FILE
from trainers.data import encode_frame
from trainers.evaluate import accuracy, check_label_order
from trainers.families import family, model_for, tokenizer_for
from trainers.models import load_tokenizer, resolve_model
from trainers.phases.loop import Runtime
from trainers.tasks import load_task

# Interleaved throughput measurements of the model and the dense one (best of each).
MEASURE_ROUNDS = 2


@dataclass
class ServedThroughput:
    """A point's instances/s through the runtime it is served with, next to the dense model's on that runtime,
    and both in eager PyTorch (the paper's protocol) beside them."""

    inference_runtime: str  # the runtime measured: eager, torch or onnx (what auto picked)
    throughput: float
    dense_throughput: float
    eager_throughput: float
    eager_dense_throughput: float

    @property
    def speedup(self) -> float:
        return self.throughput / self.dense_throughput

    @property
    def eager_speedup(self) -> float:
        return self.eager_throughput / self.eager_dense_throughput


def served_throughput(
    model: PruMUXModel,
    dense: PruMUXModel | None,
    seq_len: int,
    batches: int,
    warmup: int,
    runtime: Runtime,
    inference_runtime: str = "eager",
) -> ServedThroughput:
    """Throughput of `model` through `inference_runtime` (one of prumux.inference.RUNTIMES) and of `dense` on the
    runtime it resolved to, and both eager, all measured interleaved (batches of 128 N at `seq_len`), best of
    MEASURE_ROUNDS each. `dense=None`: the model is its own baseline (the dense point).
    """
    dtype = torch.bfloat16 if runtime.bf16 else None
    models = {"point": model} if dense is None else {"point": model, "dense": dense}

    def runner(name: str, of: PruMUXModel) -> Runner:
        return load_runner(name, of, seq_len=seq_len, device=runtime.device, dtype=dtype)

    eager = {key: runner("eager", of) for key, of in models.items()}
    served = dict(eager) if inference_runtime == "eager" else {"point": runner(inference_runtime, model)}
    best: dict[tuple[str, str], float] = {}
    for _ in range(MEASURE_ROUNDS):
        for key, of in models.items():
            if key not in served:  # the dense model on the runtime the point resolved to (auto's pick)
                served[key] = runner(served["point"].name, of)
            measured = (
                {"served": served[key]} if served[key] is eager[key] else {"served": served[key], "eager": eager[key]}
            )
            for kind, timed in measured.items():
                speed = measure_runner(timed, seq_len, num_batches=batches, warmup=warmup).examples_per_second
                best[kind, key] = max(best.get((kind, key), 0.0), speed)
    for key in models:
        best.setdefault(("eager", key), best["served", key])
    baseline = "point" if dense is None else "dense"
    return ServedThroughput(
        served["point"].name,
        best["served", "point"],
        best["served", baseline],
        best["eager", "point"],
        best["eager", baseline],
    )


def dense_counterpart(config: PruMUXConfig, seed: int = 0) -> PruMUXModel:
    """A dense (N = 1, unpruned) classifier of the model's architecture: what its speed-up is measured against.

    Throughput depends on the shape, not on the weights, so its weights are random.
    """
    dense = PruMUXConfig(
        encoder=config.dense_encoder(),
        num_labels=config.num_labels,
        hidden_size=config.dense_encoder().hidden_size,
        classifier_head="pooler",
    )
    return PruMUXModel(dense, seed).eval()


@dataclass
class CheckpointMeasurement:
    """One trained checkpoint measured as the paper measures it: a point (N, s) for Auto-PruMUX."""

    model: str
    task: str
    N: int
    sparsity: float  # realised: fraction of the unpruned encoder's prunable parameters removed
    val_accuracy: float
    test_accuracy: float
    throughput: float  # instances per second
    dense_throughput: float  # the dense (1, 0) model of the same architecture, measured side by side
    speedup: float
    inference_runtime: str  # the runtime throughput was measured on (eager: the paper's protocol)
    eager_throughput: float  # the model's throughput in eager PyTorch, measured beside it
    eager_speedup: float
    layout: str
    seq_len: int
    hardware: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure_checkpoint(
    model_name: str,
    task: str,
    N: int | None = None,
    tokenizer: str | None = None,
    seq_len: int = 128,
    batches: int = 4,
    warmup: int = 1,
    device: str | None = None,
    bf16: bool = False,
    max_eval_examples: int | None = None,
    log: Callable[[str], None] = lambda _: None,
    inference_runtime: str = "eager",
) -> CheckpointMeasurement:
    """Validation / test accuracy and throughput next to the dense model (batch 128 N, padded to `seq_len`),
    through `inference_runtime` (prumux.inference.RUNTIMES), with the eager figures beside it.

    `model_name` is a checkpoint (alias, folder or hub id), or a family with `N`. Its labels
    must be the task's, in the task's order; a checkpoint without a task head is refused.
    """
    checkpoint_width(model_name, N)
    source = resolve_model(model_for(model_name, N) if N else model_name)
    data = load_task(task)
    _require_task_head(source, data.spec.num_labels)
    runtime = Runtime.create(device, bf16)
    model = PruMUXModel.from_pretrained(source, num_instances=N, num_labels=data.spec.num_labels).eval()
    words = load_tokenizer(tokenizer or (tokenizer_for(model_name, N) if N else model_name))
    splits = {
        name: encode_frame(frame.head(max_eval_examples), words, seq_len)
        for name, frame in (("validation", data.validation), ("test", data.test))
    }
    log(
        f"{source}: N={model.config.num_instances} ({model.config.layout} layout), {len(splits['validation'])} "
        f"validation rows at length {seq_len}"
    )
    model.to(runtime.device)
    check_label_order(model, data.spec.label_names, splits["validation"], 128, source)
    val, test = (accuracy(model, splits[name], 128) for name in ("validation", "test"))
    log(f"accuracy: validation {val:.4f}, test {test:.4f}; measuring throughput next to the dense model")
    dense = dense_counterpart(model.config).to(runtime.device)
    speed = served_throughput(model, dense, seq_len, batches, warmup, runtime, inference_runtime)
    config = model.config
    return CheckpointMeasurement(
        model=source,
        task=task,
        N=config.num_instances,
        sparsity=config.realised_sparsity,
        val_accuracy=val,
        test_accuracy=test,
        throughput=speed.throughput,
        dense_throughput=speed.dense_throughput,
        speedup=speed.speedup,
        inference_runtime=speed.inference_runtime,
        eager_throughput=speed.eager_throughput,
        eager_speedup=speed.eager_speedup,
        layout=config.layout,
        seq_len=seq_len,
        hardware=hardware_name(runtime.device),
    )


def checkpoint_width(model_name: str, N: int | None = None) -> int:
    """The width N a checkpoint multiplexes (a family's member needs `N`)."""
    if family(model_name) is not None:
        if N is None:
            raise ValueError(f"{model_name!r} is a model family: give the width N of the checkpoint to measure")
        return N
    source = resolve_model(model_name)
    if (Path(source) / CONFIG_FILE).is_file():
        return PruMUXConfig.from_dict(json.loads((Path(source) / CONFIG_FILE).read_text())).num_instances
    info = inspect_checkpoint(source)
    return info.config.num_instances if info.multiplexed else 1


def _require_task_head(source: str, num_labels: int) -> None:
    """A checkpoint measured for accuracy must be a classifier: one of ours, or one with a stored head."""
    if (Path(source) / CONFIG_FILE).is_file():
        return
    if not inspect_checkpoint(source, num_labels=num_labels).has_task_head:
        raise ValueError(f"{source} has no task head (it is a pretrained model): fine-tune it first with `train`")
