"""measure_throughput follows the paper's protocol; encoder_flops counts matmul FLOPs."""

from __future__ import annotations

import pytest
import torch

from prumux import (
    EncoderConfig,
    PruMUXConfig,
    PruMUXModel,
    encoder_flops,
    hardware_name,
    measure_throughput,
    model_flops,
)

torch.set_num_threads(1)


def tiny_model(num_instances: int) -> PruMUXModel:
    encoder = EncoderConfig.dense(1, 8, 2, 16, vocab_size=1100, max_position_embeddings=8)
    return PruMUXModel(PruMUXConfig(encoder=encoder, num_instances=num_instances, hidden_size=8))


def test_default_batch_is_128_times_n_instances():
    model = tiny_model(2).train()
    result = measure_throughput(model, seq_len=4, num_batches=2, warmup=1)
    assert result.batch_size == 256 and result.num_examples == 512 and result.seq_len == 4
    assert result.examples_per_second == pytest.approx(result.num_examples / result.seconds)
    assert result.device == "cpu" and result.dtype == "float32" and result.hardware
    assert model.training  # the caller's mode is restored


def test_dtype_change_uses_a_copy():
    model = tiny_model(1)
    result = measure_throughput(model, seq_len=4, batch_size=8, num_batches=1, warmup=0, dtype=torch.bfloat16)
    assert result.dtype == "bfloat16" and next(model.parameters()).dtype == torch.float32
    assert result.to_dict()["batch_size"] == 8


def test_bad_arguments_raise():
    with pytest.raises(ValueError):
        measure_throughput(tiny_model(1), seq_len=0)


def test_encoder_flops():
    dense = EncoderConfig.dense(2, 8, 2, 16)
    per_layer = 2 * 10 * (4 * 8 * 8 + 2 * 10 * 8) + 2 * 10 * 2 * 8 * 16
    assert encoder_flops(dense, 10) == 2 * per_layer
    pruned = EncoderConfig(hidden_size=8, num_heads=[0, 1], intermediate_sizes=[0, 0], head_dim=4)
    assert encoder_flops(pruned, 10) == 2 * 10 * (4 * 8 * 4 + 2 * 10 * 4)


def test_model_flops_adds_mux_demux_and_heads():
    dense = tiny_model(1)
    head = 2 * 8 * 8 + 2 * 8 * 2  # pooler + classifier per instance
    assert model_flops(dense.config, 4) == encoder_flops(dense.config.encoder, 4) + head
    mux = tiny_model(2).config
    per_sequence = encoder_flops(mux.encoder, 4) + 2 * 2 * 4 * 8 + 2 * 8 * 8  # mux multiply-add, demux input
    assert model_flops(mux, 4) == per_sequence / 2 + 2 * 8 * 8 + head  # + demux block


def test_hardware_name_mentions_threads():
    assert "threads" in hardware_name("cpu")


def test_benchmark_prints_both_ideals_and_the_mux_share(monkeypatch, capsys):
    from benchmarks import throughput as benchmark

    tiny = EncoderConfig.dense(2, 16, 2, 32, vocab_size=1100, max_position_embeddings=8)
    monkeypatch.setattr(benchmark, "SHAPES", {"tiny": tiny})
    benchmark.main(
        ["--shape", "tiny", "--seq-len", "4", "--rounds", "2", "--points", "10,0", "2,0.6", "--threads", "1"]
    )
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith(("| dense", "| DataMUX", "| PruMUX"))]
    assert len(rows) == 3 and "ideal (encoder) | ideal (model)" in out
    assert "best of 2 round(s)" in out and "mux + demux share" in out
