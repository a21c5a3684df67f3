"""What every section of the GPU check shares: its plan, its report part, its time box and how it is run."""

from __future__ import annotations

import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from prumux.throughput import synchronize

REPO = Path(__file__).resolve().parents[2]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class Plan:
    """How much each section measures, and the seconds each may take (its time box)."""

    quick: bool
    shape: dict  # transformers BertConfig fields of the paper-protocol and encoder sections
    seq_len: int
    widths: tuple[int, ...]  # the paper-protocol grid
    sparsities: tuple[float, ...]
    batches: int  # timed batches per model and round
    rounds: int  # rounds, best reported
    mux_steps: tuple[int, ...]  # section 3's phase-2 lengths
    mux_widths: tuple[int, ...]
    tune_grid: tuple[tuple[int, ...], tuple[float, ...]]  # section 5's Ray Tune grid
    boxes: dict[str, float]  # section name -> seconds
    requests: int = 200  # per serving load phase
    clients: int = 16


@dataclass
class Section:
    """A titled part of the report, and its figures that fall short of their expectation, each with where
    the report shows why (``short``: "figure; see: what explains it")."""

    title: str
    lines: list[str] = field(default_factory=list)
    short: list[str] = field(default_factory=list)


class TimeBox:
    """The seconds a section has left: work that would not fit is left out, and the report says so."""

    def __init__(self, seconds: float):
        self.seconds, self.started = seconds, time.perf_counter()

    def left(self) -> float:
        return self.seconds - (time.perf_counter() - self.started)

    def fits(self, seconds: float = 0.0) -> bool:
        """Whether ``seconds`` more work ends inside the box."""
        return seconds < self.left()


def instances_per_second(call: Callable, inputs: list[torch.Tensor], mask: torch.Tensor, warmup: int = 1) -> float:
    """Instances/s of ``call(input_ids, mask)`` over the batches ``inputs`` after ``warmup`` untimed calls,
    each call ended by a device sync (the paper's protocol, as `prumux.measure_throughput` times it)."""
    device = mask.device
    with torch.inference_mode():
        for index in range(warmup):
            call(inputs[index % len(inputs)], mask)
            synchronize(device)
        start = time.perf_counter()
        for input_ids in inputs:
            call(input_ids, mask)
            synchronize(device)
    return sum(len(input_ids) for input_ids in inputs) / (time.perf_counter() - start)


def run_section(name: str, make: Callable[[], Section]) -> Section:
    """The section ``make`` builds, or one that reports its error."""
    started = time.perf_counter()
    try:
        section = make()
    except Exception as error:  # noqa: BLE001 - the report goes on with the other sections
        traceback.print_exc()
        section = Section(name, [f"failed: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"])
        section.short.append(f"section {name!r} failed; see: its error above and the log")
    section.lines.append(f"\n({time.perf_counter() - started:.0f} s)")
    print(f"{section.title}: done in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    return section


def failed(section: Section) -> bool:
    return any(line.startswith("failed: ") for line in section.lines)
