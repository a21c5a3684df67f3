"""The inference path: padded / graph-captured PyTorch and ONNX Runtime compute what the eager model computes."""

from __future__ import annotations

import sys
from dataclasses import replace

import pytest
import torch

from prumux import EncoderConfig, L0Module, PruMUXConfig, PruMUXModel, prune
from prumux.inference import (
    ONNX_EXTRA,
    RUNTIMES,
    EagerRunner,
    OnnxRunner,
    TorchRunner,
    export_onnx,
    load_runner,
    measure_runner,
    padded,
)

torch.set_num_threads(1)

ENCODER = EncoderConfig.dense(5, 16, 4, 24, vocab_size=1100, max_position_embeddings=16)
SEQ_LEN = 9
TOLERANCE = 1e-4


def tiny_model(layout: str, num_instances: int, pruned: bool = True) -> PruMUXModel:
    """A random model of `layout`, its LayerNorms away from (1, 0), pruned with a narrower hidden width and
    emptied blocks: layer 0 without attention, layer 1 with every head pruned, layer 2 without FFN, layer 4 empty."""
    reference = layout == "mux-plm"
    config = PruMUXConfig(
        encoder=ENCODER,
        num_instances=num_instances,
        num_labels=3,
        hidden_size=16,
        mux_norm=5.0,
        layout=layout,
        token_head="mux-plm-bert" if reference else "prumux",
        cls_token_id=2 if reference else None,
    )
    model = PruMUXModel(config, seed=num_instances).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "norm" in name:
                parameter.add_(0.3 * torch.randn_like(parameter))
    if not pruned:
        return model
    torch.manual_seed(num_instances)
    module = L0Module(ENCODER)
    with torch.no_grad():
        for log_alpha in module.mask_parameters():
            log_alpha.normal_(1.0, 2.0)
        module.log_alphas["head_layer_z"][[0, 4]] = -20
        module.log_alphas["head_z"][1] = -20
        module.log_alphas["head_layer_z"][1] = 20
        module.log_alphas["mlp_z"][[2, 4]] = -20
    model = prune(model, module.deterministic_masks())
    encoder = model.config.encoder
    assert encoder.hidden_size % 8 and encoder.num_heads[:2] == [0, 0] and encoder.intermediate_sizes[2] == 0
    assert encoder.num_heads[4] == encoder.intermediate_sizes[4] == 0
    return model


def batch(rows: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`rows` rows of SEQ_LEN ids, some of them padded, with token types."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 1100, (rows, SEQ_LEN), generator=generator)
    mask = torch.ones_like(ids)
    mask[1 % rows, 4:] = 0
    mask[-1, 6:] = 0
    types = (torch.arange(SEQ_LEN) >= 5).long().expand(rows, -1).contiguous()
    return ids * mask, mask, types


def eager_logits(model: PruMUXModel, *inputs: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(*inputs).logits


SHAPES = [("prumux", 1), ("prumux", 3), ("mux-plm", 1), ("mux-plm", 2)]


@pytest.mark.parametrize("layout,num_instances", SHAPES)
def test_padded_torch_runner_computes_what_the_eager_model_computes(layout, num_instances):
    model = tiny_model(layout, num_instances)
    runner = TorchRunner(model, "cpu", pad_multiple=8)
    encoder = runner.model.config.encoder
    assert encoder.hidden_size % 8 == 0 and encoder.hidden_size > model.config.encoder.hidden_size
    assert all(width % 8 == 0 for width in encoder.intermediate_sizes)
    assert len(runner.model.encoder.layers) == 4  # the emptied layer is dropped
    for rows in (1, 7):  # 7: not a multiple of N
        inputs = batch(rows)
        assert (runner(*inputs) - eager_logits(model, *inputs)).abs().max() < TOLERANCE


@pytest.mark.parametrize("layout,num_instances", SHAPES)
def test_the_torch_runner_cuts_padding_columns_only_where_the_model_masks_them(layout, num_instances):
    model = tiny_model(layout, num_instances)
    runner = TorchRunner(model)
    ids, mask, types = (torch.cat([tensor, tensor[:, :7]], dim=1) for tensor in batch(5))  # 16 columns
    mask[2, 3:] = 0
    seen = []
    runner.model.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[1]))
    for last in (8, 5):  # every row's last real token in column 8: 16 columns kept (a multiple of 8), then 8
        mask[:, last + 1 :] = 0
        assert (runner(ids * mask, mask, types) - eager_logits(model, ids * mask, mask, types)).abs().max() < TOLERANCE
    assert seen == ([16, 8] if layout == "prumux" else [16, 16])  # the MUX-PLM layout attends padding: nothing cut


@pytest.mark.parametrize("layout,num_instances", SHAPES)
def test_onnx_graph_computes_what_the_eager_model_computes(tmp_path, layout, num_instances):
    model = tiny_model(layout, num_instances)
    contract = export_onnx(model, tmp_path / "model.onnx", seq_len=SEQ_LEN)
    assert contract["N"] == num_instances and contract["seq_len"] == SEQ_LEN and contract["opset"] >= 17
    assert contract["inputs"] == ["input_ids", "attention_mask", "token_type_ids"] and contract["outputs"] == ["logits"]
    assert contract["padding_rows"] == ("copies" if layout == "mux-plm" else "masked")
    assert contract["dynamic_length"] == (layout == "prumux")  # the MUX-PLM layout attends padding: fixed length
    runner = OnnxRunner(tmp_path / "model.onnx")
    assert runner.name == "onnx" and runner.contract == contract
    for rows in (1, 2 * num_instances, 7):
        inputs = batch(rows, seed=rows)
        logits = runner(*inputs)
        assert logits.shape == (rows, 3)
        assert (logits - eager_logits(model, *inputs)).abs().max() < TOLERANCE
    short = [tensor[:, :6] for tensor in batch(5)]  # shorter rows: as they are, or padded to a fixed length
    if layout == "prumux":  # the MUX-PLM layout attends padding, as the eager model does at any length
        assert (runner(*short) - eager_logits(model, *short)).abs().max() < TOLERANCE


def test_narrower_embeddings_projected_up_are_padded_and_exported_exactly(tmp_path):
    """ELECTRA's layout: the embeddings keep their width, the projection's outputs are the padded hidden units."""
    encoder = replace(ENCODER, embedding_size=8, num_heads=[4] * 3, intermediate_sizes=[24] * 3)
    config = PruMUXConfig(encoder=encoder, num_instances=2, num_labels=3, hidden_size=16, classifier_head="electra")
    torch.manual_seed(0)
    module = L0Module(encoder)
    with torch.no_grad():
        for log_alpha in module.mask_parameters():
            log_alpha.normal_(1.0, 2.0)
    model = prune(PruMUXModel(config).eval(), module.deterministic_masks())
    assert model.config.encoder.hidden_size % 8
    inputs = batch(5)
    assert (TorchRunner(model, pad_multiple=8)(*inputs) - eager_logits(model, *inputs)).abs().max() < TOLERANCE
    export_onnx(model, tmp_path / "model.onnx", SEQ_LEN)
    assert (OnnxRunner(tmp_path / "model.onnx")(*inputs) - eager_logits(model, *inputs)).abs().max() < TOLERANCE


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
@pytest.mark.parametrize("layout,num_instances", SHAPES)
def test_cuda_graph_runner_computes_what_the_eager_model_computes(layout, num_instances):
    model = tiny_model(layout, num_instances)
    runner = TorchRunner(model, "cuda", dtype=torch.float32)
    assert runner.graphs is not None
    eager = model.to("cuda")
    for rows in (7, 7, 1, 7):  # a shape's first call captures its graph, later ones replay it
        inputs = batch(rows, seed=rows)
        expected = eager_logits(eager, *(tensor.cuda() for tensor in inputs))
        assert (runner(*inputs).cpu() - expected.cpu()).abs().max() < TOLERANCE
    assert len(runner.graphs.captured) == 2


def test_auto_picks_a_measured_runtime_and_measures_it():
    model = tiny_model("prumux", 2)
    runner = load_runner("auto", model, seq_len=SEQ_LEN)
    result = measure_runner(runner, seq_len=SEQ_LEN, num_batches=1, warmup=1)
    assert runner.name in ("torch", "onnx") and result.batch_size == 256 and result.examples_per_second > 0
    for rows in (5, 7):  # 45 and 63 tokens: one size class, timed once
        inputs = batch(rows)
        assert (runner(*inputs) - eager_logits(model, *inputs)).abs().max() < TOLERANCE
    assert sorted(runner.chosen) == [64, 4096]
    assert measure_runner(load_runner("eager", model, seq_len=SEQ_LEN), SEQ_LEN, num_batches=1).seq_len == SEQ_LEN


def test_the_padded_copy_keeps_a_dense_model_as_it_is():
    model = tiny_model("prumux", 1, pruned=False)
    assert padded(model, 8).config.encoder == model.config.encoder
    inputs = batch(4)
    assert torch.equal(EagerRunner(model)(*inputs), eager_logits(model, *inputs))


def test_a_missing_onnx_package_and_an_unknown_runtime_are_refused(monkeypatch, tmp_path):
    assert RUNTIMES == ("auto", "torch", "onnx", "eager")
    model = tiny_model("prumux", 2, pruned=False)
    with pytest.raises(ValueError, match="unknown runtime 'tensorrt'"):
        load_runner("tensorrt", model, seq_len=SEQ_LEN)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # what an import of a package not installed meets
    for attempt in (
        lambda: load_runner("onnx", model, seq_len=SEQ_LEN),
        lambda: export_onnx(model, tmp_path / "model.onnx", SEQ_LEN),
        lambda: OnnxRunner(tmp_path / "model.onnx"),
    ):
        with pytest.raises(ValueError) as refused:
            attempt()
        assert str(refused.value) == f"the onnx runtime needs the onnxruntime package: {ONNX_EXTRA}"
    assert load_runner("auto", model, seq_len=SEQ_LEN).runners[0].name == "torch"  # auto does without it
    assert len(load_runner("auto", model, seq_len=SEQ_LEN).runners) == 1
