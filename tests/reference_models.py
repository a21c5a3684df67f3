"""An independent plain-torch transcription of the published MUX-PLM / CoFi / PruMUX forward passes, and
small random checkpoints in their exact on-disk layouts (keys, aliases, config.json fields).

Written from the reference description (shared/reference/mux-plm-checkpoints.md), in the
reference's own key names and order of operations, without any of prumux's code, so a wrong
mapping in prumux shows as a difference. Every parameter is drawn at random (LayerNorms away
from (1, 0)), so no mapping mistake can hide behind an initial value.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

# --------------------------------------------------------------------------- checkpoints


def bert_config(
    hidden: int = 32, layers: int = 2, heads: int = 4, ffn: int = 48, vocab: int = 120, positions: int = 40
) -> dict:
    return {
        "model_type": "bert",
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "intermediate_size": ffn,
        "vocab_size": vocab,
        "max_position_embeddings": positions,
        "type_vocab_size": 2,
        "layer_norm_eps": 1e-12,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "pad_token_id": 0,
        "position_embedding_type": "absolute",
        "transformers_version": "4.4.2",
    }


def mux_config(
    base: dict,
    n: int,
    demux_layers: int = 3,
    architecture: str = "MuxedBertForSequenceClassification",
    num_labels: int | None = None,
) -> dict:
    """config.json as the released MUX-BERT / MUX-ELECTRA checkpoints have it."""
    config = dict(base) | {
        "num_instances": n,
        "muxing_variant": "gaussian_hadamard",
        "demuxing_variant": "index_pos",
        "gaussian_hadamard_norm": 1.0,
        "num_hidden_demux_layers": demux_layers,
        "retrieval_loss_coeff": 0.0,
        "task_loss_coeff": 1.0,
        "retrieval_percentage": 1.0,
        "learn_muxing": 0,
        "binary_hadamard_epsilon": 0.0,
        "legacy_demuxing": False,
        "use_hierarchical_softmax": False,
        "hierarchical_softmax_buckets": 100,
        "head_temperature": 100.0,
        "output_hidden_states": True,
        "architectures": [architecture],
    }
    if num_labels:
        config["id2label"] = {str(i): f"LABEL_{i}" for i in range(num_labels)}
        config["label2id"] = {f"LABEL_{i}": i for i in range(num_labels)}
    return config


def _randn(generator: torch.Generator, *shape: int, scale: float = 0.2) -> Tensor:
    return torch.randn(*shape, generator=generator) * scale


def backbone_state(config: dict, prefix: str, generator: torch.Generator, pooler: bool) -> dict[str, Tensor]:
    """A random BERT/ELECTRA backbone in transformers' key layout."""
    h, f, v = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    e = config.get("embedding_size", h)
    state = {
        f"{prefix}embeddings.word_embeddings.weight": _randn(generator, v, e, scale=0.5),
        f"{prefix}embeddings.position_embeddings.weight": _randn(generator, config["max_position_embeddings"], e),
        f"{prefix}embeddings.token_type_embeddings.weight": _randn(generator, config["type_vocab_size"], e),
        f"{prefix}embeddings.LayerNorm.weight": 1 + _randn(generator, e),
        f"{prefix}embeddings.LayerNorm.bias": _randn(generator, e),
        f"{prefix}embeddings.position_ids": torch.arange(config["max_position_embeddings"])[None],
    }
    if e != h:
        state |= _linear(f"{prefix}embeddings_project", h, e, generator)
    for i in range(config["num_hidden_layers"]):
        layer = f"{prefix}encoder.layer.{i}."
        for name in ("query", "key", "value"):
            state |= _linear(f"{layer}attention.self.{name}", h, h, generator)
        state |= _linear(f"{layer}attention.output.dense", h, h, generator)
        state |= _norm(f"{layer}attention.output.LayerNorm", h, generator)
        state |= _linear(f"{layer}intermediate.dense", f, h, generator)
        state |= _linear(f"{layer}output.dense", h, f, generator)
        state |= _norm(f"{layer}output.LayerNorm", h, generator)
    if pooler:
        state |= _linear(f"{prefix}pooler.dense", h, h, generator)
    return state


def mux_plm_state(config: dict, seed: int, task_head: bool) -> dict[str, Tensor]:
    """A random MUX-BERT / MUX-ELECTRA state dict with every alias the reference's state_dict() writes."""
    generator = torch.Generator().manual_seed(seed)
    electra = config["model_type"] == "electra"
    h, n, v, layers = (
        config["hidden_size"],
        config["num_instances"],
        config["vocab_size"],
        config["num_hidden_demux_layers"],
    )
    e = config.get("embedding_size", h)
    state = backbone_state(config, "electra." if electra else "bert.", generator, pooler=False)
    vectors = torch.randn(n, e, generator=generator)
    state["instance_embedding"] = vectors / vectors.norm(dim=-1, keepdim=True)
    demux = {"demux_instance_embedding": torch.randn(n, h, generator=generator)}
    demux |= _linear("dense_1", h, 2 * h, generator) | _norm("layer_norm_1", h, generator)
    for k in range(2, layers + 1):
        demux |= _linear(f"dense_{k}", h, h, generator) | _norm(f"layer_norm_{k}", h, generator)
    for owner in ("demux_module.", "demultiplexer.demux_module.", "retrieval_head.demux_module."):
        state |= {owner + key: value for key, value in demux.items()}
    state |= _linear("demultiplexer.pre_decoder", h, h, generator) | _norm(
        "demultiplexer.pre_decoder_layer_norm", h, generator
    )
    state |= _linear("retrieval_head.pre_decoder", h, h, generator)
    state |= _norm("retrieval_head.pre_decoder_layer_norm", h, generator)
    word = state[("electra." if electra else "bert.") + "embeddings.word_embeddings.weight"]
    state["retrieval_head.decoder.weight"] = _randn(generator, v, h) if electra else word  # tied in MUX-BERT
    state["retrieval_head.decoder.bias"] = _randn(generator, v)
    state["retrieval_head.bias"] = state["retrieval_head.decoder.bias"]
    if task_head:
        labels = len(config["id2label"])
        if electra:
            state |= _linear("classifier.dense", h, h, generator) | _linear("classifier.out_proj", labels, h, generator)
        else:
            state |= _linear("classifier", labels, h, generator)
    return state


def save_checkpoint(folder: Path, config: dict, state: dict[str, Tensor], weights: str = "safetensors") -> Path:
    """A hub-style folder: config.json and model.safetensors (aliases stored as copies) or pytorch_model.bin."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    if weights == "safetensors":
        from safetensors.torch import save_file

        save_file({key: value.clone().contiguous() for key, value in state.items()}, str(folder / "model.safetensors"))
    else:
        torch.save(state, folder / "pytorch_model.bin")
    return folder


def put_in_hub_cache(cache: Path, repo_id: str, folder: Path, commit: str = "0" * 40) -> None:
    """Lay `folder`'s files out in a Hugging Face cache as huggingface_hub does: blobs, a snapshot of links, refs/main."""
    import hashlib

    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo / "blobs").mkdir(exist_ok=True)
    for file in folder.iterdir():
        data = file.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / file.name).symlink_to(Path("..", "..", "blobs", blob.name))


def _linear(name: str, out: int, inp: int, generator: torch.Generator) -> dict[str, Tensor]:
    return {
        f"{name}.weight": _randn(generator, out, inp, scale=1 / math.sqrt(inp)),
        f"{name}.bias": _randn(generator, out),
    }


def _norm(name: str, width: int, generator: torch.Generator) -> dict[str, Tensor]:
    return {f"{name}.weight": 1 + _randn(generator, width, scale=0.3), f"{name}.bias": _randn(generator, width)}


# --------------------------------------------------------------------------- CoFi folding and pruning


def cofi_fold_and_prune(
    state: dict[str, Tensor], zs: dict[str, Tensor], config: dict, prefix: str = "bert."
) -> dict[str, Tensor]:
    """CoFi's update_params (soft values into weights) then prune_model_with_z, on transformers' key names."""
    state = {key: value.clone() for key, value in state.items()}
    layers, heads = config["num_hidden_layers"], config["num_attention_heads"]
    d = config["hidden_size"] // config["num_attention_heads"]
    head_z = zs["head_z"].reshape(layers, heads)
    int_z = zs["intermediate_z"].reshape(layers, -1)
    hidden_z, mlp_z, head_layer_z = zs["hidden_z"], zs["mlp_z"], zs["head_layer_z"]
    p = prefix
    for key in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
        state[f"{p}embeddings.{key}.weight"] *= hidden_z
    for key in ("instance_embedding",):
        if key in state:
            state[key] *= hidden_z
    if "demux_module.dense_1.weight" in state:
        state["demux_module.dense_1.weight"] *= torch.cat([hidden_z, hidden_z])
    if f"{p}pooler.dense.weight" in state:
        state[f"{p}pooler.dense.weight"] *= hidden_z
    for i in range(layers):
        layer = f"{p}encoder.layer.{i}."
        value_z = head_z[i].repeat_interleave(d)
        state[layer + "attention.self.value.weight"] *= value_z[:, None]
        state[layer + "attention.self.value.bias"] *= value_z
        for part in ("weight", "bias"):
            state[layer + f"attention.output.dense.{part}"] *= head_layer_z[i]
            state[layer + f"output.dense.{part}"] *= mlp_z[i]
        state[layer + "output.dense.weight"] *= int_z[i][None, :]
        for name in ("query", "key", "value"):
            state[layer + f"attention.self.{name}.weight"] *= hidden_z
        state[layer + "intermediate.dense.weight"] *= hidden_z
        state[layer + "attention.output.dense.weight"] *= hidden_z[:, None]
        state[layer + "attention.output.dense.bias"] *= hidden_z
        state[layer + "output.dense.weight"] *= hidden_z[:, None]
    return _prune_hf(state, head_z * head_layer_z[:, None], int_z * mlp_z[:, None], hidden_z, config, p)


def _prune_hf(state, head_keep, ffn_keep, hidden_z, config, p) -> dict[str, Tensor]:
    layers, h = config["num_hidden_layers"], config["hidden_size"]
    d = h // config["num_attention_heads"]
    hid = torch.nonzero(hidden_z).flatten()
    for key in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
        state[f"{p}embeddings.{key}.weight"] = state[f"{p}embeddings.{key}.weight"][:, hid]
    for part in ("weight", "bias"):
        state[f"{p}embeddings.LayerNorm.{part}"] = state[f"{p}embeddings.LayerNorm.{part}"][hid]
    if "instance_embedding" in state:
        state["instance_embedding"] = state["instance_embedding"][:, hid]
        index = state["demux_module.demux_instance_embedding"][:, hid]
        dense_1 = state["demux_module.dense_1.weight"][:, torch.cat([hid, hid + h])]
        for owner in ("demux_module.", "demultiplexer.demux_module.", "retrieval_head.demux_module."):
            state[owner + "demux_instance_embedding"], state[owner + "dense_1.weight"] = index, dense_1
    for key in (f"{p}pooler.dense.weight", "layer_transformation.weight"):
        if key in state:
            state[key] = state[key][:, hid]
    for i in range(layers):
        layer = f"{p}encoder.layer.{i}."
        kept_heads = torch.nonzero(head_keep[i]).flatten()
        rows = (kept_heads[:, None] * d + torch.arange(d)).flatten()
        if len(kept_heads):
            for name in ("query", "key", "value"):
                state[layer + f"attention.self.{name}.weight"] = state[layer + f"attention.self.{name}.weight"][rows][
                    :, hid
                ]
                state[layer + f"attention.self.{name}.bias"] = state[layer + f"attention.self.{name}.bias"][rows]
            state[layer + "attention.output.dense.weight"] = state[layer + "attention.output.dense.weight"][hid][
                :, rows
            ]
            state[layer + "attention.output.dense.bias"] = state[layer + "attention.output.dense.bias"][hid]
            for part in ("weight", "bias"):
                key = layer + f"attention.output.LayerNorm.{part}"
                state[key] = state[key][hid]
        else:  # removed; its LayerNorm stays full width (the reference never prunes it)
            for name in ("self.query", "self.key", "self.value", "output.dense"):
                for part in ("weight", "bias"):
                    del state[layer + f"attention.{name}.{part}"]
        kept_ffn = torch.nonzero(ffn_keep[i]).flatten()
        if len(kept_ffn):
            state[layer + "intermediate.dense.weight"] = state[layer + "intermediate.dense.weight"][kept_ffn][:, hid]
            state[layer + "intermediate.dense.bias"] = state[layer + "intermediate.dense.bias"][kept_ffn]
            state[layer + "output.dense.weight"] = state[layer + "output.dense.weight"][hid][:, kept_ffn]
            state[layer + "output.dense.bias"] = state[layer + "output.dense.bias"][hid]
        else:
            for name in ("intermediate.dense", "output.dense"):
                for part in ("weight", "bias"):
                    del state[layer + f"{name}.{part}"]
        for part in ("weight", "bias"):
            state[layer + f"output.LayerNorm.{part}"] = state[layer + f"output.LayerNorm.{part}"][hid]
    return state


# --------------------------------------------------------------------------- forward passes


def _ln(x: Tensor, state: dict, name: str, eps: float) -> Tensor:
    weight = state[f"{name}.weight"]
    return F.layer_norm(x, weight.shape, weight, state[f"{name}.bias"], eps)


def _lin(x: Tensor, state: dict, name: str) -> Tensor:
    return F.linear(x, state[f"{name}.weight"], state[f"{name}.bias"])


def bert_layers(x: Tensor, state: dict, config: dict, prefix: str, mask: Tensor | None) -> Tensor:
    """transformers' BertLayer stack (eval), layers with removed attention or FFN passing their input on."""
    eps, d = config["layer_norm_eps"], config["hidden_size"] // config["num_attention_heads"]
    bias = None if mask is None else (1.0 - mask[:, None, None, :].float()) * torch.finfo(x.dtype).min
    for i in range(config["num_hidden_layers"]):
        layer = f"{prefix}encoder.layer.{i}."
        if layer + "attention.self.query.weight" in state:
            b, length, _ = x.shape
            q, k, v = (
                _lin(x, state, layer + f"attention.self.{n}").view(b, length, -1, d).transpose(1, 2)
                for n in ("query", "key", "value")
            )
            scores = q @ k.transpose(-1, -2) / math.sqrt(d)
            if bias is not None:
                scores = scores + bias
            context = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, length, -1)
            x = _ln(
                _lin(context, state, layer + "attention.output.dense") + x,
                state,
                layer + "attention.output.LayerNorm",
                eps,
            )
        if layer + "intermediate.dense.weight" in state:
            inner = F.gelu(_lin(x, state, layer + "intermediate.dense"))
            x = _ln(_lin(inner, state, layer + "output.dense") + x, state, layer + "output.LayerNorm", eps)
    return x


def bert_embeddings(
    ids: Tensor | None,
    state: dict,
    config: dict,
    prefix: str,
    types: Tensor | None = None,
    inputs_embeds: Tensor | None = None,
) -> Tensor:
    """BertEmbeddings (eval): inputs_embeds (or word lookup) + token type (0 when None) + absolute position, LayerNorm."""
    p = prefix + "embeddings."
    x = state[p + "word_embeddings.weight"][ids] if inputs_embeds is None else inputs_embeds
    length = x.shape[1]
    types = torch.zeros(x.shape[:2], dtype=torch.long) if types is None else types
    x = x + state[p + "token_type_embeddings.weight"][types]
    x = x + state[p + "position_embeddings.weight"][:length]
    x = _ln(x, state, p + "LayerNorm", config["layer_norm_eps"])
    if prefix + "embeddings_project.weight" in state:
        x = _lin(x, state, prefix + "embeddings_project")
    return x


def mux_plm_encode(ids: Tensor, state: dict, config: dict) -> Tensor:
    """Steps 3-6 of the MUX-PLM forward: [CLS] overwrite, first embedding pass, mix, second pass, layers."""
    electra = config["model_type"] == "electra"
    prefix = "electra." if electra else "bert."
    ids = ids.clone()
    if not electra:
        ids[:, 0] = 101
    n = config["num_instances"]
    p = prefix + "embeddings."
    # first pass without the projection (the mix happens in embedding space)
    x = state[p + "word_embeddings.weight"][ids] + state[p + "token_type_embeddings.weight"][0]
    x = x + state[p + "position_embeddings.weight"][: ids.shape[1]]
    x = _ln(x, state, p + "LayerNorm", config["layer_norm_eps"])
    rows, length, width = x.shape
    mix = (x.view(rows // n, n, length, width) * state["instance_embedding"][None, :, None, :]).mean(dim=1)
    hidden = bert_embeddings(None, state, config, prefix, inputs_embeds=mix)
    return bert_layers(hidden, state, config, prefix, mask=None)


def mux_plm_logits(ids: Tensor, state: dict, config: dict) -> Tensor:
    """MuxedBert/ElectraForSequenceClassification logits for rows that fill whole groups of N."""
    n, eps = config["num_instances"], config["layer_norm_eps"]
    cls = mux_plm_encode(ids, state, config)[:, 0:1, :]  # [B', 1, H]
    groups, _, h = cls.shape
    index = state["demux_module.demux_instance_embedding"]
    u = torch.cat([index[None, :, None, :].expand(groups, n, 1, -1), cls[:, None].expand(groups, n, 1, h)], dim=-1)
    x = u.view(groups * n, 1, -1)
    for k in range(1, config["num_hidden_demux_layers"]):
        x_in = x
        x = F.gelu(_lin(x, state, f"demux_module.dense_{k}"))
        if k > 1:
            x = x + x_in
    x = x + _ln(F.gelu(_lin(x, state, "demultiplexer.pre_decoder")), state, "demultiplexer.pre_decoder_layer_norm", eps)
    x = x[:, 0]
    if config["model_type"] == "electra":
        return _lin(F.gelu(_lin(x, state, "classifier.dense")), state, "classifier.out_proj")
    return _lin(x, state, "classifier")


def mux_plm_token_logits(ids: Tensor, state: dict, config: dict) -> Tensor:
    """[rows, L, V] retrieval-head logits of every instance at every position (BERT or generic head)."""
    n, eps = config["num_instances"], config["layer_norm_eps"]
    seq = mux_plm_encode(ids, state, config)  # [B', L, H]
    groups, length, h = seq.shape
    index = state["demux_module.demux_instance_embedding"]
    u = torch.cat(
        [index[None, :, None, :].expand(groups, n, length, -1), seq[:, None].expand(groups, n, length, h)], -1
    )
    x = u.view(groups * n, length, -1)
    if config["model_type"] == "bert":
        x = _ln(F.gelu(_lin(x, state, "demux_module.dense_1")), state, "demux_module.layer_norm_1", eps)
        x = _ln(F.gelu(_lin(x, state, "demux_module.dense_2")), state, "demux_module.layer_norm_2", eps)
        x = _ln(
            F.gelu(_lin(x, state, "retrieval_head.pre_decoder")), state, "retrieval_head.pre_decoder_layer_norm", eps
        )
    else:
        for k in range(1, config["num_hidden_demux_layers"] + 1):
            x_in = x
            x = _ln(F.gelu(_lin(x, state, f"demux_module.dense_{k}")), state, f"demux_module.layer_norm_{k}", eps)
            if k > 1:
                x = x + x_in
        x = x + _ln(
            F.gelu(_lin(x, state, "retrieval_head.pre_decoder")), state, "retrieval_head.pre_decoder_layer_norm", eps
        )
    return _lin(x, state, "retrieval_head.decoder")


def bert_classifier_logits(ids: Tensor, mask: Tensor, types: Tensor, state: dict, config: dict) -> Tensor:
    """BertForSequenceClassification / CoFi (eval): attention mask and token types used, tanh pooler, classifier."""
    x = bert_layers(bert_embeddings(ids, state, config, "bert.", types), state, config, "bert.", mask)
    pooled = torch.tanh(_lin(x[:, 0], state, "bert.pooler.dense"))
    return _lin(pooled, state, "classifier")


TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def tiny_mux_family(cache: Path, tokenizer_dir: Path, template: str, widths: dict[int, str], labels=None) -> None:
    """A model family in a hub cache: for each N, `widths[N]` is "plain" (a BERT), "pretrained" (a MUX-BERT
    for masked LM) or "fine-tuned" (a MUX-BERT classifier with `labels` as its label names); real tokenizer."""
    import shutil

    from transformers import BertConfig, BertModel

    staging = cache.parent / f"staging-{cache.name}"
    for n, kind in widths.items():
        folder = staging / str(n)
        if kind == "plain":
            torch.manual_seed(n)
            BertModel(
                BertConfig(
                    **{
                        k: v
                        for k, v in bert_config(vocab=30522, positions=64).items()
                        if k not in ("model_type", "transformers_version")
                    }
                )
            ).save_pretrained(folder)
        else:
            fine_tuned = kind == "fine-tuned"
            config = mux_config(
                bert_config(vocab=30522, positions=64),
                n,
                num_labels=len(labels) if fine_tuned else None,
                architecture="MuxedBertForSequenceClassification" if fine_tuned else "MuxedBertForMaskedLM",
            )
            if fine_tuned:
                config["id2label"] = dict(enumerate(labels))
            save_checkpoint(folder, config, mux_plm_state(config, n, task_head=fine_tuned))
        for name in TOKENIZER_FILES:
            shutil.copy(tokenizer_dir / name, folder / name)
        put_in_hub_cache(cache, template.replace("{N}", str(n)), folder)
    shutil.rmtree(staging)


def save_tiny_bert(folder: Path, tokenizer_dir: Path) -> Path:
    """A random 2-layer BERT (hidden 32, 4 heads, FFN 64, 128 positions; seed 0) saved in ``folder``
    with the tokenizer files of ``tokenizer_dir``; returns ``folder``."""
    import shutil

    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(folder)
    for name in TOKENIZER_FILES:
        shutil.copy(tokenizer_dir / name, folder / name)
    return folder
