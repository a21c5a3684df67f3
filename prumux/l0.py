"""CoFi L0 regularisation: hard-concrete gates for heads, attention blocks, FFN dims, FFN blocks, hidden dims."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from prumux.config import EncoderConfig, prunable_parameters

LIMIT_LEFT, LIMIT_RIGHT = -0.1, 1.1
EPS = 1e-6
# CoFi's sharpening of the deterministic soft values, sigmoid(log_alpha / T * 0.8).
DETERMINISTIC_SHARPNESS = 0.8
SATURATED_LOG_ALPHA = 20.0


class L0Module(nn.Module):
    """Hard-concrete mask parameters (log_alpha per unit) and the Lagrangian sparsity controller.

    Deterministic masks keep the top-scoring units of each group (one group per layer for
    heads and FFN dims, one per block gate, one for the hidden dims). Kept head/block/FFN
    values are CoFi's soft values, folded into the weights by `prune`; kept hidden dims are
    exactly 1 so a pruned LayerNorm equals the masked one.
    """

    def __init__(self, encoder_config: EncoderConfig, droprate_init: float = 0.5, temperature: float = 2 / 3):
        super().__init__()
        if not 0 < droprate_init < 1:
            raise ValueError(f"droprate_init must be in (0, 1), got {droprate_init}")
        self.encoder_config = encoder_config
        self.temperature = temperature
        self.prunable_parameters = prunable_parameters(encoder_config)
        init = math.log(1 - droprate_init) - math.log(droprate_init)
        self.log_alphas = nn.ParameterDict(
            {
                name: nn.Parameter(torch.normal(init, 1e-2, size=shape))
                for name, shape in encoder_config.mask_shapes().items()
            }
        )
        self.lambda_1 = nn.Parameter(torch.tensor(0.0))
        self.lambda_2 = nn.Parameter(torch.tensor(0.0))

    def mask_parameters(self) -> list[nn.Parameter]:
        """The log_alphas (minimise the loss over them)."""
        return list(self.log_alphas.values())

    def lagrangian_parameters(self) -> list[nn.Parameter]:
        """lambda_1, lambda_2 (maximise the loss over them, e.g. an optimiser with maximize=True)."""
        return [self.lambda_1, self.lambda_2]

    def keep_all(self, name: str) -> None:
        """Fix every gate of mask `name` at 1: saturated log_alphas that no longer train."""
        log_alpha = self.log_alphas[name]
        with torch.no_grad():
            log_alpha.fill_(SATURATED_LOG_ALPHA)
        log_alpha.requires_grad_(False)

    def scores(self) -> dict[str, Tensor]:
        """P(z > 0) per unit, i.e. 1 - CDF of the stretched concrete at 0."""
        zero = (0 - LIMIT_LEFT) / (LIMIT_RIGHT - LIMIT_LEFT)
        logit_zero = math.log(zero) - math.log(1 - zero)
        return {
            name: 1 - torch.sigmoid(logit_zero * self.temperature - log_alpha).clamp(EPS, 1 - EPS)
            for name, log_alpha in self.log_alphas.items()
        }

    def expected_kept(self) -> Tensor:
        """Expected number of prunable parameters kept (differentiable)."""
        s = self.scores()
        head_dim = self.encoder_config.head_dim
        hidden = s["hidden_z"].sum()
        inner = head_dim * s["head_z"].sum(-1) * s["head_layer_z"]
        attention_open = s["head_layer_z"] * (1 - torch.prod(1 - s["head_z"], -1))
        ffn = s["intermediate_z"].sum(-1) * s["mlp_z"]
        ffn_open = s["mlp_z"] * (1 - torch.prod(1 - s["intermediate_z"], -1))
        attention = 4 * hidden * inner + 3 * inner + hidden * attention_open
        feedforward = 2 * hidden * ffn + ffn + hidden * ffn_open
        return (attention + feedforward).sum()

    def expected_sparsity(self) -> Tensor:
        """Expected fraction of prunable parameters removed (differentiable)."""
        return 1 - self.expected_kept() / self.prunable_parameters

    def lagrangian(self, target: float | Tensor) -> Tensor:
        """lambda_1 * (s_hat - t) + lambda_2 * (s_hat - t)^2."""
        gap = self.expected_sparsity() - target
        return self.lambda_1 * gap + self.lambda_2 * gap.square()

    def sample(self) -> dict[str, Tensor]:
        """Training masks: stretched hard-concrete samples in [0, 1], exact zeros and ones included."""
        masks = {}
        for name, log_alpha in self.log_alphas.items():
            u = torch.empty_like(log_alpha).uniform_(EPS, 1 - EPS)
            y = torch.sigmoid((torch.log(u) - torch.log(1 - u) + log_alpha) / self.temperature)
            masks[name] = (y * (LIMIT_RIGHT - LIMIT_LEFT) + LIMIT_LEFT).clamp(0, 1)
        return masks

    @torch.no_grad()
    def deterministic_masks(self) -> dict[str, Tensor]:
        """Evaluation masks: in each group keep the round(expected kept count) units with top scores."""
        scores = self.scores()
        masks = {}
        for name, log_alpha in self.log_alphas.items():
            if name == "hidden_z":
                values = torch.ones_like(log_alpha)
            else:
                values = torch.sigmoid(log_alpha / self.temperature * DETERMINISTIC_SHARPNESS)
            masks[name] = values * _top_k_mask(_groups(name, scores[name])).view(log_alpha.shape)
        return masks

    @classmethod
    def at_sparsity(cls, encoder_config: EncoderConfig, sparsity: float, seed: int = 0) -> L0Module:
        """Saturated log_alphas whose deterministic masks remove `sparsity` of the prunable parameters.

        Heads and FFN dims are removed in a seeded random order that favours some layers, so
        high sparsities also empty whole blocks; the hidden width is kept.
        """
        if not 0 <= sparsity < 1:
            raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
        module = cls(encoder_config)
        keep = _random_structure(encoder_config, (1 - sparsity) * module.prunable_parameters, seed)
        with torch.no_grad():
            for name, kept in keep.items():
                module.log_alphas[name].copy_(torch.where(kept, SATURATED_LOG_ALPHA, -SATURATED_LOG_ALPHA))
        return module


def _groups(name: str, scores: Tensor) -> Tensor:
    """Scores as [groups, units]: a row per layer, each block gate alone, the hidden dims together."""
    if name in ("head_layer_z", "mlp_z"):
        return scores.view(-1, 1)
    return scores.view(-1, scores.shape[-1])


def _top_k_mask(scores: Tensor) -> Tensor:
    """Per row, 1 for the round(sum of scores) largest scores, 0 elsewhere."""
    keep = scores.sum(-1).round().long()
    ranks = scores.argsort(-1, descending=True).argsort(-1)
    return (ranks < keep[:, None]).to(scores.dtype)


def unit_costs(hidden: int, head_dim: int) -> tuple[int, int]:
    """Prunable parameters of one attention head and of one FFN dimension at residual width `hidden`."""
    return 4 * hidden * head_dim + 3 * head_dim, 2 * hidden + 1


def fill_budget(
    head_scores: Tensor, ffn_scores: Tensor, hidden: int, head_dim: int, budget: float
) -> tuple[Tensor, Tensor]:
    """Boolean keep-masks of heads [layers, heads] and FFN dims [layers, d_ff], taken by score while they fit in
    `budget` prunable parameters; the first unit of a layer's block also pays for the block's output bias."""
    costs = unit_costs(hidden, head_dim)
    units = [
        (score, 0, layer, index) for layer, row in enumerate(head_scores.tolist()) for index, score in enumerate(row)
    ]
    units += [
        (score, 1, layer, index) for layer, row in enumerate(ffn_scores.tolist()) for index, score in enumerate(row)
    ]
    units.sort(reverse=True)
    kept = [torch.zeros(head_scores.shape, dtype=torch.bool), torch.zeros(ffn_scores.shape, dtype=torch.bool)]
    opened: set[tuple[int, int]] = set()
    used = 0.0
    for _, kind, layer, index in units:
        cost = costs[kind] + (0 if (kind, layer) in opened else hidden)
        if used + cost > budget:
            continue
        kept[kind][layer, index] = True
        opened.add((kind, layer))
        used += cost
    return kept[0].to(head_scores.device), kept[1].to(ffn_scores.device)


def _random_structure(config: EncoderConfig, budget: float, seed: int) -> dict[str, Tensor]:
    """Boolean keep-masks of heads and FFN dims filling `budget` parameters, greedily by random score."""
    generator = torch.Generator().manual_seed(seed)
    shapes = config.mask_shapes()
    layers, heads = shapes["head_z"]
    ffn = shapes["intermediate_z"][1]
    preference = torch.rand(layers, 1, generator=generator)
    head_scores = torch.rand(layers, heads, generator=generator) + preference
    ffn_scores = torch.rand(layers, ffn, generator=generator) + preference
    kept_heads, kept_ffn = fill_budget(head_scores, ffn_scores, config.hidden_size, config.head_dim, budget)
    return {
        "head_z": kept_heads,
        "head_layer_z": kept_heads.any(-1),
        "intermediate_z": kept_ffn,
        "mlp_z": kept_ffn.any(-1),
        "hidden_z": torch.ones(config.hidden_size, dtype=torch.bool),
    }
