"""A self-contained model folder: what a server needs besides the weights.

A trained point's folder holds only the model (``prumux_config.json`` + ``model.safetensors``).
A *servable* folder adds the base model's tokenizer files and ``serving.json``: the task, the
label names (index = label id), the sequence length the model was trained and measured at, and
the point (N, s). `export` writes one for a study's trial; `prumux-search serve` reads one.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from prumux.model import CONFIG_FILE, WEIGHTS_FILE

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

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["label_names"] = list(self.label_names)
        return values

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> ServingSpec:
        fields = {key: values[key] for key in ("task", "base_model", "label_names", "seq_len", "N", "s")}
        return cls(
            **{**fields, "label_names": tuple(str(name) for name in fields["label_names"])},
            format_version=int(values.get("format_version", FORMAT_VERSION)),
        )


def export_servable(point: Mapping[str, Any], out: Path, what: str = "the point") -> ServingSpec:
    """Copy a trained point's model folder (a path, or a URI for a run dir at a URI) to ``out``
    and make it servable. ``point`` holds a `PointResult`'s fields (a trial's user attrs and params)."""
    from storage.remote import RemoteFolder, is_uri

    source = str(point.get("model_dir", ""))
    if source and is_uri(source):
        if not RemoteFolder(source, out).pull():
            raise ValueError(f"{what}'s model folder {source.partition('?')[0]} is missing or empty")
    elif source and Path(source).is_dir():
        shutil.copytree(source, out, dirs_exist_ok=True)
    else:
        raise ValueError(f"{what} has no saved model folder (imported points have none)")
    return make_servable(out, point)


def make_servable(folder: Path, point: Mapping[str, Any]) -> ServingSpec:
    """Add the tokenizer and ``serving.json`` to a saved model folder, from a point's fields
    (``task``, ``base_model``, ``s``, ``recipe_values.seq_len``); N and labels come from the model (its label
    names as trained, else the task's)."""
    from trainers.families import tokenizer_for
    from trainers.models import load_tokenizer

    folder = Path(folder)
    config = _model_config(folder)
    if missing := [key for key in ("task", "base_model", "s") if key not in point]:
        raise ValueError(f"the point lacks {', '.join(missing)}: it was not trained by prumux-search")
    seq_len = int((point.get("recipe_values") or {}).get("seq_len", 0))
    if seq_len < 2:
        raise ValueError(f"the point's recipe values give no sequence length (got {seq_len}); is it a trained point?")
    task, base_model, N = str(point["task"]), str(point["base_model"]), int(config["num_instances"])
    labels = tuple(config.get("label_names") or task_label_names(task, int(config["num_labels"])))
    spec = ServingSpec(task=task, base_model=base_model, label_names=labels, seq_len=seq_len, N=N, s=float(point["s"]))
    load_tokenizer(tokenizer_for(base_model, N)).save_pretrained(str(folder))
    (folder / SERVING_FILE).write_text(json.dumps(spec.to_dict(), indent=2) + "\n")
    return spec


def read_servable(folder: str | Path) -> ServingSpec:
    """The serving spec of a servable folder; a one-line ValueError names what is missing."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"model folder {folder} does not exist")
    config = _model_config(folder)
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


def task_label_names(task: str, num_labels: int) -> tuple[str, ...]:
    """The task's label names (a registered task, or one that loads here); ``label_K`` when unknown."""
    from trainers.tasks import TASKS, load_task

    names = TASKS[task].label_names if task in TASKS else ()
    if not names:
        try:
            names = load_task(task).spec.label_names
        except (ValueError, OSError):
            names = ()
    if len(names) != num_labels:
        names = tuple(f"label_{index}" for index in range(num_labels))
    return tuple(str(name) for name in names)


def _model_config(folder: Path) -> dict[str, Any]:
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise ValueError(f"{folder} is not a saved PruMUX model (no {CONFIG_FILE})")
    return json.loads(path.read_text())
