"""The figures of ``GET /v1/stats``, kept by the gateway since it started.

Requests, latencies and per-tenant counts are the gateway's own; forward passes, groups and
padding come from the replicas' batch reports (each batch reports once, with its first part).
The same figures go to Ray Serve's metrics (Prometheus, through Ray's metrics agent), which
add up over gateways and replicas.
"""

from __future__ import annotations

import math
import time
from collections import Counter, deque
from typing import Any

from serving.batching import BatchReport

LATENCY_WINDOW = 10_000  # requests the percentiles are computed over


class ServingStats:
    """Counters and a latency window of one gateway."""

    def __init__(self, N: int) -> None:
        self.N = N
        self.started = time.time()
        self.requests = 0
        self.instances = 0
        self.truncated = 0
        self.retried_parts = 0
        self.statuses: Counter[int] = Counter()
        self.tenant_requests: Counter[str] = Counter()
        self.tenant_instances: Counter[str] = Counter()
        self.batches = 0
        self.passes = 0
        self.groups = 0
        self.padded_groups = 0
        self.dummy_rows = 0
        self.batched_instances = 0
        self.latencies_ms: deque[float] = deque(maxlen=LATENCY_WINDOW)

    def record_request(self, tenant: str, instances: int, truncated: int, seconds: float) -> None:
        self.requests += 1
        self.instances += instances
        self.truncated += truncated
        self.statuses[200] += 1
        self.tenant_requests[tenant] += 1
        self.tenant_instances[tenant] += instances
        self.latencies_ms.append(seconds * 1000)

    def record_refusal(self, status: int) -> None:
        self.statuses[status] += 1

    def record_batch(self, report: BatchReport) -> None:
        self.batches += 1
        self.passes += report.passes
        self.groups += report.groups
        self.padded_groups += report.padded_groups
        self.dummy_rows += report.dummy_rows
        self.batched_instances += report.instances

    def to_dict(self) -> dict[str, Any]:
        slots = self.groups * self.N
        return {
            "uptime_s": round(time.time() - self.started, 1),
            "requests": self.requests,
            "instances": self.instances,
            "truncated_inputs": self.truncated,
            "retried_parts": self.retried_parts,
            "responses": {str(status): count for status, count in sorted(self.statuses.items())},
            "batches": self.batches,
            "forward_passes": self.passes,
            "groups": self.groups,
            "groups_padded": self.padded_groups,
            "dummy_rows": self.dummy_rows,
            "batched_instances": self.batched_instances,
            "batch_fill": self.batched_instances / slots if slots else None,
            "instances_per_pass": self.batched_instances / self.passes if self.passes else None,
            "latency_ms": latency_percentiles(list(self.latencies_ms)),
            "tenants": {
                tenant: {"requests": self.tenant_requests[tenant], "instances": self.tenant_instances[tenant]}
                for tenant in sorted(self.tenant_requests)
            },
        }


def latency_percentiles(values_ms: list[float]) -> dict[str, float | None]:
    """p50 / p95 / p99 (nearest rank) of latencies in milliseconds; None when there are none."""
    ordered = sorted(values_ms)

    def rank(q: float) -> float | None:
        if not ordered:
            return None
        return round(ordered[max(0, math.ceil(q * len(ordered)) - 1)], 2)

    return {"p50": rank(0.50), "p95": rank(0.95), "p99": rank(0.99)}
