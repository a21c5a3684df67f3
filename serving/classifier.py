"""The model replicas: ``Classifier``, a Ray Serve deployment that batches its calls (`serving.batcher`).

Calls are parts (one tenant's inputs). The batcher collects them until ``max_batch`` instances,
or ``max_wait_ms`` and the previous batch done; the batch then runs as one forward pass per tenant
(`serving.batching`), off the event loop, so the next batch fills meanwhile.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch
from ray import serve
from ray.serve.metrics import Counter, Histogram

from serving.batcher import Batcher
from serving.batching import BatchReport, Part, PartResult, tenant_passes
from serving.model import DEFAULT_RUNTIME, ServedModel, local_folder, pick_device

FILL_BUCKETS = [0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 1.0]


@serve.deployment(name="Classifier")
class Classifier:
    """One replica: the servable model loaded once, its batches computed one at a time."""

    def __init__(
        self,
        location: str,
        device: str = "auto",
        threads: int | None = None,
        max_batch: int = 32,
        max_wait_ms: float = 10.0,
        record_groups: bool = False,
        runtime: str = DEFAULT_RUNTIME,
    ) -> None:
        if threads:
            torch.set_num_threads(threads)
        self.model = ServedModel(local_folder(location), pick_device(device), runtime)
        self.replica = serve.get_replica_context().replica_id.unique_id
        self.batcher = Batcher(
            self._run, ThreadPoolExecutor(1, thread_name_prefix="forward"), max_batch, max_wait_ms / 1000
        )
        self.recorded: list[list[list[Any]]] | None = [] if record_groups else None
        self.metrics = _Metrics()
        self.model.probabilities(["warm-up"] * self.model.N)  # first-call costs before the first request

    async def classify(self, part: Part) -> PartResult:
        """The part's label probabilities, computed in a batch with the parts that arrive with it."""
        return await self.batcher.submit(part)

    def _run(self, parts: list[Part]) -> list[PartResult]:
        report = BatchReport(self.replica, self.model.N)
        results: list[PartResult] = [PartResult([], []) for _ in parts]
        for tenant_pass in tenant_passes(parts):
            scores, truncated = self.model.probabilities(tenant_pass.rows)
            report.add(tenant_pass)
            if self.recorded is not None:
                self.recorded.append(tenant_pass.groups(self.model.N))
            offset = 0
            for index in tenant_pass.parts:
                size = len(parts[index].inputs)
                results[index] = PartResult(scores[offset : offset + size].tolist(), truncated[offset : offset + size])
                offset += size
        results[0].report = report
        self.metrics.record(report)
        return results

    def recorded_groups(self) -> list[list[list[Any]]]:
        """Test hook (``record_groups=True``): every forward pass's groups, [(tenant, request id, index) or None]."""
        if self.recorded is None:
            raise RuntimeError("this replica does not record groups (record_groups=False)")
        return self.recorded

    def describe(self) -> dict[str, Any]:
        """Where this replica runs: process id, replica id, device, torch threads."""
        return {
            "pid": os.getpid(),
            "replica": self.replica,
            "device": str(self.model.device),
            "threads": torch.get_num_threads(),
        }


class _Metrics:
    """The replica's Ray Serve metrics (exported with Ray's, tagged with deployment and replica)."""

    def __init__(self) -> None:
        self.instances = Counter("prumux_instances", "Inputs classified, per tenant.", tag_keys=("tenant",))
        self.passes = Counter("prumux_forward_passes", "Multiplexed forward passes (one per tenant per batch).")
        self.groups = Counter("prumux_groups", "Multiplexed groups of N rows.")
        self.padded = Counter("prumux_groups_padded", "Groups filled with dummy rows.")
        self.dummies = Counter("prumux_dummy_rows", "Dummy rows added to fill groups.")
        self.fill = Histogram("prumux_batch_fill", "Real instances / (groups x N), per batch.", boundaries=FILL_BUCKETS)

    def record(self, report: BatchReport) -> None:
        for tenant, count in report.tenants.items():
            self.instances.inc(count, tags={"tenant": tenant})
        self.passes.inc(report.passes)
        self.groups.inc(report.groups)
        if report.padded_groups:
            self.padded.inc(report.padded_groups)
        if report.dummy_rows:
            self.dummies.inc(report.dummy_rows)
        self.fill.observe(report.instances / (report.groups * report.N))
