"""Choosing a runtime by name: eager, torch, onnx, or auto (the fastest, timed once per input shape)."""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import torch
from torch import Tensor

from prumux.inference.onnx import OnnxRunner, export_onnx, onnx_available, require_onnx
from prumux.inference.runners import EagerRunner, TorchRunner
from prumux.model import PruMUXModel
from prumux.throughput import ThroughputResult, measure_forward, time_batches

RUNTIMES = ("auto", "torch", "onnx", "eager")
AUTO_ROUNDS = 3  # interleaved timed calls per candidate and shape (the best counts), after one untimed call each


def check_runtime(name: str) -> None:
    """Refuse, in one line, a runtime that is not one of RUNTIMES or whose packages are missing (naming the extra)."""
    if name not in RUNTIMES:
        raise ValueError(f"unknown runtime {name!r}; expected one of {', '.join(RUNTIMES)}")
    if name == "onnx":
        require_onnx()


class Runner(Protocol):
    """Logits [rows, C] (float32) of any number of rows, like the model's forward pass."""

    name: str
    num_instances: int
    vocab_size: int
    device: torch.device
    dtype: torch.dtype

    def __call__(
        self, input_ids: Tensor, attention_mask: Tensor | None = None, token_type_ids: Tensor | None = None
    ) -> Tensor: ...


def load_runner(
    name: str,
    model: PruMUXModel,
    *,
    seq_len: int,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    workdir: Path | None = None,
) -> Runner:
    """The runner `name` (one of RUNTIMES) of `model`, for rows of up to `seq_len` tokens.

    The onnx runtime exports the graph into `workdir` (kept as model.onnx) or a temporary folder;
    auto picks among torch and, when its packages are installed, onnx.
    """
    if name not in RUNTIMES:
        raise ValueError(f"unknown runtime {name!r}; expected one of {', '.join(RUNTIMES)}")
    if name == "eager":
        return EagerRunner(model, device, dtype)
    if name == "torch":
        return TorchRunner(model, device, dtype)
    if name == "onnx":
        require_onnx()
        return _onnx_runner(model, seq_len, workdir)
    torch_runner = TorchRunner(model, device, dtype)
    candidates: list[Runner] = [torch_runner]
    if onnx_available():
        candidates.append(_onnx_runner(model, seq_len, workdir))
    return AutoRunner(candidates, torch_runner.cut_padding)


def _onnx_runner(model: PruMUXModel, seq_len: int, workdir: Path | None) -> OnnxRunner:
    if workdir is not None:
        path = Path(workdir) / "model.onnx"
        export_onnx(model, path, seq_len)
        return OnnxRunner(path)
    with tempfile.TemporaryDirectory() as folder:  # the session holds the graph once loaded
        path = Path(folder) / "model.onnx"
        export_onnx(model, path, seq_len)
        return OnnxRunner(path)


class AutoRunner:
    """The fastest of `runners`, timed on the first call of each size (rows x columns, rounded up to a power
    of two: a served batch's rows and columns vary from call to call) and remembered for that size.

    `cut` (TorchRunner.cut_padding) first drops the padding columns every runner computes the same
    without, so a size is what the runners get. Its name, device and dtype are those of the runner
    that served the last call (the first one's before).
    """

    def __init__(self, runners: list[Runner], cut: Callable[..., tuple] | None = None):
        self.runners = runners
        self.cut = cut
        self.chosen: dict[int, Runner] = {}
        self.last = runners[0]
        self.num_instances = self.last.num_instances
        self.vocab_size = self.last.vocab_size

    @property
    def name(self) -> str:
        return self.last.name

    @property
    def device(self) -> torch.device:
        return self.last.device

    @property
    def dtype(self) -> torch.dtype:
        return self.last.dtype

    def __call__(
        self, input_ids: Tensor, attention_mask: Tensor | None = None, token_type_ids: Tensor | None = None
    ) -> Tensor:
        inputs = (input_ids, attention_mask, token_type_ids)
        if self.cut is not None:
            inputs = self.cut(*inputs)
        size = self.size(inputs[0].shape)
        if size not in self.chosen:
            self.chosen[size] = self._fastest(inputs)
        self.last = self.chosen[size]
        return self.last(*inputs)

    @staticmethod
    def size(shape: tuple[int, ...] | torch.Size) -> int:
        """The size class of a call on inputs of `shape`: its token count rounded up to a power of two."""
        return 1 << (math.prod(shape) - 1).bit_length()

    def _fastest(self, inputs: tuple) -> Runner:
        """The runner with the shortest call on `inputs`, timed in interleaved rounds (load falls on all alike)."""
        for runner in self.runners:
            runner(*inputs)
        best = [float("inf")] * len(self.runners)
        for _ in range(AUTO_ROUNDS):
            for index, runner in enumerate(self.runners):
                best[index] = min(best[index], time_batches(runner, [inputs], 0, runner.device))
        return self.runners[best.index(min(best))]


def measure_runner(
    runner: Runner,
    seq_len: int = 128,
    batch_size: int | None = None,
    num_batches: int = 4,
    warmup: int = 1,
    seed: int = 0,
) -> ThroughputResult:
    """Examples/s through `runner` with the paper's protocol: full-length random batches of 128*N rows by default."""
    result = measure_forward(
        runner,
        runner.vocab_size,
        runner.num_instances,
        seq_len,
        batch_size,
        num_batches,
        warmup,
        runner.device,
        runner.dtype,
        seed,
    )
    result.dtype = str(runner.dtype).removeprefix("torch.")  # auto's pick is known once it has run
    return result
