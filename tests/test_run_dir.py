"""tuning.run_dir.RunDir: where a search's work folder is, on the driver and on each node, and how it is locked."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from storage import default_url
from storage.remote import mirror_dir
from tuning.run_dir import RunDir


def test_a_relative_run_dir_is_the_drivers_not_a_workers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    run = RunDir.for_search("runs", "auto", default_url(tmp_path / "runs"))
    monkeypatch.chdir(os.sep)  # a Ray worker runs elsewhere
    assert run.work_dir == tmp_path / "runs" / "work" and run.driver_log == tmp_path / "runs" / "driver.log"
    assert run.lock_kind == "file" and run.work_uri is None and run.remote_work() is None
    assert run.tune_storage() == str(tmp_path / "runs" / "ray")


def test_a_run_dir_at_a_uri_is_mirrored_on_the_node_and_locked_in_the_database(tmp_path: Path) -> None:
    uri = "s3://bucket/run?endpoint_override=127.0.0.1:9000"
    run = RunDir.for_search(uri, "auto", default_url(tmp_path))
    assert run.lock_kind == "database" and run.location == uri
    assert run.work_uri == "s3://bucket/run/work?endpoint_override=127.0.0.1:9000"
    assert run.work_dir == mirror_dir(uri) / "work"  # this node's temporary folder, computed where it is asked
    assert run.tune_storage() == "s3://bucket/run/ray?endpoint_override=127.0.0.1:9000"
    assert RunDir.for_search(str(tmp_path), "database", default_url(tmp_path)).lock_kind == "database"
