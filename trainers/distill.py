"""Distillation losses of phase 3: soft-label KL and in-order layer matching (CoFi style).

Layer matching, by the recipe's ``layer_distill_version`` (CoFi's ``--layer_distill_version``,
``trainer/trainer.py: calculate_layer_distillation_loss``):

- None (ours, the default): teacher layers {2, 5, 8, 11} of 12, each matched, first to last, to
  its closest student layer not before the previous match.
- 3: the same teacher layers, each matched to its closest student layer, in no order.
- 4: the same teacher layers matched last to first, each to its closest student layer strictly
  before the one the next teacher layer took (CoFi's default).
- 6: as 4, with the teacher layers drawn at every step: one at random per quarter of the
  teacher's layers, the first no lower than 2 of 12.

CoFi also skips student layers whose attention is pruned away (``head_layer_z``) when matching;
the distiller here sees no masks, so every student layer is a candidate.

Both are zero when the student is the teacher: the KL of identical distributions is zero,
and the student's layer projection starts as the identity.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from prumux import PruMUXOutput
from trainers.recipes import LAYER_DISTILL_VERSIONS, Recipe

# Teacher layers distilled in a 12-layer model (0-based layer outputs); scaled to other depths.
BERT_BASE_TEACHER_LAYERS = (2, 5, 8, 11)


def kl_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """KL(teacher || student) of the temperature-softened distributions, times T^2, averaged over rows."""
    student = F.log_softmax(student_logits / temperature, dim=-1)
    teacher = F.log_softmax(teacher_logits / temperature, dim=-1)
    return F.kl_div(student, teacher, reduction="batchmean", log_target=True) * temperature**2


def teacher_layers(num_layers: int) -> list[int]:
    """The distilled teacher layers: {2, 5, 8, 11} of 12, at the same relative depths of `num_layers`."""
    chosen = {math.ceil((layer + 1) * num_layers / 12) - 1 for layer in BERT_BASE_TEACHER_LAYERS}
    return sorted(layer for layer in chosen if layer >= 0)


def match_layers(distances: Tensor) -> list[int]:
    """For each teacher layer (row), in order, the closest student layer (column) not before the previous match."""
    matches, earliest = [], 0
    for row in distances:
        candidates = row[earliest:]
        earliest += int(torch.argmin(candidates))
        matches.append(earliest)
    return matches


def match_layers_backward(distances: Tensor) -> list[int]:
    """For each teacher layer (row), last to first, the closest student layer (column) before the next
    one's match (CoFi's version 4); a row left without candidates takes the next one's match."""
    matches, bound = [], distances.shape[1]
    for row in reversed(distances):
        order = torch.argsort(row)
        candidates = order[order < bound]
        bound = int(candidates[0]) if len(candidates) else min(bound, distances.shape[1] - 1)
        matches.append(bound)
    return matches[::-1]


def sampled_teacher_layers(num_layers: int) -> list[int]:
    """CoFi's version 6: one teacher layer at random per quarter of the layers, the first no lower
    than the first of ``teacher_layers`` (2 of 12); drawn from torch's generator (seeded, checkpointed)."""
    bounds = sorted({round(quarter * num_layers / 4) for quarter in range(5)})
    chosen = [int(torch.randint(start, end, ())) for start, end in zip(bounds, bounds[1:])]
    chosen[0] = max(teacher_layers(num_layers)[0], chosen[0])
    return chosen


class LayerDistiller(nn.Module):
    """Layer distillation: MSE between chosen teacher layers and their matched, projected student layers.

    The projection Linear(student_size, teacher_size) starts as the identity; ``version`` is the
    layer matching (None, or one of CoFi's ``LAYER_DISTILL_VERSIONS``; see the module's docstring).
    """

    def __init__(self, num_layers: int, student_size: int, teacher_size: int, version: int | None = None):
        super().__init__()
        if version is not None and version not in LAYER_DISTILL_VERSIONS:
            raise ValueError(f"layer distillation version must be one of {LAYER_DISTILL_VERSIONS}, got {version}")
        self.version = version
        self.num_layers = num_layers
        self.teacher_layers = teacher_layers(num_layers)
        self.projection = nn.Linear(student_size, teacher_size)
        with torch.no_grad():
            self.projection.weight.copy_(torch.eye(teacher_size, student_size))
            self.projection.bias.zero_()

    def forward(self, student_hidden: list[Tensor], teacher_hidden: list[Tensor]) -> Tensor:
        """Hidden states as returned by the model (embeddings first, then each layer's output)."""
        students = torch.stack([self.projection(state) for state in student_hidden[1:]])  # [S, ...]
        layers = sampled_teacher_layers(self.num_layers) if self.version == 6 else self.teacher_layers
        teachers = torch.stack([teacher_hidden[1 + layer] for layer in layers])  # [T, ...]
        distances = ((teachers[:, None] - students[None]) ** 2).flatten(2).mean(dim=2)  # [T, S]
        matches = self._match(distances.detach())
        return distances[torch.arange(len(matches)), matches].sum()

    def _match(self, distances: Tensor) -> list[int]:
        if self.version is None:
            return match_layers(distances)
        if self.version == 3:
            return [int(index) for index in torch.argmin(distances, dim=1)]
        return match_layers_backward(distances)

    def keep_inputs(self, kept: Tensor) -> None:
        """Restrict the projection's input to the student's kept hidden dimensions (after materialising)."""
        old = self.projection
        self.projection = nn.Linear(len(kept), old.out_features).to(old.weight.device)
        with torch.no_grad():
            self.projection.weight.copy_(old.weight[:, kept])
            self.projection.bias.copy_(old.bias)


def distillation_loss(student: PruMUXOutput, teacher: PruMUXOutput, layers: LayerDistiller, recipe: Recipe) -> Tensor:
    """alpha_ce * KL(T) * T^2 + alpha_layer * layer loss (outputs computed with hidden states)."""
    soft = kl_loss(student.logits, teacher.logits, recipe.distill_temperature)
    return recipe.distill_alpha_ce * soft + recipe.distill_alpha_layer * layers(
        student.hidden_states, teacher.hidden_states
    )
