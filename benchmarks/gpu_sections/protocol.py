"""Section 1: the paper's protocol, eager and on the project's inference runtimes, in fp32 and bf16."""

from __future__ import annotations

import tempfile
from pathlib import Path

import muxbert_gpu
import throughput
import torch

from gpu_sections.common import DTYPES, Plan, Section, TimeBox, instances_per_second
from prumux import PruMUXModel, hardware_name, model_flops, prune

TITLE = "1. The paper's protocol: MUX-BERT-base layout, eager and on the inference runtimes"
RUNTIMES = ("eager", "torch", "onnx")  # eager: the model's own forward; else `prumux.inference.load_runner`'s
# Issue 34's GPU targets, in bf16: a pruned shape at s <= 0.9 reaches this share of its model FLOP ideal ...
PRUNED_SHARE_TARGET = 0.6
MUX_SHARE_TARGET = 0.5  # ... a multiplexed one this (the first report's floor) ...
SPEEDUP_TARGETS = {  # ... and these speed-ups over dense; 29.5x is also the paper's own (10, 0.95) figure, in fp32
    ((1, 0.6), "bfloat16"): 2.0,
    ((10, 0.95), "bfloat16"): 29.5,
    ((10, 0.95), "float32"): 29.5,
}
Point = tuple[int, float]


def protocol_section(plan: Plan, device: torch.device, box: TimeBox) -> Section:
    """Every (N, s) of the published layout timed with the paper's protocol (batches of 128 N, length
    ``plan.seq_len``) on every runtime in each dtype, fp32 first; each N's floor (every block pruned) eager."""
    section = Section(TITLE)
    with tempfile.TemporaryDirectory() as folder:
        models = muxbert_gpu.build_models(Path(folder), plan.shape, list(plan.widths), list(plan.sparsities))
    models = {point: models[point] for point in sorted(models)}
    floors = {(n, 1.0): every_block_pruned(models[(n, 0.0)]) for n in plan.widths}
    ideals = {
        point: model_flops(models[(1, 0.0)].config, plan.seq_len) / model_flops(model.config, plan.seq_len)
        for point, model in (models | floors).items()
    }
    section.lines += [
        f"{hardware_name(device)}; batches of 128 N instances, length {plan.seq_len}; {plan.batches} timed "
        f"batch(es) a round, best of {plan.rounds} back-to-back round(s) after one warm-up batch; cells: "
        "instances/s (speed-up over eager dense in the same dtype, share of the model FLOP ideal); '·': not "
        f"timed (the section's {box.seconds:.0f} s time box, or a runtime not run, said below the table; the "
        "floors run eager only)",
    ]
    for name, dtype in DTYPES.items():
        speeds: dict[tuple[str, Point], float | str] = {}
        notes = []
        for runtime in RUNTIMES:
            reason = not_run(runtime, device, name)
            if reason:
                notes.append(f"{runtime}: not run in {name}: {reason}")
                continue
            shapes = models | (floors if runtime == "eager" else {})
            speeds |= measure_runtime(runtime, shapes, plan, device, dtype, box)
        dense = speeds.get(("eager", (1, 0.0)))
        section.lines += ["", f"### {name}", "", *table(models | floors, ideals, speeds, dense)]
        section.lines += [f"\n{note}" for note in notes]
        if isinstance(dense, float):
            section.short += shortfalls(name, models, ideals, speeds, dense)
    return section


def not_run(runtime: str, device: torch.device, dtype: str) -> str | None:
    """Why ``runtime`` is not timed on ``device`` in ``dtype``, or None."""
    if runtime != "onnx":
        return None
    from prumux.inference import onnx_available

    if not onnx_available():
        return "onnxruntime is not installed"
    if dtype != "float32":
        return "`prumux.inference` exports the graph in float32 (its fp32 row is the ONNX figure)"
    import onnxruntime

    if device.type == "cuda" and "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        return (
            f"this onnxruntime ({onnxruntime.__version__}) has no CUDA provider (the onnxruntime-gpu wheel, "
            "244 MiB, is over what a device call carries), and its CPU provider is not a GPU figure"
        )
    return None


def every_block_pruned(model: PruMUXModel) -> PruMUXModel:
    """``model`` with every attention and FFN block pruned: the fastest any sparsity makes its N."""
    layers = model.config.encoder.num_layers
    return prune(model, {"head_layer_z": torch.zeros(layers), "mlp_z": torch.zeros(layers)}).eval()


def measure_runtime(
    runtime: str, models: dict, plan: Plan, device: torch.device, dtype: torch.dtype, box: TimeBox
) -> dict[tuple[str, Point], float | str]:
    """Instances/s of each model on ``runtime``, best of ``plan.rounds`` back-to-back rounds after a warm-up
    (the CUDA graphs' capture), one model at a time so that one runner's memory is held at once; a model
    the box has no time left for is left out, one the runtime cannot run keeps its one-line error."""
    results: dict[tuple[str, Point], float | str] = {}
    for point, model in models.items():
        if not box.fits():
            break
        try:
            call = prepared(runtime, model, plan.seq_len, device, dtype)
            inputs, mask = batches(model, plan, device)
            speeds = [instances_per_second(call, inputs, mask, warmup=0 if r else 1) for r in range(plan.rounds)]
            results[(runtime, point)] = max(speeds)
        except Exception as error:  # noqa: BLE001 - the table shows why a runtime cannot run a shape
            results[(runtime, point)] = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        finally:
            call = None
            model.to("cpu")
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return results


def prepared(runtime: str, model: PruMUXModel, seq_len: int, device: torch.device, dtype: torch.dtype):
    """``(input_ids, attention_mask) -> logits`` of ``model`` on ``runtime``, on ``device`` in ``dtype``."""
    if runtime == "eager":
        model.to(device=device, dtype=dtype)
        return lambda input_ids, mask: model(input_ids, mask)
    from prumux.inference import load_runner

    return load_runner(runtime, model, seq_len=seq_len, device=device, dtype=dtype)


def batches(model: PruMUXModel, plan: Plan, device: torch.device) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The paper's protocol: ``plan.batches`` random full-length batches of 128 N instances, and their mask."""
    rows = 128 * model.config.num_instances
    generator = torch.Generator().manual_seed(0)
    vocab = model.config.encoder.vocab_size
    inputs = [torch.randint(1000, vocab, (rows, plan.seq_len), generator=generator) for _ in range(plan.batches)]
    return [batch.to(device) for batch in inputs], torch.ones(rows, plan.seq_len, dtype=torch.long, device=device)


def table(models: dict, ideals: dict, speeds: dict, dense: float | str | None) -> list[str]:
    """Markdown: one row per shape, one column per runtime."""
    lines = [
        "| family | N | s | model FLOP ideal | " + " | ".join(RUNTIMES) + " |",
        "|---|---|---|---|" + "---|" * len(RUNTIMES),
    ]
    for point in models:
        n, s = point
        family = "every block pruned" if s == 1.0 else throughput.family(n, s)
        cells = [cell(speeds.get((runtime, point)), dense, ideals[point]) for runtime in RUNTIMES]
        lines.append(f"| {family} | {n} | {s:g} | {ideals[point]:.2f}x | " + " | ".join(cells) + " |")
    return lines


def cell(speed: float | str | None, dense: float | str | None, ideal: float) -> str:
    if speed is None:
        return "·"
    if isinstance(speed, str):
        return f"n/a ({speed})"
    if not isinstance(dense, float):
        return f"{speed:,.0f}"
    return f"{speed:,.0f} ({speed / dense:.2f}x, {speed / dense / ideal:.2f})"


def shortfalls(dtype: str, models: dict, ideals: dict, speeds: dict, dense: float) -> list[str]:
    """Every shape below its expectation on its fastest runtime in ``dtype``, with where the report explains it."""
    short = []
    for point in [point for point in models if point != (1, 0.0)]:
        measured = {
            runtime: speeds[(runtime, point)] for runtime in RUNTIMES if isinstance(speeds.get((runtime, point)), float)
        }
        n, s = point
        if not measured:
            short.append(f"(N={n}, s={s:g}) in {dtype}: not timed; see: the table's '·' cells and the notes below it")
            continue
        runtime = max(measured, key=measured.get)
        speedup = measured[runtime] / dense
        share = speedup / ideals[point]
        where = f"(N={n}, s={s:g}) in {dtype} on {runtime}, its fastest runtime"
        floor = f"see: N = {n}'s every-block-pruned row (the floor pruning cannot remove) and the runtimes' columns"
        share_target = {True: PRUNED_SHARE_TARGET, False: MUX_SHARE_TARGET}[s > 0] if s <= 0.9 else None
        if dtype == "bfloat16" and share_target and share < share_target:
            short.append(f"{where}: {share:.2f} of its model FLOP ideal, target {share_target}; {floor}")
        target = SPEEDUP_TARGETS.get((point, dtype))
        if target and speedup < target:
            short.append(f"{where}: {speedup:.2f}x dense, target {target:g}x; {floor}")
    return short
