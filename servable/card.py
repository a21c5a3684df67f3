"""The model card of an exported trial: the README.md that says what it is, how it scored, how to use it."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from storage.trials import CONFIGURATION_ATTR, configuration_text, is_feasible_trial

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

    from servable.spec import ServingSpec
    from storage import StudySettings

TENANT_WARNING = (
    "**Multiplexing mixes instances in one forward pass.** With N > 1 the model combines N "
    "inputs into one representation before the encoder, so a shared service must multiplex only "
    "requests of one tenant (PruMUX paper, appendix A.3): never batch different users' inputs "
    "into one multiplexed pass."
)


def model_card(trial: FrozenTrial, settings: StudySettings | None, onnx: dict[str, Any] | None = None) -> str:
    """A README.md for an exported trial: what it is, how it scored, how to load it safely (with transformers,
    ONNX Runtime when the folder holds a graph, whose contract ``onnx`` is, or our package)."""
    attrs = trial.user_attrs
    N, s = int(trial.params["N"]), float(trial.params["s"])
    rows = [
        ("task", attrs.get("task", settings.task if settings else "?")),
        ("base model", attrs.get("base_model", settings.base_model if settings else "?")),
        ("recipe", attrs.get("recipe", settings.recipe if settings else "?")),
        *(
            [("configuration (best of the sweep)", configuration_text(attrs[CONFIGURATION_ATTR]))]
            if CONFIGURATION_ATTR in attrs
            else []
        ),
        ("multiplexing width N", N),
        ("target sparsity s", s),
        ("realised sparsity", attrs.get("sparsity")),
        ("validation accuracy", trial.values[0]),
        ("test accuracy", attrs.get("test_accuracy")),
        ("throughput (examples/s)", trial.values[1]),
        ("speed-up over dense", attrs.get("speedup")),
        ("parameters", attrs.get("total_parameters")),
        ("measured on", attrs.get("hardware")),
        ("feasible under the budget", is_feasible_trial(trial)),
        ("study trial", trial.number),
    ]
    table = "\n".join(f"| {label} | {_cell(value)} |" for label, value in rows)
    return f"""# PruMUX model: N={N}, s={s:g}

A multiplexed (DataMUX, N={N}) and pruned (CoFi, sparsity {s:g}) classifier found by
`prumux-search`.

| | |
| --- | --- |
{table}

## Load with transformers

No prumux-search needed: the model's code is in this folder (`modeling_prumux.py` and the `prumux_*.py`
it imports; read it before you trust it).

```python
from transformers import AutoModelForSequenceClassification, pipeline

classify = pipeline("text-classification", model="path/to/this/folder", trust_remote_code=True)
classify(["a fine film", "a dull one", "what a waste of time"])  # one tenant's texts, any number
model = AutoModelForSequenceClassification.from_pretrained("path/to/this/folder", trust_remote_code=True)
```

The pipeline tokenises to the model's sequence length and feeds it N={N} texts per forward pass, in
order; the model fills a partial last group with its own padding rows and drops their logits. Called
directly, the model does the same with the rows of a batch.
{_onnx_section(onnx)}
## Load with prumux-search

```python
from prumux import PruMUXModel
model = PruMUXModel.from_pretrained("path/to/this/folder")
```

Any number of inputs may be passed; the model pads them to a multiple of N.

## Serve

The folder is self-contained (tokenizer files; task, labels and sequence length in `serving.json`):

```bash
prumux-search serve --model path/to/this/folder --keys keys.txt
curl -H "Authorization: Bearer KEY" -d '{{"inputs": ["a fine film"]}}' http://127.0.0.1:8000/v1/classify
```

`POST /v1/classify` multiplexes the requests of one tenant (one API key) only, N at a time.

## Warning: one tenant per multiplexed pass

{TENANT_WARNING}
"""


def deployment_line(spec: ServingSpec) -> str:
    """What an exported folder holds for deployment beyond our package, in one line."""
    from prumux.inference import ONNX_EXTRA

    graph = (
        f"ONNX graph {spec.onnx['file']} (opset {spec.onnx['opset']})"
        if spec.onnx
        else f"no ONNX graph (the onnx packages are missing: {ONNX_EXTRA})"
    )
    return f"  {graph}; loads in transformers with trust_remote_code=True (see its README.md)"


def _onnx_section(onnx: dict[str, Any] | None) -> str:
    if not onnx:
        return ""
    N, length = onnx["N"], onnx["seq_len"]
    fill = (
        "rows of `pad_token_id` with an all-zero attention mask"
        if onnx["padding_rows"] == "masked"
        else "copies of the group's own rows, in turn from its first"
    )
    return f"""
## Run with ONNX Runtime

`{onnx["file"]}` (opset {onnx["opset"]}) takes `{", ".join(onnx["inputs"])}` ({onnx["input_dtype"]}, [rows, {length}])
and returns `logits` [rows, labels]. Rows i*N .. i*N+N-1 are multiplexed together (N={N}): give it a
multiple of N rows of one tenant, fill a partial last group with {fill}, and drop their logits.
`serving.json` holds this contract under `onnx`, with the SHA-256 of the weights the graph was
exported from and of the graph.

```python
import numpy as np
import onnxruntime
from transformers import AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("path/to/this/folder", trust_remote_code=True)
session = onnxruntime.InferenceSession("path/to/this/folder/{onnx["file"]}")
texts = ["a fine film", "a dull one"]
feed = dict(tokenizer(texts, padding="max_length", truncation=True, max_length={length}, return_tensors="np"))
fill = -len(texts) % {N}
feed = {{name: np.concatenate([rows, np.full((fill, {length}), {onnx["pad_token_id"]} if name == "input_ids" else 0)])
        for name, rows in feed.items()}}
logits = session.run(["logits"], feed)[0][: len(texts)]
```
{"(The example fills with masked rows; this model's graph wants copies of the group's rows instead.)" if onnx["padding_rows"] != "masked" else ""}
"""


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.4g}"
    return "-" if value is None else str(value)
