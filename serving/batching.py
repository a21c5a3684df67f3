"""Tenant-safe grouping of a Ray Serve batch into multiplexed forward passes.

A batch (what `serving.batcher` collected) is a list of parts: one request's inputs, or a
slice of them, all from one tenant. Each tenant's parts become one forward pass of their
rows in arrival order; the model groups those rows N at a time and fills the last group with
its own dummy rows. So a group never holds two tenants' inputs, and a dummy's output is
never returned to anyone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from serving.inputs import Input


@dataclass(frozen=True)
class Part:
    """Inputs of one request (or a slice of it) from one tenant; ``start``: index of the first in the request."""

    tenant: str
    request_id: str
    inputs: tuple[Input, ...]
    start: int = 0


@dataclass
class PartResult:
    """One part's answer: per input the label probabilities and whether it was truncated."""

    scores: list[list[float]]
    truncated: list[bool]
    report: BatchReport | None = None  # the batch's figures, on the batch's first part only


@dataclass
class TenantPass:
    """One forward pass: one tenant's parts (indices into the batch), their rows in order."""

    tenant: str
    parts: list[int]
    rows: list[Input]
    sources: list[tuple[str, int]]  # (request id, input index) of each row

    def groups(self, N: int) -> list[list[tuple[str, str, int] | None]]:
        """The multiplexed groups the model forms: N rows each, the last filled with dummies (None)."""
        members: list[tuple[str, str, int] | None] = [(self.tenant, *source) for source in self.sources]
        members += [None] * (-len(members) % N)
        return [members[start : start + N] for start in range(0, len(members), N)]


@dataclass
class BatchReport:
    """What one batch cost: forward passes, groups, padding."""

    replica: str
    N: int
    instances: int = 0
    passes: int = 0
    groups: int = 0
    padded_groups: int = 0
    dummy_rows: int = 0
    tenants: dict[str, int] = field(default_factory=dict)  # tenant -> instances

    def add(self, tenant_pass: TenantPass) -> None:
        rows = len(tenant_pass.rows)
        groups = math.ceil(rows / self.N)
        self.instances += rows
        self.passes += 1
        self.groups += groups
        self.dummy_rows += groups * self.N - rows
        self.padded_groups += int(rows % self.N != 0)
        self.tenants[tenant_pass.tenant] = self.tenants.get(tenant_pass.tenant, 0) + rows


def count_instances(parts: list[Part]) -> int:
    """The size of a batch: its inputs, not its requests."""
    return sum(len(part.inputs) for part in parts)


def tenant_passes(parts: list[Part]) -> list[TenantPass]:
    """The batch's forward passes: one per tenant, in order of each tenant's first part."""
    passes: dict[str, TenantPass] = {}
    for index, part in enumerate(parts):
        tenant_pass = passes.setdefault(part.tenant, TenantPass(part.tenant, [], [], []))
        tenant_pass.parts.append(index)
        tenant_pass.rows += part.inputs
        tenant_pass.sources += [(part.request_id, part.start + offset) for offset in range(len(part.inputs))]
    return list(passes.values())


def split_request(tenant: str, request_id: str, inputs: list[Input], max_instances: int) -> list[Part]:
    """A request's inputs cut into parts of at most ``max_instances`` (one batch can hold each)."""
    return [
        Part(tenant, request_id, tuple(inputs[start : start + max_instances]), start)
        for start in range(0, len(inputs), max_instances)
    ]
