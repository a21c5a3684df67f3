"""Bad input to every command: one line `error: ...` on stderr, exit status 2, no traceback,
and the study database byte-identical before and after (nothing created where none was).

The commands run in this process through the real entry point (`cli.main.main`), which is
what the installed `prumux-search` calls; `test_bad_input_in_a_fresh_process` runs a few
cases as a user would, in a subprocess, and `test_unwritable_run_dir` runs one without the
privilege that lets root write anywhere.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cli.main import main
from trainers.recipes import RECIPES

from conftest import REPO, client_env

GRID = ["--grid-n", "1,2", "--grid-s", "0,0.5", "--budget", "0.03"]
POINTS = "N,s,accuracy,throughput\n1,0,0.90,100\n1,0.5,0.88,180\n2,0,0.86,190\n2,0.5,0.85,300\n"
CSV_FILES = {
    "points.csv": POINTS,
    "missing.csv": "N,s,accuracy\n1,0,0.9\n",
    "nan.csv": POINTS + "2,0.7,,5.0\n",
    "duplicate.csv": POINTS + "2,0.5,0.87,4.0\n",
    "fractional.csv": POINTS + "2.5,0.5,0.87,4.0\n",
    "outside.csv": "N,s,accuracy,throughput\n3,0,0.8,100\n",
    "empty.csv": "",
    "no-dense.csv": POINTS.replace("1,0,0.90,100\n", ""),
    "partial.csv": POINTS + "5,0,0.86,4.9\n",
}
REVIEWS = "text,label\n" + "".join(f"review {i},{'pos' if i % 2 else 'neg'}\n" for i in range(40))
TASK_FILES = {
    "reviews.csv": REVIEWS,
    "reviews.xlsx": REVIEWS,
    "empty.csv": "",
    "header.csv": "text,label\n",
    "one-row.csv": "text,label\na fine film,pos\n",
    "one-label.csv": "text,label\n" + "a fine film,pos\n" * 30,
    "no-text.csv": REVIEWS.replace("text,label", "sentence,label"),
    "long-line.csv": "x" * 10_000_000,
    "unseen/train.csv": REVIEWS,
    "unseen/validation.csv": "text,label\na strange film,meh\n",
}
LATIN1 = "text,label\n" + "un film épatant,pos\nun navet,neg\n" * 10
RECIPE_CHANGES = {
    "unknown-field.json": {"prune_step": 3},
    "wrong-type.json": {"prune_steps": "many"},
    "negative-steps.json": {"prune_steps": -5},
}
UNREACHABLE = "postgresql+psycopg2://postgres:s3cret@127.0.0.1:9/test"
STUDY = ["--run-dir", "{run}"]
TRAIN = ["train", "--model", "{model}", "--recipe", "smoke", "--task", "rt-polarity", "--workdir", "{run}/work"]
START = ["start", *STUDY, *GRID, "--recipe", "smoke", "--model", "{model}"]
REMOTE = [
    "submit",
    "--address",
    "http://10.1.2.3:8265",
    "--storage",
    "postgresql://postgres@10.1.2.3:5432/x",
    "--run-dir",
    "/shared/run",
]

CASES = {
    # start: the search definition, options and storage
    "budget below 0": (["start", *STUDY, *GRID[:4], "--budget", "-0.1"], "budget must be an accuracy loss in [0, 1]"),
    "budget above 1": (["start", *STUDY, *GRID[:4], "--budget", "1.5"], "budget must be an accuracy loss in [0, 1]"),
    "grid N not a number": (["start", *STUDY, "--grid-n", "1,x", "--grid-s", "0,0.5"], "grid N: not a number"),
    "grid N zero": (
        ["start", *STUDY, "--grid-n", "0,1", "--grid-s", "0,0.5"],
        "grid N values must be positive integers",
    ),
    "grid N fractional": (
        ["start", *STUDY, "--grid-n", "1,2.5", "--grid-s", "0"],
        "grid N values must be positive integers",
    ),
    "grid s out of range": (
        ["start", *STUDY, "--grid-n", "1,2", "--grid-s", "0,1.5"],
        "grid s values must lie in [0, 1)",
    ),
    "grid s negative": (["start", *STUDY, "--grid-n", "1,2", "--grid-s", "-0.1,0"], "grid s values must lie in [0, 1)"),
    "grid repeated": (["start", *STUDY, "--grid-n", "1,1", "--grid-s", "0"], "repeated values"),
    "grid empty": (["start", *STUDY, "--grid-n", "", "--grid-s", "0"], "grid"),
    "grid without dense": (
        ["start", *STUDY, "--grid-n", "2,5", "--grid-s", "0,0.5"],
        "grid must contain the dense point",
    ),
    "unknown task": (["start", *STUDY, *GRID, "--task", "no-such-task"], "unknown task 'no-such-task'"),
    "unknown model": (
        ["start", *STUDY, *GRID, "--model", "no-such-model"],
        "base model 'no-such-model' is not available",
    ),
    "unknown recipe": (["start", *STUDY, *GRID, "--recipe", "no-such-recipe"], "recipe"),
    "unknown recipe field": (["start", *STUDY, *GRID, "--recipe", "smoke", "--set", "bogus=1"], "unknown recipe field"),
    "sweep of an unknown field": (
        ["start", *STUDY, *GRID, "--recipe", "smoke", "--set", 'sweep={{"finetune_rl": [0.001]}}'],
        "recipe field sweep: unknown field finetune_rl (did you mean finetune_lr?)",
    ),
    "sweep of no values": (
        ["start", *STUDY, *GRID, "--recipe", "smoke", "--set", 'sweep={{"finetune_lr": []}}'],
        "recipe field sweep: finetune_lr needs a non-empty list of values",
    ),
    "max trials 0": (
        ["start", *STUDY, *GRID, "--model", "{model}", "--max-trials", "0"],
        "max trials must be positive",
    ),
    "concurrency 0": (
        ["start", *STUDY, *GRID, "--model", "{model}", "--concurrency", "0"],
        "concurrency must be positive",
    ),
    "other settings": (["start", *STUDY, *GRID[:4], "--budget", "0.05"], "was created with other settings"),
    "malformed storage": (["start", *STUDY, *GRID, "--storage", "not a url"], "malformed storage URL"),
    "unsupported storage": (["start", *STUDY, *GRID, "--storage", "nodb+x://a/b"], "storage URL"),
    "unreachable storage": (
        ["start", *STUDY, *GRID, "--model", "{model}", "--storage", UNREACHABLE],
        "cannot open storage",
    ),
    "URI run dir without storage": (["start", "--run-dir", "s3://bucket/run", *GRID], "give --storage URL"),
    "URI run dir with a secret": (
        [
            "start",
            "--run-dir",
            "s3://b/run?secret_key=x",
            "--storage",
            "sqlite:///{run}/study.db",
            *GRID,
            "--model",
            "{model}",
        ],
        "must not carry credentials",
    ),
    "URI run dir, file lock": (
        [
            "start",
            "--run-dir",
            "file://{run}/remote",
            "--storage",
            "sqlite:///{run}/study.db",
            *GRID,
            "--model",
            "{model}",
            "--cache-lock",
            "file",
        ],
        "--cache-lock database",
    ),
    "URI run dir unknown scheme": (
        ["start", "--run-dir", "nofs://x/run", "--storage", "sqlite:///{run}/study.db", *GRID, "--model", "{model}"],
        "cannot open run directory nofs://x/run",
    ),
    "Ray Client address": (
        ["start", *STUDY, *GRID, "--model", "{model}", "--ray-address", "ray://127.0.0.1:10001"],
        "Ray Client addresses (ray://) are not supported",
    ),
    "run dir under a file": (["start", "--run-dir", "{blocker}/run", *GRID, "--model", "{model}"], "{blocker}"),
    # the job's own inputs: task data, base model, recipe (checked before anything is written or Ray starts)
    "task /etc/passwd, new run dir": (
        ["start", "--run-dir", "{fresh}", *GRID, "--task", "/etc/passwd"],
        "unsupported task file 'passwd'",
    ),
    "task file missing": (
        [*START, "--task", "{data}/missing.csv"],
        "task file or folder '{data}/missing.csv' does not exist",
    ),
    "task file relative, missing": (
        [*START, "--task", "no-such-folder/reviews.csv"],
        f"does not exist (looked for {REPO}/no-such-folder/reviews.csv)",
    ),
    "task unsupported extension": ([*START, "--task", "{data}/reviews.xlsx"], "unsupported task file 'reviews.xlsx'"),
    "task file empty": ([*START, "--task", "{data}/empty.csv"], "task file 'empty.csv' is empty"),
    "task header only": ([*START, "--task", "{data}/header.csv"], "task file 'header.csv' has no rows, only a header"),
    "task one row": (
        [*START, "--task", "{data}/one-row.csv"],
        "task 'one-row.csv' has 1 training row(s); a local task",
    ),
    "task one label": ([*START, "--task", "{data}/one-label.csv"], "has one label in its training examples ('pos')"),
    "task without text column": ([*START, "--task", "{data}/no-text.csv"], "'no-text.csv' lacks column(s) text"),
    "task not UTF-8": ([*START, "--task", "{data}/latin1.csv"], "'latin1.csv' is not UTF-8 text (byte 0xe9 at offset"),
    "task 10 MB single line": (
        [*START, "--task", "{data}/long-line.csv"],
        "'long-line.csv' lacks column(s) text, label",
    ),
    "task label unseen in train": (
        [*START, "--task", "{data}/unseen"],
        "validation split has label(s) 'meh' that no training",
    ),
    "model folder missing": ([*START[:-1], "./no-such-model"], "base model folder './no-such-model' does not exist"),
    "model folder without config": ([*START[:-1], "{models}/no-config"], "has no config.json"),
    "model corrupt safetensors": ([*START[:-1], "{models}/corrupt-weights"], "model.safetensors is damaged"),
    "model without tokenizer": ([*START[:-1], "{models}/no-tokenizer"], "its tokenizer has no vocabulary"),
    "mux config without weights": ([*START[:-1], "{models}/mux-no-weights"], "has no weights"),
    "mux weights contradicting the config": (
        [*START[:-1], "{models}/mux-shapes"],
        "instance_embedding has shape (2, 32), expected (5, 32)",
    ),
    "zs.pt of the wrong shapes": ([*START[:-1], "{models}/mux-zs"], "zs.pt mask head_z has shape (2, 3)"),
    "unknown muxing variant": ([*START[:-1], "{models}/mux-variant"], "unsupported muxing_variant 'random_ortho'"),
    "unknown demuxing variant": ([*START[:-1], "{models}/demux-variant"], "unsupported demuxing_variant 'index'"),
    "family without a grid N": (
        ["start", *STUDY, "--grid-n", "1,3", "--grid-s", "0", "--model", "muxbert-base"],
        "model family 'muxbert-base' has no N = 3 checkpoint (it has N = 1, 2, 5, 10)",
    ),
    "fine-tuned labels in another order": (
        [*START[:-1], "{models}/mux-swapped-{{N}}"],
        "orders its labels ['positive', 'negative'], the task ['negative', 'positive']",
    ),
    "evaluate a family without N": (
        ["evaluate", "--model", "muxbert-base", "--task", "rt-polarity"],
        "is a model family",
    ),
    "recipe unknown field": (
        [*START, "--recipe", "{recipes}/unknown-field.json"],
        "unknown recipe field(s) prune_step (did you mean prune_steps?)",
    ),
    "recipe wrong type": (
        [*START, "--recipe", "{recipes}/wrong-type.json"],
        'recipe field prune_steps must be an integer, got "many"',
    ),
    "recipe negative steps": (
        [*START, "--recipe", "{recipes}/negative-steps.json"],
        "prune_steps must be >= 0, got -5",
    ),
    "recipe too long for the model": ([*START, "--set", "seq_len=256"], "seq_len 256 is longer than base model"),
    "train one-label task": ([*TRAIN[:5], "--task", "{data}/one-label.csv", "--n", "1"], "has one label"),
    "import with a header-only task": (
        ["import", *STUDY, *GRID, "--task", "{data}/header.csv", "--points", "{csv}/points.csv"],
        "has no rows",
    ),
    "submit a bad task": (
        ["submit", "--address", "http://127.0.0.1:9", "--", "start", "--task", "/etc/passwd"],
        "unsupported task file",
    ),
    "submit a local file to a remote cluster": (
        [*REMOTE, "--", "start", "--task", "{data}/reviews.csv", "--model", "minilm-l6"],
        "task file {data}/reviews.csv is only on this machine",
    ),
    # the read commands
    "status unknown study": (["status", *STUDY, "--study", "missing"], "no study named 'missing'"),
    "status no study": (["status", "--run-dir", "{run}/none"], "no study at"),
    "status unreachable storage": (["status", "--storage", UNREACHABLE], "cannot open storage"),
    "best unknown study": (["best", *STUDY, "--study", "missing"], "no study named 'missing'"),
    "best malformed storage": (["best", "--storage", "not a url"], "malformed storage URL"),
    "export unknown trial": (["export", *STUDY, "--trial", "99", "--out", "{run}/out"], "has no trial 99"),
    "export imported point": (["export", *STUDY, "--trial", "0", "--out", "{run}/out"], "no saved model folder"),
    "export into a full folder": (["export", *STUDY, "--trial", "0", "--out", "{run}"], "is not an empty folder"),
    "report unknown study": (["report", *STUDY, "--study", "nope", "--out", "{run}/r.html"], "no study named 'nope'"),
    "report unreachable storage": (
        ["report", "--storage", UNREACHABLE, "--out", "{run}/r.html"],
        "cannot open storage",
    ),
    "dashboard remote host": (["dashboard", *STUDY, "--host", "0.0.0.0"], "--allow-remote"),
    "dashboard unknown study": (["dashboard", *STUDY, "--study", "nope"], "no study named 'nope'"),
    # import: the points CSV
    "import missing file": (["import", *STUDY, *GRID, "--points", "{run}/none.csv"], "no such points file"),
    "import missing columns": (
        ["import", *STUDY, *GRID, "--points", "{csv}/missing.csv"],
        "missing column(s) throughput",
    ),
    "import NaN": (["import", *STUDY, *GRID, "--points", "{csv}/nan.csv"], "NaN"),
    "import duplicate point": (
        ["import", *STUDY, *GRID, "--points", "{csv}/duplicate.csv"],
        "duplicate point (N=2, s=0.5)",
    ),
    "import empty": (["import", *STUDY, *GRID, "--points", "{csv}/empty.csv"], "empty CSV"),
    "import outside the grid": (["import", *STUDY, *GRID, "--points", "{csv}/outside.csv"], "outside the grid"),
    "import again": (["import", *STUDY, *GRID, "--points", "{csv}/points.csv"], "already"),
    # predict and replay: measured tables
    "predict budget": (["predict", "--points", "{csv}/points.csv", "--budget", "1.5"], "budget must be"),
    "predict budget range": (["predict", "--points", "{csv}/points.csv", "--budgets", "0:0.1:0"], "budget range"),
    "predict missing columns": (
        ["predict", "--points", "{csv}/missing.csv", "--budget", "0.03"],
        "missing column(s) throughput",
    ),
    "predict NaN": (["predict", "--points", "{csv}/nan.csv", "--budget", "0.03"], "NaN"),
    "predict duplicate point": (
        ["predict", "--points", "{csv}/duplicate.csv", "--budget", "0.03"],
        "duplicate point (N=2, s=0.5)",
    ),
    "predict fractional N": (
        ["predict", "--points", "{csv}/fractional.csv", "--budget", "0.03"],
        "N must be a positive integer",
    ),
    "predict empty": (["predict", "--points", "{csv}/empty.csv", "--budget", "0.03"], "empty CSV"),
    "predict without dense": (["predict", "--points", "{csv}/no-dense.csv", "--budget", "0.03"], "dense point"),
    "replay partial grid": (["replay", "--table", "{csv}/partial.csv", "--budget", "0.03"], "not a full grid"),
    "replay NaN": (["replay", "--table", "{csv}/nan.csv", "--budget", "0.03"], "NaN"),
    # train: one point
    "train unknown task": (["train", "--model", "{model}", "--task", "no-such-task", "--n", "2"], "unknown task"),
    "train N 0": ([*TRAIN, "--n", "0"], "N must be"),
    "train sparsity 1": ([*TRAIN, "--n", "2", "--sparsity", "1"], "sparsity"),
    "train unknown recipe field": ([*TRAIN, "--n", "2", "--set", "bogus=1"], "unknown recipe field"),
    "train work dir under a file": ([*TRAIN[:7], "--workdir", "{blocker}/work", "--n", "2"], "cannot create work dir"),
    # tasks, models, submit
    "tasks unknown": (["tasks", "no-such-task"], "no-such-task"),
    "models unknown": (["models", "no-such-model"], "no-such-model"),
    "submit without start": (["submit", "--address", "http://127.0.0.1:9", "--", "status"], "submit runs a search"),
    "submit SQLite to a remote cluster": (["submit", "--address", "http://10.1.2.3:8265", "--", "start"], "SQLite"),
    "submit unreachable cluster": (
        ["submit", "--address", "http://127.0.0.1:9", "--", "start"],
        "cannot reach the Ray Jobs API",
    ),
    # the command line itself
    "option of the wrong type": (["start", *STUDY, "--budget", "abc"], "'abc' is not a valid float"),
    "missing option": (["train", "--task", "rt-polarity"], "Missing option '--model'"),
    "unknown command": (["no-such-command"], "No such command 'no-such-command'"),
}


def file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, tiny_bert_dir: Path) -> dict[str, Path]:
    """A run directory whose study holds ``POINTS``; points CSVs, task files, broken model folders,
    broken recipes; a file to put folders under."""
    root = tmp_path_factory.mktemp("bad-input")
    csv = root / "csv"
    csv.mkdir()
    for name, content in CSV_FILES.items():
        (csv / name).write_text(content)
    data = root / "data"
    for name, content in TASK_FILES.items():
        (data / name).parent.mkdir(parents=True, exist_ok=True)
        (data / name).write_text(content)
    (data / "latin1.csv").write_bytes(LATIN1.encode("latin-1"))
    (root / "blocker").write_text("a file, not a folder")
    main(["import", "--run-dir", str(root / "run"), "--points", str(csv / "points.csv"), *GRID])
    return {
        "run": root / "run",
        "csv": csv,
        "blocker": root / "blocker",
        "data": data,
        "fresh": root / "fresh",
        "models": broken_models(root / "models", tiny_bert_dir),
        "recipes": broken_recipes(root / "recipes"),
    }


def broken_models(folder: Path, model: Path) -> Path:
    """Copies of a model folder without its config, with truncated weights, without its tokenizer."""
    for name in ("no-config", "corrupt-weights", "no-tokenizer"):
        shutil.copytree(model, folder / name)
    (folder / "no-config" / "config.json").unlink()
    weights = folder / "corrupt-weights" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (folder / "no-tokenizer" / name).unlink()
    broken_mux_checkpoints(folder, model)
    return folder


def broken_mux_checkpoints(folder: Path, tokenizer: Path) -> None:
    """MUX-BERT folders (published layout, the real tokenizer): without weights, with weights contradicting
    the config, with a zs.pt of the wrong shapes, with unknown variants, fine-tuned with swapped labels."""
    import torch

    from reference_models import TOKENIZER_FILES, bert_config, mux_config, mux_plm_state, save_checkpoint

    config = mux_config(bert_config(vocab=30522, positions=64), 2, num_labels=2)
    state = mux_plm_state(config, 0, task_head=True)
    broken = {
        "mux-shapes": config | {"num_instances": 5},
        "mux-zs": config,
        "mux-variant": config | {"muxing_variant": "random_ortho"},
        "demux-variant": config | {"demuxing_variant": "index"},
        "mux-swapped-2": config | {"id2label": {"0": "positive", "1": "negative"}},
    }
    for name, changed in broken.items():
        save_checkpoint(folder / name, changed, state)
        for file in TOKENIZER_FILES:
            shutil.copy(tokenizer / file, folder / name / file)
    torch.save({"head_z": torch.ones(2, 3), "hidden_z": torch.ones(32)}, folder / "mux-zs" / "zs.pt")
    shutil.copytree(tokenizer, folder / "mux-swapped-1")
    shutil.copytree(folder / "mux-zs", folder / "mux-no-weights")
    (folder / "mux-no-weights" / "model.safetensors").unlink()


def broken_recipes(folder: Path) -> Path:
    """The smoke recipe as JSON files with one bad change each."""
    folder.mkdir()
    smoke = json.loads(RECIPES["smoke"].read_text())
    for name, change in RECIPE_CHANGES.items():
        (folder / name).write_text(json.dumps({**smoke, **change}))
    return folder


@pytest.mark.parametrize("args, message", list(CASES.values()), ids=list(CASES))
def test_bad_input(args: list[str], message: str, files: dict[str, Path], tiny_bert_dir: Path, run_main) -> None:
    values = {**{key: str(path) for key, path in files.items()}, "model": str(tiny_bert_dir)}
    args = [arg.format(**values) for arg in args]
    database = files["run"] / "study.db"
    before = {path: path.stat().st_mtime_ns for path in files["run"].parent.rglob("*")}
    digest = file_hash(database)

    code, _, err = run_main(*args)

    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message.format(**values) in lines[0], err[:2000]
    assert "Traceback" not in err and "s3cret" not in err and len(lines[0]) <= 1000
    assert file_hash(database) == digest
    assert {path: path.stat().st_mtime_ns for path in files["run"].parent.rglob("*")} == before  # nothing written


@pytest.mark.parametrize("case", ["grid without dense", "unreachable storage", "import NaN"])
def test_bad_input_in_a_fresh_process(case: str, files: dict[str, Path], tiny_bert_dir: Path, run_cli) -> None:
    args, message = CASES[case]
    values = {**{key: str(path) for key, path in files.items()}, "model": str(tiny_bert_dir)}
    digest = file_hash(files["run"] / "study.db")

    done, _ = run_cli(*[arg.format(**values) for arg in args])

    assert done.returncode == 2 and "Traceback" not in done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("error: ") and message in line and "s3cret" not in line
    assert file_hash(files["run"] / "study.db") == digest


def drop_root_privileges() -> None:
    """In the child: without CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH, root obeys permission bits too."""
    if os.geteuid() != 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    pr_capbset_drop, cap_dac_override, cap_dac_read_search = 24, 1, 2
    for capability in (cap_dac_override, cap_dac_read_search):
        if libc.prctl(pr_capbset_drop, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def test_unwritable_run_dir(tmp_path: Path, tiny_bert_dir: Path) -> None:
    locked = tmp_path / "read-only"
    locked.mkdir()
    locked.chmod(0o555)
    args = ["start", "--run-dir", str(locked / "run"), *GRID, "--recipe", "smoke", "--model", str(tiny_bert_dir)]
    try:
        done = subprocess.run(
            [sys.executable, "-m", "cli.main", *args],
            capture_output=True,
            text=True,
            cwd=REPO,
            env=client_env(),
            preexec_fn=drop_root_privileges,
            timeout=120,
            check=False,
        )
    finally:
        locked.chmod(0o755)
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line == f"error: run directory {locked / 'run'} is not writable ({locked} is not writable)"
    assert list(locked.iterdir()) == []
