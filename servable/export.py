"""Making a trained point's model folder servable: what a server needs besides the weights.

A trained point's folder holds only the model (``prumux_config.json`` + ``model.safetensors``).
`export_servable` copies it and `make_servable` adds the tokenizer, ``serving.json``, the code and
``config.json`` that plain transformers loads it with, and optionally its ONNX graph.
Which tokenizer a point uses and what its task's labels are called is known to the layers
above (the trainers): they hand it in as `PointSources`.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prumux.model import PruMUXModel
from servable.graph import write_graph
from servable.remote_code import write_hf_config, write_remote_code
from servable.spec import ServingSpec, model_config, write_spec

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


@dataclass(frozen=True)
class PointSources:
    """What a point's fields do not say: its tokenizer and its task's label names."""

    tokenizer: Callable[[str, int], PreTrainedTokenizerBase]  # (base model, N) -> the tokenizer it trained with
    label_names: Callable[[str, int], tuple[str, ...]]  # (task, number of labels) -> names, index = label id


def export_servable(
    point: Mapping[str, Any], out: Path, sources: PointSources, what: str = "the point", *, graph: bool = False
) -> ServingSpec:
    """Copy a trained point's model folder (a path, or a URI for a run dir at a URI) to ``out``
    and make it servable (with its ONNX graph if ``graph``). ``point`` holds a `PointResult`'s fields (a trial's
    user attrs and params)."""
    from storage.remote import RemoteFolder, is_uri

    source = str(point.get("model_dir", ""))
    if source and is_uri(source):
        if not RemoteFolder(source, out).pull():
            raise ValueError(f"{what}'s model folder {source.partition('?')[0]} is missing or empty")
    elif source and Path(source).is_dir():
        shutil.copytree(source, out, dirs_exist_ok=True)
    else:
        raise ValueError(f"{what} has no saved model folder (imported points have none)")
    return make_servable(out, point, sources, graph=graph)


def make_servable(folder: Path, point: Mapping[str, Any], sources: PointSources, *, graph: bool = False) -> ServingSpec:
    """Add the tokenizer, ``serving.json`` and transformers' remote code (`servable.remote_code`) to a saved
    model folder, and with ``graph`` its ONNX graph (`servable.graph`), from a point's fields (``task``,
    ``base_model``, ``s``, ``recipe_values.seq_len``); N and labels come from the model (its label names as
    trained, else the task's)."""
    folder = Path(folder)
    config = model_config(folder)
    if missing := [key for key in ("task", "base_model", "s") if key not in point]:
        raise ValueError(f"the point lacks {', '.join(missing)}: it was not trained by prumux-search")
    seq_len = int((point.get("recipe_values") or {}).get("seq_len", 0))
    if seq_len < 2:
        raise ValueError(f"the point's recipe values give no sequence length (got {seq_len}); is it a trained point?")
    task, base_model, N = str(point["task"]), str(point["base_model"]), int(config["num_instances"])
    labels = tuple(config.get("label_names") or sources.label_names(task, int(config["num_labels"])))
    spec = ServingSpec(task=task, base_model=base_model, label_names=labels, seq_len=seq_len, N=N, s=float(point["s"]))
    sources.tokenizer(base_model, N).save_pretrained(str(folder))
    write_remote_code(folder)
    write_hf_config(folder, config, seq_len, labels)
    if graph:
        spec = replace(spec, onnx=write_graph(folder, PruMUXModel.from_pretrained(folder), seq_len))
    write_spec(folder, spec)
    return spec
