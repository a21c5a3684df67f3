"""Resumable checkpoints: one file per training stage, written atomically, validated on load.

A checkpoint holds the state dicts of everything a stage trains (model, optimisers, L0
module, schedulers, ...), the step, the elapsed wall time, and the python, numpy and torch
random states, so a resumed stage continues as the uninterrupted run would. It is written
to a temporary file beside the target and moved into place with `os.replace`, so a reader
(or a crash) never sees half a file. A file that cannot be read raises a one-line
ValueError and is left exactly where it is: deleting it is the user's decision.
"""

from __future__ import annotations

import os
import random
import warnings
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

FORMAT = "prumux-checkpoint/1"
_REQUIRED = ("format", "job", "step", "elapsed", "state", "rng")


def save_checkpoint(
    path: str | Path, job: str, step: int, elapsed: float, state: dict[str, Any], extra: dict[str, Any] | None = None
) -> None:
    """Atomically write `state` (name -> state dict) at `step` of the job identified by `job`, with
    `extra` payload entries (plain data, e.g. the stage's evaluations so far).

    A write that fails (a full disk, a file-size limit) raises a one-line OSError and leaves the
    previous checkpoint at `path` as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        **(extra or {}),
        "format": FORMAT,
        "job": job,
        "step": step,
        "elapsed": elapsed,
        "state": state,
        "rng": rng_state(),
    }
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            writer = _Writer(handle)
            try:
                torch.save(payload, writer)
                handle.flush()
                os.fsync(handle.fileno())
            except RuntimeError:  # torch.save reports a failed write as a RuntimeError
                if writer.error is None:
                    raise
                raise writer.error from None
        os.replace(tmp, path)
    except OSError as error:
        kept = "the previous checkpoint is kept" if path.exists() else "no earlier checkpoint exists"
        raise OSError(f"cannot write checkpoint {path}: {error.strerror or error}; {kept}") from None
    finally:
        tmp.unlink(missing_ok=True)


class _Writer:
    """A file for torch.save that keeps the OSError of a failed write (torch only says "unexpected pos")."""

    def __init__(self, handle: BinaryIO) -> None:
        self.handle = handle
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        try:
            return self.handle.write(data)
        except OSError as error:
            self.error = error
            raise

    def flush(self) -> None:
        self.handle.flush()


def load_checkpoint(path: str | Path, job: str) -> dict[str, Any]:
    """The checkpoint at `path` (keys step, elapsed, state, rng); ValueError if corrupt or another job's."""
    path = Path(path)
    try:
        with warnings.catch_warnings():  # a damaged file also makes torch warn; the error says it all
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as error:  # noqa: BLE001 - a damaged pickle can raise almost anything
        raise ValueError(
            f"checkpoint {path} is corrupt ({type(error).__name__}); move it away to retrain that stage"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT or any(key not in payload for key in _REQUIRED):
        raise ValueError(f"checkpoint {path} is not a {FORMAT} file; move it away to retrain that stage")
    if payload["job"] != job:
        raise ValueError(f"checkpoint {path} belongs to job {payload['job']!r}, not {job!r}; move it away to retrain")
    return payload


def rng_state() -> dict[str, Any]:
    """The python, numpy and torch (CPU and CUDA) random states, as tensors and plain values."""
    version, mt_state, gauss = random.getstate()
    numpy_state = np.random.get_state()
    state = {
        "python": [version, list(mt_state), gauss],
        "numpy": {
            "keys": torch.from_numpy(numpy_state[1].astype(np.int64)),
            "pos": int(numpy_state[2]),
            "has_gauss": int(numpy_state[3]),
            "cached_gauss": float(numpy_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Set the random states saved by `rng_state`."""
    version, mt_state, gauss = state["python"]
    random.setstate((version, tuple(mt_state), gauss))
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached_gauss"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
