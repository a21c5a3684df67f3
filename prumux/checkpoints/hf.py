"""BERT-family backbones (BERT, RoBERTa, ELECTRA) in transformers' layout, dense or CoFi-pruned.

The encoder's shape is read from the weights, not from config.json: CoFi and PruMUX keep the
dense sizes (and a stale `pruned_heads`) in their configs of physically pruned models, so a
layer's heads are its query rows / head_dim (0 when the keys are absent), its FFN size the
intermediate rows, the hidden width the embeddings' (or ELECTRA's projection's). Weights may
only be smaller than config.json says; anything else contradicts it.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import Tensor

from prumux.config import EncoderConfig, PruMUXConfig

MODEL_TYPES = ("bert", "roberta", "electra")
Shapes = dict[str, tuple[int, ...]]
_LAYER_KEY = re.compile(r"^encoder\.layer\.(\d+)\.")


def dense_encoder_config(hf: dict[str, Any], source: str) -> EncoderConfig:
    """The unpruned encoder config.json describes."""
    model_type = hf.get("model_type")
    if model_type not in MODEL_TYPES:
        raise ValueError(
            f"{source} is a {model_type!r} checkpoint; only BERT-family models ({', '.join(MODEL_TYPES)}) are supported"
        )
    if hf.get("position_embedding_type", "absolute") != "absolute" or hf.get("hidden_act", "gelu") != "gelu":
        raise ValueError(f"{source}: only absolute positions and GELU activations are supported")
    try:
        return EncoderConfig.dense(
            num_layers=hf["num_hidden_layers"],
            hidden_size=hf["hidden_size"],
            num_heads=hf["num_attention_heads"],
            intermediate_size=hf["intermediate_size"],
            vocab_size=hf["vocab_size"],
            max_position_embeddings=hf["max_position_embeddings"],
            type_vocab_size=hf.get("type_vocab_size", 2),
            layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
            hidden_dropout=hf.get("hidden_dropout_prob", 0.1),
            attention_dropout=hf.get("attention_probs_dropout_prob", 0.1),
            pad_token_id=hf.get("pad_token_id") or 0,
            embedding_size=hf.get("embedding_size") if model_type == "electra" else None,
            positions="roberta" if model_type == "roberta" else "absolute",
        )
    except KeyError as missing:
        raise ValueError(f"{source}: config.json lacks {missing}") from None


def encoder_config(hf: dict[str, Any], shapes: Shapes, source: str) -> EncoderConfig:
    """The encoder the weights hold: config.json's, with every pruned size read from the shapes."""
    dense = dense_encoder_config(hf, source)
    word = _shape(shapes, "embeddings.word_embeddings.weight", source)
    project = shapes.get("embeddings_project.weight")
    hidden = project[0] if project else word[1]
    heads, ffn = [], []
    for layer in range(dense.num_layers):
        prefix = f"encoder.layer.{layer}."
        query = shapes.get(prefix + "attention.self.query.weight")
        if query and (query[0] % dense.head_dim or query[1] != hidden):
            raise _contradiction(source, f"layer {layer} query has shape {query}")
        heads.append(query[0] // dense.head_dim if query else 0)
        up = shapes.get(prefix + "intermediate.dense.weight")
        ffn.append(up[0] if up else 0)
    extra = sorted({int(m.group(1)) for key in shapes if (m := _LAYER_KEY.match(key))} - set(range(dense.num_layers)))
    if extra:
        raise _contradiction(source, f"weights for layer {extra[0]} of a {dense.num_layers}-layer model")
    pruned = EncoderConfig(
        **{
            **dense.to_dict(),
            "hidden_size": hidden,
            "num_heads": heads,
            "intermediate_sizes": ffn,
            "vocab_size": word[0],
            "embedding_size": word[1] if project else None,
            "max_position_embeddings": _shape(shapes, "embeddings.position_embeddings.weight", source)[0],
            "type_vocab_size": _shape(shapes, "embeddings.token_type_embeddings.weight", source)[0],
        }
    )
    _check_not_larger(pruned, dense, source)
    return pruned


def is_pruned(encoder: EncoderConfig, dense: EncoderConfig) -> bool:
    return (encoder.hidden_size, encoder.num_heads, encoder.intermediate_sizes) != (
        dense.hidden_size,
        dense.num_heads,
        dense.intermediate_sizes,
    )


def encoder_state(state: dict[str, Tensor], config: EncoderConfig) -> dict[str, Tensor]:
    """transformers' encoder weights under our names (QKV fused; absent blocks stay absent)."""
    mapped = {
        "embeddings.word.weight": state["embeddings.word_embeddings.weight"],
        "embeddings.position.weight": state["embeddings.position_embeddings.weight"],
        "embeddings.token_type.weight": state["embeddings.token_type_embeddings.weight"],
        "embeddings.norm.weight": state["embeddings.LayerNorm.weight"],
        "embeddings.norm.bias": state["embeddings.LayerNorm.bias"],
    }
    if config.projects_embeddings:
        mapped |= copy_pairs(state, "embeddings_project", "project")
    for i, (heads, ffn) in enumerate(zip(config.num_heads, config.intermediate_sizes)):
        src, dst = f"encoder.layer.{i}.", f"layers.{i}."
        if heads:
            for part in ("weight", "bias"):
                names = ("query", "key", "value")
                mapped[f"{dst}attention.qkv.{part}"] = torch.cat(
                    [state[f"{src}attention.self.{name}.{part}"] for name in names]
                )
            mapped |= copy_pairs(state, f"{src}attention.output.dense", f"{dst}attention.out")
            mapped |= copy_pairs(state, f"{src}attention.output.LayerNorm", f"{dst}attention.norm")
        if ffn:
            mapped |= copy_pairs(state, f"{src}intermediate.dense", f"{dst}ffn.up")
            mapped |= copy_pairs(state, f"{src}output.dense", f"{dst}ffn.down")
            mapped |= copy_pairs(state, f"{src}output.LayerNorm", f"{dst}ffn.norm")
    return {f"encoder.{key}": value for key, value in mapped.items()}


def base_model_config(
    hf: dict[str, Any],
    shapes: Shapes,
    encoder: EncoderConfig,
    num_instances: int | None,
    num_labels: int | None,
    mux_norm: float,
    muxing_variant: str,
    source: str,
) -> PruMUXConfig:
    """Our layout on a plain (or CoFi-pruned) base: N and labels as given, a task head if it has one."""
    pooler = shapes.get("pooler.dense.weight")
    classifier = shapes.get("classifier.weight")
    width = pooler[0] if pooler else encoder.hidden_size
    labels = classifier[0] if classifier and len(classifier) == 2 else None
    if labels is not None and num_labels is not None and num_labels != labels:
        raise ValueError(f"{source} is a classifier with {labels} labels; the task has {num_labels}")
    dense = dense_encoder_config(hf, source)
    return PruMUXConfig(
        encoder=encoder,
        num_instances=num_instances or 1,
        num_labels=labels or num_labels or 2,
        mux_norm=mux_norm,
        hidden_size=width,
        classifier_head="pooler" if pooler else "linear",
        muxing_variant=muxing_variant,
        label_names=label_names(hf, labels) if labels else None,
        dense_shape=dense.uniform_shape() if is_pruned(encoder, dense) else None,
    )


def base_head_state(state: dict[str, Tensor], config: PruMUXConfig) -> dict[str, Tensor]:
    """Pooler, classifier and MLM head weights the checkpoint has (BERT `cls.predictions`, RoBERTa `lm_head`)."""
    mapped = copy_pairs(state, "pooler.dense", "pooler") if config.classifier_head == "pooler" else {}
    if "classifier.weight" in state and state["classifier.weight"].dim() == 2:
        mapped |= copy_pairs(state, "classifier", "classifier")
    for prefix, norm in (("cls.predictions.transform.", "LayerNorm"), ("lm_head.", "layer_norm")):
        if prefix + "dense.weight" in state:
            mapped |= copy_pairs(state, prefix + "dense", "token_head.dense")
            mapped |= copy_pairs(state, prefix + norm, "token_head.norm")
    bias = state.get("cls.predictions.bias", state.get("lm_head.bias"))
    if bias is not None:
        mapped["token_head.decoder.bias"] = bias
    decoder = state.get("cls.predictions.decoder.weight", state.get("lm_head.decoder.weight"))
    mapped["token_head.decoder.weight"] = decoder if decoder is not None else state["embeddings.word_embeddings.weight"]
    return mapped


def label_names(hf: dict[str, Any], count: int) -> list[str] | None:
    """config.json's label names in id order, unless they are transformers' defaults (LABEL_i)."""
    id2label = hf.get("id2label") or {}
    try:
        names = [str(id2label[key]) for key in sorted(id2label, key=int)]
    except (TypeError, ValueError):
        return None
    if len(names) != count or names == [f"LABEL_{i}" for i in range(count)]:
        return None
    return names


def _check_not_larger(pruned: EncoderConfig, dense: EncoderConfig, source: str) -> None:
    if pruned.hidden_size > dense.hidden_size:
        raise _contradiction(source, f"hidden width {pruned.hidden_size} > config.json's {dense.hidden_size}")
    if dense.embedding_size and pruned.embedding_size != dense.embedding_size:
        raise _contradiction(
            source, f"embedding width {pruned.embedding_width} != config.json's {dense.embedding_size}"
        )
    for layer, (heads, ffn) in enumerate(zip(pruned.num_heads, pruned.intermediate_sizes)):
        if heads > dense.num_heads[layer] or ffn > dense.intermediate_sizes[layer]:
            raise _contradiction(source, f"layer {layer} has {heads} heads and FFN {ffn}, more than config.json's")
    if pruned.vocab_size != dense.vocab_size:
        raise _contradiction(source, f"vocabulary {pruned.vocab_size} != config.json's {dense.vocab_size}")


def _contradiction(source: str, what: str) -> ValueError:
    return ValueError(f"{source}: the weights contradict config.json: {what}")


def _shape(shapes: Shapes, key: str, source: str) -> tuple[int, ...]:
    if key not in shapes:
        raise ValueError(f"{source}: the weights have no {key}")
    return shapes[key]


def copy_pairs(state: dict[str, Tensor], source: str, target: str) -> dict[str, Tensor]:
    return {f"{target}.{part}": state[f"{source}.{part}"] for part in ("weight", "bias") if f"{source}.{part}" in state}
