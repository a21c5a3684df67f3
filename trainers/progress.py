"""What a running job shows: a progress bar per stage, and its log in `<workdir>/train.log`.

Several jobs may share a work dir, so every log line names the job and its process id.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tqdm.auto import tqdm

LOG_FILE = "train.log"
# The postfix keys shown on a bar, in this order, with their formats.
POSTFIX_FORMATS = {"loss": "{:.4f}", "accuracy": "{:.3f}", "sparsity": "{:.3f}", "target": "{:.3f}"}


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


class StageProgress:
    """A tqdm bar over the steps of one training stage, with loss / accuracy / sparsity as postfix."""

    def __init__(self, description: str, total: int, initial: int, enabled: bool):
        self._bar = tqdm(total=total, initial=initial, desc=description, disable=not enabled, dynamic_ncols=True)
        self._shown: dict[str, str] = {}

    def update(self, step: int, metrics: dict[str, float]) -> None:
        """Move the bar to `step` and show the latest value of each known metric."""
        for key, value in metrics.items():
            if key in POSTFIX_FORMATS:
                self._shown[key] = POSTFIX_FORMATS[key].format(value)
        self._bar.set_postfix(self._shown, refresh=False)
        self._bar.update(step - self._bar.n)

    def close(self) -> None:
        self._bar.close()
