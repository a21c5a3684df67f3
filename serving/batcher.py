"""A replica's batches: the parts that arrive are collected into one batch at a time, computed off the event loop.

A batch closes when it holds ``max_batch`` instances, or ``max_wait_s`` after its first part
arrived, but never while the previous batch is still computing: the parts that arrive meanwhile
wait for the next batch, which starts as soon as the model is free. (Ray Serve's ``serve.batch``
closes a batch on its timer whether or not the model is free, so under load it queued several
small batches behind a running one.)
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor

from serving.batching import Part, PartResult, count_instances


class Batcher:
    """``await batcher.submit(part)``: the part's result, computed in a batch by ``run(parts)`` on ``executor``."""

    def __init__(
        self,
        run: Callable[[list[Part]], list[PartResult]],
        executor: Executor,
        max_batch: int,
        max_wait_s: float,
    ) -> None:
        self.run = run
        self.executor = executor
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.pending: deque[tuple[Part, asyncio.Future, float]] = deque()
        self.arrived = asyncio.Event()
        self.worker: asyncio.Task | None = None

    async def submit(self, part: Part) -> PartResult:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.pending.append((part, future, loop.time()))
        self.arrived.set()
        if self.worker is None or self.worker.done():
            self.worker = loop.create_task(self._work())
        return await future

    def _pending_instances(self) -> int:
        return count_instances([part for part, _, _ in self.pending])

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self.pending:
                self.arrived.clear()
                await self.arrived.wait()
            deadline = self.pending[0][2] + self.max_wait_s
            while self._pending_instances() < self.max_batch and (remaining := deadline - loop.time()) > 0:
                self.arrived.clear()
                try:
                    await asyncio.wait_for(self.arrived.wait(), remaining)
                except TimeoutError:
                    break
            batch = self._take()
            if not batch:
                continue
            try:
                results = await loop.run_in_executor(self.executor, self.run, [part for part, _ in batch])
            except Exception as error:  # the batch's callers get the error; the replica keeps serving
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            for (_, future), result in zip(batch, results):
                if not future.done():  # a caller that gave up has a cancelled future
                    future.set_result(result)

    def _take(self) -> list[tuple[Part, asyncio.Future]]:
        """The oldest pending parts, up to max_batch instances (at least one part), callers that gave up left out."""
        batch: list[tuple[Part, asyncio.Future]] = []
        size = 0
        while self.pending and (not batch or size + count_instances([self.pending[0][0]]) <= self.max_batch):
            part, future, _ = self.pending.popleft()
            if not future.done():
                batch.append((part, future))
                size += count_instances([part])
        return batch
