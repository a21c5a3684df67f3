"""GLUE tasks from the Hugging Face hub (`nyu-mll/glue`): sst2, mnli, qnli, qqp.

Label names and their order are read from the hub dataset's ClassLabel feature, never
written here: a label-order mix-up is what broke CoFi's MNLI results. GLUE's test labels
are hidden, so: validation = the hub validation split (validation_matched for MNLI), and
test = a seeded held-out part of the hub train split, as large as the validation split;
train = the rest of the hub train split.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from trainers.hub import hub_errors
from trainers.tasks.spec import TaskData, TaskSpec

GLUE_REPO = "nyu-mll/glue"
# task -> (text column, text_pair column or None, validation split)
_LAYOUT: dict[str, tuple[str, str | None, str]] = {
    "sst2": ("sentence", None, "validation"),
    "mnli": ("premise", "hypothesis", "validation_matched"),
    "qnli": ("question", "sentence", "validation"),
    "qqp": ("question1", "question2", "validation"),
}
_DESCRIPTIONS = {
    "sst2": "GLUE SST-2 movie-review sentiment",
    "mnli": "GLUE MNLI natural language inference (matched validation)",
    "qnli": "GLUE QNLI question / answer-sentence entailment",
    "qqp": "GLUE QQP Quora question-pair paraphrase",
}

GLUE_TASKS: dict[str, TaskSpec] = {
    name: TaskSpec(
        name=name,
        label_names=(),
        is_pair=pair is not None,
        description=_DESCRIPTIONS[name],
        source=f"hub {GLUE_REPO} {name}",
        offline=False,
    )
    for name, (_, pair, _) in _LAYOUT.items()
}


def load_glue(name: str, seed: int, alternatives: str) -> TaskData:
    """Load GLUE task `name`; a one-line ValueError naming `alternatives` if the hub cannot be reached."""
    text, pair, validation_split = _LAYOUT[name]
    with hub_errors(f"GLUE task {name!r}", alternatives):
        import datasets

        dataset = datasets.load_dataset(GLUE_REPO, name)
    spec = dataclasses.replace(GLUE_TASKS[name], label_names=tuple(dataset["train"].features["label"].names))
    train = _frame(dataset["train"].to_pandas(), text, pair)
    validation = _frame(dataset[validation_split].to_pandas(), text, pair)
    held_out = np.random.default_rng(seed).permutation(len(train))
    test_rows, train_rows = held_out[: len(validation)], np.sort(held_out[len(validation) :])
    return TaskData(
        spec,
        train.iloc[train_rows].reset_index(drop=True),
        validation,
        train.iloc[test_rows].reset_index(drop=True),
    )


def _frame(rows: pd.DataFrame, text: str, pair: str | None) -> pd.DataFrame:
    columns = {"text": rows[text]}
    if pair:
        columns["text_pair"] = rows[pair]
    columns["label"] = rows["label"].astype("int64")
    return pd.DataFrame(columns)
