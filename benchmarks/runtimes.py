"""Eager PyTorch against each inference runtime (prumux.inference) for dense, DataMUX, CoFi and PruMUX shapes.

PYTHONPATH=. python3 benchmarks/runtimes.py                        # MiniLM-L6 shapes, length 64, 1 thread
PYTHONPATH=. python3 benchmarks/runtimes.py --seq-len 128 --device cuda

Random weights of MiniLM-L6's shape (speed depends on the shape, not the weights), pruned by
`L0Module.at_sparsity` masks as benchmarks/throughput.py prunes them. Each model runs at batch 1, 8
and 128 N instances through every runtime: eager (the model's forward pass, what the search has
measured so far), torch (`TorchRunner`: padded widths, emptied layers dropped, bf16 and CUDA graphs
on a GPU), onnx (the exported graph in ONNX Runtime), auto (`AutoRunner` of those two, as
`load_runner("auto")` builds it: it times both on a shape's first call and keeps the faster). All
runners of all models are built first and measured in interleaved rounds (each round times every
runner once, each reports its best round), so load on a shared machine falls on all of them alike.
Printed: instances/s, each runtime's ratio to eager, and auto's pick. Every ONNX graph is checked
against eager first (max |logit difference| in the table).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from prumux import EncoderConfig, L0Module, PruMUXConfig, PruMUXModel, hardware_name, prune
from prumux.inference import AutoRunner, EagerRunner, OnnxRunner, Runner, TorchRunner, export_onnx, measure_runner

SHAPE = EncoderConfig.dense(6, 384, 12, 1536)
POINTS = ((1, 0.0), (2, 0.0), (1, 0.5), (1, 0.9), (2, 0.7))
RUNTIMES = ("eager", "torch", "onnx", "auto")
# Timed calls per round at each batch size (one batch of 128 N otherwise).
CALLS = {1: 16, 8: 4}


def family(n: int, s: float) -> str:
    return {(False, False): "dense", (True, False): "DataMUX", (False, True): "CoFi", (True, True): "PruMUX"}[
        (n > 1, s > 0)
    ]


def build(n: int, s: float) -> PruMUXModel:
    model = PruMUXModel(PruMUXConfig(encoder=SHAPE, num_instances=n, hidden_size=SHAPE.hidden_size))
    return (prune(model, L0Module.at_sparsity(SHAPE, s).deterministic_masks()) if s else model).eval()


def runners(model: PruMUXModel, args: argparse.Namespace, folder: Path) -> tuple[dict[str, Runner], float]:
    """Every runtime's runner of `model`, and the ONNX graph's max |logit difference| from eager."""
    path = folder / f"{model.config.num_instances}-{model.config.realised_sparsity:.3f}.onnx"
    export_onnx(model, path, args.seq_len)
    torch_runner = TorchRunner(model, args.device, args.dtype)
    onnx_runner = OnnxRunner(path)
    built = {
        "eager": EagerRunner(model, args.device, args.dtype),
        "torch": torch_runner,
        "onnx": onnx_runner,
        "auto": AutoRunner([torch_runner, onnx_runner], torch_runner.cut_padding),
    }
    ids = torch.randint(1000, SHAPE.vocab_size, (5, args.seq_len))
    eager_fp32 = EagerRunner(model)(ids)
    return built, (built["onnx"](ids) - eager_fp32).abs().max().item()


def batch_sizes(n: int) -> tuple[int, ...]:
    return (1, 8, 128 * n)


def measure(all_runners: dict[tuple, dict[str, Runner]], args: argparse.Namespace) -> dict[tuple, float]:
    """Best instances/s of every (point, batch, runtime) over interleaved rounds."""
    best: dict[tuple, float] = {}
    for round_index in range(args.rounds):
        for point, built in all_runners.items():
            for batch in batch_sizes(point[0]):
                for runtime, runner in built.items():
                    result = measure_runner(
                        runner, args.seq_len, batch, CALLS.get(batch, 1), warmup=0 if round_index else 1
                    )
                    key = (point, batch, runtime)
                    best[key] = max(best.get(key, 0.0), result.examples_per_second)
        print(f"(round {round_index + 1} of {args.rounds} done)", file=sys.stderr, flush=True)
    return best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default=None, help="torch runners' dtype")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    args.dtype = getattr(torch, args.dtype) if args.dtype else None
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        built = {point: runners(build(*point), args, Path(folder)) for point in POINTS}
    all_runners = {point: pair[0] for point, pair in built.items()}
    best = measure(all_runners, args)
    print(f"command: {' '.join(sys.argv)}")
    print(
        f"\nMiniLM-L6 shapes, random weights, length {args.seq_len}, {hardware_name(args.device)}, best of {args.rounds}"
    )
    print("interleaved rounds; instances/s, and each runtime / eager\n")
    print(
        "| family | N | s | batch | eager | torch | onnx | auto | torch / eager | onnx / eager | auto / eager | "
        "auto's pick | onnx max abs diff |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for point, (runners_of_point, diff) in built.items():
        auto = runners_of_point["auto"]
        for batch in batch_sizes(point[0]):
            speed = {runtime: best[(point, batch, runtime)] for runtime in RUNTIMES}
            ratios = " | ".join(f"{speed[name] / speed['eager']:.2f}x" for name in RUNTIMES[1:])
            pick = auto.chosen[auto.size((batch, args.seq_len))].name
            print(
                f"| {family(*point)} | {point[0]} | {point[1]:g} | {batch} | "
                + " | ".join(f"{speed[name]:,.1f}" for name in RUNTIMES)
                + f" | {ratios} | {pick} | {diff:.1e} |",
                flush=True,
            )
    print(f"\n({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
