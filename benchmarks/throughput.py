"""Throughput of dense, DataMUX, CoFi and PruMUX shapes in one run (random weights: speed depends on shape).

PYTHONPATH=. python3 benchmarks/throughput.py --quick                       # MiniLM-L6, length 32, 1 thread, ~2 min
PYTHONPATH=. python3 benchmarks/throughput.py --shape bert-base --threads 1  # BERT-base, length 128, 1 batch each, ~10 min
PYTHONPATH=. python3 benchmarks/throughput.py --shape bert-base --device cuda --dtype bfloat16

Every point is measured with `prumux.measure_throughput` (batches of 128 N instances). All models
of a table are built first and measured in interleaved rounds, each round timing every model
once, and each model reports its best round: on a shared machine load comes and goes, and
interleaving exposes every model to the same load. On cores other jobs also use, a second
thread mostly waits at OpenMP barriers (2-4x slower here, worst for small models), so `--quick`
runs on one thread unless `--threads` says otherwise.

Columns: examples/s (instances), speed-up over dense (1, 0), and two FLOP ideals of that
speed-up with the measured share of each:
- encoder ideal = N x dense encoder FLOPs / pruned encoder FLOPs (the paper's ratio);
- model ideal = dense whole-model FLOPs per instance / this model's (`prumux.model_flops`: adds
  the multiplexer's multiply-add on every instance element, the CLS demultiplexer, pooler and
  classifier; lookups, LayerNorms and activations count 0 everywhere).
Neither counts memory traffic. Work done per instance rather than per mixed sequence (embedding
lookup, its LayerNorm, the multiplexer) does not shrink with s, so at high N and s it is most of
the time left, and the measured speed-up falls short of both ideals.

The multiplexer + demultiplexer share is timed with hooks on those modules during real forward
passes of the (10, 0) model (dense encoder), over those passes' own times.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass

import torch
from torch import nn

from prumux import (
    EncoderConfig,
    L0Module,
    PruMUXConfig,
    PruMUXModel,
    ThroughputResult,
    encoder_flops,
    hardware_name,
    measure_throughput,
    model_flops,
    prunable_parameters,
    prune,
)

SHAPES = {
    "bert-base": EncoderConfig.dense(12, 768, 12, 3072),
    "minilm-l6": EncoderConfig.dense(6, 384, 12, 1536),
}
WIDTHS = (2, 5, 10)
SPARSITIES = (0.6, 0.8, 0.9, 0.95)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
MUX_SHARE_POINT = (10, 0.0)
TABLE_HEADER = (
    "| family | N | s | realised s | examples/s | speed-up | ideal (encoder) | ideal (model) | / encoder ideal | / model ideal |\n"
    "|---|---|---|---|---|---|---|---|---|---|"
)


@dataclass
class Budget:
    """How much to measure: sequence length, timed batches per round, rounds."""

    seq_len: int
    num_batches: int
    rounds: int
    time_budget: float | None = None  # seconds of measuring after which no further round starts
    threads: int | None = None  # None: torch's default


def default_budget(quick: bool, shape: str, device: str) -> Budget:
    """Quick: length 32, up to 5 rounds in 100 s, one thread; BERT-base on CPU: one batch once (tens of
    seconds each); otherwise 5 batches x 3 rounds."""
    if quick:
        return Budget(32, 1, 5, 100.0, threads=1)
    if shape == "bert-base" and torch.device(device).type == "cpu":
        return Budget(128, 1, 1)
    return Budget(128, 5, 3)


def build(shape: EncoderConfig, num_instances: int, sparsity: float) -> PruMUXModel:
    """A random-weight model of width N whose encoder is pruned to `sparsity` by at_sparsity masks."""
    config = PruMUXConfig(encoder=shape, num_instances=num_instances, hidden_size=shape.hidden_size)
    model = PruMUXModel(config)
    if sparsity > 0:
        model = prune(model, L0Module.at_sparsity(shape, sparsity).deterministic_masks())
    return model


def share_vocabulary_tables(model: PruMUXModel, reference: PruMUXModel) -> None:
    """Use the reference's word embeddings and MLM decoder (same shapes, random weights): saves memory."""
    model.encoder.embeddings.word.weight = reference.encoder.embeddings.word.weight
    model.token_head.decoder.weight = reference.token_head.decoder.weight


def family(num_instances: int, sparsity: float) -> str:
    return {(False, False): "dense", (True, False): "DataMUX", (False, True): "CoFi", (True, True): "PruMUX"}[
        (num_instances > 1, sparsity > 0)
    ]


def grid_points(widths: tuple[int, ...], sparsities: tuple[float, ...]) -> list[tuple[int, float]]:
    """Dense, DataMUX at every N, then CoFi and PruMUX at every s."""
    return [(1, 0.0)] + [(n, 0.0) for n in widths] + [(n, s) for s in sparsities for n in (1, *widths)]


def measure_rounds(
    models: dict[tuple[int, float], PruMUXModel], args: argparse.Namespace
) -> tuple[dict[tuple[int, float], ThroughputResult], int]:
    """Best of up to `rounds` interleaved measurements per model, and the rounds run.

    Warm-up batches run in the first round only. A further round starts only while the previous
    round's duration still fits in `time_budget`.
    """
    best: dict[tuple[int, float], ThroughputResult] = {}
    start = time.perf_counter()
    for round_index in range(args.rounds):
        round_start = time.perf_counter()
        for point, model in models.items():
            result = measure_throughput(
                model, args.seq_len, num_batches=args.num_batches, warmup=0 if round_index else args.warmup
            )
            if point not in best or result.examples_per_second > best[point].examples_per_second:
                best[point] = result
        now = time.perf_counter()
        if args.time_budget and now - start + (now - round_start) > args.time_budget:
            break
    return best, round_index + 1


class ModuleTimer:
    """Seconds spent inside some modules' forward calls (device-synchronised), via hooks."""

    def __init__(self, modules: list[nn.Module], device: torch.device):
        self.seconds, self.device, self._start = 0.0, device, 0.0
        self.handles = [
            h for m in modules for h in (m.register_forward_pre_hook(self._enter), m.register_forward_hook(self._exit))
        ]

    def _enter(self, *_: object) -> None:
        self.sync()
        self._start = time.perf_counter()

    def _exit(self, *_: object) -> None:
        self.sync()
        self.seconds += time.perf_counter() - self._start

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


@torch.inference_mode()
def mux_demux_share(model: PruMUXModel, seq_len: int, passes: int) -> float:
    """Smallest share, over `passes` forward passes of 128 N instances, of time inside the multiplexer and demultiplexer."""
    device = next(model.parameters()).device
    input_ids = torch.randint(
        1000, model.config.encoder.vocab_size, (128 * model.num_instances, seq_len), device=device
    )
    attention_mask = torch.ones_like(input_ids)
    timer = ModuleTimer([model.multiplexer, model.demultiplexer], device)
    shares = []
    for _ in range(passes):
        timer.seconds = 0.0
        start = time.perf_counter()
        model(input_ids, attention_mask)
        timer.sync()
        shares.append(timer.seconds / (time.perf_counter() - start))
    timer.remove()
    return min(shares)


def table_row(
    point: tuple[int, float],
    model: PruMUXModel,
    result: ThroughputResult,
    dense: tuple[float, PruMUXModel],
    seq_len: int,
) -> str:
    """One markdown row: measured speed, speed-up, both FLOP ideals and the share of each reached."""
    n, s = point
    dense_speed, dense_model = dense
    encoder = model.config.encoder
    speedup = result.examples_per_second / dense_speed
    encoder_ideal = n * encoder_flops(dense_model.config.encoder, seq_len) / encoder_flops(encoder, seq_len)
    model_ideal = model_flops(dense_model.config, seq_len) / model_flops(model.config, seq_len)
    realised = 1 - prunable_parameters(encoder) / prunable_parameters(dense_model.config.encoder)
    return (
        f"| {family(n, s)} | {n} | {s:.2f} | {realised:.3f} | {result.examples_per_second:,.1f} | {speedup:.2f}x | "
        f"{encoder_ideal:.2f}x | {model_ideal:.2f}x | {speedup / encoder_ideal:.2f} | {speedup / model_ideal:.2f} |"
    )


def run_shape(name: str, args: argparse.Namespace, points: list[tuple[int, float]]) -> None:
    shape = SHAPES[name]
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    points = [(1, 0.0)] + [p for p in points if p != (1, 0.0)]
    models: dict[tuple[int, float], PruMUXModel] = {}
    for point in points:
        models[point] = build(shape, *point)
        share_vocabulary_tables(models[point], models[(1, 0.0)])
        models[point].to(device=device, dtype=dtype)
    results, rounds = measure_rounds(models, args)
    print(f"\n## {name} shape, seq_len {args.seq_len}, {args.dtype}, {hardware_name(device)}")
    print(f"{args.num_batches} timed batch(es) of 128 N instances per round, best of {rounds} round(s)\n")
    print(TABLE_HEADER)
    dense = (results[(1, 0.0)].examples_per_second, models[(1, 0.0)])
    for point in points:
        print(table_row(point, models[point], results[point], dense, args.seq_len), flush=True)
    if MUX_SHARE_POINT in models:
        share = mux_demux_share(models[MUX_SHARE_POINT], args.seq_len, rounds)
        print(f"\nmux + demux share of the forward pass at N = 10 (dense encoder): {100 * share:.2f}%")


def parse_point(text: str) -> tuple[int, float]:
    n, s = text.split(",")
    return int(n), float(s)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=[*SHAPES, "all"], default="all")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=list(DTYPES), default="float32")
    parser.add_argument("--seq-len", type=int, default=None, help="default 128 (32 with --quick)")
    parser.add_argument("--num-batches", type=int, default=None, help="timed batches per model and round")
    parser.add_argument("--warmup", type=int, default=1, help="warm-up batches per model (first round)")
    parser.add_argument(
        "--rounds", type=int, default=None, help="interleaved measurements per model, the best reported"
    )
    parser.add_argument(
        "--time-budget", type=float, default=None, help="seconds of measuring after which no round starts"
    )
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument("--points", nargs="+", type=parse_point, default=None, metavar="N,s", help="subset of the grid")
    parser.add_argument(
        "--quick", action="store_true", help="MiniLM-L6 shape, length 32, 1 thread, 1 batch x up to 5 rounds in 100 s"
    )
    args = parser.parse_args(argv)
    budget = default_budget(args.quick, args.shape, args.device)
    args.seq_len = args.seq_len or budget.seq_len
    args.num_batches = args.num_batches or budget.num_batches
    args.rounds = args.rounds or budget.rounds
    args.time_budget = args.time_budget or budget.time_budget
    args.threads = args.threads or budget.threads
    if min(args.seq_len, args.num_batches, args.rounds, args.threads or 1) < 1:
        parser.error("--seq-len, --num-batches, --rounds and --threads must be >= 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    shapes = (
        ["minilm-l6"] if args.quick and args.shape == "all" else list(SHAPES) if args.shape == "all" else [args.shape]
    )
    print(f"command: {' '.join(sys.argv)}")
    for name in shapes:
        start = time.perf_counter()
        run_shape(name, args, args.points or grid_points(WIDTHS, SPARSITIES))
        print(f"({name}: {time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
