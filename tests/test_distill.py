"""Phase-3 objectives: distillation is zero when student == teacher; the Lagrangian reaches the target."""

from __future__ import annotations

import copy

import pytest
import torch

from prumux import EncoderConfig, L0Module, PruMUXModel
from trainers.distill import LayerDistiller, distillation_loss, kl_loss, match_layers, teacher_layers
from trainers.phases.pruning import l0_optimizers, target_sparsity
from trainers.recipes import load_recipe


@pytest.fixture(scope="module")
def tiny_mux_model(tiny_bert_dir) -> PruMUXModel:
    torch.manual_seed(0)
    return PruMUXModel.from_pretrained(tiny_bert_dir, num_instances=2).eval()


def test_distillation_loss_is_zero_when_student_is_teacher(tiny_mux_model: PruMUXModel) -> None:
    ids = torch.randint(1000, 30000, (6, 12))
    with torch.no_grad():
        out = tiny_mux_model(ids, output_hidden_states=True)
    encoder = tiny_mux_model.config.encoder
    layers = LayerDistiller(encoder.num_layers, encoder.hidden_size, encoder.hidden_size)
    loss = distillation_loss(out, out, layers, load_recipe("smoke"))
    assert loss.item() == pytest.approx(0.0, abs=1e-6)


def test_distillation_loss_is_positive_for_a_different_student(tiny_mux_model: PruMUXModel) -> None:
    ids = torch.randint(1000, 30000, (6, 12))
    student = copy.deepcopy(tiny_mux_model)
    with torch.no_grad():
        for parameter in student.encoder.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
        teacher_out = tiny_mux_model(ids, output_hidden_states=True)
        student_out = student(ids, output_hidden_states=True)
    encoder = tiny_mux_model.config.encoder
    layers = LayerDistiller(encoder.num_layers, encoder.hidden_size, encoder.hidden_size)
    assert distillation_loss(student_out, teacher_out, layers, load_recipe("smoke")).item() > 0


def test_kl_loss_scales_with_temperature_squared() -> None:
    student, teacher = torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    assert kl_loss(teacher, teacher, 2.0).item() == pytest.approx(0.0, abs=1e-7)
    assert kl_loss(student, teacher, 2.0).item() > 0


def test_teacher_layers_scale_with_depth() -> None:
    assert teacher_layers(12) == [2, 5, 8, 11]
    assert teacher_layers(6) == [1, 2, 4, 5]
    assert teacher_layers(2) == [0, 1]


def test_layer_matching_is_in_order() -> None:
    distances = torch.tensor([[0.1, 0.5, 0.9], [0.0, 0.8, 0.2], [0.7, 0.1, 0.6]])
    assert match_layers(distances) == [0, 0, 1]
    # Row 1's global minimum (column 0) lies before row 0's match (column 1), so it takes column 2.
    assert match_layers(torch.tensor([[0.5, 0.1, 0.9], [0.0, 0.8, 0.2]])) == [1, 2]


def test_lagrangian_drives_expected_sparsity_to_target() -> None:
    torch.manual_seed(0)
    recipe = load_recipe("cpu-demo")
    config = EncoderConfig.dense(num_layers=6, hidden_size=384, num_heads=12, intermediate_size=1536)
    l0 = L0Module(config, droprate_init=recipe.droprate_init)
    alpha_optimizer, lambda_optimizer = l0_optimizers(l0, recipe)
    target, warmup, steps = 0.6, recipe.lagrangian_warmup_steps, 3 * recipe.lagrangian_warmup_steps
    for step in range(steps):
        l0.lagrangian(target_sparsity(step, target, warmup)).backward()
        for optimizer in (alpha_optimizer, lambda_optimizer):
            optimizer.step()
            optimizer.zero_grad()
    assert l0.expected_sparsity().item() == pytest.approx(target, abs=0.02)
    assert l0.lambda_2.item() > 0  # the ascent side grew its penalty


def test_cofi_layer_distillation_versions_match_as_cofi_does() -> None:
    from trainers.distill import match_layers_backward, sampled_teacher_layers

    distances = torch.tensor([[0.1, 0.5, 0.9], [0.0, 0.8, 0.2], [0.7, 0.1, 0.6]])
    # version 4: last teacher row first (column 1), then each row strictly before the next one's match
    assert match_layers_backward(distances) == [0, 0, 1]
    assert match_layers_backward(torch.tensor([[0.9, 0.1, 0.5], [0.5, 0.9, 0.1]])) == [1, 2]
    assert match_layers_backward(torch.tensor([[0.1, 0.9], [0.1, 0.9]])) == [0, 0]  # no column left before 0
    torch.manual_seed(0)
    for _ in range(20):  # version 6: one layer per quarter of 12, the first no lower than 2
        layers = sampled_teacher_layers(12)
        assert len(layers) == 4 and layers[0] == 2
        assert all(3 * k <= layer < 3 * (k + 1) for k, layer in enumerate(layers[1:], start=1))


@pytest.mark.parametrize("version", [3, 4, 6])
def test_each_version_is_zero_for_the_teacher_and_trains(tiny_mux_model: PruMUXModel, version: int) -> None:
    ids = torch.randint(1000, 30000, (6, 12))
    encoder = tiny_mux_model.config.encoder
    layers = LayerDistiller(encoder.num_layers, encoder.hidden_size, encoder.hidden_size, version)
    recipe = load_recipe("smoke", {"layer_distill_version": version})
    with torch.no_grad():
        out = tiny_mux_model(ids, output_hidden_states=True)
    assert distillation_loss(out, out, layers, recipe).item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="version must be one of"):
        LayerDistiller(encoder.num_layers, encoder.hidden_size, encoder.hidden_size, 5)
