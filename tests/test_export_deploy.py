"""A deployable export: `prumux-search export` writes the ONNX graph (contract and digests in serving.json)
and the code plain transformers loads the folder with; the folder then serves on every runtime.

Offline, on a random tiny model at N = 2: transformers (in a process where our packages cannot be
imported) gives our logits and labels, through the auto class and the pipeline, for 1, N + 1 and 7
texts; ONNX Runtime gives our logits; a graph that no longer matches its weights, and a runtime whose
package is missing, are refused in one line before Ray starts.
"""

from __future__ import annotations

import ast
import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch

from cli.main import main
from prumux import PruMUXModel
from servable import GRAPH_FILE, read_servable
from servable.remote_code import ENTRY_FILE, OURS
from storage import default_url, open_study

N = 2
SEQ_LEN = 16
TEXTS = [
    "a fine film",
    "dull and far too long",
    "the actors were great",
    "boring",
    "what a waste of an evening",
    "superb, moving and funny",
    "it was fine",
]
POINTS = "N,s,accuracy,throughput\n1,0,0.90,100\n2,0,0.89,190\n"
OUR_PACKAGES = (
    "cli",
    "dashboards",
    "prumux",
    "replay",
    "search",
    "servable",
    "serving",
    "storage",
    "trainers",
    "tuning",
)

# Runs in a fresh process in which none of our packages can be imported, as on a user's machine.
TRANSFORMERS_SCRIPT = """
import importlib.abc, json, sys
class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {packages!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}")
sys.meta_path.insert(0, Refuse())
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline
folder, texts = sys.argv[1], json.loads(sys.argv[2])
model = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True)
tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
batch = tokenizer(texts, padding="max_length", truncation=True, max_length={seq_len}, return_tensors="pt")
with torch.no_grad():
    logits = model(**batch).logits.tolist()
classify = pipeline("text-classification", model=folder, trust_remote_code=True)
answers = {{count: classify(texts[:count]) for count in (1, {n} + 1, len(texts))}}
print(json.dumps({{"logits": logits, "pipeline": answers, "single": classify(texts[0])}}))
"""


def run(*args: str) -> tuple[int, str, str]:
    """`prumux-search ARGS` in this process: exit status, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(list(args))
            code = 0
        except SystemExit as stop:
            code = stop.code or 0
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, tiny_bert_dir: Path) -> tuple[Path, str]:
    """A study trial at (N, 0) with a saved model, exported by `prumux-search export`; (folder, its output)."""
    root = tmp_path_factory.mktemp("deploy")
    (root / "points.csv").write_text(POINTS)
    code, _, err = run("import", "--run-dir", str(root), "--points", str(root / "points.csv"), "--budget", "0.03")
    assert code == 0, err
    model_dir = root / "trained"
    PruMUXModel.from_pretrained(tiny_bert_dir, num_instances=N, num_labels=2, seed=3).save_pretrained(model_dir)
    study = open_study(default_url(root), "prumux")
    imported = next(trial for trial in study.trials if trial.params["N"] == N)
    attrs = {"task": "rt-polarity", "base_model": str(tiny_bert_dir), "recipe_values": {"seq_len": SEQ_LEN}}
    study.add_trial(
        optuna.trial.create_trial(
            params=imported.params,
            distributions=imported.distributions,
            values=imported.values,
            user_attrs={**imported.user_attrs, **attrs, "model_dir": str(model_dir)},
            system_attrs=imported.system_attrs,
        )
    )
    out = root / "exported"
    code, stdout, err = run(
        "export", "--run-dir", str(root), "--trial", str(study.trials[-1].number), "--out", str(out)
    )
    assert code == 0, err
    return out, stdout


def ours(folder: Path, texts: list[str]) -> torch.Tensor:
    """Our model's logits for ``texts`` in one call, tokenised as served."""
    from serving.model import ServedModel

    encoded, _ = ServedModel(folder).encode(texts)
    with torch.no_grad():
        return PruMUXModel.from_pretrained(folder).eval()(**encoded).logits


def test_export_writes_the_graph_with_its_contract_and_says_so(exported: tuple[Path, str]) -> None:
    folder, stdout = exported
    spec = read_servable(folder)
    graph = spec.onnx
    assert graph is not None and (folder / graph["file"]).is_file() and graph["file"] == GRAPH_FILE
    assert graph["inputs"] == ["input_ids", "attention_mask", "token_type_ids"] and graph["opset"] >= 18
    assert (graph["N"], graph["seq_len"], graph["padding_rows"]) == (N, SEQ_LEN, "masked")
    assert len(graph["weights_sha256"]) == len(graph["graph_sha256"]) == 64
    lines = stdout.strip().splitlines()
    assert lines[0].startswith("exported trial") and f"ONNX graph {GRAPH_FILE} (opset {graph['opset']})" in lines[1]
    card = (folder / "README.md").read_text()
    assert "trust_remote_code=True" in card and "onnxruntime.InferenceSession" in card and "one tenant" in card


def test_the_remote_code_is_self_contained(exported: tuple[Path, str]) -> None:
    folder, _ = exported
    config = json.loads((folder / "config.json").read_text())
    modules = {path.stem for path in folder.glob("*.py")}
    assert config["auto_map"]["AutoModelForSequenceClassification"].split(".")[0] == ENTRY_FILE in modules
    for path in folder.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                assert node.module in modules, (path.name, node.module)
            names = [node.module] if isinstance(node, ast.ImportFrom) and not node.level else []
            names += [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            assert not any(name.split(".")[0] in OURS for name in names if name), (path.name, names)


def test_plain_transformers_gives_our_logits_and_labels(exported: tuple[Path, str], tmp_path: Path) -> None:
    folder, _ = exported
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    env.pop("PYTHONPATH", None)
    script = TRANSFORMERS_SCRIPT.format(packages=OUR_PACKAGES, seq_len=SEQ_LEN, n=N)
    done = subprocess.run(
        [sys.executable, "-c", script, str(folder), json.dumps(TEXTS)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    expected = ours(folder, TEXTS)
    assert (torch.tensor(answer["logits"]) - expected).abs().max() < 1e-4
    names = read_servable(folder).label_names
    for count, results in answer["pipeline"].items():
        logits = ours(folder, TEXTS[: int(count)])
        scores = logits.softmax(-1)
        assert [result["label"] for result in results] == [names[index] for index in logits.argmax(-1)], count
        assert [result["score"] for result in results] == pytest.approx(scores.max(-1).values.tolist(), abs=1e-4)
    assert answer["single"] == answer["pipeline"]["1"]


def test_every_runtime_serves_the_models_probabilities(exported: tuple[Path, str]) -> None:
    from prumux.inference import OnnxRunner
    from serving.model import ServedModel

    folder, _ = exported
    expected = ours(folder, TEXTS)
    encoded, _ = ServedModel(folder).encode(TEXTS)
    graph = OnnxRunner(folder / GRAPH_FILE)(**encoded)
    assert (graph - expected).abs().max() < 1e-4
    for runtime in ("eager", "torch", "onnx", "auto"):
        served = ServedModel(folder, "cpu", runtime)
        scores, _ = served.probabilities(TEXTS)
        assert (scores - expected.softmax(-1)).abs().max() < 1e-4, runtime


def test_a_graph_that_does_not_match_its_weights_is_refused(
    exported: tuple[Path, str], run_main, tmp_path: Path
) -> None:
    folder, _ = exported
    retrained = tmp_path / "retrained"
    shutil.copytree(folder, retrained)
    model = PruMUXModel.from_pretrained(retrained)
    with torch.no_grad():
        model.classifier.bias.add_(1.0)
    model.save_pretrained(retrained)  # new weights beside the old graph
    swapped = tmp_path / "swapped"
    shutil.copytree(folder, swapped)
    (swapped / GRAPH_FILE).write_bytes((swapped / GRAPH_FILE).read_bytes() + b"\0")
    cases = {
        retrained: "was not exported from",
        swapped: "is not the graph exported with these weights",
    }
    for where, message in cases.items():
        for runtime in ("onnx", "eager"):
            code, out, err = run_main("serve", "--model", str(where), "--runtime", runtime)
            assert code == 2, (where, runtime, out, err)
            assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1, err


def test_a_runtime_without_its_package_is_refused_naming_the_extra(exported: tuple[Path, str], tmp_path: Path) -> None:
    folder, _ = exported
    script = (
        "import importlib.abc, sys\n"
        "class Refuse(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'onnxruntime':\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}')\n"
        "sys.meta_path.insert(0, Refuse())\n"
        "from cli.main import main\n"
        "main()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, "serve", "--model", str(folder), "--runtime", "onnx"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert "onnxruntime" in lines[0] and "prumux-search[onnx]" in lines[0], lines
