"""The model as an ONNX graph (torch's dynamo exporter) and its ONNX Runtime runner.

The graph holds the whole classifier: embeddings, multiplexer, the pruned encoder with its per-layer
head counts and widths, demultiplexer and head. Its contract (`export_onnx`'s return value, also
stored in the graph's metadata under CONTRACT_KEY):
- inputs input_ids, attention_mask, token_type_ids: int64 [rows, columns]; output logits: float [rows, C];
  columns = seq_len, or any number up to seq_len where `dynamic_length` (the layouts that mask padding:
  a row padded to seq_len or cut after its last real token gives the same logits);
- rows i*N .. i*N+N-1 are multiplexed together (group i); the graph takes a multiple of N rows;
- a partial last group is filled by the caller (`OnnxRunner` does it) as `padding_rows` says:
  "masked": rows of pad_token_id with an all-zero attention_mask, which the graph leaves out of the mix
  (it zeroes the embeddings of every row whose mask is all zero, as the eager model does for its
  dummy rows); "copies" (the MUX-PLM layout, which attends padding): the group's own real rows again,
  in turn from its first, as the eager model fills it. The logits of filled rows are dropped.
"""

from __future__ import annotations

import copy
import importlib
import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from prumux.inference.runners import cut_padding
from prumux.model import PruMUXModel

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT_NAMES = ("logits",)
CONTRACT_KEY = "prumux_contract"
MAX_GROUPS = 1 << 16  # upper bound of the graph's dynamic group axis
ONNX_PACKAGES = ("onnx", "onnxruntime", "onnxscript")
ONNX_EXTRA = "pip install 'prumux-search[onnx]'"


class GraphForward(nn.Module):
    """The classification forward pass over whole groups of N rows, with no shape-dependent branches.

    The eager model pads a partial group itself, which an exported graph with a dynamic row count
    cannot; here the caller fills it (see the module docstring) and every row gets a logit.
    """

    def __init__(self, model: PruMUXModel):
        super().__init__()
        self.model = model

    def forward(self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor) -> Tensor:
        model, config = self.model, self.model.config
        if config.is_reference_layout:
            if config.cls_token_id is not None:
                cls = torch.full_like(input_ids[:, :1], config.cls_token_id)
                input_ids = torch.cat([cls, input_ids[:, 1:]], dim=1)
            x = model.encoder.embed_mixed(model.multiplexer(model.encoder.embed(input_ids)))
            mixed_mask = None  # MUX-PLMs attend every position
        else:
            x = model.encoder.embed(input_ids, token_type_ids)
            if config.num_instances > 1:
                x = x * (attention_mask.amax(dim=-1) > 0).to(x.dtype)[:, None, None]
            x = model.multiplexer(x)
            mixed_mask = model.multiplexer.mix_attention_mask(attention_mask)
        last, _ = model.encoder.encode(x, mixed_mask)
        cls = last[:, 0]
        if model.demultiplexer is not None:
            cls = model.demultiplexer(cls).flatten(0, 1)
        return model.classify(cls)


def export_onnx(model: PruMUXModel, path: Path, seq_len: int, opset: int | None = None) -> dict[str, Any]:
    """Write `model` as an ONNX graph at `path` (float32, dynamic rows; columns up to `seq_len`, or exactly
    `seq_len` for the MUX-PLM layout, which attends padding); return its contract."""
    require_onnx()
    import onnx

    config = model.config
    n = config.num_instances
    model = GraphForward(_float_cpu_copy(model)).eval()
    groups = torch.export.Dim("groups", min=1, max=MAX_GROUPS)
    rows = groups * n if n > 1 else groups
    dynamic_length = not config.is_reference_layout
    axes = {0: rows, 1: torch.export.Dim("columns", min=2, max=seq_len)} if dynamic_length else {0: rows}
    sample = torch.randint(config.encoder.vocab_size, (2 * n, seq_len))  # 2 groups: no size-1 specialisation
    inputs = (sample, torch.ones_like(sample), torch.zeros_like(sample))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*axis name.*will not be used")  # N*groups is named once
        program = torch.onnx.export(
            model,
            inputs,
            dynamo=True,
            opset_version=opset,
            input_names=list(INPUT_NAMES),
            output_names=list(OUTPUT_NAMES),
            dynamic_shapes={name: axes for name in INPUT_NAMES},
            verbose=False,
        )
    proto = program.model_proto
    contract = {
        "format": "onnx",
        "opset": next(entry.version for entry in proto.opset_import if entry.domain in ("", "ai.onnx")),
        "inputs": list(INPUT_NAMES),
        "input_dtype": "int64",
        "outputs": list(OUTPUT_NAMES),
        "N": n,
        "seq_len": seq_len,
        "dynamic_length": dynamic_length,
        "num_labels": config.num_labels,
        "vocab_size": config.encoder.vocab_size,
        "layout": config.layout,
        "row_multiple": n,
        "rows": "rows i*N .. i*N+N-1 are multiplexed together as group i",
        "padding_rows": "copies" if config.is_reference_layout else "masked",
        "pad_token_id": config.encoder.pad_token_id,
    }
    onnx.helper.set_model_props(proto, {CONTRACT_KEY: json.dumps(contract)})
    onnx.save(proto, str(path))
    return contract


class OnnxRunner:
    """An exported graph run by ONNX Runtime (the CUDA provider where present, else the CPU one).

    Called like the model on any number of rows of at most seq_len tokens: a graph of `dynamic_length`
    gets them without their padding columns (`cut_padding`), a fixed one padded to seq_len (pad_token_id,
    mask 0); a partial last group is filled as the contract says, and the logits of the given rows come
    back as a float32 CPU tensor.
    """

    name = "onnx"

    def __init__(self, path: Path | str, providers: list[str] | None = None):
        require_onnx(("onnxruntime",))  # running a graph needs neither the exporter nor onnx
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = torch.get_num_threads()
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(str(path), options, providers=providers or default_providers())
        self.contract = json.loads(self.session.get_modelmeta().custom_metadata_map[CONTRACT_KEY])
        self.num_instances = self.contract["N"]
        self.vocab_size = self.contract["vocab_size"]
        self.seq_len = self.contract["seq_len"]
        self.dynamic_length = self.contract.get("dynamic_length", False)  # graphs exported before it: fixed
        self.device = torch.device("cpu")
        self.dtype = torch.float32

    def __call__(
        self, input_ids: Tensor, attention_mask: Tensor | None = None, token_type_ids: Tensor | None = None
    ) -> Tensor:
        rows, length = input_ids.shape
        if length > self.seq_len:
            raise ValueError(f"rows of {length} tokens given to a graph exported for {self.seq_len}")
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        types = torch.zeros_like(input_ids) if token_type_ids is None else token_type_ids
        if self.dynamic_length:
            input_ids, mask, types = cut_padding(input_ids, mask, types)
        pad = self.contract["pad_token_id"]
        columns = max(input_ids.shape[1], 2) if self.dynamic_length else self.seq_len
        inputs = [
            _pad_length(t.cpu().long(), columns, value) for t, value in zip((input_ids, mask, types), (pad, 0, 0))
        ]
        inputs = self._fill_group(*inputs)
        feed = {name: tensor.numpy() for name, tensor in zip(INPUT_NAMES, inputs)}
        (logits,) = self.session.run(list(OUTPUT_NAMES), feed)
        return torch.from_numpy(logits[:rows]).float()

    def _fill_group(self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor) -> list[Tensor]:
        """The rows with the last group filled up to N rows as the contract's `padding_rows` says."""
        rows, n = input_ids.shape[0], self.num_instances
        missing = -rows % n
        if not missing:
            return [input_ids, attention_mask, token_type_ids]
        if self.contract["padding_rows"] == "copies":
            real = n - missing
            copies = rows - real + torch.arange(missing) % real
            return [torch.cat([t, t[copies]]) for t in (input_ids, attention_mask, token_type_ids)]
        fill = (self.contract["pad_token_id"], 0, 0)
        return [
            torch.cat([t, t.new_full((missing, t.shape[1]), value)])
            for t, value in zip((input_ids, attention_mask, token_type_ids), fill)
        ]


def require_onnx(packages: tuple[str, ...] = ONNX_PACKAGES) -> None:
    """Raise a one-line ValueError naming the extra when one of `packages` (default: all the export and the
    runtime need) is missing."""
    for package in packages:
        try:
            importlib.import_module(package)
        except ImportError:
            raise ValueError(f"the onnx runtime needs the {package} package: {ONNX_EXTRA}") from None


def onnx_available() -> bool:
    try:
        require_onnx()
    except ValueError:
        return False
    return True


def default_providers() -> list[str]:
    """ONNX Runtime's CUDA provider (then the CPU one) where both it and a GPU are present, else the CPU one."""
    import onnxruntime

    cuda = "CUDAExecutionProvider" in onnxruntime.get_available_providers() and torch.cuda.is_available()
    return ["CUDAExecutionProvider", "CPUExecutionProvider"] if cuda else ["CPUExecutionProvider"]


def _pad_length(tensor: Tensor, length: int, value: int) -> Tensor:
    extra = length - tensor.shape[1]
    return torch.cat([tensor, tensor.new_full((tensor.shape[0], extra), value)], dim=1) if extra else tensor


def _float_cpu_copy(model: PruMUXModel) -> PruMUXModel:
    return copy.deepcopy(model).to(device="cpu", dtype=torch.float32).eval()
