"""The one background worker: a failed round is one warning line and the next round runs; False ends it."""

from __future__ import annotations

import logging
import threading

import pytest

from storage.periodic import Periodic


def test_a_failed_round_is_logged_and_the_next_runs(caplog: pytest.LogCaptureFixture) -> None:
    rounds, done = [], threading.Event()

    def work() -> bool:
        rounds.append(len(rounds))
        if len(rounds) == 1:
            raise OSError("postgresql://user:secret@db/x unreachable\nmore lines")
        done.set()
        return False  # ends the worker

    worker = Periodic(work, 0.01, name="test-periodic", failed="poll failed", logger=logging.getLogger("test"))
    with caplog.at_level(logging.WARNING, logger="test"), worker:
        assert done.wait(10)
        worker._thread.join(10)
        assert not worker._thread.is_alive()
    assert rounds == [0, 1]
    assert [record.getMessage() for record in caplog.records] == ["poll failed: postgresql://user:***@db/x unreachable"]


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the bug surfaces
def test_an_untolerated_error_ends_the_worker() -> None:
    calls = []

    def work() -> None:
        calls.append(1)
        raise KeyError("bug")

    worker = Periodic(
        work, 0.01, name="test-periodic", failed="x", logger=logging.getLogger("test"), tolerated=(OSError,)
    )
    worker.start()
    worker._thread.join(10)
    worker.stop()
    assert calls == [1]
