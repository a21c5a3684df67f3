"""Tokenised task splits and their batches, grouped by the multiplexing width N.

A training batch of `batch_size` mixed sequences holds `batch_size * N` instance rows; the
model mixes consecutive groups of N rows. The training order is a fixed function of
(seed, step): every epoch is a seeded permutation and batch k is rows k*R..(k+1)*R of
their concatenation, so a resumed job sees exactly the batches the uninterrupted one would.
Batches are trimmed to their longest row, which keeps training cheap on short texts.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields

import pandas as pd
import torch
from torch import Tensor

from trainers.models import tokenize
from trainers.recipes import Recipe
from trainers.tasks import TaskData


@dataclass(frozen=True)
class Batch:
    """Instance rows: token ids, attention and token-type masks [rows, length], labels [rows]."""

    input_ids: Tensor
    attention_mask: Tensor
    token_type_ids: Tensor
    labels: Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device: torch.device | str) -> Batch:
        return Batch(*(getattr(self, item.name).to(device) for item in fields(self)))

    def inputs(self) -> dict[str, Tensor]:
        """The model's keyword inputs."""
        return {
            "input_ids": self.input_ids,
            "attention_mask": self.attention_mask,
            "token_type_ids": self.token_type_ids,
        }


@dataclass(frozen=True)
class EncodedSplit:
    """A whole tokenised split, padded to the recipe's length."""

    input_ids: Tensor
    attention_mask: Tensor
    token_type_ids: Tensor
    labels: Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def rows(self, index: Tensor) -> Batch:
        """The rows at `index`, trimmed to the longest of them."""
        length = int(self.attention_mask[index].sum(dim=1).max())
        return Batch(
            self.input_ids[index, :length],
            self.attention_mask[index, :length],
            self.token_type_ids[index, :length],
            self.labels[index],
        )

    def head(self, count: int | None) -> EncodedSplit:
        """The first `count` rows (all when None)."""
        return EncodedSplit(*(getattr(self, item.name)[:count] for item in fields(self)))


@dataclass(frozen=True)
class EncodedTask:
    """The tokenised splits of a task, sampled and capped as the recipe says."""

    train: EncodedSplit
    validation: EncodedSplit
    test: EncodedSplit


def encode_task(data: TaskData, tokenizer, recipe: Recipe) -> EncodedTask:
    """Tokenise the task's splits: a seeded sample of `max_train_examples` training rows, eval splits capped."""
    caps = {
        "train": recipe.max_train_examples,
        "validation": recipe.max_eval_examples,
        "test": recipe.max_eval_examples,
    }
    encoded = {}
    for name, frame in data.splits().items():
        if frame.empty:
            raise ValueError(f"task {data.spec.name!r} has an empty {name} split")
        encoded[name] = encode_frame(_sample(frame, caps[name], recipe.seed), tokenizer, recipe.seq_len)
    return EncodedTask(**encoded)


def encode_frame(frame: pd.DataFrame, tokenizer, seq_len: int) -> EncodedSplit:
    """Tokenise one split (columns text, optional text_pair, label)."""
    tokens = tokenize(tokenizer, frame, max_length=seq_len)
    labels = torch.tensor(frame["label"].tolist(), dtype=torch.long)
    return EncodedSplit(tokens["input_ids"], tokens["attention_mask"], tokens["token_type_ids"], labels)


class BatchStream:
    """Endless seeded batches of `rows` instance rows from a split; batch k depends only on (seed, k)."""

    def __init__(self, split: EncodedSplit, rows: int, seed: int):
        if rows < 1:
            raise ValueError(f"a batch needs at least one row, got {rows}")
        self.split, self.rows, self.seed = split, rows, seed
        self._permutations: dict[int, Tensor] = {}

    def batch(self, step: int) -> Batch:
        positions = torch.arange(step * self.rows, (step + 1) * self.rows)
        size = len(self.split)
        epochs = positions // size
        index = torch.empty_like(positions)
        for epoch in epochs.unique().tolist():
            chosen = epochs == epoch
            index[chosen] = self._permutation(epoch)[positions[chosen] % size]
        return self.split.rows(index)

    def epoch(self, step: int) -> float:
        """Epochs completed before batch `step`."""
        return step * self.rows / len(self.split)

    def _permutation(self, epoch: int) -> Tensor:
        if epoch not in self._permutations:
            # Steps move forwards, so only the previous epoch can still be asked for.
            self._permutations = {kept: p for kept, p in self._permutations.items() if kept >= epoch - 1}
            self._permutations[epoch] = self._make_permutation(epoch)
        return self._permutations[epoch]

    def _make_permutation(self, epoch: int) -> Tensor:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(len(self.split), generator=generator)


def eval_batches(split: EncodedSplit, rows: int) -> Iterator[Batch]:
    """The split in order, `rows` at a time (the last batch may be smaller)."""
    for start in range(0, len(split), rows):
        yield split.rows(torch.arange(start, min(start + rows, len(split))))


def _sample(frame: pd.DataFrame, count: int | None, seed: int) -> pd.DataFrame:
    if count is None or count >= len(frame):
        return frame
    return frame.sample(n=count, random_state=seed)
