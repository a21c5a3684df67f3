"""One (N, s) job end to end on the tiny model with the smoke recipe: train, reload, resume, share, fail."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from prumux import EncoderConfig, L0Module, PruMUXModel
from trainers.cache import cache_entry, pruning_directory
from trainers.data import BatchStream, encode_task
from trainers.evaluate import accuracy
from trainers.models import load_tokenizer
from trainers.phases.pruning import masks_at_sparsity, realised_sparsity
from trainers.point import PointResult, train_point
from trainers.point_spec import PointSpec
from trainers.recipes import load_recipe
from trainers.tasks import load_task

ROOT = Path(__file__).resolve().parents[1]
TASK = "rt-polarity"
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
# A shorter phase 3 for the jobs that only need to get there.
QUICK = {"retrieval_steps": 10, "finetune_steps": 5, "prune_steps": 10, "pruned_finetune_steps": 2}


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def full_job(tiny_bert_dir: Path, workdir: Path) -> PointResult:
    return train_point(PointSpec(TASK, str(tiny_bert_dir), 2, 0.5, "smoke", workdir), progress=False)


def _run_point(model: Path, N: int, s: float, workdir: Path, overrides: dict) -> subprocess.Popen:
    code = (
        "import json, torch; torch.set_num_threads(1)\n"
        "from trainers.point import train_point\nfrom trainers.point_spec import PointSpec\n"
        "from trainers.recipes import load_recipe\n"
        f"result = train_point(PointSpec({TASK!r}, {str(model)!r}, {N}, {s}, load_recipe('smoke', {overrides!r}), "
        f"{str(workdir)!r}), progress=False)\n"
        "print(json.dumps(result.to_dict()))\n"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _cli(*args: str) -> subprocess.CompletedProcess:
    code = "from cli.main import main; main()"
    return subprocess.run(
        [sys.executable, "-c", code, "train", *args], env=ENV, capture_output=True, text=True, timeout=300
    )


def test_full_job_runs_end_to_end(full_job: PointResult) -> None:
    assert full_job.family == "prumux" and (full_job.N, full_job.s) == (2, 0.5)
    assert 0 <= full_job.val_accuracy <= 1 and 0 <= full_job.test_accuracy <= 1
    assert 0.3 < full_job.sparsity < 0.7  # the tiny model's units are coarse (a head is ~6% of it)
    assert full_job.speedup == pytest.approx(full_job.throughput / full_job.dense_throughput)
    assert set(full_job.phase_seconds) == {"retrieval", "multiplexed", "pruning", "measure"}
    assert all(full_job.phase_seconds[phase] > 0 for phase in ("retrieval", "multiplexed", "pruning"))
    assert full_job.hardware and not full_job.cache_hit
    json.dumps(full_job.to_dict())


def test_saved_model_is_smaller_and_reproduces_validation_accuracy(full_job: PointResult, tiny_bert_dir: Path) -> None:
    model = PruMUXModel.from_pretrained(full_job.model_dir)
    dense = PruMUXModel.from_pretrained(tiny_bert_dir, num_instances=2)
    assert sum(p.numel() for p in model.encoder.parameters()) < sum(p.numel() for p in dense.encoder.parameters())
    recipe = load_recipe("smoke")
    encoded = encode_task(load_task(TASK, seed=recipe.seed), load_tokenizer(str(tiny_bert_dir)), recipe)
    assert accuracy(model, encoded.validation, recipe.eval_batch_size) == full_job.val_accuracy


def test_retrieval_loss_of_trained_model_is_far_below_chance(
    full_job: PointResult, tiny_bert_dir: Path, workdir: Path
) -> None:
    recipe = load_recipe("smoke")
    entry = cache_entry(workdir, TASK, str(tiny_bert_dir), 2, recipe)
    model = PruMUXModel.from_pretrained(entry.directory / "retrieval").eval()
    tokenizer = load_tokenizer(str(tiny_bert_dir))
    train = encode_task(load_task(TASK, seed=recipe.seed), tokenizer, recipe).train
    batch = BatchStream(train, 64, seed=1).batch(0)
    torch.manual_seed(0)
    with torch.no_grad():
        loss = model.retrieval_loss(**batch.inputs(), ignore_token_ids=tokenizer.all_special_ids).item()
    chance = math.log(model.config.encoder.vocab_size)
    assert loss < 0.65 * chance


def test_finished_job_returns_its_stored_result(full_job: PointResult, tiny_bert_dir: Path, workdir: Path) -> None:
    again = train_point(PointSpec(TASK, str(tiny_bert_dir), 2, 0.5, "smoke", workdir), progress=False)
    assert again == full_job


def test_a_finished_point_asked_on_another_runtime_is_measured_there_not_trained(
    full_job: PointResult, tiny_bert_dir: Path, workdir: Path
) -> None:
    assert full_job.inference_runtime == "eager" and full_job.eager_speedup == full_job.speedup
    log = workdir / "train.log"
    trained = log.read_text().count("started ")
    point = PointSpec(TASK, str(tiny_bert_dir), 2, 0.5, "smoke", workdir)
    onnx = train_point(point, progress=False, inference_runtime="onnx")
    assert log.read_text().count("started ") == trained  # nothing trained again
    assert onnx.inference_runtime == "onnx" and onnx.speedup > 0 and onnx.eager_speedup > 0
    assert onnx.throughput == pytest.approx(onnx.speedup * onnx.dense_throughput)
    assert (onnx.val_accuracy, onnx.test_accuracy, onnx.model_dir) == (
        full_job.val_accuracy,
        full_job.test_accuracy,
        full_job.model_dir,
    )
    assert train_point(point, progress=False, inference_runtime="onnx") == onnx  # stored, as measured there
    eager = train_point(point, progress=False)  # the paper's protocol again
    assert eager.inference_runtime == "eager" and eager.speedup == eager.eager_speedup
    assert log.read_text().count("started ") == trained


def test_resume_after_sigkill_in_phase_3(full_job: PointResult, tiny_bert_dir: Path, workdir: Path) -> None:
    overrides = {"prune_steps": 150, "pruned_finetune_steps": 2}
    recipe = load_recipe("smoke", overrides)
    checkpoint = pruning_directory(workdir, TASK, str(tiny_bert_dir), 2, 0.5, recipe) / "checkpoints" / "prune.pt"
    job = _run_point(tiny_bert_dir, 2, 0.5, workdir, overrides)
    deadline = time.monotonic() + 240
    while not checkpoint.exists() and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(job.pid, signal.SIGKILL)
    job.communicate()
    assert checkpoint.exists(), "the job should have written a phase-3 checkpoint before being killed"

    bad = _cli(
        "--task",
        TASK,
        "--model",
        str(tiny_bert_dir),
        "--n",
        "2",
        "--sparsity",
        "1.5",
        "--recipe",
        "smoke",
        "--workdir",
        str(workdir),
    )
    assert bad.returncode == 2 and checkpoint.exists()

    result = train_point(PointSpec(TASK, str(tiny_bert_dir), 2, 0.5, recipe, workdir), progress=False)
    resumed = re.findall(r"resumed prune from step (\d+)", (workdir / "train.log").read_text())
    assert resumed and int(resumed[-1]) > 0
    assert result.cache_hit and 0 <= result.val_accuracy <= 1 and result.sparsity > 0.3
    assert Path(result.model_dir).is_dir() and not checkpoint.exists()


def test_concurrent_jobs_train_phases_1_2_once(tiny_bert_dir: Path, tmp_path: Path) -> None:
    jobs = [_run_point(tiny_bert_dir, 2, s, tmp_path, QUICK) for s in (0.3, 0.4)]
    outputs = [job.communicate(timeout=600) for job in jobs]
    assert [job.returncode for job in jobs] == [0, 0], [err[-2000:] for _, err in outputs]
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    assert sorted(result["cache_hit"] for result in results) == [False, True]
    log = (tmp_path / "train.log").read_text()
    assert log.count("phases 1-2 cache miss") == 1 and log.count("phases 1-2 cache hit") == 1
    assert log.count("started retrieval") == 1


def test_cli_reports_corrupt_checkpoint_and_keeps_it(full_job: PointResult, tiny_bert_dir: Path, workdir: Path) -> None:
    recipe = load_recipe("smoke", {"prune_steps": 11})
    checkpoint = pruning_directory(workdir, TASK, str(tiny_bert_dir), 2, 0.25, recipe) / "checkpoints" / "prune.pt"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"\x80\x04 this is not a checkpoint")
    done = _cli(
        "--task",
        TASK,
        "--model",
        str(tiny_bert_dir),
        "--n",
        "2",
        "--sparsity",
        "0.25",
        "--recipe",
        "smoke",
        "--set",
        "prune_steps=11",
        "--workdir",
        str(workdir),
        "--quiet",
    )
    # found while training: the job ran and failed (exit 1), one line, the traceback in train.log
    assert done.returncode == 1 and "corrupt" in done.stderr and done.stderr.count("\n") == 1
    assert "move it away" in done.stderr and f"full log: {workdir / 'train.log'}" in done.stderr
    assert checkpoint.read_bytes() == b"\x80\x04 this is not a checkpoint"


def test_dense_point_is_its_own_baseline(tiny_bert_dir: Path, tmp_path: Path) -> None:
    dense = train_point(
        PointSpec(TASK, str(tiny_bert_dir), 1, 0.0, load_recipe("smoke", QUICK), tmp_path), progress=False
    )
    assert dense.family == "dense" and dense.speedup == 1.0
    assert dense.throughput == dense.dense_throughput > 0  # the first measurement is the hardware's reference


@pytest.mark.parametrize("sparsity", [0.3, 0.5, 0.7, 0.9])
def test_masks_at_sparsity_realise_the_target(sparsity: float) -> None:
    torch.manual_seed(0)
    config = EncoderConfig.dense(num_layers=6, hidden_size=384, num_heads=12, intermediate_size=1536)  # MiniLM-L6
    l0 = L0Module(config)  # unsaturated gates: the rounding deterministic masks realise ~0.1 off
    masks = masks_at_sparsity(l0, sparsity)
    assert realised_sparsity(l0, masks) == pytest.approx(sparsity, abs=0.005)
