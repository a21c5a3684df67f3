"""Configuration dataclasses of the encoder and the PruMUX model.

Every layer's shape is stored explicitly, so a pruned model's config is enough to rebuild
its modules before loading its weights.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

MASK_KINDS = ("head_z", "head_layer_z", "intermediate_z", "mlp_z", "hidden_z")


@dataclass
class EncoderConfig:
    """Shape of a (possibly pruned) BERT encoder: per-layer heads and FFN sizes, one hidden width."""

    vocab_size: int = 30522
    hidden_size: int = 768
    num_heads: list[int] = field(default_factory=lambda: [12] * 12)
    intermediate_sizes: list[int] = field(default_factory=lambda: [3072] * 12)
    head_dim: int = 64
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    pad_token_id: int = 0

    def __post_init__(self) -> None:
        if len(self.num_heads) != len(self.intermediate_sizes):
            raise ValueError(
                f"num_heads has {len(self.num_heads)} layers but intermediate_sizes has {len(self.intermediate_sizes)}"
            )
        if self.hidden_size < 1 or self.head_dim < 1:
            raise ValueError(f"hidden_size and head_dim must be >= 1, got {self.hidden_size}, {self.head_dim}")
        if min(self.num_heads + self.intermediate_sizes, default=0) < 0:
            raise ValueError("per-layer head counts and FFN sizes must be >= 0")

    @classmethod
    def dense(
        cls,
        num_layers: int = 12,
        hidden_size: int = 768,
        num_heads: int = 12,
        intermediate_size: int = 3072,
        **kwargs: Any,
    ) -> EncoderConfig:
        """An unpruned BERT shape (BERT-base by default)."""
        if num_heads < 1 or hidden_size % num_heads:
            raise ValueError(f"hidden_size {hidden_size} is not divisible by num_heads {num_heads}")
        return cls(
            hidden_size=hidden_size,
            num_heads=[num_heads] * num_layers,
            intermediate_sizes=[intermediate_size] * num_layers,
            head_dim=hidden_size // num_heads,
            **kwargs,
        )

    @property
    def num_layers(self) -> int:
        return len(self.num_heads)

    def is_uniform(self) -> bool:
        """True when all layers have the same head count and FFN size (needed for mask dicts)."""
        return len(set(self.num_heads)) <= 1 and len(set(self.intermediate_sizes)) <= 1

    def mask_shapes(self) -> dict[str, tuple[int, ...]]:
        """Expected shape of each mask kind for this encoder."""
        if not self.is_uniform():
            raise ValueError("masks need an encoder whose layers all have the same shape")
        layers = self.num_layers
        heads = self.num_heads[0] if layers else 0
        ffn = self.intermediate_sizes[0] if layers else 0
        return {
            "head_z": (layers, heads),
            "head_layer_z": (layers,),
            "intermediate_z": (layers, ffn),
            "mlp_z": (layers,),
            "hidden_z": (self.hidden_size,),
        }

    def check_masks(self, masks: dict[str, Any]) -> None:
        """Raise ValueError unless `masks` holds known kinds of the right shapes."""
        shapes = self.mask_shapes()
        for name, mask in masks.items():
            if name not in shapes:
                raise ValueError(f"unknown mask {name!r}; expected a subset of {list(shapes)}")
            if tuple(mask.shape) != shapes[name]:
                raise ValueError(f"mask {name} has shape {tuple(mask.shape)}, expected {shapes[name]}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EncoderConfig:
        return cls(**data)


@dataclass
class PruMUXConfig:
    """A multiplexed classifier: encoder shape, width N, labels, and the demux/head width."""

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    num_instances: int = 1
    num_labels: int = 2
    mux_norm: float = 1.0
    hidden_size: int = 768
    demux_layers: int = 1
    pooler: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.num_instances, bool) or not isinstance(self.num_instances, int) or self.num_instances < 1:
            raise ValueError(f"num_instances (N) must be an integer >= 1, got {self.num_instances!r}")
        if self.num_labels < 1:
            raise ValueError(f"num_labels must be >= 1, got {self.num_labels}")
        if not self.mux_norm > 0:
            raise ValueError(f"mux_norm must be > 0, got {self.mux_norm}")

    @property
    def head_input_size(self) -> int:
        """Width of the states the heads read: the demux output, or the encoder output when N = 1."""
        return self.hidden_size if self.num_instances > 1 else self.encoder.hidden_size

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["encoder"] = self.encoder.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PruMUXConfig:
        data = dict(data)
        data["encoder"] = EncoderConfig.from_dict(data["encoder"])
        return cls(**data)
