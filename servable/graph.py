"""The exported folder's ONNX graph: written beside the weights, tied to them by digest, checked before use.

``serving.json`` keeps the graph's contract under ``onnx`` (`prumux.inference.export_onnx`'s: opset,
input names and dtype, N, ``rows`` grouped per tenant group, ``padding_rows``, sequence length)
with the SHA-256 of the weights it was exported from and of the graph file. A folder whose
weights or graph no longer match those digests is refused in one line.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prumux.model import WEIGHTS_FILE

if TYPE_CHECKING:
    from prumux import PruMUXModel
    from servable.spec import ServingSpec

GRAPH_FILE = "model.onnx"


def write_graph(folder: Path, model: PruMUXModel, seq_len: int) -> dict[str, Any]:
    """Export ``model`` as ``model.onnx`` in ``folder``; its contract with the file name and the two digests."""
    from prumux.inference import export_onnx

    contract = export_onnx(model, folder / GRAPH_FILE, seq_len)
    return {
        "file": GRAPH_FILE,
        **contract,
        "weights_sha256": file_digest(folder / WEIGHTS_FILE),
        "graph_sha256": file_digest(folder / GRAPH_FILE),
    }


def checked_graph(folder: Path, spec: ServingSpec) -> Path | None:
    """The folder's ONNX graph once its digests match the weights and the graph (None when it has none);
    a one-line ValueError when they do not."""
    if spec.onnx is None:
        return None
    path = folder / str(spec.onnx.get("file", GRAPH_FILE))
    if not path.is_file():
        raise ValueError(f"{folder} names an ONNX graph {path.name} it does not hold: export it again")
    if file_digest(folder / WEIGHTS_FILE) != spec.onnx.get("weights_sha256"):
        raise ValueError(
            f"{path} was not exported from {folder / WEIGHTS_FILE} (its weights digest differs): export the folder again"
        )
    if file_digest(path) != spec.onnx.get("graph_sha256"):
        raise ValueError(f"{path} is not the graph exported with these weights (its digest differs): export it again")
    return path


def file_digest(path: Path) -> str:
    """The SHA-256 of a file, in hex."""
    with path.open("rb") as data:
        return hashlib.file_digest(data, "sha256").hexdigest()
