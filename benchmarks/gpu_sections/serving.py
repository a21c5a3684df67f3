"""Section 4: the default search's recommended model served by one replica under `serve_load`'s load,
eager and on ONNX Runtime, at 1 and 32 texts a request, against its model-level figure."""

from __future__ import annotations

import json
import socket
from argparse import Namespace
from pathlib import Path

import serve_load  # imports Ray: only here, so the other sections run without it
import torch

from gpu_sections.common import Plan, Section, TimeBox
from gpu_sections.search import cli

TITLE = "4. Serving: one replica under load, eager and ONNX, against the model-level figure"
RUNTIMES = ("eager", "onnx")
TEXTS_PER_REQUEST = [1, 32]
SERVED_SHARE_TARGET = 0.5  # issue 36: a server under half its model-level instances/s is named


def serving_section(plan: Plan, device: torch.device, run_dir: Path, box: TimeBox) -> Section:
    """Serve the recommendation of section 2's search (its dense point if it has none) on each runtime at each
    request size, one deployment each, while the time box lasts."""
    from ray import serve

    from servable import read_servable
    from trainers.tasks import load_task

    section = Section(TITLE)
    best = cli("best", "--run-dir", str(run_dir), "--format", "json", timeout=120)
    figures = json.loads(best.stdout) if best.returncode == 0 else None
    trial = figures["trial"] if figures else dense_trial(run_dir)
    chosen = run_dir / "served"
    exported = cli("export", "--run-dir", str(run_dir), "--trial", str(trial), "--out", str(chosen), timeout=600)
    if exported.returncode != 0:
        raise RuntimeError(f"export of trial {trial}: {(exported.stderr.strip() or exported.stdout).splitlines()[-1]}")
    spec = read_servable(chosen)
    level = serve_load.Served(f"trial-{trial}", chosen, spec)
    serve_load.model_level([level], threads=1, device=str(device))
    section.lines += [
        f"trial {trial}, (N={spec.N}, s={spec.s:g}), the search's "
        f"{'recommendation' if figures else 'dense point (it recommends none)'}, exported by `prumux-search export`; one "
        f"replica on {device}; {plan.clients} clients x {plan.requests} requests a phase; ONNX Runtime's provider: "
        f"{onnx_provider(device)}; model-level (eager, batches of 128 N): {level.model_level:,.0f} instances/s",
        "",
        "| runtime | texts a request | load | req/s | inst/s | p50 ms | p99 ms | batch fill | share of model level |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    port = free_port()
    texts = list(load_task("rt-polarity").test["text"])
    serve.start(http_options={"host": "127.0.0.1", "port": port}, logging_config=serve_load.logging_config(False))
    try:
        for runtime in RUNTIMES:
            if runtime == "onnx" and spec.onnx is None:
                section.lines.append(f"| {runtime} | - | not served: the export wrote no ONNX graph |")
                section.short.append("ONNX not served: the export wrote no graph; see: `export`'s onnx extra")
                continue
            served = serve_load.Served(level.name, chosen, spec, level.model_level)
            for inputs in TEXTS_PER_REQUEST:
                if not box.fits():
                    section.lines.append(f"| {runtime} | {inputs} | left out: the section's {box.seconds:.0f} s box |")
                    continue
                args = Namespace(
                    runtime=runtime,
                    inputs=inputs,
                    tenants=[1],
                    max_wait_ms=10.0,
                    threads=1,
                    max_batch=None,
                    clients=plan.clients,
                    requests=plan.requests,
                )
                serve_load.measure_served(served, args, texts, f"http://127.0.0.1:{port}")
            section.lines += [row_line(row, level.model_level) for row in served.rows]
            section.short += shortfalls(served.rows, level.model_level)
    finally:
        serve.shutdown()
    return section


def dense_trial(run_dir: Path) -> int:
    """The number of the search's completed dense (1, 0) trial."""
    status = json.loads(cli("status", "--run-dir", str(run_dir), "--format", "json", timeout=120).stdout)
    return next(t["number"] for t in status["trials"] if (t["N"], t["s"], t["state"]) == (1, 0, "COMPLETE"))


def onnx_provider(device: torch.device) -> str:
    from prumux.inference.onnx import default_providers

    provider = default_providers()[0]
    return provider + ("" if device.type == "cpu" or provider.startswith("CUDA") else " (no CUDA provider installed)")


def row_line(row: dict, model_level: float) -> str:
    return (
        f"| {row['runtime']} | {row['inputs']} | {row['load']} | {row['requests_per_s']:.1f} | {row['instances_per_s']:,.0f} | "
        f"{row['p50']:.0f} | {row['p99']:.0f} | {row['batch_fill']:.3f} | {row['instances_per_s'] / model_level:.1%} |"
    )


def shortfalls(rows: list[dict], model_level: float) -> list[str]:
    """Each saturated request size under ``SERVED_SHARE_TARGET`` of the model level, or with failed requests."""
    short = []
    for row in [row for row in rows if row["load"] == "saturation"]:
        share, inputs, runtime = row["instances_per_s"] / model_level, row["inputs"], row["runtime"]
        where = f"see: batch fill and p50 of {runtime} at {inputs} text(s) a request"
        if share < SERVED_SHARE_TARGET:
            short.append(
                f"served on {runtime} at {inputs} text(s) a request: {share:.1%} of the model-level instances/s, "
                f"target {SERVED_SHARE_TARGET:.0%}; {where}"
            )
        if row["errors"]:
            short.append(f"{runtime}, {inputs} text(s) a request: {row['errors']} requests failed; {where}")
    return short


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
