"""End-to-end speed of served models: a bounded load generator against `prumux-search serve`'s
application on loopback, the dense (1, 0) model and multiplexed/pruned ones, on each runtime (eager
PyTorch, the exported ONNX graph, ...) and at each number of texts a request, side by side in one run.

PYTHONPATH=. python3 benchmarks/serve_load.py --points /tmp/serve-bench        # every point `train` left there
PYTHONPATH=. python3 benchmarks/serve_load.py --dense DENSE_DIR --model DIR [--model DIR ...]
PYTHONPATH=. python3 benchmarks/serve_load.py --base minilm-l6 --widths 1,2 --workdir /tmp/serve-untrained

The models come from `prumux-search train --workdir WORKDIR ...` (converted into servable folders
under WORKDIR/served), are servable folders (`prumux-search export`), or are a base model's untrained
classifiers at each width N (`--base`, made servable under --workdir). What is measured is speed,
not accuracy: short training runs, or none, are fine. Folders are made with their ONNX graph when a
runtime needs it; given folders must hold one (`export` with the onnx packages installed).

Per model: the model-level throughput (`prumux.measure_throughput`, eager, the paper's batches of 128 N,
at the model's sequence length, the served replica's threads; models interleaved, best of two
rounds), then per runtime (`--runtime` of `serve`) the served application (one replica, API keys for
up to T tenants) and per number K of texts a request (`--inputs`, e.g. 1,8,32) under
- saturation: C concurrent clients send a fixed number of requests of K real movie-review
  snippets each, round-robin over the tenants' keys, as fast as answers come back;
- half the saturating rate (1 tenant): the same requests sent open-loop at fixed intervals.
The `vs first runtime` column is the requests/s of a row over the first runtime's same row.
Each load phase stops by itself. Requests/s, instances/s, p50/p99 latency (client side), instances a
forward pass, batch fill and padded groups (the gateway's /v1/stats, as deltas), groups holding two
tenants (the replicas' recorded group composition), and the end-to-end speed-up over the served dense
model next to the model-level one. The p99 bound is max-wait-ms + 2 forward passes of a full batch (its duration from
the model-level throughput).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import torch

from prumux import PruMUXModel, hardware_name, measure_throughput
from prumux.inference import onnx_available
from servable import ServingSpec, export_servable, make_servable, read_servable
from serving.app import APP_NAME, ServeOptions, batch_instances, build_app, logging_config, prepare
from serving.keys import key_digest
from serving.stats import latency_percentiles
from trainers.models import resolve_model
from trainers.point_sources import POINT_SOURCES

TENANT_KEYS = [f"benchmark-tenant-{index}-key-0123456789" for index in range(8)]


@dataclass
class Served:
    """A servable model and what was measured of it (rows: one per load phase, with its runtime and texts a request)."""

    name: str
    folder: Path
    spec: ServingSpec
    model_level: float = 0.0  # instances/s, measure_throughput (eager)
    rows: list[dict] = field(default_factory=list)


def servable_folders(args: argparse.Namespace) -> list[Path]:
    """Dense first: the given folders, or the points of a `train` work dir made servable (with their ONNX
    graphs when the onnx packages are installed)."""
    if args.points is None:
        return [Path(args.dense), *map(Path, args.model)]
    results = [json.loads(path.read_text()) for path in sorted(Path(args.points).glob("points/*/*/*/result.json"))]
    if not any(result["N"] == 1 and result["s"] == 0 for result in results):
        raise SystemExit(f"no trained dense (1, 0) point under {args.points}/points")
    folders = []
    for result in sorted(results, key=lambda r: (r["N"] != 1 or r["s"] != 0, r["N"], r["s"])):
        out = Path(args.points) / "served" / f"N{result['N']}-s{result['s']:g}"
        if not (out / "serving.json").is_file():
            what = f"point N={result['N']} s={result['s']:g}"
            export_servable(result, out, POINT_SOURCES, what, graph=onnx_available())
        folders.append(out)
    return folders


def untrained_folders(args: argparse.Namespace) -> list[Path]:
    """Servable folders of the base model as an untrained classifier at each width N (random mux and heads: speed
    only), with their ONNX graphs when the onnx packages are installed; reused when already there."""
    folders = []
    for N in args.widths:
        out = Path(args.workdir) / f"{Path(args.base).name}-N{N}-L{args.seq_len}"
        if not (out / "serving.json").is_file():
            PruMUXModel.from_pretrained(resolve_model(args.base), num_instances=N, num_labels=2).save_pretrained(out)
            point = {
                "task": "rt-polarity",
                "base_model": args.base,
                "s": 0.0,
                "recipe_values": {"seq_len": args.seq_len},
            }
            make_servable(out, point, POINT_SOURCES, graph=onnx_available())
        folders.append(out)
    return folders


def model_level(models: list[Served], threads: int, rounds: int = 2, device: str = "cpu") -> None:
    """Instances/s of each model (eager) with the paper's protocol on ``device``, interleaved rounds, best of each."""
    torch.set_num_threads(threads)
    loaded = [PruMUXModel.from_pretrained(served.folder).to(device).eval() for served in models]
    for _ in range(rounds):
        for served, model in zip(models, loaded):
            result = measure_throughput(model, seq_len=served.spec.seq_len, num_batches=3, warmup=1)
            served.model_level = max(served.model_level, result.examples_per_second)


async def load(
    url: str,
    texts: list[str],
    keys: list[str],
    requests: int,
    clients: int,
    per_request: int,
    interval_s: float | None = None,
) -> dict:
    """Send ``requests`` requests of ``per_request`` texts: ``clients`` closed-loop clients, or open loop
    every ``interval_s``; return wall seconds, latencies and statuses."""
    latencies, statuses = [], []
    next_index = 0
    started = time.perf_counter()

    async def send(session: aiohttp.ClientSession, index: int) -> None:
        batch = [texts[(index * per_request + offset) % len(texts)] for offset in range(per_request)]
        headers = {"Authorization": f"Bearer {keys[index % len(keys)]}"}
        sent = time.perf_counter()
        async with session.post(f"{url}/v1/classify", json={"inputs": batch}, headers=headers) as answer:
            await answer.read()
            statuses.append(answer.status)
        latencies.append((time.perf_counter() - sent) * 1000)

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal next_index
        while next_index < requests:
            next_index += 1
            await send(session, next_index - 1)

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=300)) as session:
        if interval_s is None:
            await asyncio.gather(*(client(session) for _ in range(clients)))
        else:
            tasks = []
            for index in range(requests):
                await asyncio.sleep(max(0.0, started + index * interval_s - time.perf_counter()))
                tasks.append(asyncio.create_task(send(session, index)))
            await asyncio.gather(*tasks)
    return {"seconds": time.perf_counter() - started, "latencies": latencies, "statuses": statuses}


def stats(url: str) -> dict:
    import requests

    return requests.get(f"{url}/v1/stats", headers={"Authorization": f"Bearer {TENANT_KEYS[0]}"}, timeout=60).json()


def mixed_groups(passes: list) -> int:
    return sum(len({member[0] for member in group if member}) > 1 for groups in passes for group in groups)


def measure_served(served: Served, args: argparse.Namespace, texts: list[str], url: str) -> None:
    """Serve ``served`` on ``args.runtime`` and load it with requests of ``args.inputs`` texts: a saturation phase
    per tenant count, then half the saturating rate; its rows are appended to ``served.rows``."""
    from ray import serve

    tenants = max(args.tenants)
    options = ServeOptions(
        model=str(served.folder),
        keys={key_digest(key): f"tenant{i}" for i, key in enumerate(TENANT_KEYS[:tenants])},
        max_wait_ms=args.max_wait_ms,
        cpus_per_replica=args.threads,
        record_groups=True,
        max_batch=args.max_batch,
        runtime=args.runtime,
    )
    serve.run(build_app(options, prepare(options)), name=APP_NAME, route_prefix="/")
    handle = serve.get_deployment_handle("Classifier", APP_NAME)
    max_batch = batch_instances(args.max_batch, served.spec.N)
    pass_ms = 1000 * max_batch / served.model_level
    asyncio.run(load(url, texts, TENANT_KEYS[:1], 2 * args.clients, args.clients, args.inputs))  # warm-up
    rows = [
        phase(served, url, handle, texts, TENANT_KEYS[:count], args, None) | {"tenants": count}
        for count in args.tenants
    ]
    half = phase(served, url, handle, texts, TENANT_KEYS[:1], args, 2 / rows[0]["requests_per_s"])
    rows.append(half | {"tenants": 1, "p99_bound_ms": args.max_wait_ms + 2 * pass_ms})
    served.rows += [row | {"runtime": args.runtime, "inputs": args.inputs} for row in rows]
    serve.delete(APP_NAME)


def phase(
    served: Served,
    url: str,
    handle,
    texts: list[str],
    keys: list[str],
    args: argparse.Namespace,
    interval_s: float | None,
) -> dict:
    before, passes_before = stats(url), len(handle.recorded_groups.remote().result())
    run = asyncio.run(load(url, texts, keys, args.requests, args.clients, args.inputs, interval_s))
    after, passes = stats(url), handle.recorded_groups.remote().result()[passes_before:]
    groups = after["groups"] - before["groups"]
    ok = sum(status == 200 for status in run["statuses"])
    return {
        "load": "saturation" if interval_s is None else f"half rate ({1 / interval_s:.1f} req/s)",
        "requests_per_s": ok / run["seconds"],
        "instances_per_s": ok * args.inputs / run["seconds"],
        **{key: value for key, value in latency_percentiles(run["latencies"]).items() if key != "p95"},
        "batch_fill": (after["batched_instances"] - before["batched_instances"]) / (groups * served.spec.N),
        "groups": groups,
        "instances_per_pass": (after["batched_instances"] - before["batched_instances"])
        / max(1, after["forward_passes"] - before["forward_passes"]),
        "groups_padded": after["groups_padded"] - before["groups_padded"],
        "mixed_groups": mixed_groups(passes),
        "errors": len(run["statuses"]) - ok,
    }


def report(models: list[Served], args: argparse.Namespace, device: str = "cpu") -> str:
    """The table: a row per model, runtime, texts a request and load phase, with its ratio over the first runtime's
    same row and its end-to-end speed-up over the dense model's same row."""

    def key(row: dict, runtime: str | None = None) -> tuple:
        return (runtime or row["runtime"], row["inputs"], row["load"].partition(" (")[0], row["tenants"])

    dense = models[0]
    dense_rows = {key(row): row for row in dense.rows}
    lines = [
        f"hardware: {hardware_name(device)}; replica threads {args.threads}; {args.clients} clients x {args.requests} "
        f"requests of K texts; max-wait-ms {args.max_wait_ms:g}; one replica",
        "",
        "| model | N | s | runtime | K texts/req | load | tenants | req/s | inst/s | vs first runtime | p50 ms | "
        "p99 ms | p99 bound ms | inst/pass | batch fill | padded groups | groups with 2 tenants | e2e speed-up | "
        "model-level speed-up | kept |",
        "|" + " --- |" * 20,
    ]
    for served in models:
        level = served.model_level / dense.model_level
        own = {key(row): row for row in served.rows}
        for row in sorted(served.rows, key=lambda row: (row["inputs"], args.runtimes.index(row["runtime"]))):
            saturation = row["load"] == "saturation"
            e2e = row["instances_per_s"] / dense_rows[key(row)]["instances_per_s"]
            versus = row["requests_per_s"] / own[key(row, args.runtimes[0])]["requests_per_s"]
            bound = f"{row['p99_bound_ms']:.0f}" if "p99_bound_ms" in row else "-"
            lines.append(
                f"| {served.name} | {served.spec.N} | {served.spec.s:g} | {row['runtime']} | {row['inputs']} | "
                f"{row['load']} | {row['tenants']} | {row['requests_per_s']:.1f} | {row['instances_per_s']:.0f} | "
                f"{f'{versus:.2f}x' if saturation else '-'} | {row['p50']:.0f} | {row['p99']:.0f} | {bound} | "
                f"{row['instances_per_pass']:.1f} | {row['batch_fill']:.3f} | {row['groups_padded']}/{row['groups']} | {row['mixed_groups']} | "
                f"{f'{e2e:.2f}x' if saturation else '-'} | {level:.2f}x | {f'{e2e / level:.0%}' if saturation else '-'} |"
            )
    lines += [
        "",
        "model-level instances/s (measure_throughput, eager): "
        + ", ".join(f"{served.name} {served.model_level:.0f}" for served in models),
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--points", help="a `prumux-search train` work dir: serve every trained point in it")
    source.add_argument("--dense", help="servable folder of the dense (1, 0) model")
    source.add_argument("--base", help="a base model (e.g. minilm-l6): serve its untrained classifier at each --widths")
    parser.add_argument("--model", action="append", default=[], help="servable folder to compare (repeatable)")
    parser.add_argument("--widths", default="1,2", help="with --base: the widths N, the first the dense one")
    parser.add_argument("--seq-len", type=int, default=64, help="with --base: the served sequence length")
    parser.add_argument("--workdir", default="/tmp/serve-untrained", help="with --base: where its folders go")
    parser.add_argument("--runtimes", default="eager,onnx", help="`serve --runtime` values, side by side")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=120, help="requests per load phase")
    parser.add_argument("--inputs", default="1,8,32", help="texts per request: one series of phases each")
    parser.add_argument("--tenants", default="1,2", help="tenant counts of the saturation phases")
    parser.add_argument("--max-wait-ms", type=float, default=10.0)
    parser.add_argument("--max-batch", type=int, default=None, help="instances per batch [default: 32 N]")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the replica and of model-level runs")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--out", type=Path, help="also write the table to this file")
    args = parser.parse_args()
    args.tenants = [int(value) for value in args.tenants.split(",")]
    args.inputs = [int(value) for value in args.inputs.split(",")]
    args.widths = [int(value) for value in args.widths.split(",")]
    args.runtimes = args.runtimes.split(",")
    if args.dense and not args.model:
        parser.error("--dense needs at least one --model to compare")

    import ray
    from ray import serve

    from trainers.tasks import load_task

    folders = untrained_folders(args) if args.base else servable_folders(args)
    models = [Served(folder.name, folder, read_servable(folder)) for folder in folders]
    texts = list(load_task("rt-polarity").test["text"])
    print(f"model-level throughput of {len(models)} models ...", file=sys.stderr, flush=True)
    model_level(models, args.threads)
    project = str(Path(__file__).resolve().parents[1])
    ray.init(
        address="local",  # a cluster of its own, never one already running here
        num_cpus=os.cpu_count(),
        include_dashboard=False,
        log_to_driver=False,
        logging_level="warning",
        runtime_env={"env_vars": {"PYTHONPATH": project}},
    )
    serve.start(http_options={"host": "127.0.0.1", "port": args.port}, logging_config=logging_config(False))
    try:
        for inputs in args.inputs:  # each model's runtimes one after the other: side by side in time
            for served in models:
                for runtime in args.runtimes:
                    print(
                        f"serving {served.name} on {runtime}, {inputs} texts a request ...", file=sys.stderr, flush=True
                    )
                    phase_args = argparse.Namespace(**{**vars(args), "runtime": runtime, "inputs": inputs})
                    measure_served(served, phase_args, texts, f"http://127.0.0.1:{args.port}")
    finally:
        serve.shutdown()
        ray.shutdown()
    table = report(models, args)
    print(table)
    if args.out:
        args.out.write_text(table + "\n")


if __name__ == "__main__":
    main()
