"""Distillation losses of phase 3: soft-label KL and in-order layer matching (CoFi style).

Both are zero when the student is the teacher: the KL of identical distributions is zero,
and the student's layer projection starts as the identity.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from prumux import PruMUXOutput
from trainers.recipes import Recipe

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


class LayerDistiller(nn.Module):
    """Layer distillation: MSE between chosen teacher layers and their matched, projected student layers.

    The projection Linear(student_size, teacher_size) starts as the identity.
    """

    def __init__(self, num_layers: int, student_size: int, teacher_size: int):
        super().__init__()
        self.teacher_layers = teacher_layers(num_layers)
        self.projection = nn.Linear(student_size, teacher_size)
        with torch.no_grad():
            self.projection.weight.copy_(torch.eye(teacher_size, student_size))
            self.projection.bias.zero_()

    def forward(self, student_hidden: list[Tensor], teacher_hidden: list[Tensor]) -> Tensor:
        """Hidden states as returned by the model (embeddings first, then each layer's output)."""
        students = torch.stack([self.projection(state) for state in student_hidden[1:]])  # [S, ...]
        teachers = torch.stack([teacher_hidden[1 + layer] for layer in self.teacher_layers])  # [T, ...]
        distances = ((teachers[:, None] - students[None]) ** 2).flatten(2).mean(dim=2)  # [T, S]
        matches = match_layers(distances.detach())
        return distances[torch.arange(len(matches)), matches].sum()

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
