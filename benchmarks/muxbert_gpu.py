"""Published-layout MUX-BERT models, loaded from checkpoint folders, pruned and timed next to dense BERT-base.

    PYTHONPATH=. python3 benchmarks/muxbert_gpu.py                       # BERT-base on CUDA, bf16 (the GPU check)
    PYTHONPATH=. python3 benchmarks/muxbert_gpu.py --quick --device cpu  # a small shape on CPU, to try the script

For each N in 2, 5, 10 a random-weight BERT-base checkpoint in the MUX-BERT sequence-classification
layout (config.json with the released mux fields, model.safetensors with their keys and aliases;
written by the test suite's builder of published layouts) is loaded through
`PruMUXModel.from_pretrained`, pruned to s = 0.6 and 0.95 (`L0Module.at_sparsity` masks, hidden width
kept) and materialised. Every model, and a dense BERT-base, is then timed with `measure_throughput`
(batch 128 N instances, length 128) in interleaved rounds, best round each: speed depends on the
shape, not on the weights.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from prumux import L0Module, PruMUXModel, hardware_name, measure_throughput, prune
from trainers.measure import dense_counterpart

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from reference_models import bert_config, mux_config, mux_plm_state, save_checkpoint  # noqa: E402

DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}


def build_models(
    folder: Path, shape: dict, widths: list[int], sparsities: list[float]
) -> dict[tuple[int, float], PruMUXModel]:
    """The dense model and every (N, s): each N >= 2 loaded from its own published-layout checkpoint
    folder; N = 1 is the dense BERT of that shape, pruned too when `widths` holds 1 (CoFi's points)."""
    models: dict[tuple[int, float], PruMUXModel] = {}
    for n in [n for n in widths if n > 1]:
        config = mux_config(shape, n, num_labels=2)
        loaded = PruMUXModel.from_pretrained(save_checkpoint(folder / f"N{n}", config, mux_plm_state(config, n, True)))
        if (1, 0.0) not in models:
            models[(1, 0.0)] = dense_counterpart(loaded.config)
        models[(n, 0.0)] = loaded.eval()
        models |= pruned(loaded, n, sparsities)
    if 1 in widths:
        models |= pruned(models[(1, 0.0)], 1, sparsities)
    return models


def pruned(model: PruMUXModel, n: int, sparsities: list[float]) -> dict[tuple[int, float], PruMUXModel]:
    """`model` pruned to each s by seeded `L0Module.at_sparsity` masks (hidden width kept)."""
    encoder = model.config.encoder
    return {(n, s): prune(model, L0Module.at_sparsity(encoder, s).deterministic_masks()).eval() for s in sparsities}


def measure(models: dict, device: str, dtype: torch.dtype, seq_len: int, batches: int, rounds: int) -> dict:
    best: dict[tuple[int, float], float] = {}
    for round_index in range(rounds):
        for point, model in models.items():
            result = measure_throughput(
                model, seq_len, num_batches=batches, warmup=1 if round_index == 0 else 0, device=device, dtype=dtype
            )
            best[point] = max(best.get(point, 0.0), result.examples_per_second)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", choices=DTYPES, default="bfloat16")
    parser.add_argument("--quick", action="store_true", help="a 4-layer, 256-wide shape, length 32, one round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batches", type=int, default=5)
    args = parser.parse_args()
    if args.quick:
        shape, seq_len, rounds, batches = bert_config(256, 4, 4, 1024, 30522, 512), 32, 1, 1
    else:
        shape, seq_len, rounds, batches = bert_config(768, 12, 12, 3072, 30522, 512), 128, args.rounds, args.batches
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        models = build_models(Path(folder), shape, [2, 5, 10], [0.6, 0.95])
    for model in models.values():
        model.to(args.device)
    built = time.perf_counter() - started
    best = measure(models, args.device, DTYPES[args.dtype], seq_len, batches, rounds)
    dense = best[(1, 0.0)]
    print(
        f"{hardware_name(torch.device(args.device))}, {args.dtype}, length {seq_len}, batch 128 N, "
        f"best of {rounds} rounds x {batches} batches (built in {built:.0f} s, measured in "
        f"{time.perf_counter() - started - built:.0f} s)"
    )
    print("| N | s | examples/s | speed-up over dense BERT-base |\n|---|---|---|---|")
    for (n, s), value in sorted(best.items()):
        print(f"| {n} | {s:g} | {value:,.0f} | {value / dense:.2f}x |")


if __name__ == "__main__":
    main()
