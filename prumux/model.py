"""PruMUXModel: multiplexer -> compact BERT encoder -> demultiplexer -> classification / token heads."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from prumux.config import PruMUXConfig
from prumux.encoder import Encoder, load_hf_checkpoint
from prumux.mux import Demultiplexer, Multiplexer

CONFIG_FILE = "prumux_config.json"
WEIGHTS_FILE = "model.safetensors"
MIX_CHUNK_BYTES = 2 << 20  # CPU: per-instance embeddings mixed per chunk of about this size per thread (L2)


@dataclass
class PruMUXOutput:
    """Logits [rows, C], one per input row; hidden states of the mixed stream when asked for."""

    logits: Tensor
    hidden_states: list[Tensor] | None = None


@dataclass
class MixedBatch:
    """An encoded batch: encoder output of the mixed stream and the padded instance rows."""

    last: Tensor  # [groups, L, H]
    hidden_states: list[Tensor] | None
    input_ids: Tensor  # [groups * N, L], padded with dummy rows
    token_mask: Tensor  # [groups * N, L] bool: real tokens of real rows
    rows: int


class TokenHead(nn.Module):
    """BERT-style token prediction head: dense -> GELU -> LayerNorm -> vocabulary logits."""

    def __init__(self, input_size: int, hidden_size: int, vocab_size: int, eps: float):
        super().__init__()
        self.dense = nn.Linear(input_size, hidden_size)
        self.norm = nn.LayerNorm(hidden_size, eps=eps)
        self.decoder = nn.Linear(hidden_size, vocab_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.decoder(self.norm(F.gelu(self.dense(x))))


class PruMUXModel(nn.Module):
    """A multiplexed (width N), prunable BERT classifier with retrieval and MLM heads."""

    def __init__(self, config: PruMUXConfig, seed: int = 0):
        super().__init__()
        self.config = config
        enc = config.encoder
        self.encoder = Encoder(enc)
        self.multiplexer = Multiplexer(config.num_instances, enc.hidden_size, config.mux_norm, seed)
        self.demultiplexer = (
            Demultiplexer(
                config.num_instances, enc.hidden_size, config.hidden_size, config.demux_layers, enc.layer_norm_eps
            )
            if config.num_instances > 1
            else None
        )
        head_input = config.head_input_size
        self.pooler = nn.Linear(head_input, config.hidden_size) if config.pooler else None
        self.dropout = nn.Dropout(enc.hidden_dropout)
        self.classifier = nn.Linear(config.hidden_size if config.pooler else head_input, config.num_labels)
        self.token_head = TokenHead(head_input, config.hidden_size, enc.vocab_size, enc.layer_norm_eps)
        self._init_weights(seed)

    def _init_weights(self, seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.02, generator=generator)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=0.02, generator=generator)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        if self.demultiplexer is not None:
            nn.init.normal_(self.demultiplexer.index, std=0.02, generator=generator)

    @property
    def num_instances(self) -> int:
        return self.config.num_instances

    # ------------------------------------------------------------------ forward passes

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        masks: dict[str, Tensor] | None = None,
        output_hidden_states: bool = False,
    ) -> PruMUXOutput:
        """Classify every input row; rows are grouped by N in order, the last group padded with dummies."""
        batch = self.encode(input_ids, attention_mask, token_type_ids, masks, output_hidden_states)
        cls = batch.last[:, 0]
        states = cls if self.demultiplexer is None else self.demultiplexer(cls).flatten(0, 1)
        return PruMUXOutput(self.classify(states[: batch.rows]), batch.hidden_states)

    def classify(self, states: Tensor) -> Tensor:
        """Logits from per-instance CLS states (pooler when the checkpoint has one, then classifier)."""
        if self.pooler is not None:
            states = torch.tanh(self.pooler(states))
        return self.classifier(self.dropout(states))

    def encode(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        masks: dict[str, Tensor] | None = None,
        output_hidden_states: bool = False,
    ) -> MixedBatch:
        """Embed the instance rows, multiplex them in groups of N and run the encoder."""
        if input_ids.dim() != 2 or input_ids.shape[0] == 0:
            raise ValueError(f"input_ids must be [rows, length] with rows >= 1, got shape {tuple(input_ids.shape)}")
        if masks:
            self.config.encoder.check_masks(masks)
        rows, length = input_ids.shape
        dummies = -rows % self.num_instances
        x = self.embed_and_mix(input_ids, token_type_ids, (masks or {}).get("hidden_z"))
        token_mask = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
        if dummies:
            # Dummy rows (zero embeddings in the mix) attend nowhere.
            input_ids = torch.cat([input_ids, input_ids.new_full((dummies, length), self.config.encoder.pad_token_id)])
            token_mask = torch.cat([token_mask, token_mask.new_zeros(dummies, length)])
        mixed_mask = None if attention_mask is None else self.multiplexer.mix_attention_mask(token_mask)
        last, hidden_states = self.encoder.encode(x, mixed_mask, masks, output_hidden_states)
        return MixedBatch(last, hidden_states, input_ids, token_mask, rows)

    def embed_and_mix(
        self, input_ids: Tensor, token_type_ids: Tensor | None = None, hidden_z: Tensor | None = None
    ) -> Tensor:
        """[rows, L] instance ids -> [ceil(rows / N), L, H] mixed embeddings; zero dummy rows fill the last group.

        The rows go through in chunks of whole groups (`mix_chunk_rows`), so the per-instance
        embeddings, N times the size of the mixed stream, are never all materialised at once.
        """
        step = self.mix_chunk_rows(input_ids)
        mixed = [
            self.multiplexer(self._fill_group(self.encoder.embeddings(ids, types, hidden_z)))
            for ids, types in _row_chunks(step, input_ids, token_type_ids)
        ]
        return mixed[0] if len(mixed) == 1 else torch.cat(mixed)

    def mix_chunk_rows(self, input_ids: Tensor) -> int:
        """Rows embedded and mixed at a time: whole groups of about MIX_CHUNK_BYTES per thread on CPU, else all rows.

        On CPU a chunk stays in cache, and large fresh tensors would page-fault on every batch;
        on accelerators one launch per op is cheaper.
        """
        rows, length = input_ids.shape
        if input_ids.device.type != "cpu":
            return rows
        weight = self.encoder.embeddings.word.weight
        group_bytes = self.num_instances * length * weight.shape[1] * weight.element_size()
        return max(1, MIX_CHUNK_BYTES * torch.get_num_threads() // group_bytes) * self.num_instances

    def _fill_group(self, x: Tensor) -> Tensor:
        """Append zero rows up to a multiple of N."""
        dummies = -x.shape[0] % self.num_instances
        return torch.cat([x, x.new_zeros(dummies, *x.shape[1:])]) if dummies else x

    # ------------------------------------------------------------------ token-level losses

    def retrieval_loss(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        ignore_token_ids: Iterable[int] = (),
        masks: dict[str, Tensor] | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Token retrieval: per mixed position a random instance; CE of that instance's token there."""
        batch = self.encode(input_ids, attention_mask, token_type_ids, masks)
        groups, length = batch.last.shape[:2]
        n = self.num_instances
        instance = torch.randint(n, (groups, length), generator=generator).to(input_ids.device)
        position = torch.arange(length, device=input_ids.device).expand(groups, length)
        group = torch.arange(groups, device=input_ids.device)[:, None].expand(groups, length)
        row = group * n + instance
        targets = batch.input_ids[row, position]
        keep = batch.token_mask[row, position] & ~_is_any(targets, ignore_token_ids)
        return self._token_loss(batch.last, group[keep], position[keep], instance[keep], targets[keep])

    def mlm_loss(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        mask_token_id: int = 103,
        ignore_token_ids: Iterable[int] = (),
        mlm_probability: float = 0.15,
        masks: dict[str, Tensor] | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Masked language modelling on every instance (BERT's 80/10/10 corruption), through the demux."""
        if not 0 < mlm_probability < 1:
            raise ValueError(f"mlm_probability must be in (0, 1), got {mlm_probability}")
        real = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
        candidates = real & ~_is_any(input_ids, ignore_token_ids)
        draws = torch.rand((3, *input_ids.shape), generator=generator).to(input_ids.device)
        chosen = candidates & (draws[0] < mlm_probability)
        random_tokens = torch.randint(self.config.encoder.vocab_size, input_ids.shape, generator=generator).to(
            input_ids.device
        )
        corrupted = torch.where(chosen & (draws[1] < 0.8), mask_token_id, input_ids)
        corrupted = torch.where(chosen & (draws[1] >= 0.8) & (draws[2] < 0.5), random_tokens, corrupted)
        batch = self.encode(corrupted, attention_mask, token_type_ids, masks)
        row, position = chosen.nonzero(as_tuple=True)
        n = self.num_instances
        return self._token_loss(batch.last, row // n, position, row % n, input_ids[row, position])

    def _token_loss(self, last: Tensor, group: Tensor, position: Tensor, instance: Tensor, targets: Tensor) -> Tensor:
        states = last[group, position]
        if self.demultiplexer is not None:
            states = self.demultiplexer.select(states, instance)
        if targets.numel() == 0:
            return last.sum() * 0.0
        return F.cross_entropy(self.token_head(states), targets)

    # ------------------------------------------------------------------ loading and saving

    def set_mux_norm(self, norm: float) -> None:
        """Rescale the multiplexing vectors to L2 norm `norm` (kept in the config)."""
        self.multiplexer.set_norm(norm)
        self.config.mux_norm = float(norm)

    def save_pretrained(self, directory: str | Path) -> None:
        """Write model.safetensors and prumux_config.json (every layer's shape) into `directory`."""
        from safetensors.torch import save_file

        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        state = {key: value.detach().contiguous().cpu() for key, value in self.state_dict().items()}
        save_file(state, str(folder / WEIGHTS_FILE))
        (folder / CONFIG_FILE).write_text(json.dumps(self.config.to_dict(), indent=2))

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        num_instances: int = 1,
        num_labels: int = 2,
        mux_norm: float = 1.0,
        seed: int = 0,
    ) -> PruMUXModel:
        """A model on a HF BERT checkpoint, or a folder saved by `save_pretrained` (stored N, labels, shapes win)."""
        folder = Path(name_or_path)
        if (folder / CONFIG_FILE).is_file():
            return cls._load_saved(folder)
        encoder_config, state = load_hf_checkpoint(name_or_path)
        config = PruMUXConfig(
            encoder=encoder_config,
            num_instances=num_instances,
            num_labels=num_labels,
            mux_norm=mux_norm,
            hidden_size=encoder_config.hidden_size,
            pooler="pooler.dense.weight" in state,
        )
        model = cls(config, seed)
        model.encoder.load_hf_state_dict(state)
        model._load_hf_heads(state)
        return model

    @classmethod
    def _load_saved(cls, folder: Path) -> PruMUXModel:
        from safetensors.torch import load_file

        config = PruMUXConfig.from_dict(json.loads((folder / CONFIG_FILE).read_text()))
        model = cls(config)
        model.load_state_dict(load_file(str(folder / WEIGHTS_FILE)), strict=True)
        return model

    @torch.no_grad()
    def _load_hf_heads(self, state: dict[str, Tensor]) -> None:
        """Pooler and MLM head weights from the checkpoint where it has them; decoder tied-copy of embeddings."""
        if self.pooler is not None:
            self.pooler.weight.copy_(state["pooler.dense.weight"])
            self.pooler.bias.copy_(state["pooler.dense.bias"])
        prefix = "cls.predictions."
        head = self.token_head
        pairs = {
            "transform.dense.weight": head.dense.weight,
            "transform.dense.bias": head.dense.bias,
            "transform.LayerNorm.weight": head.norm.weight,
            "transform.LayerNorm.bias": head.norm.bias,
            "bias": head.decoder.bias,
        }
        for key, parameter in pairs.items():
            if prefix + key in state:
                parameter.copy_(state[prefix + key])
        head.decoder.weight.copy_(state.get(prefix + "decoder.weight", self.encoder.embeddings.word.weight))


def _row_chunks(step: int, input_ids: Tensor, token_type_ids: Tensor | None) -> list[tuple[Tensor, Tensor | None]]:
    """input_ids and token_type_ids (or None) cut into chunks of `step` rows."""
    ids = input_ids.split(step)
    types = [None] * len(ids) if token_type_ids is None else token_type_ids.split(step)
    return list(zip(ids, types))


def _is_any(ids: Tensor, token_ids: Iterable[int]) -> Tensor:
    """Boolean tensor: where `ids` equals one of `token_ids`."""
    token_ids = list(token_ids)
    if not token_ids:
        return torch.zeros_like(ids, dtype=torch.bool)
    return torch.isin(ids, torch.tensor(token_ids, device=ids.device))
