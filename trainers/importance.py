"""Fisher importance of attention heads and FFN dimensions, to start the L0 masks ranked.

CoFi starts every gate at the same keep probability, so in a short run the masks that meet
the target sparsity are close to random. Seeding each gate's log_alpha with how much the
task loss depends on its unit (the empirical Fisher of a mask at 1, Michel et al. 2019;
Kwon et al. 2022), per parameter it costs, makes the first masks at the target already a
sensible structure; the Lagrangian training then refines them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from prumux import L0Module, PruMUXModel
from prumux.l0 import unit_costs as l0_unit_costs
from trainers.data import BatchStream

RANKED_MASKS = ("head_z", "intermediate_z")


def mask_fisher(model: PruMUXModel, stream: BatchStream, batches: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Sum over `batches` of the squared gradient of the task loss w.r.t. each head and FFN-dim mask at 1."""
    shapes = model.config.encoder.mask_shapes()
    masks = {name: torch.ones(shapes[name], device=device, requires_grad=True) for name in RANKED_MASKS}
    fisher = {name: torch.zeros(shapes[name], device=device) for name in RANKED_MASKS}
    was_training = model.training
    model.eval()
    for index in range(batches):
        batch = stream.batch(index).to(device)
        loss = F.cross_entropy(model(**batch.inputs(), masks=masks).logits, batch.labels)
        gradients = torch.autograd.grad(loss, list(masks.values()))
        for name, gradient in zip(RANKED_MASKS, gradients):
            fisher[name] += gradient.square()
    model.train(was_training)
    return fisher


def unit_costs(model: PruMUXModel) -> dict[str, float]:
    """Prunable parameters one head and one FFN dimension hold."""
    encoder = model.config.encoder
    return dict(zip(RANKED_MASKS, l0_unit_costs(encoder.hidden_size, encoder.head_dim)))


@torch.no_grad()
def rank_log_alphas(l0: L0Module, fisher: dict[str, torch.Tensor], costs: dict[str, float], spread: float) -> None:
    """Shift each head's and FFN dim's log_alpha by `spread` * (2q - 1), q its quantile of Fisher per parameter.

    The quantile is taken over heads and FFN dims together, so the two kinds compete for the
    budget as `masks_at_sparsity` makes them; the mean keep probability is unchanged.
    """
    per_parameter = torch.cat([(fisher[name] / costs[name]).flatten() for name in RANKED_MASKS])
    quantile = per_parameter.argsort().argsort().float() / max(1, per_parameter.numel() - 1)
    for name, shift in zip(RANKED_MASKS, quantile.split([fisher[name].numel() for name in RANKED_MASKS])):
        log_alpha = l0.log_alphas[name]
        log_alpha.add_(spread * (2 * shift.view_as(log_alpha).to(log_alpha.device) - 1))
