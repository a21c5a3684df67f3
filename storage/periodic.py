"""One background worker: a daemon thread that repeats a call every few seconds until stopped.

The heartbeat, a lease's renewal, the run directory's push to its URI and the driver's
progress poll are all this; a round that raises is logged as one warning line (passwords
masked) and the next round tries again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Self

from storage.errors import first_line


class Periodic:
    """Call ``work`` every ``interval`` seconds in a daemon thread named ``name``, from ``start``
    until ``stop`` (or around a ``with`` block); ``work`` returning False ends the thread early.

    An exception of the kinds in ``tolerated`` is logged on ``logger`` as ``"<failed>: <first line>"``
    and the next round runs as planned; any other ends the thread.
    """

    def __init__(
        self,
        work: Callable[[], bool | None],
        interval: float,
        *,
        name: str,
        failed: str,
        logger: logging.Logger,
        tolerated: tuple[type[BaseException], ...] = (Exception,),
    ) -> None:
        self.work, self.interval, self.name = work, interval, name
        self.failed, self.logger, self.tolerated = failed, logger, tolerated
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Self:
        """Start repeating (the first call comes after one interval)."""
        self._stopped.clear()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop repeating and wait for a round in progress to end."""
        self._stopped.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stopped.wait(self.interval):
            try:
                if self.work() is False:
                    return
            except self.tolerated as error:
                self.logger.warning("%s: %s", self.failed, first_line(error))
