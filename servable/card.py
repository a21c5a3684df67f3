"""The model card of an exported trial: the README.md that says what it is, how it scored, how to use it."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from storage.trials import CONFIGURATION_ATTR, configuration_text, is_feasible_trial

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

    from storage import StudySettings

TENANT_WARNING = (
    "**Multiplexing mixes instances in one forward pass.** With N > 1 the model combines N "
    "inputs into one representation before the encoder, so a shared service must multiplex only "
    "requests of one tenant (PruMUX paper, appendix A.3): never batch different users' inputs "
    "into one multiplexed pass."
)


def model_card(trial: FrozenTrial, settings: StudySettings | None) -> str:
    """A README.md for an exported trial: what it is, how it scored, how to load it safely."""
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

## Load

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


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.4g}"
    return "-" if value is None else str(value)
