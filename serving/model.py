"""A servable folder loaded for inference: the model, its tokenizer and its serving spec.

Texts are tokenised as the model was trained and measured: padded to the spec's sequence
length (the length `measure_throughput` timed), truncated beyond it, and the rows that were
truncated are reported. No Ray here: the replicas and the benchmark use it as is.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from prumux import PruMUXModel
from prumux.inference import (
    ONNX_EXTRA,
    AutoRunner,
    EagerRunner,
    OnnxRunner,
    Runner,
    TorchRunner,
    check_runtime,
    onnx_available,
)
from servable import ServingSpec, checked_graph, load_tokenizer, read_servable
from serving.inputs import Input

ENCODED_KEYS = ("input_ids", "attention_mask", "token_type_ids")
DEFAULT_RUNTIME = "eager"  # the model as trained; `--runtime` picks another


def local_folder(location: str) -> Path:
    """A servable folder on this machine: the path itself, or a local mirror of a URI (pulled)."""
    from storage.remote import RemoteFolder, is_uri, mirror_dir

    if not is_uri(location):
        return Path(location)
    folder = RemoteFolder(location, mirror_dir(location))
    if not folder.pull():
        raise ValueError(f"model folder {location.partition('?')[0]} is missing or empty")
    return folder.local


def pick_device(device: str) -> str:
    """``auto``: CUDA when present, else CPU; ``cpu`` or ``cuda[:K]`` as given."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device != "cpu" and not device.startswith("cuda"):
        raise ValueError(f"device must be auto, cpu or cuda[:K], got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device} asked for, but torch sees no CUDA device here")
    return device


class ServedModel:
    """The model of a servable folder, ready to turn inputs into label probabilities on a runtime
    (`prumux.inference.RUNTIMES`: eager, torch, onnx = the folder's own ONNX graph, auto)."""

    def __init__(self, folder: str | Path, device: str = "cpu", runtime: str = DEFAULT_RUNTIME) -> None:
        self.folder = Path(folder)
        self.spec: ServingSpec = read_servable(self.folder)
        self.device = torch.device(device)
        self.runner = served_runner(runtime, self.folder, self.spec, self.device)
        self.tokenizer = load_tokenizer(self.folder)

    @property
    def N(self) -> int:
        return self.spec.N

    def encode(self, inputs: list[Input]) -> tuple[dict[str, Tensor], list[bool]]:
        """input_ids, attention_mask, token_type_ids [rows, seq_len] in input order, and which rows were truncated."""
        length = self.spec.seq_len
        encoded = {key: torch.zeros(len(inputs), length, dtype=torch.long) for key in ENCODED_KEYS}
        truncated = [False] * len(inputs)
        singles = [index for index, value in enumerate(inputs) if isinstance(value, str)]
        pairs = [index for index, value in enumerate(inputs) if not isinstance(value, str)]
        for rows in (singles, pairs):
            if not rows:
                continue
            # One row more than the model takes: a real token there means the text was longer.
            probe = self._tokenize([inputs[row] for row in rows], length + 1)
            cut = [row for row, over in zip(rows, probe["attention_mask"][:, length].tolist()) if over]
            for key in ENCODED_KEYS:
                encoded[key][rows] = probe[key][:, :length]
            if cut:
                exact = self._tokenize([inputs[row] for row in cut], length)
                for key in ENCODED_KEYS:
                    encoded[key][cut] = exact[key]
                for row in cut:
                    truncated[row] = True
        return encoded, truncated

    @torch.no_grad()
    def probabilities(self, inputs: list[Input]) -> tuple[Tensor, list[bool]]:
        """Label probabilities [rows, labels] (softmax of the logits) in one forward pass, and the truncated rows.

        The model groups the rows N at a time in order and pads the last group with its own dummy rows.
        """
        encoded, truncated = self.encode(inputs)
        batch = {key: value.to(self.device) for key, value in encoded.items()}
        logits = self.runner(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        return logits.float().softmax(-1).cpu(), truncated

    def _tokenize(self, inputs: list[Input], length: int) -> dict[str, Tensor]:
        texts = [value if isinstance(value, str) else value[0] for value in inputs]
        pairs = None if isinstance(inputs[0], str) else [value[1] for value in inputs]
        return self.tokenizer(
            texts,
            pairs,
            padding="max_length",
            truncation=True,
            max_length=length,
            return_tensors="pt",
            return_token_type_ids=True,
        )


def served_runner(runtime: str, folder: Path, spec: ServingSpec, device: torch.device) -> Runner:
    """The runner of a servable folder's model: ``onnx`` runs the folder's own graph (checked against the weights),
    ``auto`` the faster of torch and that graph per input shape (torch alone when the folder has none)."""
    check_runtime(runtime)
    graph = checked_graph(folder, spec)
    if runtime == "onnx":
        return OnnxRunner(_required_graph(folder, graph))
    model = PruMUXModel.from_pretrained(folder).eval()
    if runtime == "eager":
        return EagerRunner(model, device)
    torch_runner = TorchRunner(model, device)
    if runtime == "torch" or graph is None or not onnx_available():
        return torch_runner
    return AutoRunner([torch_runner, OnnxRunner(graph)], torch_runner.cut_padding)


def check_servable(folder: Path, runtime: str = DEFAULT_RUNTIME) -> ServingSpec:
    """The spec of a servable folder whose tokenizer loads, whose weight file opens and whose ONNX graph (if any)
    matches its weights, for ``runtime`` (before any replica starts)."""
    from safetensors import SafetensorError, safe_open

    from prumux.model import WEIGHTS_FILE

    check_runtime(runtime)
    spec = read_servable(folder)
    graph = checked_graph(folder, spec)
    if runtime == "onnx":
        _required_graph(folder, graph)
    try:
        with safe_open(str(folder / WEIGHTS_FILE), "pt") as weights:
            weights.keys()
    except (SafetensorError, OSError) as error:
        raise ValueError(f"{folder / WEIGHTS_FILE} is not a readable safetensors file: {error}") from None
    try:
        load_tokenizer(folder)
    except (ValueError, OSError) as error:
        raise ValueError(f"the tokenizer in {folder} does not load: {error}") from None
    return spec


def _required_graph(folder: Path, graph: Path | None) -> Path:
    if graph is None:
        raise ValueError(
            f"{folder} has no ONNX graph: export it with the onnx packages installed ({ONNX_EXTRA}), "
            "or serve it with --runtime eager or torch"
        )
    return graph
