"""Published checkpoints reproduce their authors' forward passes: MUX-BERT (classification and MLM),
MUX-ELECTRA, CoFi's pruned models and both PruMUX formats, against `reference_models`'
independent transcription, in float32 to < 1e-4; plain ELECTRA and RoBERTa bases against transformers."""

from __future__ import annotations

import os

import pytest
import torch

from prumux import Encoder, L0Module, PruMUXModel, prune

from reference_models import (
    backbone_state,
    bert_classifier_logits,
    bert_config,
    cofi_fold_and_prune,
    mux_config,
    mux_plm_logits,
    mux_plm_state,
    mux_plm_token_logits,
    put_in_hub_cache,
    save_checkpoint,
)

torch.set_num_threads(1)
os.environ["HF_HUB_OFFLINE"] = "1"
TOLERANCE = 1e-4


def inputs(rows: int, length: int = 10, vocab: int = 120, seed: int = 0):
    """Random ids (first token too: the MUX-BERT forward overwrites it), padding, a mask and token types."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (rows, length), generator=generator)
    mask = torch.ones_like(ids)
    mask[::2, length - 3 :] = 0
    ids[mask == 0] = 0
    types = torch.zeros_like(ids)
    types[:, length // 2 :] = 1
    return ids, mask, types


def mux_checkpoint(tmp_path, n, labels=None, model_type="bert", weights="safetensors", seed=0):
    base = bert_config() if model_type == "bert" else bert_config() | {"model_type": "electra", "embedding_size": 32}
    architecture = "MuxedBertForMaskedLM" if labels is None else "MuxedBertForSequenceClassification"
    config = mux_config(base, n, architecture=architecture, num_labels=labels)
    state = mux_plm_state(config, seed, task_head=labels is not None)
    return save_checkpoint(tmp_path / f"{model_type}-{n}-{labels}", config, state, weights), config, state


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """The largest absolute difference, printed for the record (`pytest tests/test_checkpoints.py -rP`)."""
    assert a.shape == b.shape, (a.shape, b.shape)
    value = (a - b).abs().max().item()
    print(f"max abs difference {value:.2e} over {tuple(a.shape)}")
    return value


@pytest.mark.parametrize("n,labels,weights", [(2, 2, "safetensors"), (5, 3, "bin"), (2, 3, "bin")])
def test_mux_bert_classification_reproduces(tmp_path, n, labels, weights):
    folder, config, state = mux_checkpoint(tmp_path, n, labels, weights=weights)
    model = PruMUXModel.from_pretrained(folder).eval()
    assert (model.config.num_instances, model.config.num_labels, model.config.layout) == (n, labels, "mux-plm")
    ids, mask, types = inputs(2 * n)
    with torch.no_grad():
        ours = model(ids, mask, types).logits  # mask and token types are ignored, as by the reference
        expected = mux_plm_logits(ids, state, config)
    assert max_diff(ours, expected) < TOLERANCE


def test_mux_bert_masked_lm_reproduces(tmp_path):
    folder, config, state = mux_checkpoint(tmp_path, 2)
    model = PruMUXModel.from_pretrained(folder, num_labels=2).eval()
    ids, mask, _ = inputs(4)
    with torch.no_grad():
        assert max_diff(model.token_logits(ids, mask), mux_plm_token_logits(ids, state, config)) < TOLERANCE


def test_mux_electra_reproduces(tmp_path):
    folder, config, state = mux_checkpoint(tmp_path, 2, labels=2, model_type="electra")
    model = PruMUXModel.from_pretrained(folder).eval()
    ids, mask, types = inputs(4)
    with torch.no_grad():
        assert max_diff(model(ids, mask, types).logits, mux_plm_logits(ids, state, config)) < TOLERANCE
        assert max_diff(model.token_logits(ids), mux_plm_token_logits(ids, state, config)) < TOLERANCE


def test_incomplete_group_is_filled_with_copies_of_its_rows(tmp_path):
    folder, config, state = mux_checkpoint(tmp_path, 5, labels=2)
    model = PruMUXModel.from_pretrained(folder).eval()
    ids, mask, _ = inputs(7)
    padded = torch.cat([ids, ids[[5, 6, 5]]])  # the last group: rows 5, 6 and then copies of them
    with torch.no_grad():
        assert max_diff(model(ids, mask).logits, mux_plm_logits(padded, state, config)[:7]) < TOLERANCE


def test_forward_leaves_the_callers_ids_alone(tmp_path):
    folder, *_ = mux_checkpoint(tmp_path, 2, labels=2)
    model = PruMUXModel.from_pretrained(folder).eval()
    ids, _, _ = inputs(4)
    before = ids.clone()
    model(ids)
    assert torch.equal(ids, before)


def cofi_zs(config: dict, seed: int) -> dict[str, torch.Tensor]:
    """Soft CoFi masks in zs.pt's shapes: a removed attention block, a removed FFN, zeros, fractions."""
    generator = torch.Generator().manual_seed(seed)
    layers, heads, ffn, h = (
        config[k] for k in ("num_hidden_layers", "num_attention_heads", "intermediate_size", "hidden_size")
    )
    head_z = torch.rand(layers, 1, heads, 1, 1, generator=generator) * 0.6 + 0.35
    head_z[0, 0, :2] = 0
    int_z = torch.rand(layers, 1, 1, ffn, generator=generator) * 0.6 + 0.35
    int_z[..., : ffn // 3] = 0
    hidden_z = torch.rand(h, generator=generator) * 0.5 + 0.5
    hidden_z[: h // 4] = 0
    mlp_z = torch.tensor([0.0] + [0.9] * (layers - 1))
    head_layer_z = torch.tensor([0.8] * (layers - 1) + [0.0])
    return {
        "head_z": head_z,
        "intermediate_z": int_z,
        "hidden_z": hidden_z,
        "mlp_z": mlp_z,
        "head_layer_z": head_layer_z,
    }


def prumux_state(config: dict, seed: int) -> dict[str, torch.Tensor]:
    """PruMUX's pruning-stage model: MUX-BERT plus a pooler and the layer-distillation projection."""
    state = mux_plm_state(config, seed, task_head=True)
    generator = torch.Generator().manual_seed(seed + 1)
    h = config["hidden_size"]
    state |= {
        f"bert.pooler.dense.{p}": torch.randn(*s, generator=generator) for p, s in (("weight", (h, h)), ("bias", (h,)))
    }
    state |= {
        f"layer_transformation.{p}": torch.randn(*s, generator=generator)
        for p, s in (("weight", (h, h)), ("bias", (h,)))
    }
    return state


def test_prumux_format_a_folds_soft_masks_and_prunes(tmp_path):
    config = mux_config(bert_config(), 2, num_labels=3) | {"do_layer_distill": True}
    state, zs = prumux_state(config, 3), cofi_zs(config, 3)
    folder = save_checkpoint(tmp_path / "format-a", config, state, "bin")
    torch.save({name: value.clone().requires_grad_() for name, value in zs.items()}, folder / "zs.pt")
    model = PruMUXModel.from_pretrained(folder).eval()
    assert model.config.encoder.hidden_size == 24 and model.encoder.layers[0].ffn is None
    assert model.encoder.layers[-1].attention is None
    expected_state = cofi_fold_and_prune(state, zs, config)
    ids, mask, _ = inputs(4)
    with torch.no_grad():
        assert max_diff(model(ids, mask).logits, mux_plm_logits(ids, expected_state, config)) < TOLERANCE


def test_prumux_format_b_reads_pruned_shapes(tmp_path):
    config = mux_config(bert_config(), 2, num_labels=2) | {"pruned_heads": {"0": [0, 1]}}
    pruned = cofi_fold_and_prune(prumux_state(config, 4), cofi_zs(config, 4), config)
    assert pruned["bert.encoder.layer.1.attention.output.LayerNorm.weight"].shape == (32,)  # head-less: full width
    folder = save_checkpoint(tmp_path / "format-b", config, pruned)
    model = PruMUXModel.from_pretrained(folder).eval()
    assert model.config.dense_shape == [2, 32, 4, 48]
    ids, mask, _ = inputs(6)
    with torch.no_grad():
        assert max_diff(model(ids, mask).logits, mux_plm_logits(ids, pruned, config)) < TOLERANCE


def test_cofi_pruned_classifier_reproduces(tmp_path):
    config = bert_config() | {
        "architectures": ["BertForSequenceClassification"],
        "pruned_heads": {"1": [3]},
        "id2label": {"0": "negative", "1": "positive"},
    }
    generator = torch.Generator().manual_seed(5)
    state = backbone_state(config, "bert.", generator, pooler=True)
    state |= {
        "classifier.weight": torch.randn(2, 32, generator=generator),
        "classifier.bias": torch.randn(2, generator=generator),
    }
    zs = cofi_zs(config, 5)
    zs = {name: (value != 0).float() for name, value in zs.items()}  # CoFi's released models are pruned 0/1
    pruned = cofi_fold_and_prune(state, zs, config)
    model = PruMUXModel.from_pretrained(save_checkpoint(tmp_path / "cofi", config, pruned)).eval()
    assert model.config.num_instances == 1 and model.config.label_names == ["negative", "positive"]
    ids, mask, types = inputs(5)
    with torch.no_grad():
        assert (
            max_diff(model(ids, mask, types).logits, bert_classifier_logits(ids, mask, types, pruned, config))
            < TOLERANCE
        )


@pytest.mark.parametrize("kind", ["electra-small", "electra-base", "roberta"])
def test_plain_electra_and_roberta_bases_match_transformers(tmp_path, kind):
    from transformers import ElectraConfig, ElectraModel, RobertaConfig, RobertaModel

    torch.manual_seed(0)
    shape = {
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 48,
        "vocab_size": 120,
    }
    if kind == "roberta":
        hf = RobertaModel(RobertaConfig(**shape, max_position_embeddings=44, type_vocab_size=1, pad_token_id=1))
    else:
        hf = ElectraModel(
            ElectraConfig(**shape, max_position_embeddings=40, embedding_size=16 if kind == "electra-small" else 32)
        )
    with torch.no_grad():
        for parameter in hf.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    hf.save_pretrained(tmp_path / kind)
    ours = Encoder.from_pretrained(tmp_path / kind).eval()
    ids, mask, _ = inputs(3, vocab=120)
    if kind == "roberta":
        ids[mask == 0] = 1
    hf.eval()
    with torch.no_grad():
        assert max_diff(ours(ids, mask), hf(ids, attention_mask=mask).last_hidden_state) < TOLERANCE
        model = PruMUXModel.from_pretrained(tmp_path / kind, num_instances=2).eval()
        assert model(ids, mask).logits.shape == (3, 2)


def test_loaded_mux_bert_prunes_masked_equals_pruned_and_round_trips(tmp_path):
    folder, *_ = mux_checkpoint(tmp_path, 2, labels=2)
    model = PruMUXModel.from_pretrained(folder).eval()
    torch.manual_seed(1)
    l0 = L0Module(model.config.encoder)
    with torch.no_grad():
        for log_alpha in l0.mask_parameters():
            log_alpha.normal_(1.0, 2.0)
    masks = l0.deterministic_masks()
    assert masks["hidden_z"].sum() < 32
    pruned = prune(model, masks).eval()
    ids, mask, _ = inputs(5)
    with torch.no_grad():
        assert max_diff(model(ids, mask, masks=masks).logits, pruned(ids, mask).logits) < TOLERANCE
        pruned.save_pretrained(tmp_path / "saved")
        again = PruMUXModel.from_pretrained(tmp_path / "saved").eval()
        assert torch.equal(again(ids, mask).logits, pruned(ids, mask).logits)
        assert max_diff(again.token_logits(ids), pruned.token_logits(ids)) == 0


def test_hub_id_loads_from_the_cache_and_an_uncached_one_fails_in_one_line(tmp_path, monkeypatch):
    import huggingface_hub.constants

    folder, config, state = mux_checkpoint(tmp_path, 2, labels=2)
    cache = tmp_path / "hub"
    put_in_hub_cache(cache, "princeton-nlp/muxbert_tiny_sst2_gaussian_hadamard_index_pos_2", folder)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    model = PruMUXModel.from_pretrained("princeton-nlp/muxbert_tiny_sst2_gaussian_hadamard_index_pos_2").eval()
    ids, _, _ = inputs(2)
    with torch.no_grad():
        assert max_diff(model(ids).logits, mux_plm_logits(ids, state, config)) < TOLERANCE
    with pytest.raises(OSError, match="cannot load princeton-nlp/not-cached") as error:
        PruMUXModel.from_pretrained("princeton-nlp/not-cached")
    assert "\n" not in str(error.value)


def test_bad_checkpoints_fail_in_one_line(tmp_path):
    folder, config, state = mux_checkpoint(tmp_path, 2, labels=2)
    cases = {}
    (tmp_path / "no-weights").mkdir()
    (tmp_path / "no-weights" / "config.json").write_text((folder / "config.json").read_text())
    cases["no-weights"] = (OSError, "none of model.safetensors, pytorch_model.bin")
    save_checkpoint(tmp_path / "shapes", config | {"num_instances": 5}, state)
    cases["shapes"] = (ValueError, r"instance_embedding has shape \(2, 32\), expected \(5, 32\)")
    save_checkpoint(tmp_path / "width", config | {"hidden_size": 16}, state)
    cases["width"] = (ValueError, "contradict config.json")
    save_checkpoint(tmp_path / "mux-variant", config | {"muxing_variant": "random_ortho"}, state)
    cases["mux-variant"] = (ValueError, "unsupported muxing_variant 'random_ortho'")
    save_checkpoint(tmp_path / "demux-variant", config | {"demuxing_variant": "index"}, state)
    cases["demux-variant"] = (ValueError, "unsupported demuxing_variant 'index'")
    save_checkpoint(tmp_path / "zs", config, state)
    torch.save({"head_z": torch.ones(2, 3), "hidden_z": torch.ones(32)}, tmp_path / "zs" / "zs.pt")
    cases["zs"] = (ValueError, r"zs.pt mask head_z has shape \(2, 3\)")
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "config.json").write_text((folder / "config.json").read_text())
    (tmp_path / "corrupt" / "model.safetensors").write_bytes(b"not a safetensors file")
    cases["corrupt"] = (ValueError, "cannot read its weights")
    for name, (kind, message) in cases.items():
        with pytest.raises(kind, match=message) as error:
            PruMUXModel.from_pretrained(tmp_path / name)
        assert "\n" not in str(error.value), name
    with pytest.raises(ValueError, match="multiplexes N = 2 inputs, not 5"):
        PruMUXModel.from_pretrained(folder, num_instances=5)
