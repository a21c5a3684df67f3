"""One markdown report of what the project is for, measured on one GPU in one run (or tried on CPU).

    PYTHONPATH=. python3 benchmarks/gpu_check.py                       # on a GPU: under 8 minutes on one H200
    PYTHONPATH=. python3 benchmarks/gpu_check.py --device cpu --quick  # tiny shapes on CPU (tests/test_gpu_check.py)

1. Encoder: our `prumux.Encoder` against transformers' `BertModel` (sdpa attention, no pooler) on the
   same random weights, BERT-base shape, bf16 and fp32, batch 128 x length 128: examples/s, the
   ratio, and how far apart their outputs are.
2. The paper's throughput table: the published MUX-BERT-base layout (`muxbert_gpu.build_models`,
   random weights) at N = 1, 2, 5, 10, pruned to s = 0, 0.6, 0.95 by seeded `L0Module.at_sparsity`
   masks, bf16, batches of 128 N instances, length 128 (`throughput.measure_rounds`, best of
   interleaved rounds): instances/s, speed-up over dense and the share of each FLOP ideal reached
   (`throughput.table_row`).
3. Ray Tune: a smoke search (`tuning.driver.run_search`, tiny random BERT, `smoke` recipe,
   rt-polarity) with 0.25 GPU per trial, so four trials share the GPU (on CPU: 0.5 CPU each, four
   at once on two cores): each trial's recorded hardware (`PointResult.hardware`, the GPU's name on
   CUDA), the most trials running at once (from the study's start and end times), the outcome.
4. Serving: the search's dense point and its widest one, each served by `serving`'s application
   with one replica (a GPU one on CUDA) under `serve_load`'s load generator: end-to-end
   instances/s against the model-level figure on the same device.

A section that fails is reported with its error and the others still run; the exit status is 1 if
any failed. `--out` is rewritten after every section, so a run cut short keeps what it measured, and
the search stops its trials after 240 s. `Findings` names every figure short of its expectation.
`--quick` shrinks every shape and count so the whole run takes a few minutes on two CPU cores. For a
GPU machine without the project's packages or a network, see `gpu_bundle.py`.
"""

from __future__ import annotations

import argparse
import datetime
import os
import socket
import sys
import tempfile
import time
import traceback
from argparse import Namespace
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import muxbert_gpu
import throughput
import torch

from prumux import Encoder, PruMUXModel, hardware_name, pad_ffn, prune
from prumux.throughput import synchronize

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from reference_models import bert_config, save_tiny_bert  # noqa: E402

DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}
WIDTHS = [1, 2, 5, 10]
SPARSITIES = [0.6, 0.95]
PADDINGS = [8, 64]  # FFN widths rounded up to these multiples, next to the widths CoFi leaves
TRIALS_AT_ONCE = 4
BUDGET = 0.05
# Expectations behind `Findings`: below these a figure is named as short of what it should reach.
ENCODER_RATIO_FLOOR = 1.0  # ours / BertModel
MODEL_IDEAL_FLOOR = 0.5  # share of the model FLOP ideal a pruned or multiplexed shape reaches
SERVED_SHARE_FLOOR = 0.5  # end-to-end instances/s over the model-level figure


@dataclass(frozen=True)
class Plan:
    """How much each section measures."""

    shape: dict  # transformers BertConfig fields of the encoder and throughput sections
    seq_len: int
    batches: int  # timed batches per model and round
    rounds: int  # interleaved rounds, best reported
    throughput_dtype: str
    search_grid: tuple[tuple[int, ...], tuple[float, ...]]
    recipe_overrides: dict = field(default_factory=dict)
    search_budget_s: float | None = 240.0  # the search stops its trials by then (time budget reached)
    requests: int = 200  # per serving load phase
    clients: int = 16


FULL = Plan(bert_config(768, 12, 12, 3072, 30522, 512), 128, 10, 3, "bfloat16", ((1, 2, 5), (0.0, 0.5, 0.8)))
QUICK = Plan(
    bert_config(64, 2, 4, 128, 1200, 64),
    32,
    1,
    1,
    "float32",
    ((1, 2), (0.0, 0.5)),
    recipe_overrides={
        "max_train_examples": 64,
        "max_eval_examples": 64,
        "eval_examples": 32,
        "eval_every": 4,
        "retrieval_steps": 6,
        "mlm_steps": 2,
        "finetune_steps": 8,
        "prune_steps": 8,
        "lagrangian_warmup_steps": 4,
        "pruned_finetune_steps": 2,
        "throughput_batches": 1,
    },
    search_budget_s=None,
    requests=24,
    clients=4,
)


@dataclass
class Section:
    """A titled part of the report, and its figures that fall short of their expectation."""

    title: str
    lines: list[str] = field(default_factory=list)
    short: list[str] = field(default_factory=list)


def examples_per_second(forward: Callable, input_ids: torch.Tensor, mask: torch.Tensor, batches: int) -> float:
    """Examples/s of ``forward(input_ids, mask)`` over ``batches`` timed calls, each ended by a device sync."""
    start = time.perf_counter()
    for _ in range(batches):
        forward(input_ids, mask)
        synchronize(input_ids.device)
    return batches * len(input_ids) / (time.perf_counter() - start)


@torch.inference_mode()
def encoder_section(plan: Plan, device: torch.device) -> Section:
    """Our encoder against BertModel (sdpa) on the same random weights, in each dtype."""
    from transformers import BertConfig, BertModel

    section = Section("1. Encoder against transformers' BertModel (sdpa)")
    with tempfile.TemporaryDirectory() as folder:
        torch.manual_seed(0)
        config = BertConfig(**{k: v for k, v in plan.shape.items() if k not in ("model_type", "transformers_version")})
        BertModel(config, add_pooling_layer=False).save_pretrained(folder)
        ours = Encoder.from_pretrained(folder).eval()
        theirs = BertModel.from_pretrained(folder, attn_implementation="sdpa", add_pooling_layer=False).eval()
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(1000, config.vocab_size, (128, plan.seq_len), generator=generator).to(device)
    mask = torch.ones_like(input_ids)
    forwards = {
        "ours": lambda ids, m: ours(ids, m),
        "BertModel": lambda ids, m: theirs(input_ids=ids, attention_mask=m),
    }
    section.lines += [
        f"{hardware_name(device)}; {config.num_hidden_layers} layers, hidden {config.hidden_size}; batch 128, "
        f"length {plan.seq_len}; {plan.batches} timed batch(es), best of {plan.rounds} interleaved round(s)",
        "",
        "| dtype | ours (examples/s) | BertModel (examples/s) | ours / BertModel | rel. difference of outputs |",
        "|---|---|---|---|---|",
    ]
    for name, dtype in DTYPES.items():
        ours.to(device=device, dtype=dtype)
        theirs.to(device=device, dtype=dtype)
        expected = theirs(input_ids=input_ids, attention_mask=mask).last_hidden_state.float()  # also the warm-up
        difference = ((ours(input_ids, mask).float() - expected).norm() / expected.norm()).item()
        best = {key: 0.0 for key in forwards}
        for _ in range(plan.rounds):
            for key, forward in forwards.items():
                best[key] = max(best[key], examples_per_second(forward, input_ids, mask, plan.batches))
        ratio = best["ours"] / best["BertModel"]
        section.lines.append(
            f"| {name} | {best['ours']:,.0f} | {best['BertModel']:,.0f} | {ratio:.2f}x | {difference:.1e} |"
        )
        if ratio < ENCODER_RATIO_FLOOR:
            section.short.append(f"our encoder runs at {ratio:.2f}x BertModel in {name}")
    return section


def throughput_section(plan: Plan, device: torch.device) -> Section:
    """The published MUX-BERT layout at every (N, s), timed with the paper's protocol, next to the same
    shapes with aligned FFN widths and to each N's floor (every block pruned)."""
    section = Section("2. The paper's throughput table (published MUX-BERT layout, random weights)")
    with tempfile.TemporaryDirectory() as folder:
        models = muxbert_gpu.build_models(Path(folder), plan.shape, WIDTHS, SPARSITIES)
    models = {point: models[point] for point in sorted(models)}
    variants = aligned_and_floor(models)
    for model in [*models.values(), *variants.values()]:
        model.to(device=device, dtype=DTYPES[plan.throughput_dtype])
    budget = Namespace(rounds=plan.rounds, num_batches=plan.batches, warmup=1, seq_len=plan.seq_len, time_budget=None)
    results, rounds = throughput.measure_rounds(models | variants, budget)
    dense = (results[(1, 0.0)].examples_per_second, models[(1, 0.0)])
    section.lines += [
        f"{hardware_name(device)}; {plan.throughput_dtype}; batches of 128 N instances, length {plan.seq_len}; "
        f"{plan.batches} timed batch(es), best of {rounds} interleaved round(s)",
        "",
        throughput.TABLE_HEADER,
    ]
    for point, model in models.items():
        row = throughput.table_row(point, model, results[point], dense, plan.seq_len)
        section.lines.append(row)
        share = float(row.rstrip(" |").rsplit("|", 1)[1])
        if point != (1, 0.0) and share < MODEL_IDEAL_FLOOR:
            section.short.append(f"(N={point[0]}, s={point[1]:g}) reaches {share:.2f} of its model FLOP ideal")
    section.lines += ["", *alignment_table(models, results, dense[0])]
    return section


def aligned_and_floor(models: dict[tuple[int, float], PruMUXModel]) -> dict[tuple, PruMUXModel]:
    """Each pruned model with its FFN widths padded to each of PADDINGS, keyed (N, s, multiple), and each
    N's model with every attention and FFN block pruned, keyed (N, 1.0): what pruning cannot go below."""
    variants: dict[tuple, PruMUXModel] = {}
    for (n, s), model in models.items():
        if s > 0:
            variants |= {(n, s, multiple): pad_ffn(model, multiple) for multiple in PADDINGS}
        else:
            layers = model.config.encoder.num_layers
            variants[(n, 1.0)] = prune(model, {"head_layer_z": torch.zeros(layers), "mlp_z": torch.zeros(layers)})
    return variants


def alignment_table(models: dict, results: dict, dense_speed: float) -> list[str]:
    """Markdown: each pruned shape's examples/s (speed-up) as CoFi leaves it, with aligned FFN widths, and
    the floor of its N."""
    padded = " | ".join(f"FFN widths padded to {multiple}" for multiple in PADDINGS)
    lines = [
        f"| N | s | as pruned | {padded} | every block pruned (N's floor) |",
        "|---|---|---|" + "---|" * len(PADDINGS) + "---|",
    ]
    for n, s in [point for point in models if point[1] > 0]:
        cells = [results[key].examples_per_second for key in [(n, s), *((n, s, m) for m in PADDINGS), (n, 1.0)]]
        lines.append(f"| {n} | {s:g} | " + " | ".join(f"{c:,.0f} ({c / dense_speed:.2f}x)" for c in cells) + " |")
    return lines


def search_section(plan: Plan, device: torch.device, folder: Path) -> Section:
    """A smoke search with fractional resources per trial, its run directory ``folder/search``."""
    from storage import StudySettings, default_url
    from trainers.models import resolve_model
    from trainers.recipes import load_recipe
    from tuning.driver import SearchOptions, run_search

    section = Section("3. Ray Tune: a smoke search, four trials sharing the device")
    start_ray(plan, device, folder)
    model_dir = save_tiny_bert(folder / "tiny-bert", Path(resolve_model("minilm-l6")))
    run_dir = folder / "search"
    grid_N, grid_s = plan.search_grid
    settings = StudySettings("rt-polarity", str(model_dir), "smoke", BUDGET, grid_N, grid_s)
    share = (
        {"gpus_per_trial": 1 / TRIALS_AT_ONCE}
        if device.type == "cuda"
        else {"gpus_per_trial": 0.0, "cpus_per_trial": 0.5, "concurrency": TRIALS_AT_ONCE}
    )
    options = SearchOptions(
        run_dir=str(run_dir),
        storage_url=default_url(run_dir),
        study_name="gpu-check",
        time_budget_s=plan.search_budget_s,
        early_stopping=False,  # this section measures trials sharing the device: every point trains to its end
        **share,
    )
    outcome = run_search(settings, load_recipe("smoke", plan.recipe_overrides), options)
    trials = outcome.study.get_trials(deepcopy=False)
    expected = hardware_name(device) if device.type == "cuda" else None
    at_once = most_at_once([(t.datetime_start, t.datetime_complete) for t in trials])
    section.lines += [
        f"grid N {grid_N} x s {grid_s}; {', '.join(f'{k} {v:g}' for k, v in share.items())}; "
        f"outcome: {outcome.stop_reason} in {outcome.seconds:.0f} s; most trials running at once: {at_once}",
        "",
        "| trial | N | s | state | hardware | accuracy | instances/s | seconds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for trial in trials:
        seconds = (
            (trial.datetime_complete - trial.datetime_start).total_seconds()
            if trial.datetime_complete
            else float("nan")
        )
        accuracy, speed = trial.values or (float("nan"), float("nan"))
        section.lines.append(
            f"| {trial.number} | {trial.params['N']} | {trial.params['s']:g} | {trial.state.name} | "
            f"{trial.user_attrs.get('hardware', '-')} | {accuracy:.3f} | {speed:,.0f} | {seconds:.0f} |"
        )
    states = {trial.state.name for trial in trials}
    if states != {"COMPLETE"} or outcome.failed or outcome.interrupted:
        section.short.append(
            f"the study did not complete cleanly: states {sorted(states)}, stop: {outcome.stop_reason}"
        )
    if expected and any(trial.user_attrs.get("hardware") != expected for trial in trials):
        section.short.append(f"not every trial recorded {expected} as its hardware")
    if at_once < TRIALS_AT_ONCE:
        section.short.append(f"at most {at_once} trials ran at once, not {TRIALS_AT_ONCE}")
    return section


def most_at_once(spans: list[tuple[datetime.datetime | None, datetime.datetime | None]]) -> int:
    """The largest number of (start, end) spans open at one moment (an open end: still running)."""
    events = sorted([(start, 1) for start, _ in spans if start] + [(end, -1) for _, end in spans if end])
    running = most = 0
    for _, step in events:  # at equal times an end (-1) sorts before a start
        running += step
        most = max(most, running)
    return most


def serving_section(plan: Plan, device: torch.device, work_dir: Path) -> Section:
    """The search's dense and widest points served under load, against their model-level figures."""
    import serve_load  # imports Ray: only here, so sections 1-2 run without it
    from ray import serve

    from servable import read_servable
    from trainers.tasks import load_task

    section = Section("4. Serving: one replica under load, end to end against model level")
    folders = serve_load.servable_folders(Namespace(points=str(work_dir)))
    models = [serve_load.Served(path.name, path, read_servable(path)) for path in (folders[0], folders[-1])]
    serve_load.model_level(models, threads=1, device=str(device))
    args = Namespace(
        tenants=[1], max_wait_ms=10.0, threads=1, max_batch=None, clients=plan.clients, requests=plan.requests, inputs=8
    )
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port}, logging_config=serve_load.logging_config(False))
    try:
        texts = list(load_task("rt-polarity").test["text"])
        for served in models:
            serve_load.measure_served(served, args, texts, f"http://127.0.0.1:{port}")
    finally:
        serve.shutdown()
    section.lines += serve_load.report(models, args, str(device)).splitlines()
    for served in models:
        share = served.rows[0]["instances_per_s"] / served.model_level
        section.lines.append(f"\n{served.name}: served end to end at {share:.1%} of its model-level instances/s")
        if share < SERVED_SHARE_FLOOR:
            section.short.append(f"the server caps {served.name} at {share:.1%} of its model-level instances/s")
        if served.rows[0]["errors"]:
            section.short.append(f"{served.name}: {served.rows[0]['errors']} requests failed under saturation")
    return section


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_section(name: str, make: Callable[[], Section]) -> Section:
    """The section ``make`` builds, or one that reports its error."""
    started = time.perf_counter()
    try:
        section = make()
    except Exception as error:  # noqa: BLE001 - the report goes on with the other sections
        traceback.print_exc()
        section = Section(name, [f"failed: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"])
        section.short.append(f"section {name!r} failed")
    section.lines.append(f"\n({time.perf_counter() - started:.0f} s)")
    print(f"{section.title}: done in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    return section


def report(sections: list[Section], device: torch.device, command: str, seconds: float) -> str:
    """The whole report in markdown."""
    lines = [
        f"# GPU check, {datetime.date.today().isoformat()}: {hardware_name(device)}",
        "",
        f"`{command}`; torch {torch.__version__}; {seconds:.0f} s in all",
        "",
    ]
    for section in sections:
        lines += [f"## {section.title}", "", *section.lines, ""]
    short = [item for section in sections for item in section.short]
    lines += ["## Findings", "", *(f"- {item}" for item in short or ["every figure meets its expectation"])]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str]) -> Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda[:K]")
    parser.add_argument("--quick", action="store_true", help="tiny shapes, one batch, a shortened smoke recipe")
    parser.add_argument(
        "--out", type=Path, help="also write the report here [default on CUDA: benchmarks/tables/gpu-<date>.md]"
    )
    args = parser.parse_args(argv)
    if args.device != "cpu" and not args.device.startswith("cuda"):
        parser.error(f"--device must be cpu or cuda[:K], got {args.device!r}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: torch sees no CUDA device here")
    if args.out is None and args.device.startswith("cuda"):
        args.out = REPO / "benchmarks" / "tables" / f"gpu-{datetime.date.today().isoformat()}.md"
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is local; a hub lookup would only wait on the network
    started = time.perf_counter()
    plan, device = QUICK if args.quick else FULL, torch.device(args.device)
    if args.quick:
        torch.set_num_threads(1)  # on shared cores a second thread mostly waits (benchmarks/throughput.py)
    sections: list[Section] = []
    command = " ".join(["python3 benchmarks/gpu_check.py", *argv])

    def add(section: Section | None) -> str:
        """Add a section (None: none) and write the report so far to --out: a run cut short keeps what it measured."""
        sections.extend([section] if section else [])
        text = report(sections, device, command, time.perf_counter() - started)
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(text)
        return text

    add(run_section("encoder", lambda: encoder_section(plan, device)))
    add(run_section("throughput", lambda: throughput_section(plan, device)))
    ray_sections(plan, device, add)
    print(add(None))
    return 1 if any(map(failed, sections)) else 0


def ray_sections(plan: Plan, device: torch.device, add: Callable[[Section], str]) -> None:
    """Sections 3 and 4 in a temporary folder, on the local Ray instance section 3 starts."""
    with tempfile.TemporaryDirectory(prefix="gpu-check-", ignore_cleanup_errors=True) as folder:
        try:
            search = run_section("search", lambda: search_section(plan, device, Path(folder)))
            add(search)
            if failed(search):
                add(Section("4. Serving", ["skipped: the search failed, so there is no trained point to serve"]))
                return
            add(run_section("serving", lambda: serving_section(plan, device, Path(folder) / "search" / "work")))
        finally:
            ray = sys.modules.get("ray")
            if ray is not None and ray.is_initialized():
                ray.shutdown()


def start_ray(plan: Plan, device: torch.device, folder: Path) -> None:
    """A local Ray instance: two CPUs with --quick, else all; the GPU if any; its files under ``folder``."""
    import ray

    python_path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    ray.init(
        num_cpus=2 if plan is QUICK else os.cpu_count(),
        num_gpus=int(device.type == "cuda"),
        include_dashboard=False,
        log_to_driver=False,
        logging_level="warning",
        _temp_dir=str(folder / "ray"),
        runtime_env={"env_vars": {"PYTHONPATH": python_path}},
    )


def failed(section: Section) -> bool:
    return any(line.startswith("failed: ") for line in section.lines)


if __name__ == "__main__":
    sys.exit(main())
