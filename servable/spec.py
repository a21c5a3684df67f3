"""The serving spec of a servable folder, and reading one back.

A *servable* folder is a saved model (``prumux_config.json`` + ``model.safetensors``) plus the
base model's tokenizer files and ``serving.json``: the task, the label names (index = label id),
the sequence length the model was trained and measured at, and the point (N, s).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prumux.model import CONFIG_FILE, WEIGHTS_FILE

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

SERVING_FILE = "serving.json"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class ServingSpec:
    """How to feed and read a servable model: its task, labels, sequence length and point."""

    task: str
    base_model: str
    label_names: tuple[str, ...]
    seq_len: int
    N: int
    s: float
    format_version: int = FORMAT_VERSION
    onnx: dict[str, Any] | None = None  # the ONNX graph's contract and digests (`servable.graph`), when exported

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["label_names"] = list(self.label_names)
        if self.onnx is None:
            del values["onnx"]
        return values

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> ServingSpec:
        fields = {key: values[key] for key in ("task", "base_model", "label_names", "seq_len", "N", "s")}
        return cls(
            **{**fields, "label_names": tuple(str(name) for name in fields["label_names"])},
            format_version=int(values.get("format_version", FORMAT_VERSION)),
            onnx=dict(values["onnx"]) if values.get("onnx") else None,
        )


def read_servable(folder: str | Path) -> ServingSpec:
    """The serving spec of a servable folder; a one-line ValueError names what is missing."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"model folder {folder} does not exist")
    config = model_config(folder)
    if not (folder / WEIGHTS_FILE).is_file():
        raise ValueError(f"{folder} has no {WEIGHTS_FILE}")
    if not (folder / SERVING_FILE).is_file():
        raise ValueError(
            f"{folder} is a model without {SERVING_FILE} (tokenizer, labels, sequence length): "
            "make it servable with `prumux-search export --trial K --out DIR`"
        )
    try:
        spec = ServingSpec.from_dict(json.loads((folder / SERVING_FILE).read_text()))
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{folder / SERVING_FILE} is not a valid serving spec: {error}") from None
    if spec.N != config["num_instances"] or len(spec.label_names) != config["num_labels"]:
        raise ValueError(f"{folder / SERVING_FILE} contradicts {CONFIG_FILE} (N or number of labels)")
    return spec


def write_spec(folder: Path, spec: ServingSpec) -> None:
    """Write ``serving.json`` into ``folder``."""
    (folder / SERVING_FILE).write_text(json.dumps(spec.to_dict(), indent=2) + "\n")


def load_tokenizer(folder: str | Path) -> PreTrainedTokenizerBase:
    """The tokenizer saved in a servable folder (local files only; the class its tokenizer_config.json names,
    without reading the folder's config.json, whose model class is remote code)."""
    from transformers import AutoTokenizer, PreTrainedConfig

    return AutoTokenizer.from_pretrained(str(folder), config=PreTrainedConfig(), local_files_only=True)


def model_config(folder: Path) -> dict[str, Any]:
    """The saved model's ``prumux_config.json``; a one-line ValueError when the folder has none."""
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise ValueError(f"{folder} is not a saved PruMUX model (no {CONFIG_FILE})")
    return json.loads(path.read_text())
