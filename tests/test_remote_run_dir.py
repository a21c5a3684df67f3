"""A run directory at a URI: the mirror against a local S3 server (moto's), a whole search
with its run directory on that S3 server through the CLI and a Ray head, and a search whose run
directory is a ``file://`` URI, run twice: the local mirror is deleted in between, so the
second study can only find the trained points at the URI.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from optuna.trial import TrialState
from pyarrow import fs

from prumux import PruMUXModel
from prumux.model import CONFIG_FILE
from storage import StudySettings, default_url, open_study
from storage.remote import RemoteFolder, child_uri, mirror_dir
from trainers.recipes import load_recipe
from tuning.driver import SearchOptions, run_search

from conftest import S3_TEST_CREDENTIALS, SEARCH, RayHead, free_port


@pytest.fixture(scope="module")
def s3_uri() -> Iterator[str]:
    """A bucket on moto's S3 server, started for this module; yields the URI of a folder in it."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    uri = f"s3://runs/search?endpoint_override=127.0.0.1:{port}&scheme=http&region=us-east-1"
    try:
        with pytest.MonkeyPatch.context() as patch:
            for name, value in S3_TEST_CREDENTIALS.items():
                patch.setenv(name, value)
            create_bucket(uri, server)
            yield uri
    finally:
        server.terminate()
        server.wait(timeout=30)


def create_bucket(uri: str, server: subprocess.Popen, timeout: float = 60) -> None:
    """Create the URI's bucket, waiting for the server to come up."""
    filesystem, path = fs.FileSystem.from_uri(uri + "&allow_bucket_creation=true")
    deadline = time.monotonic() + timeout
    while True:
        try:
            filesystem.create_dir(path.split("/")[0])
            return
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                raise
            time.sleep(0.5)


def test_mirror_round_trip_on_s3(s3_uri: str, tmp_path: Path) -> None:
    writer = RemoteFolder(s3_uri, tmp_path / "a")
    entry = tmp_path / "a" / "cache" / "N2"
    (entry / "model").mkdir(parents=True)
    (entry / "model" / "weights.bin").write_bytes(b"w" * 4096)
    (entry / "entry.json").write_text("{}")
    (entry / ".entry.json.tmp-1").write_text("partial")
    (entry / "holder.json").write_text("{}")
    with writer.pushing("cache", every_s=0.1, last=["entry.json"]):
        time.sleep(0.5)
        assert writer.exists("cache/N2/model/weights.bin")  # pushed while the block runs
    assert writer.push("cache") == 0  # nothing changed since

    reader = RemoteFolder(s3_uri, tmp_path / "b")
    assert reader.pull("cache") == 2 and reader.pull("cache") == 0
    assert sorted(p.name for p in (tmp_path / "b" / "cache" / "N2").rglob("*") if p.is_file()) == [
        "entry.json",
        "weights.bin",
    ]
    time.sleep(1.1)  # S3 keeps modification times to the second
    (entry / "model" / "weights.bin").write_bytes(b"v" * 4096)  # same size, new content
    assert writer.push("cache") == 1
    assert reader.pull("cache") == 1
    assert (tmp_path / "b" / "cache" / "N2" / "model" / "weights.bin").read_bytes() == b"v" * 4096
    assert reader.uri_of(tmp_path / "b" / "cache") == child_uri(s3_uri, "cache")


def test_search_with_a_uri_run_dir(local_ray, tiny_bert_dir: Path, tmp_path: Path, run_main) -> None:
    remote_root = tmp_path / "bucket" / "run"
    run_uri = f"file://{remote_root}"
    storage = default_url(tmp_path)
    settings = StudySettings("rt-polarity", str(tiny_bert_dir), "tiny", 0.05, (1, 2), (0.0, 0.5))
    recipe = load_recipe("tiny")

    def search(study_name: str):
        options = SearchOptions(run_dir=run_uri, storage_url=storage, study_name=study_name)
        assert options.run.lock_kind == "database" and options.tune_storage == f"{run_uri}/ray"
        return run_search(settings, recipe, options)

    first = search("first").study.get_trials()
    assert first and all(t.state == TrialState.COMPLETE for t in first)
    for trial in first:
        model_uri = trial.user_attrs["model_dir"]
        assert model_uri.startswith(f"{run_uri}/work/")
        assert (Path(model_uri.removeprefix("file://")) / CONFIG_FILE).is_file()
    assert list((remote_root / "work" / "cache").rglob("entry.json"))
    assert len(list((remote_root / "work" / "points").rglob("result.json"))) == len(first)
    assert (remote_root / "ray").is_dir()

    shutil.rmtree(mirror_dir(run_uri))  # a new node: nothing local
    second = search("second").study.get_trials()
    assert {(t.params["N"], t.params["s"]) for t in second} == {(t.params["N"], t.params["s"]) for t in first}
    log = (mirror_dir(run_uri) / "work" / "train.log").read_text()
    assert log.count("already trained") == len(second) and "started" not in log

    out = tmp_path / "exported"
    code, _, err = run_main(
        "export",
        "--run-dir",
        run_uri,
        "--storage",
        storage,
        "--study",
        "second",
        "--trial",
        str(second[-1].number),
        "--out",
        str(out),
    )
    assert code == 0, err
    model = PruMUXModel.from_pretrained(out)
    assert model.config.num_instances == second[-1].params["N"]
    assert open_study(storage, "second").trials[-1].user_attrs["model_dir"].startswith(run_uri)
    shutil.rmtree(mirror_dir(run_uri))


def test_search_on_s3_through_a_ray_head(
    s3_uri: str, ray_head: RayHead, launch, tiny_bert_dir: Path, tmp_path: Path, run_main
) -> None:
    run_uri = child_uri(s3_uri, "cli-search")
    storage = default_url(tmp_path)
    args = ["--run-dir", run_uri, "--storage", storage]
    driver = launch(
        "start",
        *args,
        "--model",
        str(tiny_bert_dir),
        "--ray-address",
        ray_head.address,
        *SEARCH,
        log=tmp_path / "driver.log",
    )
    assert driver.wait(timeout=300) == 0, (tmp_path / "driver.log").read_text()
    assert "stopped: the search is done" in (tmp_path / "driver.log").read_text()

    trials = open_study(storage, "prumux").get_trials()
    bucket = RemoteFolder(run_uri, tmp_path / "listing")
    assert all(t.state == TrialState.COMPLETE for t in trials)
    for trial in trials:
        model_location = trial.user_attrs["model_dir"].partition("?")[0]
        assert model_location.startswith(f"{bucket.uri}/work/")
        assert bucket.exists(f"{model_location.removeprefix(bucket.uri + '/')}/{CONFIG_FILE}")
    assert bucket.pull("ray") > 0  # Ray Tune's experiment state lives there too
    code, _, err = run_main("export", *args, "--trial", str(trials[-1].number), "--out", str(tmp_path / "model"))
    assert code == 0, err
    assert PruMUXModel.from_pretrained(tmp_path / "model").config.num_instances == trials[-1].params["N"]
    shutil.rmtree(mirror_dir(run_uri), ignore_errors=True)
