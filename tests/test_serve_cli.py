"""`prumux-search serve --best` as a user runs it: a subprocess that exports the study's
recommended trial, starts its own Ray and Serve on the runtime the trial was measured on, answers with API keys, and stops cleanly on
Ctrl-C (exit 0, the application removed, its Ray instance shut down)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import requests

from storage import StudySettings, default_url, import_points, open_study

from conftest import REPO, TINY_SERVED_SEQ_LEN, client_env, free_port

KEY = "cli-test-key-0123456789abcdef"


@pytest.fixture
def study_with_a_trained_trial(tiny_bert_dir: Path, tmp_path: Path) -> Path:
    """A run dir whose study's recommended trial (N=2) has a saved model folder, as `start` leaves it."""
    from prumux import PruMUXModel

    trained = tmp_path / "trained"
    PruMUXModel.from_pretrained(tiny_bert_dir, num_instances=2, seed=3).save_pretrained(trained)
    settings = StudySettings("rt-polarity", str(tiny_bert_dir), "smoke", 0.05, (1, 2), (0.0, 0.5))
    study = open_study(default_url(tmp_path), "prumux", settings, create=True)
    trained_point = {
        "N": 2,
        "s": 0.0,
        "accuracy": 0.79,
        "throughput": 190.0,
        "model_dir": str(trained),
        "task": "rt-polarity",
        "base_model": str(tiny_bert_dir),
        "recipe_values": {"seq_len": TINY_SERVED_SEQ_LEN},
        "inference_runtime": "onnx",  # its search measured it on ONNX Runtime: serve runs it there unless told
    }
    points = pd.DataFrame([{"N": 1, "s": 0.0, "accuracy": 0.80, "throughput": 100.0}, trained_point])
    import_points(study, points, threshold=0.75)
    return tmp_path


def test_serve_best_answers_then_stops_on_ctrl_c(study_with_a_trained_trial: Path) -> None:
    run_dir = study_with_a_trained_trial
    (run_dir / "keys.txt").write_text(f"team {KEY}\n")
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "cli.main",
        "serve",
        "--best",
        "--run-dir",
        str(run_dir),
        "--port",
        str(port),
        "--keys",
        str(run_dir / "keys.txt"),
        "--max-wait-ms",
        "5",
    ]
    log = run_dir / "serve.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            command, stdout=output, stderr=subprocess.STDOUT, env=client_env(), cwd=REPO, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while "(Ctrl-C stops)" not in log.read_text():
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(1)
        assert "loading trial 1 of study 'prumux' (onnx runtime)" in log.read_text()
        assert "serving trial 1 of study 'prumux' (N=2, s=0" in log.read_text()
        answer = requests.post(
            f"{url}/v1/classify",
            json={"inputs": ["a fine film", ["a", "b"], "dull"]},
            headers={"Authorization": f"Bearer {KEY}"},
            timeout=60,
        )
        assert answer.status_code == 200, answer.text
        assert len(answer.json()["labels"]) == 3 and answer.json()["model"] == {"N": 2, "s": 0.0}
        assert requests.post(f"{url}/v1/classify", json={"inputs": ["x"]}, timeout=60).status_code == 401

        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=120) == 0, log.read_text()
        assert "stopping" in log.read_text() and "Traceback" not in log.read_text()
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{url}/v1/health", timeout=5)
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()
