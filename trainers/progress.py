"""What a running job shows: a progress bar per stage, its log in `<workdir>/train.log`, and
progress records for whoever watches the job from elsewhere.

Several jobs may share a work dir, so every log line names the job and its process id.
A search's trial sets a progress sink (``reporting_progress``); every stage then sends it a
record per step (the search's trainable writes them, throttled, into the study for the driver).
An evaluation sink (``reporting_evaluations``) receives each evaluation a stage makes (stage,
step within the stage, validation accuracy and cross-entropy): a point's learning curve. A pause check
(``pausing``) is asked with each stage's step count, before its first step and after every step;
when it says so, the stage evaluates (where it evaluates and has not at that step), saves its
checkpoint and raises ``Paused`` (a point trained to a given step, resumed later:
``trainers.point.train_point`` with ``stop_at_step``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from storage.errors import first_line

LOG_FILE = "train.log"
# The postfix keys shown on a bar, in this order, with their formats.
POSTFIX_FORMATS = {"loss": "{:.4f}", "accuracy": "{:.3f}", "sparsity": "{:.3f}", "target": "{:.3f}"}
# The phase each training stage belongs to (1 retrieval warm-up, 2 multiplexed fine-tuning, 3 pruning).
STAGE_PHASES = {"retrieval": 1, "mlm": 2, "finetune": 2, "prune": 3, "pruned_finetune": 3}
EVALUATION_KEYS = ("accuracy", "sparsity")

ProgressSink = Callable[[dict[str, Any]], None]
# stage, step within the stage, accuracy, cross-entropy (None: not recorded), reported again
EvaluationSink = Callable[[str, int, float, float | None, bool], None]
_sink: ProgressSink | None = None
_evaluation_sink: EvaluationSink | None = None
PauseCheck = Callable[[str, int], bool]  # stage, its steps done: stop there?
_pause_check: PauseCheck | None = None


class Paused(Exception):
    """A stage stopped before its next step because the pause check said so; its checkpoint is saved."""


@contextmanager
def pausing(check: PauseCheck | None) -> Iterator[None]:
    """Ask ``check(stage, steps_done)`` at every step of every stage in this process while the block runs
    (None: never pause)."""
    global _pause_check
    previous, _pause_check = _pause_check, check
    try:
        yield
    finally:
        _pause_check = previous


def pause_requested(stage: str, done: int) -> bool:
    """Whether the pause check (if any) asks ``stage``, ``done`` steps in, to stop there."""
    return _pause_check is not None and _pause_check(stage, done)


@contextmanager
def reporting_progress(sink: ProgressSink) -> Iterator[None]:
    """Send every stage's progress records to ``sink`` in this process while the block runs.

    A record: ``stage``, ``phase``, ``step``, ``total``, ``eta`` (seconds left in the stage, None
    before the first step), ``loss`` and the last evaluation's ``accuracy``/``sparsity`` once known.
    """
    global _sink
    _sink = sink
    try:
        yield
    finally:
        _sink = None


@contextmanager
def reporting_evaluations(sink: EvaluationSink | None) -> Iterator[None]:
    """Send every stage's evaluations in this process to ``sink`` while the block runs (None: to nobody)."""
    global _evaluation_sink
    previous, _evaluation_sink = _evaluation_sink, sink
    try:
        yield
    finally:
        _evaluation_sink = previous


def report_evaluation(
    stage: str, step: int, accuracy: float, cross_entropy: float | None = None, again: bool = False
) -> None:
    """Hand one evaluation of ``stage`` (after ``step`` of its steps) to the evaluation sink, if any;
    ``again``: an evaluation made earlier (a resumed or cached stage), reported once more."""
    if _evaluation_sink is not None:
        entropy = None if cross_entropy is None else float(cross_entropy)
        _evaluation_sink(stage, int(step), float(accuracy), entropy, again)


@contextmanager
def job_log(workdir: Path, job: str) -> Iterator[logging.Logger]:
    """A logger that appends to `<workdir>/train.log` for the duration of one job."""
    log = logging.getLogger(f"trainers.job.{job}")
    log.setLevel(logging.INFO)
    handler = logging.FileHandler(Path(workdir) / LOG_FILE, encoding="utf-8")
    handler.setFormatter(logging.Formatter(f"%(asctime)s pid=%(process)d {job}: %(message)s"))
    log.addHandler(handler)
    try:
        yield log
    finally:
        log.removeHandler(handler)
        handler.close()


def error_cause(error: BaseException, limit: int = 300) -> str:
    """An exception as one short line for a console or a study: its type and its message's first line."""
    if not str(error).strip():
        return type(error).__name__
    return f"{type(error).__name__}: {first_line(error, limit)}"


class StageProgress:
    """A tqdm bar over the steps of one training stage, with loss / accuracy / sparsity as postfix.

    The description is ``"<job> <stage>"``; its last word names the stage in progress records.
    """

    def __init__(self, description: str, total: int, initial: int, enabled: bool):
        self._bar = tqdm(total=total, initial=initial, desc=description, disable=not enabled, dynamic_ncols=True)
        self._shown: dict[str, str] = {}
        self._stage = description.rsplit(" ", 1)[-1]
        self._total, self._initial, self._started = total, initial, time.monotonic()
        self._latest: dict[str, float] = {}
        self._report(initial)

    def update(self, step: int, metrics: dict[str, float]) -> None:
        """Move the bar to `step` and show the latest value of each known metric."""
        for key, value in metrics.items():
            if key in POSTFIX_FORMATS:
                self._shown[key] = POSTFIX_FORMATS[key].format(value)
            if key in EVALUATION_KEYS or key == "loss":
                self._latest[key] = float(value)
        self._bar.set_postfix(self._shown, refresh=False)
        self._bar.update(step - self._bar.n)
        self._report(step)

    def _report(self, step: int) -> None:
        if _sink is None:
            return
        done = step - self._initial
        eta = (time.monotonic() - self._started) / done * (self._total - step) if done > 0 else None
        record = {"stage": self._stage, "phase": STAGE_PHASES.get(self._stage), "step": step, "total": self._total}
        _sink({**record, "eta": eta, **self._latest})

    def close(self) -> None:
        self._bar.close()
