"""One markdown report of what the project is for, measured on one GPU in one run (or tried on CPU).

    PYTHONPATH=. python3 benchmarks/gpu_check.py                       # on a GPU: under 8 minutes
    PYTHONPATH=. python3 benchmarks/gpu_check.py --device cpu --quick  # tiny shapes on CPU (tests/test_gpu_check.py)

Sections, in order of priority (issue 36), each in its own time box (`Plan.boxes`), so that a run
stays under 8 minutes and what a box cannot fit is left out and said so:
1. The paper's protocol: the published MUX-BERT-base layout at N = 1, 2, 5, 10 x s = 0, 0.6, 0.95
   (seeded `L0Module.at_sparsity` masks, random weights), batches of 128 N, length 128, in fp32 and
   bf16, eager and on `prumux.inference`'s runtimes (torch: padded widths and CUDA graphs; onnx:
   ONNX Runtime, its CUDA provider where the wheel has one): speed-up over eager dense and the share
   of the model FLOP ideal, side by side, and each N's floor (every block pruned).
2. The default search, whole, as README's `start` runs it (rt-polarity, packaged MiniLM-L6, cpu-demo,
   fresh run dir, early stopping on): wall time, the trials trained and stopped, the recommendation,
   training steps per second against the CPU figure.
3. Multiplexing a plain base with GPU compute: MiniLM-L6 on rt-polarity at N = 2 and 5, phase 2 from
   the dense classifier (cpu-demo's path) for 400, 1600 and 6400 steps, and the paper's path
   (retrieval, MLM, phase 2) at N = 2 for the same totals: validation accuracy against dense, seconds.
4. Serving: section 2's recommendation (`export`ed, with its ONNX graph) served by one replica under
   `serve_load`'s load, eager and ONNX, at 1 and 32 texts a request, against its model-level figure.
5. (a) Our encoder against transformers' `BertModel` (sdpa); (b) a `tiny`-recipe Ray Tune search with
   0.25 GPU per trial (four trials sharing the GPU; on CPU 0.5 CPU each).

A section that fails is reported with its error and the others still run; the exit status is 1 if
any failed. `--out` is rewritten after every section, so a run cut short keeps what it measured.
`Findings` names every figure short of its expectation, each with where the report shows why.
`--quick` shrinks every shape, count and step (a tiny random BERT, the `tiny` recipe) so that each
section takes seconds on two CPU cores, Ray's starts and ONNX exports aside. For a GPU machine without
the project's packages, MiniLM-L6 or a network, see `gpu_bundle.py` and benchmarks/tables/README.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile
import time
from argparse import Namespace
from collections.abc import Callable
from pathlib import Path

import torch
from gpu_sections.common import REPO, Plan, Section, TimeBox, failed, run_section
from gpu_sections.encoder import encoder_section
from gpu_sections.multiplexing import multiplexing_section
from gpu_sections.protocol import protocol_section
from gpu_sections.search import default_search_section, tune_section

from prumux import hardware_name

sys.path.insert(0, str(REPO / "tests"))
from reference_models import bert_config, save_tiny_bert  # noqa: E402

MINILM = "minilm-l6"  # the default search's base, and section 3's

FULL = Plan(
    quick=False,
    shape=bert_config(768, 12, 12, 3072, 30522, 512),
    seq_len=128,
    widths=(1, 2, 5, 10),
    sparsities=(0.6, 0.95),
    batches=5,
    rounds=2,
    mux_steps=(400, 1600, 6400),
    mux_widths=(2, 5),
    tune_grid=((1, 2), (0.0, 0.5)),
    boxes={"protocol": 80, "search": 170, "mux": 110, "serving": 50, "tune": 45},
)
QUICK = Plan(
    quick=True,
    shape=bert_config(64, 2, 4, 128, 1200, 64),
    seq_len=32,
    widths=(1, 2),
    sparsities=(0.6,),
    batches=1,
    rounds=1,
    mux_steps=(2, 4, 8),
    mux_widths=(2, 5),
    tune_grid=((1, 2), (0.0, 0.5)),
    boxes={"protocol": 300, "search": 300, "mux": 300, "serving": 300, "tune": 300},
    requests=12,
    clients=4,
)


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
    parser.add_argument("--quick", action="store_true", help="tiny shapes, one batch, the tiny recipe")
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

    def write() -> str:
        """The report so far, also written to --out: a run cut short keeps what it measured."""
        text = report(sections, device, command, time.perf_counter() - started)
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(text)
        return text

    def add_section(section: Section) -> Section:
        sections.append(section)
        write()
        return section

    def boxed(name: str, make: Callable[[TimeBox], Section]) -> Section:
        return add_section(run_section(name, lambda: make(TimeBox(plan.boxes[name]))))

    with tempfile.TemporaryDirectory(prefix="gpu-check-", ignore_cleanup_errors=True) as temporary:
        folder = Path(temporary)
        tiny = save_tiny_bert(folder / "tiny-bert", resolve_minilm())
        boxed("protocol", lambda box: protocol_section(plan, device, box))
        search = boxed("search", lambda box: default_search_section(plan, folder / "search", tiny, box))
        boxed("mux", lambda box: multiplexing_section(plan, device, box, str(tiny) if plan.quick else MINILM))
        ray_sections(plan, device, folder, tiny, failed(search), add_section)
    print(write())
    return 1 if any(map(failed, sections)) else 0


def resolve_minilm() -> Path:
    from trainers.models import resolve_model

    return Path(resolve_model(MINILM))


def ray_sections(
    plan: Plan, device: torch.device, folder: Path, tiny: Path, search_failed: bool, add: Callable[[Section], Section]
) -> None:
    """Sections 4 and 5 on one local Ray instance (5a needs none; it runs between them)."""
    try:
        ray_error = None
        try:
            start_ray(plan, device, folder)
        except Exception as error:  # noqa: BLE001 - the sections that need Ray say why they did not run
            ray_error = f"failed: Ray did not start: {type(error).__name__}: {error}".splitlines()[0]
        if ray_error or search_failed:
            reason = ray_error or "skipped: the default search failed, so there is no trained point to serve"
            add(Section("4. Serving", [reason], [f"section 'serving' did not run; see: {reason}"]))
        else:
            box = TimeBox(plan.boxes["serving"])
            add(run_section("serving", lambda: served_section(plan, device, folder / "search", box)))
        add(run_section("encoder", lambda: encoder_section(plan, device)))
        if ray_error:
            add(Section("5b. Ray Tune", [ray_error], [f"section 'tune' did not run; see: {ray_error}"]))
        else:
            add(run_section("tune", lambda: tune_section(plan, device, folder, tiny)))
    finally:
        ray = sys.modules.get("ray")
        if ray is not None and ray.is_initialized():
            ray.shutdown()


def served_section(plan: Plan, device: torch.device, run_dir: Path, box: TimeBox) -> Section:
    """Section 4 (its module imports Ray and Ray Serve: only once Ray has started)."""
    from gpu_sections.serving import serving_section  # imports Ray and Ray Serve

    return serving_section(plan, device, run_dir, box)


def start_ray(plan: Plan, device: torch.device, folder: Path) -> None:
    """A local Ray instance: two CPUs with --quick, else all; the GPU if any; its files under ``folder``."""
    import ray

    python_path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    ray.init(
        num_cpus=2 if plan.quick else os.cpu_count(),
        num_gpus=int(device.type == "cuda"),
        include_dashboard=False,
        log_to_driver=False,
        logging_level="warning",
        _temp_dir=str(folder / "ray"),
        runtime_env={"env_vars": {"PYTHONPATH": python_path}},
        _system_config={"worker_niceness": 0},  # as `start` runs its trials (tuning.ray_session)
    )


if __name__ == "__main__":
    sys.exit(main())
