"""The replica's batcher (no Ray): parts that arrive while a batch computes form the next batch together,
batches hold at most max_batch instances, a failed batch fails only its own callers."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from serving.batcher import Batcher
from serving.batching import Part, PartResult


def part(request: str, size: int = 1) -> Part:
    return Part("tenant", request, tuple(f"text {index}" for index in range(size)))


class Model:
    """Records each batch's request ids; computes until `free` is set; fails a batch holding a request 'bad'."""

    def __init__(self) -> None:
        self.free = threading.Event()
        self.free.set()
        self.batches: list[list[str]] = []

    def __call__(self, parts: list[Part]) -> list[PartResult]:
        self.batches.append([p.request_id for p in parts])
        self.free.wait(30)
        if any(p.request_id == "bad" for p in parts):
            raise RuntimeError("model failed")
        return [PartResult([[1.0]] * len(p.inputs), []) for p in parts]


def batcher(model: Model, max_batch: int = 8, max_wait_s: float = 0.005) -> Batcher:
    return Batcher(model, ThreadPoolExecutor(1), max_batch, max_wait_s)


def test_parts_arriving_during_a_batch_form_the_next_one_together() -> None:
    model = Model()
    model.free.clear()

    async def scenario() -> None:
        served = batcher(model)
        first = asyncio.create_task(served.submit(part("a")))
        await asyncio.sleep(0.05)  # "a" computes; the next ones arrive far apart (> max_wait) meanwhile
        later = []
        for name in "bcd":
            later.append(asyncio.create_task(served.submit(part(name, 2))))
            await asyncio.sleep(0.03)
        model.free.set()
        results = await asyncio.gather(first, *later)
        assert [len(result.scores) for result in results] == [1, 2, 2, 2]

    asyncio.run(scenario())
    assert model.batches == [["a"], ["b", "c", "d"]]


def test_a_batch_holds_at_most_max_batch_instances_and_skips_callers_that_gave_up() -> None:
    model = Model()

    async def scenario() -> None:
        served = batcher(model, max_batch=4)
        gone = asyncio.create_task(served.submit(part("gone")))
        tasks = [asyncio.create_task(served.submit(part(name, 2))) for name in "abc"]
        await asyncio.sleep(0)
        gone.cancel()
        await asyncio.gather(*tasks)

    asyncio.run(scenario())
    assert model.batches == [["a", "b"], ["c"]]


def test_a_failed_batch_fails_its_own_callers_and_the_next_batch_is_served() -> None:
    model = Model()

    async def scenario() -> None:
        served = batcher(model)
        with pytest.raises(RuntimeError, match="model failed"):
            await served.submit(part("bad"))
        assert len((await served.submit(part("good", 3))).scores) == 3

    asyncio.run(scenario())
