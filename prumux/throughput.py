"""Throughput measurement with the paper's protocol, FLOP counts, and hardware names."""

from __future__ import annotations

import copy
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from prumux.config import EncoderConfig, PruMUXConfig


@dataclass
class ThroughputResult:
    """Instances per second of a model on one device, with what was measured."""

    examples_per_second: float
    seconds: float
    num_examples: int
    batch_size: int
    seq_len: int
    device: str
    dtype: str
    hardware: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def hardware_name(device: str | torch.device = "cpu") -> str:
    """A readable name of the device: GPU model, or CPU model and thread count."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu} ({torch.get_num_threads()} threads)"


def encoder_flops(encoder_config: EncoderConfig, seq_len: int) -> int:
    """Matmul FLOPs (2 per multiply-add) of one sequence through the encoder layers."""
    hidden, total = encoder_config.hidden_size, 0
    if encoder_config.projects_embeddings:
        total += 2 * seq_len * encoder_config.embedding_width * hidden
    for heads, ffn in zip(encoder_config.num_heads, encoder_config.intermediate_sizes):
        inner = heads * encoder_config.head_dim
        total += 2 * seq_len * (4 * hidden * inner + 2 * seq_len * inner)
        total += 2 * seq_len * 2 * hidden * ffn
    return total


def model_flops(config: PruMUXConfig, seq_len: int) -> float:
    """FLOPs per instance of a whole classification forward pass, counted as `encoder_flops` counts.

    Per mixed sequence of N instances: the encoder, the multiplexer's multiply and add on every
    instance element (2 N L H), and the demultiplexer's input projection of the mixed CLS state;
    per instance: the demultiplexer's residual blocks (and MUX-PLMs' pre_decoder), the pooler or
    ELECTRA's dense head, and the classifier. Embedding
    lookups, LayerNorms, activations and softmax count 0 here as in the encoder, and so does the
    demultiplexer's index projection (once per batch, not per instance).
    """
    n, hidden, width = config.num_instances, config.encoder.hidden_size, config.hidden_size
    per_sequence = encoder_flops(config.encoder, seq_len)
    per_instance = 0
    if config.has_demultiplexer:
        per_sequence += 2 * n * seq_len * config.encoder.embedding_width + 2 * hidden * width
        per_instance += 2 * width * width * (config.demux_layers + config.is_reference_layout)
    head = config.head_input_size
    if config.classifier_head != "linear":
        per_instance += 2 * head * width
        head = width
    per_instance += 2 * head * config.num_labels
    return per_sequence / n + per_instance


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_throughput(
    model: nn.Module,
    seq_len: int = 128,
    batch_size: int | None = None,
    num_batches: int = 4,
    warmup: int = 1,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    seed: int = 0,
) -> ThroughputResult:
    """Examples/s of `model` on full-length random batches of 128*N instances (the paper's protocol).

    Warm-up batches run first; each timed batch ends with one device sync. The model is
    moved to `device`/`dtype` on a copy when they differ from its own.
    """
    parameter = next(model.parameters())
    device = torch.device(device) if device is not None else parameter.device
    dtype = dtype or parameter.dtype
    if (parameter.device, parameter.dtype) != (device, dtype):
        model = copy.deepcopy(model).to(device=device, dtype=dtype)
    was_training = model.training
    model.eval()
    try:
        config = model.config
        return measure_forward(
            model,
            config.encoder.vocab_size,
            config.num_instances,
            seq_len,
            batch_size,
            num_batches,
            warmup,
            device,
            dtype,
            seed,
        )
    finally:
        model.train(was_training)


@torch.inference_mode()
def measure_forward(
    forward: Callable[[Tensor, Tensor], object],
    vocab_size: int,
    num_instances: int,
    seq_len: int = 128,
    batch_size: int | None = None,
    num_batches: int = 4,
    warmup: int = 1,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> ThroughputResult:
    """Examples/s of `forward(input_ids, attention_mask)` on full-length random batches (default 128*N rows).

    Warm-up batches run first; each timed batch ends with one device sync. `dtype` is what the
    forward computes in, recorded with the result.
    """
    if seq_len < 1 or num_batches < 1 or warmup < 0:
        raise ValueError(f"need seq_len >= 1, num_batches >= 1, warmup >= 0; got {seq_len}, {num_batches}, {warmup}")
    device = torch.device(device)
    batch_size = batch_size or 128 * num_instances
    generator = torch.Generator().manual_seed(seed)
    batches = [
        torch.randint(1000, vocab_size, (batch_size, seq_len), generator=generator).to(device)
        for _ in range(num_batches)
    ]
    attention_mask = torch.ones(batch_size, seq_len, dtype=torch.long, device=device)
    seconds = time_batches(forward, [(batch, attention_mask) for batch in batches], warmup, device)
    examples = batch_size * num_batches
    return ThroughputResult(
        examples / seconds,
        seconds,
        examples,
        batch_size,
        seq_len,
        str(device),
        str(dtype).removeprefix("torch."),
        hardware_name(device),
    )


def time_batches(forward: Callable[..., object], batches: list[tuple], warmup: int, device: torch.device) -> float:
    """Seconds `forward` takes on every batch of arguments, after `warmup` untimed calls; each call ends with one
    device sync."""
    for index in range(warmup):
        forward(*batches[index % len(batches)])
        synchronize(device)
    start = time.perf_counter()
    for batch in batches:
        forward(*batch)
        synchronize(device)
    return time.perf_counter() - start
