"""A point's throughput measured through the runtime it is served with, the dense model on the same runtime and
the eager figures beside them (`trainers.measure.served_throughput`, `evaluate --runtime`)."""

from __future__ import annotations

import json

import pytest
import torch
from test_evaluate import FAST, checkpoints  # noqa: F401  (the published checkpoints fixture)
from test_inference import SEQ_LEN, tiny_model

from trainers.measure import dense_counterpart, served_throughput
from trainers.phases.loop import Runtime

CPU = Runtime.create("cpu")


@pytest.mark.parametrize("runtime", ["onnx", "auto", "torch"])
def test_a_point_is_measured_on_its_runtime_beside_the_dense_model_and_eager(runtime):
    model = tiny_model("prumux", 2)
    dense = dense_counterpart(tiny_model("prumux", 1, pruned=False).config)
    speed = served_throughput(model, dense, SEQ_LEN, 1, 1, CPU, runtime)
    assert speed.inference_runtime == runtime or (runtime == "auto" and speed.inference_runtime in ("torch", "onnx"))
    assert min(speed.throughput, speed.dense_throughput, speed.eager_throughput, speed.eager_dense_throughput) > 0
    assert speed.speedup == speed.throughput / speed.dense_throughput
    assert speed.eager_speedup == speed.eager_throughput / speed.eager_dense_throughput


def test_the_dense_point_is_its_own_baseline_and_eager_is_measured_once():
    model = tiny_model("prumux", 1, pruned=False)
    speed = served_throughput(model, None, SEQ_LEN, 1, 0, CPU)
    assert speed.inference_runtime == "eager" and speed.speedup == speed.eager_speedup == 1.0
    assert speed.throughput == speed.eager_throughput


def test_evaluate_records_the_runtime_and_the_eager_figure(run_cli, checkpoints):  # noqa: F811
    done, _ = run_cli(
        "evaluate", "--model", checkpoints["prumux"], *FAST, "--runtime", "onnx", "--format", "json", timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    point = json.loads(done.stdout)
    assert point["inference_runtime"] == "onnx" and point["eager_throughput"] > 0 and point["eager_speedup"] > 0
    done, _ = run_cli("evaluate", "--model", checkpoints["prumux"], *FAST, "--runtime", "tensorrt")
    assert done.returncode == 2 and "tensorrt" in done.stderr
    assert torch.cuda.is_available() or "--runtime" in done.stderr
