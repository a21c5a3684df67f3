"""The files of a HF-style checkpoint (a folder or a hub id): config, weights, CoFi/PruMUX masks.

Weights come from `model.safetensors` (preferred, as transformers does) or `pytorch_model.bin`
(`torch.load(weights_only=True)`: state dicts only, never arbitrary pickle). Keys are
normalised once: a backbone prefix (`bert.`, `roberta.`, `electra.`, ELECTRA's pretraining
`discriminator.`) is stripped and TF-era LayerNorm names (gamma/beta) become weight/bias.
Shapes can be read without loading the tensors (the safetensors header), so a job can be
checked before it starts.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

CONFIG = "config.json"
WEIGHTS = ("model.safetensors", "pytorch_model.bin")
MASKS = "zs.pt"
BACKBONE_PREFIXES = ("bert.", "roberta.", "electra.")


@dataclass(frozen=True)
class CheckpointFiles:
    """Where one checkpoint's files are on this machine."""

    source: str
    config_path: Path
    stored_weights: Path | None
    masks_path: Path | None

    @property
    def weights_path(self) -> Path:
        if self.stored_weights is None:
            raise OSError(f"{self.source} has none of {', '.join(WEIGHTS)}")
        return self.stored_weights

    @functools.cached_property
    def hf_config(self) -> dict[str, Any]:
        try:
            config = json.loads(self.config_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"{self.source}: config.json is not valid JSON ({error})") from None
        if not isinstance(config, dict):
            raise ValueError(f"{self.source}: config.json must hold a JSON object")
        return config

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Every weight's shape by normalised key, read without loading the tensors where the format allows."""
        if self.weights_path.suffix == ".safetensors":
            from safetensors import safe_open

            with self._readable(), safe_open(str(self.weights_path), "pt") as weights:
                return normalise({key: tuple(weights.get_slice(key).get_shape()) for key in weights.keys()})
        return {key: tuple(value.shape) for key, value in self.state(mmap=True).items()}

    def state(self, mmap: bool = False) -> dict[str, Tensor]:
        """The state dict by normalised key."""
        with self._readable():
            if self.weights_path.suffix == ".safetensors":
                from safetensors.torch import load_file

                state = load_file(str(self.weights_path))
            else:
                state = torch.load(self.weights_path, map_location="cpu", weights_only=True, mmap=mmap)
        if not isinstance(state, dict) or not all(isinstance(value, Tensor) for value in state.values()):
            raise ValueError(f"{self.source}: {self.weights_path.name} does not hold a state dict of tensors")
        return normalise(state)

    def masks(self) -> dict[str, Tensor] | None:
        """CoFi's `zs.pt` mask dict (soft values, detached), or None when there is none."""
        if self.masks_path is None:
            return None
        with self._readable():
            masks = torch.load(self.masks_path, map_location="cpu", weights_only=True)
        if masks is None:
            return None
        if not isinstance(masks, dict) or not all(isinstance(value, Tensor) for value in masks.values()):
            raise ValueError(f"{self.source}: zs.pt must hold a dict of mask tensors")
        return {name: value.detach().float() for name, value in masks.items()}

    def _readable(self) -> AbstractContextManager[None]:
        return _reading(self.source)


@contextmanager
def _reading(source: str) -> Iterator[None]:
    """Turn a corrupt or unsafe file's loader error into a one-line ValueError."""
    try:
        yield
    except Exception as error:  # noqa: BLE001 - safetensors', torch's and the unpickler's errors share no base
        first = (str(error).strip().splitlines() or [""])[0]
        raise ValueError(f"{source}: cannot read its weights ({type(error).__name__}: {first})") from None


def normalise(state: dict[str, Any]) -> dict[str, Any]:
    """Keys without the backbone / pretraining prefix, LayerNorm gamma/beta named weight/bias."""
    if state and all(key.startswith("discriminator.") for key in state):
        state = {key.removeprefix("discriminator."): value for key, value in state.items()}
    out = {}
    for key, value in state.items():
        for prefix in BACKBONE_PREFIXES:
            if key.startswith(prefix):
                key = key.removeprefix(prefix)
                break
        if "LayerNorm" in key or "layer_norm" in key:
            key = key.removesuffix(".gamma") + ".weight" if key.endswith(".gamma") else key
            key = key.removesuffix(".beta") + ".bias" if key.endswith(".beta") else key
        out[key] = value
    return out


def find_checkpoint(name_or_path: str | Path) -> CheckpointFiles:
    """The checkpoint's files: from the folder, or from the hub (its local cache when offline)."""
    source = str(name_or_path)
    folder = Path(source)
    if folder.is_dir():
        weights = next((folder / name for name in WEIGHTS if (folder / name).is_file()), None)
        if not (folder / CONFIG).is_file():
            raise OSError(f"{source} has no config.json")
        masks = folder / MASKS
        return CheckpointFiles(source, folder / CONFIG, weights, masks if masks.is_file() else None)
    config = _hub_file(source, CONFIG)
    weights = None
    errors = []
    for name in WEIGHTS:
        try:
            weights = _hub_file(source, name)
            break
        except OSError as error:
            errors.append(str(error))
    if weights is None:
        raise OSError(f"cannot load {source} ({'; '.join(errors)})")
    return CheckpointFiles(source, config, weights, _optional_hub_file(source, MASKS))


def _hub_file(repo_id: str, filename: str) -> Path:
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo_id, filename))
    except Exception as error:  # noqa: BLE001 - offline, missing repo or file, bad id: all one line
        raise OSError(f"cannot load {repo_id}: {filename}: {type(error).__name__}") from None


def _optional_hub_file(repo_id: str, filename: str) -> Path | None:
    """A file the repository may lack (zs.pt): None when it has none, or when offline and it is not cached."""
    from huggingface_hub import constants, try_to_load_from_cache

    cached = try_to_load_from_cache(repo_id, filename)
    if isinstance(cached, str):
        return Path(cached)
    if constants.HF_HUB_OFFLINE:
        return None
    try:
        return _hub_file(repo_id, filename)
    except OSError:
        return None
