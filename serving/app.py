"""The Ray Serve application: a `Gateway` in front of `Classifier` replicas.

`build_app(options)` is what `prumux-search serve` runs; `app_builder(args)` is the same for
Ray Serve's own tools, so the application also runs on a cluster:

    serve run serving.app:app_builder model=/shared/my-model keys=/etc/prumux/keys.txt

or from a Serve config file (``import_path: serving.app:app_builder`` with those ``args``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray import serve
from ray.serve import Application

from servable import ServingSpec
from serving.classifier import Classifier
from serving.gateway import Gateway
from serving.keys import read_keys
from serving.model import DEFAULT_RUNTIME, check_servable, local_folder

APP_NAME = "prumux"
GROUPS_PER_BATCH = 32  # default --max-batch: this many groups of N


@dataclass
class ServeOptions:
    """How to serve a model: where it is, who may call, how to batch, what a request may hold."""

    model: str  # a servable folder, or a URI of one
    keys: dict[str, str] | None = None  # key digest -> tenant (`read_keys`); None: one tenant, loopback only
    max_batch: int | None = None  # instances per batch [default: 32 groups of N]
    max_wait_ms: float = 10.0
    replicas: int = 1
    device: str = "auto"
    runtime: str = DEFAULT_RUNTIME  # eager, torch, onnx (the folder's graph) or auto (`serving.model.served_runner`)
    cpus_per_replica: float | None = None  # [default: the cluster's CPUs shared by the replicas]
    max_body_bytes: int = 1 << 20
    max_inputs: int = 1024
    request_timeout_s: float = 30.0
    access_log: bool = False  # a line per request in Ray Serve's logs (off: it costs about a quarter of the req/s here)
    record_groups: bool = False  # test and benchmark hook: replicas keep every pass's group composition

    def check(self) -> None:
        """Refuse impossible values with one line."""
        positive = {
            "replicas": self.replicas,
            "max_body_bytes": self.max_body_bytes,
            "max_inputs": self.max_inputs,
            "request_timeout_s": self.request_timeout_s,
            "max_batch": self.max_batch or 1,
            "cpus_per_replica": self.cpus_per_replica or 1,
        }
        for name, value in positive.items():
            if not value > 0:
                raise ValueError(f"{name.replace('_', '-')} must be positive, got {value}")
        if not 0 <= self.max_wait_ms <= 10_000:
            raise ValueError(f"max-wait-ms must be in [0, 10000], got {self.max_wait_ms}")
        if self.device != "auto" and self.device != "cpu" and not self.device.startswith("cuda"):
            raise ValueError(f"device must be auto, cpu or cuda[:K], got {self.device!r}")


def batch_instances(requested: int | None, N: int) -> int:
    """Instances per batch: a multiple of N (rounded down, at least N); 32 groups by default."""
    if requested is None:
        return GROUPS_PER_BATCH * N
    return max(N, requested // N * N)


def prepare(options: ServeOptions) -> ServingSpec:
    """Check the options and the model folder; return the model's serving spec (nothing started)."""
    options.check()
    return check_servable(local_folder(options.model), options.runtime)


def build_app(options: ServeOptions, spec: ServingSpec | None = None) -> Application:
    """The application: `Gateway` (ingress) bound to the `Classifier` deployment."""
    spec = spec or prepare(options)
    max_batch = batch_instances(options.max_batch, spec.N)
    gpus, cpus = _replica_resources(options)
    _check_fits(options.replicas, cpus, gpus)
    logging = logging_config(options.access_log)
    classifier = Classifier.options(
        num_replicas=options.replicas,
        max_ongoing_requests=2 * max_batch,  # one batch running, the next one filling
        ray_actor_options={"num_cpus": cpus, "num_gpus": gpus},
        logging_config=logging,
    ).bind(
        options.model,
        options.device,
        max(1, math.floor(cpus)),
        max_batch,
        options.max_wait_ms,
        options.record_groups,
        options.runtime,
    )
    limits = {
        "max_batch": max_batch,
        "max_body_bytes": options.max_body_bytes,
        "max_inputs": options.max_inputs,
        "request_timeout_s": options.request_timeout_s,
    }
    return Gateway.options(logging_config=logging).bind(classifier, spec.to_dict(), options.keys, limits)


def logging_config(access_log: bool) -> dict[str, Any]:
    """Ray Serve's logging of the proxy and deployments: warnings, plus a line per request if asked for."""
    return {"enable_access_log": access_log, "log_level": "INFO" if access_log else "WARNING"}


def app_builder(args: dict[str, str]) -> Application:
    """For `serve run` / Serve config files: ``model=DIR [keys=FILE] [max_batch=...] [max_wait_ms=...]
    [replicas=...] [device=...] [runtime=...] [cpus_per_replica=...] [access_log=true]`` (and the request limits)."""
    known = {
        "model",
        "keys",
        "max_batch",
        "max_wait_ms",
        "replicas",
        "device",
        "runtime",
        "cpus_per_replica",
        "max_body_bytes",
        "max_inputs",
        "request_timeout_s",
        "access_log",
    }
    if unknown := sorted(set(args) - known):
        raise ValueError(f"unknown argument(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    if "model" not in args:
        raise ValueError("give model=DIR (a servable folder: prumux-search export)")
    numbers = {
        "max_batch": int,
        "replicas": int,
        "max_body_bytes": int,
        "max_inputs": int,
        "max_wait_ms": float,
        "cpus_per_replica": float,
        "request_timeout_s": float,
    }
    values: dict[str, Any] = {key: numbers[key](value) if key in numbers else value for key, value in args.items()}
    if "access_log" in values:
        values["access_log"] = str(values["access_log"]).lower() in {"1", "true", "yes"}
    if "keys" in values:
        values["keys"] = read_keys(Path(values["keys"]))
    return build_app(ServeOptions(**values))


def _replica_resources(options: ServeOptions) -> tuple[float, float]:
    """(GPUs, CPUs) of one replica: a GPU each when serving on CUDA; otherwise the cluster's CPUs
    shared out, at most one node's worth (a replica runs on one node)."""
    cluster = ray.cluster_resources() if ray.is_initialized() else {}
    gpus = 1.0 if options.device.startswith("cuda") or (options.device == "auto" and cluster.get("GPU", 0) > 0) else 0.0
    if options.cpus_per_replica is not None:
        return gpus, options.cpus_per_replica
    if gpus or not cluster:
        return gpus, 1.0
    largest_node = max(node["Resources"].get("CPU", 0) for node in ray.nodes() if node["Alive"])
    return gpus, max(1.0, float(min(largest_node, cluster.get("CPU", 1) // options.replicas)))


def _check_fits(replicas: int, cpus: float, gpus: float) -> None:
    """Refuse replicas the connected cluster cannot place at all (Serve would wait for them forever)."""
    if not ray.is_initialized():
        return
    cluster = ray.cluster_resources()
    for name, each, key in (("CPUs", cpus, "CPU"), ("GPUs", gpus, "GPU")):
        if each and replicas * each > cluster.get(key, 0):
            raise ValueError(
                f"{replicas} replica(s) x {each:g} {name} do not fit the cluster's {cluster.get(key, 0):g} "
                f"{name}: lower --replicas or --cpus-per-replica"
            )


def run(options: ServeOptions, spec: ServingSpec, host: str, port: int) -> None:
    """Start Serve's HTTP proxy on ``host:port`` and deploy the application (Ray must be connected)."""
    serve.start(http_options={"host": host, "port": port}, logging_config=logging_config(options.access_log))
    serve.run(build_app(options, spec), name=APP_NAME, route_prefix="/")
