"""Published MUX-PLM checkpoints (MUX-BERT, MUX-ELECTRA, and PruMUX's pruned MUX-BERTs) onto our modules.

What their keys mean (princeton-nlp/datamux-pretraining, yushansu/PruMUX):
- `instance_embedding` [N, E]: the mux vectors, copied as stored.
- `demux_module.demux_instance_embedding` [N, H] and `demux_module.dense_k` (k = 1 .. L_d,
  `num_hidden_demux_layers`): the demux; `dense_1` reads [index ; feature], ours
  [feature ; index], so its two column halves swap. The classification path uses dense_1 ..
  dense_{L_d - 1} then `demultiplexer.pre_decoder(_layer_norm)`; dense_{L_d} only serves the
  retrieval head. `demultiplexer.demux_module.*` and `retrieval_head.demux_module.*` are
  aliases of `demux_module.*`.
- `demux_module.layer_norm_k`, `retrieval_head.pre_decoder(_layer_norm)`, `retrieval_head.decoder`
  (MUX-BERT: tied to the word embeddings; `retrieval_head.bias` aliases its bias): the
  retrieval / MLM head.
- `classifier.*` (MUX-BERT: a Linear; MUX-ELECTRA: `dense` + `out_proj`) in task-fine-tuned
  checkpoints; `pooler.*` and `layer_transformation.*` (PruMUX) are never used for logits.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import Tensor

from prumux.checkpoints.hf import Shapes, copy_pairs, dense_encoder_config, is_pruned, label_names
from prumux.config import DEMUXING_VARIANTS, MUXING_VARIANTS, EncoderConfig, PruMUXConfig

MUX_MODEL_TYPES = ("bert", "electra")
BERT_CLS_TOKEN_ID = 101  # MUX-BERT overwrites every row's first token with this id
_DEMUX_DENSE = re.compile(r"^demux_module\.dense_(\d+)\.weight$")


def is_mux_plm(hf: dict[str, Any]) -> bool:
    """Whether config.json is a MUX-PLM one (it carries the multiplexing fields)."""
    return "num_instances" in hf or "muxing_variant" in hf


def mux_plm_config(
    hf: dict[str, Any],
    shapes: Shapes,
    encoder: EncoderConfig,
    num_instances: int | None,
    num_labels: int | None,
    source: str,
) -> PruMUXConfig:
    """Our config in the MUX-PLM layout, every value read from the checkpoint and checked against its weights."""
    model_type = hf.get("model_type")
    if model_type not in MUX_MODEL_TYPES:
        raise ValueError(f"{source}: MUX-PLM checkpoints of model_type {model_type!r} are not supported")
    for field, supported in (("muxing_variant", MUXING_VARIANTS), ("demuxing_variant", DEMUXING_VARIANTS)):
        if hf.get(field) not in supported:
            raise ValueError(f"{source}: unsupported {field} {hf.get(field)!r} (supported: {', '.join(supported)})")
    n = hf.get("num_instances")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"{source}: config.json's num_instances must be an integer >= 1, got {n!r}")
    if num_instances is not None and num_instances != n:
        raise ValueError(f"{source} multiplexes N = {n} inputs, not {num_instances}")
    _expect(shapes, "instance_embedding", (n, encoder.embedding_width), source)
    _expect(shapes, "demux_module.demux_instance_embedding", (n, encoder.hidden_size), source)
    width = shapes.get("demux_module.dense_1.weight", (None,))[0]
    _expect(shapes, "demux_module.dense_1.weight", (width, 2 * encoder.hidden_size), source)
    layers = demux_layers(hf, shapes, source)
    labels = _classifier_labels(shapes, model_type)
    if labels is not None and num_labels is not None and labels != num_labels:
        raise ValueError(f"{source} is fine-tuned with {labels} labels; the task has {num_labels}")
    dense = dense_encoder_config(hf, source)
    return PruMUXConfig(
        encoder=encoder,
        num_instances=n,
        num_labels=labels or num_labels or 2,
        mux_norm=float(hf.get("gaussian_hadamard_norm", 1.0)),
        hidden_size=width,
        demux_layers=layers - 2,
        classifier_head="linear" if model_type == "bert" else "electra",
        layout="mux-plm",
        muxing_variant=hf["muxing_variant"],
        demuxing_variant=hf["demuxing_variant"],
        token_head="mux-plm-bert" if model_type == "bert" else "mux-plm-generic",
        cls_token_id=BERT_CLS_TOKEN_ID if model_type == "bert" else None,
        label_names=label_names(hf, labels) if labels else None,
        dense_shape=dense.uniform_shape() if is_pruned(encoder, dense) else None,
    )


def demux_layers(hf: dict[str, Any], shapes: Shapes, source: str) -> int:
    """L_d: config.json's `num_hidden_demux_layers`, else the demux Linear layers the weights hold."""
    stored = sorted(int(match.group(1)) for key in shapes if (match := _DEMUX_DENSE.match(key)))
    layers = hf.get("num_hidden_demux_layers", stored[-1] if stored else 2)
    if not isinstance(layers, int) or layers < 2:
        raise ValueError(f"{source}: num_hidden_demux_layers must be an integer >= 2, got {layers!r}")
    missing = [k for k in range(1, layers) if k not in stored]
    if missing:
        raise ValueError(
            f"{source}: the weights have no demux_module.dense_{missing[0]} (num_hidden_demux_layers {layers})"
        )
    return layers


def mux_plm_state(state: dict[str, Tensor], config: PruMUXConfig) -> dict[str, Tensor]:
    """The multiplexer, demultiplexer and head weights under our names."""
    layers = config.demux_layers + 2
    dense_1 = state["demux_module.dense_1.weight"]
    half = dense_1.shape[1] // 2
    mapped = {
        "multiplexer.vectors": state["instance_embedding"],
        "demultiplexer.index": state["demux_module.demux_instance_embedding"],
        "demultiplexer.in_proj.weight": torch.cat([dense_1[:, half:], dense_1[:, :half]], dim=1),
        "demultiplexer.in_proj.bias": state["demux_module.dense_1.bias"],
    }
    for block in range(config.demux_layers):
        mapped |= copy_pairs(state, f"demux_module.dense_{block + 2}", f"demultiplexer.blocks.{block}")
    mapped |= copy_pairs(state, f"demux_module.dense_{layers}", "demultiplexer.retrieval_block")
    mapped |= copy_pairs(state, "demultiplexer.pre_decoder", "demultiplexer.pre_decoder")
    mapped |= copy_pairs(state, "demultiplexer.pre_decoder_layer_norm", "demultiplexer.norm")
    norms = layers if config.token_head == "mux-plm-generic" else 2
    for k in range(1, norms + 1):
        mapped |= copy_pairs(state, f"demux_module.layer_norm_{k}", f"token_head.norms.{k - 1}")
    mapped |= copy_pairs(state, "retrieval_head.pre_decoder", "token_head.pre_decoder")
    mapped |= copy_pairs(state, "retrieval_head.pre_decoder_layer_norm", "token_head.pre_decoder_norm")
    decoder = state.get("retrieval_head.decoder.weight")
    if decoder is None and config.token_head == "mux-plm-bert":
        decoder = state["embeddings.word_embeddings.weight"]  # tied in MUX-BERT
    if decoder is not None:
        mapped["token_head.decoder.weight"] = decoder
    bias = state.get("retrieval_head.decoder.bias", state.get("retrieval_head.bias"))
    if bias is not None:
        mapped["token_head.decoder.bias"] = bias
    if config.classifier_head == "electra":
        mapped |= copy_pairs(state, "classifier.dense", "classifier_dense")
        mapped |= copy_pairs(state, "classifier.out_proj", "classifier")
    else:
        mapped |= copy_pairs(state, "classifier", "classifier")
    return mapped


def _classifier_labels(shapes: Shapes, model_type: str) -> int | None:
    key = "classifier.weight" if model_type == "bert" else "classifier.out_proj.weight"
    return shapes[key][0] if key in shapes else None


def _expect(shapes: Shapes, key: str, shape: tuple[int | None, ...], source: str) -> None:
    found = shapes.get(key)
    if found is None:
        raise ValueError(f"{source}: the weights have no {key}")
    if len(found) != len(shape) or any(want is not None and want != got for want, got in zip(shape, found)):
        raise ValueError(f"{source}: the weights contradict config.json: {key} has shape {found}, expected {shape}")
