"""The one inference path for a trained (N, s) model: eager, padded + graph-captured PyTorch, and ONNX Runtime."""

from prumux.inference.graphs import CudaGraphs
from prumux.inference.onnx import ONNX_EXTRA, OnnxRunner, export_onnx, onnx_available, require_onnx
from prumux.inference.runners import EagerRunner, TorchRunner, padded
from prumux.inference.select import (
    RUNTIMES,
    AutoRunner,
    Runner,
    check_runtime,
    load_runner,
    measure_runner,
)

__all__ = [
    "ONNX_EXTRA",
    "RUNTIMES",
    "AutoRunner",
    "CudaGraphs",
    "EagerRunner",
    "OnnxRunner",
    "Runner",
    "TorchRunner",
    "check_runtime",
    "export_onnx",
    "load_runner",
    "measure_runner",
    "onnx_available",
    "padded",
    "require_onnx",
]
