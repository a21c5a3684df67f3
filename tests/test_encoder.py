"""The compact encoder equals transformers.BertModel and rejects non-BERT checkpoints."""

from __future__ import annotations

import os

import pytest
import torch

from prumux import Encoder, EncoderConfig

torch.set_num_threads(1)
os.environ["HF_HUB_OFFLINE"] = "1"


def padded_batch(vocab: int = 30522, rows: int = 3, length: int = 12):
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, vocab, (rows, length), generator=generator)
    mask = torch.ones(rows, length, dtype=torch.long)
    mask[1, 7:] = 0
    mask[2, 3:] = 0
    types = torch.zeros_like(ids)
    types[:, length // 2 :] = 1
    return ids, mask, types


def assert_matches_hf(folder) -> None:
    from transformers import BertModel

    hf = BertModel.from_pretrained(folder, attn_implementation="sdpa").eval()
    ours = Encoder.from_pretrained(folder).eval()
    ids, mask, types = padded_batch()
    with torch.no_grad():
        expected = hf(ids, attention_mask=mask, token_type_ids=types).last_hidden_state
        actual = ours(ids, mask, types)
    assert actual.shape == expected.shape
    assert (actual - expected).abs().max().item() < 1e-4


def test_matches_bert_model_on_minilm(minilm_dir):
    assert_matches_hf(minilm_dir)


def test_matches_bert_model_on_random_config(tiny_bert_dir):
    assert_matches_hf(tiny_bert_dir)


def test_non_bert_checkpoint_is_rejected(tmp_path):
    from transformers import GPT2Config

    GPT2Config(n_layer=1, n_embd=8, n_head=2).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="BERT"):
        Encoder.from_pretrained(tmp_path)


def test_missing_weights_is_os_error(tmp_path):
    from transformers import BertConfig

    BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8).save_pretrained(tmp_path)
    with pytest.raises(OSError):
        Encoder.from_pretrained(tmp_path)


def small_encoder() -> Encoder:
    torch.manual_seed(0)
    config = EncoderConfig.dense(2, 16, 4, 32, vocab_size=50, max_position_embeddings=16)
    return Encoder(config).eval()


def test_all_ones_masks_change_nothing():
    encoder = small_encoder()
    ids = torch.randint(0, 50, (2, 6))
    ones = {name: torch.ones(shape) for name, shape in encoder.config.mask_shapes().items()}
    with torch.no_grad():
        assert torch.allclose(encoder(ids), encoder(ids, masks=ones), atol=1e-5)


def test_closed_blocks_pass_the_stream_through():
    encoder = small_encoder()
    ids = torch.randint(0, 50, (2, 6))
    closed = {"head_layer_z": torch.zeros(2), "intermediate_z": torch.zeros(2, 32)}
    with torch.no_grad():
        embedded = encoder.embeddings(ids)
        assert torch.equal(encoder(ids, masks=closed), embedded)


def test_layers_without_blocks_and_pruned_width_run():
    config = EncoderConfig(
        vocab_size=50,
        hidden_size=12,
        num_heads=[0, 3, 1],
        intermediate_sizes=[5, 0, 0],
        head_dim=4,
        max_position_embeddings=16,
    )
    encoder = Encoder(config).eval()
    out, states = encoder.encode(encoder.embeddings(torch.randint(0, 50, (2, 5))), output_hidden_states=True)
    assert out.shape == (2, 5, 12) and len(states) == 4
    assert encoder.layers[1].ffn is None and encoder.layers[0].attention is None


def test_bad_configs_raise():
    with pytest.raises(ValueError):
        EncoderConfig(num_heads=[1, 2], intermediate_sizes=[3])
    with pytest.raises(ValueError):
        EncoderConfig.dense(hidden_size=10, num_heads=3)
