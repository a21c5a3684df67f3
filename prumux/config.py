"""Configuration dataclasses of the encoder and the PruMUX model.

Every layer's shape is stored explicitly, so a pruned model's config is enough to rebuild
its modules before loading its weights.

One model class holds two layouts, chosen by `PruMUXConfig.layout`:
- `prumux` (ours, the default for models built from a plain base): one embedding pass, the
  mix goes straight into the first layer, the attention mask and token types are used, and
  the demultiplexer ends in a LayerNorm.
- `mux-plm`: exactly what the published MUX-BERT / MUX-ELECTRA / PruMUX checkpoints compute:
  the mix goes through the embedding module a second time (positions, token type 0 and the
  embedding LayerNorm again), every position attends every other one (padding included),
  token types are ignored, the demultiplexer ends in MUX-PLMs' LayerNorm-then-residual
  `pre_decoder`, and the token head is their retrieval head.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

POSITION_STYLES = ("absolute", "roberta")  # roberta: positions count real tokens from pad_token_id + 1
LAYOUTS = ("prumux", "mux-plm")
MUXING_VARIANTS = ("gaussian_hadamard", "shifted_gaussian")
DEMUXING_VARIANTS = ("index_pos",)
CLASSIFIER_HEADS = ("pooler", "linear", "electra")  # tanh(pooler) / plain Linear / ELECTRA's dense-GELU head
TOKEN_HEADS = ("prumux", "mux-plm-bert", "mux-plm-generic")


@dataclass
class EncoderConfig:
    """Shape of a (possibly pruned) BERT-family encoder: per-layer heads and FFN sizes, one hidden width."""

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
    embedding_size: int | None = None  # ELECTRA's smaller embeddings, projected to hidden_size; None = hidden_size
    positions: str = "absolute"

    def __post_init__(self) -> None:
        if len(self.num_heads) != len(self.intermediate_sizes):
            raise ValueError(
                f"num_heads has {len(self.num_heads)} layers but intermediate_sizes has {len(self.intermediate_sizes)}"
            )
        if self.hidden_size < 1 or self.head_dim < 1:
            raise ValueError(f"hidden_size and head_dim must be >= 1, got {self.hidden_size}, {self.head_dim}")
        if min(self.num_heads + self.intermediate_sizes, default=0) < 0:
            raise ValueError("per-layer head counts and FFN sizes must be >= 0")
        if self.positions not in POSITION_STYLES:
            raise ValueError(f"unknown position style {self.positions!r}; expected one of {', '.join(POSITION_STYLES)}")
        if self.embedding_size == self.hidden_size:
            self.embedding_size = None

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

    @property
    def embedding_width(self) -> int:
        """Width of the token embeddings (and of the multiplexer's vectors)."""
        return self.embedding_size or self.hidden_size

    @property
    def projects_embeddings(self) -> bool:
        """True when embeddings are narrower than the layers (ELECTRA-small) and a Linear maps them up."""
        return self.embedding_size is not None

    def is_uniform(self) -> bool:
        """True when all layers have the same head count and FFN size (needed for mask dicts)."""
        return len(set(self.num_heads)) <= 1 and len(set(self.intermediate_sizes)) <= 1

    def uniform_shape(self) -> list[int]:
        """[layers, hidden, heads, FFN] of an encoder whose layers all have the same shape."""
        if not self.is_uniform() or not self.num_layers:
            raise ValueError(
                "only an encoder whose layers all have the same shape has one [layers, hidden, heads, FFN]"
            )
        return [self.num_layers, self.hidden_size, self.num_heads[0], self.intermediate_sizes[0]]

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
    """A multiplexed classifier: encoder shape, width N, labels, layout, and the demux/head width."""

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    num_instances: int = 1
    num_labels: int = 2
    mux_norm: float = 1.0
    hidden_size: int = 768  # width of the demultiplexer and of the heads
    demux_layers: int = 1  # residual blocks of the per-instance classification demux
    classifier_head: str = "pooler"
    layout: str = "prumux"
    muxing_variant: str = "gaussian_hadamard"
    demuxing_variant: str = "index_pos"
    token_head: str = "prumux"
    cls_token_id: int | None = None  # MUX-BERT overwrites every row's first token with [CLS]
    label_names: list[str] | None = None  # index = label id, when known
    dense_shape: list[int] | None = None  # a pruned model's unpruned [layers, hidden, heads, FFN]; None = dense

    def __post_init__(self) -> None:
        if isinstance(self.num_instances, bool) or not isinstance(self.num_instances, int) or self.num_instances < 1:
            raise ValueError(f"num_instances (N) must be an integer >= 1, got {self.num_instances!r}")
        if self.num_labels < 1:
            raise ValueError(f"num_labels must be >= 1, got {self.num_labels}")
        if not self.mux_norm > 0:
            raise ValueError(f"mux_norm must be > 0, got {self.mux_norm}")
        for name, value, known in (
            ("layout", self.layout, LAYOUTS),
            ("muxing_variant", self.muxing_variant, MUXING_VARIANTS),
            ("demuxing_variant", self.demuxing_variant, DEMUXING_VARIANTS),
            ("classifier_head", self.classifier_head, CLASSIFIER_HEADS),
            ("token_head", self.token_head, TOKEN_HEADS),
        ):
            if value not in known:
                raise ValueError(f"unsupported {name} {value!r}; supported: {', '.join(known)}")
        if self.demux_layers < 0:
            raise ValueError(f"demux_layers must be >= 0, got {self.demux_layers}")
        if self.label_names is not None and len(self.label_names) != self.num_labels:
            raise ValueError(f"{len(self.label_names)} label names for {self.num_labels} labels")
        if (self.layout == "mux-plm") != (self.token_head != "prumux"):
            raise ValueError(f"token head {self.token_head!r} does not belong to layout {self.layout!r}")

    @property
    def is_reference_layout(self) -> bool:
        """True for the published MUX-PLM layout (second embedding pass, no attention mask, their demux)."""
        return self.layout == "mux-plm"

    @property
    def has_demultiplexer(self) -> bool:
        """MUX-PLM models demultiplex even at N = 1; ours only when N > 1."""
        return self.num_instances > 1 or self.is_reference_layout

    @property
    def head_input_size(self) -> int:
        """Width of the states the heads read: the demux output, or the encoder output without one."""
        return self.hidden_size if self.has_demultiplexer else self.encoder.hidden_size

    @property
    def demux_index_size(self) -> int:
        """Width of the demux index vectors: the encoder's in MUX-PLMs (pruned with it), the demux's in ours."""
        return self.encoder.hidden_size if self.is_reference_layout else self.hidden_size

    @property
    def realised_sparsity(self) -> float:
        """The fraction of its unpruned encoder's prunable parameters this model has removed (0 when dense)."""
        return realised_sparsity(self.encoder, self.dense_encoder())

    def dense_encoder(self) -> EncoderConfig:
        """The unpruned encoder this model was pruned from (itself when dense)."""
        if self.dense_shape is None:
            return self.encoder
        layers, hidden, heads, ffn = self.dense_shape
        return replace(self.encoder, hidden_size=hidden, num_heads=[heads] * layers, intermediate_sizes=[ffn] * layers)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["encoder"] = self.encoder.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PruMUXConfig:
        data = dict(data)
        data["encoder"] = EncoderConfig.from_dict(data["encoder"])
        if "pooler" in data:  # saved before classifier heads had names
            data["classifier_head"] = "pooler" if data.pop("pooler") else "linear"
        return cls(**data)


def prunable_parameters(encoder_config: EncoderConfig) -> int:
    """Attention q/k/v/o and FFN weights and biases of all layers (CoFi's count)."""
    hidden = encoder_config.hidden_size
    total = 0
    for heads, ffn in zip(encoder_config.num_heads, encoder_config.intermediate_sizes):
        inner = heads * encoder_config.head_dim
        if inner:
            total += 4 * hidden * inner + 3 * inner + hidden
        if ffn:
            total += 2 * hidden * ffn + ffn + hidden
    return total


def realised_sparsity(pruned: EncoderConfig, dense: EncoderConfig) -> float:
    """The fraction of ``dense``'s prunable parameters that the ``pruned`` shape has removed."""
    return 1 - prunable_parameters(pruned) / prunable_parameters(dense)
