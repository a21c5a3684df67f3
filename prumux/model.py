"""PruMUXModel: multiplexer -> compact BERT encoder -> demultiplexer -> classification / token heads.

One class, two layouts (`PruMUXConfig.layout`): ours, and the published MUX-PLM one, which
embeds the mix a second time, attends padding, ignores token types and uses MUX-PLMs'
demultiplexer and retrieval head (see `prumux.config`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from prumux.config import PruMUXConfig
from prumux.encoder import Encoder
from prumux.heads import RetrievalHead, TokenHead
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
    hidden_z: Tensor | None = None  # the hidden-dim mask the batch was encoded under


class PruMUXModel(nn.Module):
    """A multiplexed (width N), prunable BERT classifier with retrieval and MLM heads."""

    def __init__(self, config: PruMUXConfig, seed: int = 0):
        super().__init__()
        self.config = config
        enc = config.encoder
        reference = config.is_reference_layout
        self.encoder = Encoder(enc)
        self.multiplexer = Multiplexer(
            config.num_instances,
            enc.embedding_width,
            config.muxing_variant,
            config.mux_norm,
            seed,
            scale_single=reference,
        )
        self.demultiplexer = (
            Demultiplexer(
                config.num_instances,
                enc.hidden_size,
                config.hidden_size,
                config.demux_index_size,
                config.demux_layers,
                reference=reference,
                dropout=enc.hidden_dropout if reference else 0.0,
                eps=enc.layer_norm_eps,
            )
            if config.has_demultiplexer
            else None
        )
        head_input = config.head_input_size
        kind = config.classifier_head
        self.pooler = nn.Linear(head_input, config.hidden_size) if kind == "pooler" else None
        self.classifier_dense = nn.Linear(head_input, config.hidden_size) if kind == "electra" else None
        self.dropout = nn.Dropout(enc.hidden_dropout)
        self.classifier = nn.Linear(config.hidden_size if kind != "linear" else head_input, config.num_labels)
        if reference:
            self.token_head = RetrievalHead(
                config.demux_layers + 2,
                config.hidden_size,
                enc.vocab_size,
                enc.layer_norm_eps,
                generic=config.token_head == "mux-plm-generic",
            )
        else:
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
            # MUX-PLMs draw their index vectors with std 1; ours start small next to the encoder states.
            std = 1.0 if self.config.is_reference_layout else 0.02
            nn.init.normal_(self.demultiplexer.index, std=std, generator=generator)

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
        if self.demultiplexer is not None:
            cls = self.demultiplexer(cls, batch.hidden_z).flatten(0, 1)
        return PruMUXOutput(self.classify(cls[: batch.rows]), batch.hidden_states)

    def classify(self, states: Tensor) -> Tensor:
        """Logits from per-instance CLS states, through the configured classifier head."""
        if self.pooler is not None:
            states = torch.tanh(self.pooler(states))
        elif self.classifier_dense is not None:
            states = F.gelu(self.classifier_dense(self.dropout(states)))
        return self.classifier(self.dropout(states))

    def token_logits(
        self, input_ids: Tensor, attention_mask: Tensor | None = None, token_type_ids: Tensor | None = None
    ) -> Tensor:
        """[rows, L, vocab]: the retrieval / MLM head's logits for every instance row at every position."""
        batch = self.encode(input_ids, attention_mask, token_type_ids)
        rows, length = input_ids.shape
        row = torch.arange(rows, device=input_ids.device).repeat_interleave(length)
        position = torch.arange(length, device=input_ids.device).repeat(rows)
        n = self.num_instances
        logits = self._token_logits_at(batch, row // n, position, row % n)
        return logits.view(rows, length, -1)

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
        hidden_z = (masks or {}).get("hidden_z")
        rows, length = input_ids.shape
        token_mask = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
        if self.config.is_reference_layout:
            input_ids = self._reference_rows(input_ids)
            x = self.encoder.embed_mixed(self.embed_and_mix(input_ids, None, hidden_z), hidden_z)
        else:
            x = self.embed_and_mix(input_ids, token_type_ids, hidden_z)
            input_ids = self._pad_rows(input_ids, self.config.encoder.pad_token_id)
        token_mask = self._pad_rows(token_mask, False)  # dummy rows are never attended to nor predicted
        # MUX-PLMs attend every position, padding included.
        use_mask = attention_mask is not None and not self.config.is_reference_layout
        mixed_mask = self.multiplexer.mix_attention_mask(token_mask) if use_mask else None
        last, hidden_states = self.encoder.encode(x, mixed_mask, masks, output_hidden_states)
        return MixedBatch(last, hidden_states, input_ids, token_mask, rows, hidden_z)

    def _reference_rows(self, input_ids: Tensor) -> Tensor:
        """MUX-BERT's [CLS] overwrite (on a copy), and the last group filled with copies of its own real rows.

        The reference fills it with randomly chosen rows of the batch; copies of the group's
        rows keep the result deterministic and never mix rows of other groups into it.
        """
        if self.config.cls_token_id is not None:
            input_ids = input_ids.clone()
            input_ids[:, 0] = self.config.cls_token_id
        rows, n = input_ids.shape[0], self.num_instances
        dummies = -rows % n
        if not dummies:
            return input_ids
        start = rows - (n - dummies)
        copies = start + torch.arange(dummies, device=input_ids.device) % (rows - start)
        return torch.cat([input_ids, input_ids[copies]])

    def _pad_rows(self, rows: Tensor, value: int | bool) -> Tensor:
        """`rows` with rows of `value` appended up to a multiple of N."""
        dummies = -rows.shape[0] % self.num_instances
        return torch.cat([rows, rows.new_full((dummies, *rows.shape[1:]), value)]) if dummies else rows

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
        return self._token_loss(batch, group[keep], position[keep], instance[keep], targets[keep])

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
        return self._token_loss(batch, row // n, position, row % n, input_ids[row, position])

    def _token_loss(
        self, batch: MixedBatch, group: Tensor, position: Tensor, instance: Tensor, targets: Tensor
    ) -> Tensor:
        if targets.numel() == 0:
            return batch.last.sum() * 0.0
        return F.cross_entropy(self._token_logits_at(batch, group, position, instance), targets)

    def _token_logits_at(self, batch: MixedBatch, group: Tensor, position: Tensor, instance: Tensor) -> Tensor:
        """[M, vocab] token-head logits of instance `instance[m]` at (`group[m]`, `position[m]`) of the mix."""
        states = batch.last[group, position]
        if self.config.is_reference_layout:
            return self.token_head(
                self.demultiplexer.project_input(states, instance, batch.hidden_z), self.demultiplexer
            )
        if self.demultiplexer is not None:
            states = self.demultiplexer.select(states, instance)
        return self.token_head(states)

    # ------------------------------------------------------------------ loading and saving

    def set_mux_norm(self, norm: float) -> None:
        """Rescale the multiplexing vectors to L2 norm `norm` (kept in the config); ours only."""
        if self.config.is_reference_layout:
            raise ValueError("a published MUX-PLM model's mux vectors are used as stored; they cannot be rescaled")
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
        num_instances: int | None = None,
        num_labels: int | None = None,
        mux_norm: float = 1.0,
        seed: int = 0,
        muxing_variant: str = "gaussian_hadamard",
    ) -> PruMUXModel:
        """A model from a folder saved by `save_pretrained`, or from a HF checkpoint (hub id or folder).

        HF checkpoints: plain BERT / RoBERTa / ELECTRA bases (ours, N and labels as given, default
        1 and 2, new mux vectors of `muxing_variant` at `mux_norm`), CoFi's pruned models, and the
        published MUX-BERT / MUX-ELECTRA / PruMUX ones, whose N, labels and layout are read from
        the checkpoint (a contradicting argument is an error). A CoFi / PruMUX `zs.pt` beside
        full-size weights is folded in and pruned. A saved model of ours keeps its N, except that
        a dense (N = 1) classifier can start a multiplexed one: everything but the new
        multiplexer and demultiplexer is its own.
        """
        from prumux.checkpoints import load_checkpoint

        folder = Path(name_or_path)
        if (folder / CONFIG_FILE).is_file():
            return cls._load_saved(folder, num_instances, num_labels, mux_norm, seed, muxing_variant)
        loaded = load_checkpoint(name_or_path, num_instances, num_labels, mux_norm, muxing_variant)
        model = cls(loaded.config, seed)
        try:
            missing, unexpected = model.load_state_dict(loaded.fitting(model.state_dict()), strict=False)
        except RuntimeError as error:
            raise ValueError(f"{name_or_path}: weights do not fit config.json: {_first_mismatch(error)}") from None
        loaded.check_keys(missing, unexpected)
        if loaded.masks is not None:
            from prumux.pruning import prune

            model = prune(model, loaded.masks)
        return model

    @classmethod
    def _load_saved(
        cls, folder: Path, num_instances: int | None, num_labels: int | None, mux_norm: float, seed: int, variant: str
    ) -> PruMUXModel:
        from safetensors.torch import load_file

        config = PruMUXConfig.from_dict(json.loads((folder / CONFIG_FILE).read_text()))
        if num_labels is not None and num_labels != config.num_labels:
            raise ValueError(f"{folder} is a model with {config.num_labels} labels, not {num_labels}")
        state = load_file(str(folder / WEIGHTS_FILE))
        if num_instances is None or num_instances == config.num_instances:
            model = cls(config)
            model.load_state_dict(state, strict=True)
            return model
        if config.num_instances != 1 or config.is_reference_layout:
            raise ValueError(f"{folder} is a model with N = {config.num_instances}, not {num_instances}")
        return cls._widened(config, state, num_instances, mux_norm, seed, variant)

    @classmethod
    def _widened(
        cls, dense: PruMUXConfig, state: dict[str, Tensor], num_instances: int, mux_norm: float, seed: int, variant: str
    ) -> PruMUXModel:
        """A width-N model on a dense classifier's weights: new multiplexer and demultiplexer, its heads where they fit."""
        config = replace(dense, num_instances=num_instances, mux_norm=mux_norm, muxing_variant=variant)
        model = cls(config, seed)
        own = model.state_dict()
        kept = {key: value for key, value in state.items() if key in own and own[key].shape == value.shape}
        model.load_state_dict(kept, strict=False)
        return model


def _first_mismatch(error: RuntimeError) -> str:
    """The first 'size mismatch for ...' line of a load_state_dict error."""
    lines = [line.strip() for line in str(error).splitlines() if "size mismatch" in line]
    return (lines or [str(error).splitlines()[0]])[0]


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
