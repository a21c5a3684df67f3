"""PruMUXModel: N = 1 is the plain model, grouping by N, padding rows, losses, saving."""

from __future__ import annotations

import os

import pytest
import torch

from prumux import EncoderConfig, PruMUXConfig, PruMUXModel

torch.set_num_threads(1)
os.environ["HF_HUB_OFFLINE"] = "1"


def tiny_model(num_instances: int, seed: int = 0) -> PruMUXModel:
    encoder = EncoderConfig.dense(2, 16, 4, 32, vocab_size=60, max_position_embeddings=16)
    config = PruMUXConfig(encoder=encoder, num_instances=num_instances, num_labels=3, hidden_size=16)
    return PruMUXModel(config, seed=seed).eval()


def batch(rows: int, length: int = 8, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 60, (rows, length), generator=generator)
    mask = torch.ones(rows, length, dtype=torch.long)
    mask[::2, length // 2 :] = 0
    return ids, mask


def test_n1_equals_encoder_plus_classifier(tiny_bert_dir):
    model = PruMUXModel.from_pretrained(tiny_bert_dir, num_instances=1, num_labels=3).eval()
    assert model.demultiplexer is None and model.pooler is not None
    ids, mask = batch(5)
    with torch.no_grad():
        cls = model.encoder(ids, mask)[:, 0]
        expected = model.classifier(torch.tanh(model.pooler(cls)))
        assert torch.allclose(model(ids, mask).logits, expected, atol=1e-6)


def test_rows_depend_only_on_their_group():
    model = tiny_model(2)
    ids, mask = batch(6)
    with torch.no_grad():
        logits = model(ids, mask).logits
        order = torch.tensor([4, 5, 0, 1, 2, 3])  # whole groups moved
        assert torch.allclose(model(ids[order], mask[order]).logits, logits[order], atol=1e-5)
        changed = ids.clone()
        changed[2:] = torch.randint(5, 60, changed[2:].shape)
        assert torch.allclose(model(changed, mask).logits[:2], logits[:2], atol=1e-5)
        swapped = torch.tensor([1, 0, 2, 3, 4, 5])  # instance slots matter within a group
        assert not torch.allclose(model(ids[swapped], mask[swapped]).logits[:2], logits[:2].flip(0), atol=1e-4)


@pytest.mark.parametrize("num_instances", [1, 3])
def test_chunked_mixing_equals_one_piece(monkeypatch, num_instances):
    model = tiny_model(num_instances)
    ids, mask = batch(7)
    types = torch.randint(0, 2, ids.shape)
    with torch.no_grad():
        whole = model(ids, mask, types).logits
        monkeypatch.setattr("prumux.model.MIX_CHUNK_BYTES", 1)  # one group per chunk
        assert model.mix_chunk_rows(ids) == num_instances
        assert torch.allclose(model(ids, mask, types).logits, whole, atol=1e-6)


def test_dummy_rows_are_dropped():
    model = tiny_model(4)
    ids, mask = batch(6)
    with torch.no_grad():
        logits = model(ids, mask).logits
        assert logits.shape == (6, 3)
        assert torch.allclose(model(ids[:4], mask[:4]).logits, logits[:4], atol=1e-5)


def test_attention_mask_is_honoured():
    model = tiny_model(2)
    ids, mask = batch(4)
    mask[:2, 5:] = 0  # group 0 is padded from position 5 in both instances
    changed = ids.clone()
    changed[:2, 5:] = 7
    with torch.no_grad():
        assert torch.allclose(model(ids, mask).logits[:2], model(changed, mask).logits[:2], atol=1e-5)


def test_hidden_states_are_on_the_mixed_stream():
    model = tiny_model(2)
    ids, mask = batch(5)
    states = model(ids, mask, output_hidden_states=True).hidden_states
    assert len(states) == 3 and all(state.shape == (3, 8, 16) for state in states)


@pytest.mark.parametrize("num_instances", [1, 3])
def test_token_losses_train(num_instances):
    model = tiny_model(num_instances).train()
    ids, mask = batch(6)
    generator = torch.Generator().manual_seed(1)
    retrieval = model.retrieval_loss(ids, mask, ignore_token_ids=(5, 6), generator=generator)
    mlm = model.mlm_loss(ids, mask, mask_token_id=4, mlm_probability=0.5, generator=generator)
    (retrieval + mlm).backward()
    assert torch.isfinite(retrieval) and torch.isfinite(mlm)
    assert model.token_head.decoder.weight.grad.abs().sum() > 0
    if num_instances > 1:
        assert model.demultiplexer.index.grad.abs().sum() > 0


def test_invalid_width_raises(tiny_bert_dir):
    with pytest.raises(ValueError, match="num_instances"):
        tiny_model(0)
    with pytest.raises(ValueError, match="num_instances"):
        PruMUXModel.from_pretrained(tiny_bert_dir, num_instances=-2)


def test_mux_norm_and_round_trip(tmp_path, tiny_bert_dir):
    model = PruMUXModel.from_pretrained(tiny_bert_dir, num_instances=2, num_labels=3, mux_norm=1.0).eval()
    model.set_mux_norm(20.0)
    assert torch.allclose(model.multiplexer.vectors.norm(dim=-1), torch.full((2,), 20.0))
    with pytest.raises(ValueError):
        model.set_mux_norm(0.0)
    model.save_pretrained(tmp_path / "saved")
    with pytest.raises(ValueError, match="N = 2, not 5"):  # only a dense model can start a wider one
        PruMUXModel.from_pretrained(tmp_path / "saved", num_instances=5)
    loaded = PruMUXModel.from_pretrained(tmp_path / "saved").eval()
    assert loaded.config == model.config
    ids, mask = batch(4)
    with torch.no_grad():
        assert torch.equal(loaded(ids, mask).logits, model(ids, mask).logits)


def test_minilm_decoder_starts_as_the_embeddings(minilm_dir):
    model = PruMUXModel.from_pretrained(minilm_dir, num_instances=2)
    assert torch.equal(model.token_head.decoder.weight, model.encoder.embeddings.word.weight)
    assert model.config.encoder.num_layers == 6 and model.config.classifier_head == "pooler"
