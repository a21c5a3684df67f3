"""Fixtures shared by the suite: a tiny random BERT with the real tokenizer, the packaged
MiniLM, a PostgreSQL URL, and a local Ray instance.

Servers are found or started for real. Under CI (CI=true) a missing server fails the
test instead of skipping it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest

REPO = Path(__file__).resolve().parents[1]
POSTGRES_URL = os.environ.get("PRUMUX_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def _missing(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (required under CI)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """The packaged all-MiniLM-L6-v2 checkpoint folder."""
    from trainers.models import resolve_model

    return Path(resolve_model("minilm-l6"))


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory, minilm_dir: Path) -> Path:
    """A random 2-layer BERT (hidden 32, 4 heads, FFN 64) saved with MiniLM's real tokenizer."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    folder = tmp_path_factory.mktemp("tiny-bert")
    BertModel(config).save_pretrained(folder)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(minilm_dir / name, folder / name)
    return folder


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """A reachable PostgreSQL database (the machine's server on 127.0.0.1:5432).

    The URL names the psycopg2 driver explicitly, so plain SQLAlchemy engines open it too.
    """
    import storage

    url = storage.parse_url(POSTGRES_URL).render_as_string(hide_password=False)
    try:
        storage.open_storage(url)
    except ValueError as error:
        _missing(str(error))
    return url


@pytest.fixture
def fresh_postgres_study_name(postgres_url: str, request: pytest.FixtureRequest) -> str:
    """A study name unique to this test, deleted from PostgreSQL afterwards."""
    import uuid

    import optuna

    name = f"test-{request.node.name[:40]}-{uuid.uuid4().hex[:8]}"
    yield name
    try:
        optuna.delete_study(study_name=name, storage=postgres_url)
    except KeyError:
        pass


@pytest.fixture(scope="session")
def local_ray():
    """A local Ray instance with 2 CPUs for the whole session, shut down at the end."""
    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


CliRunner = Callable[..., tuple[subprocess.CompletedProcess, float]]


@pytest.fixture
def run_cli() -> CliRunner:
    """Run `prumux-search ARGS` in a subprocess; return the finished process and its seconds.

    Keyword arguments become environment variables; the caller's HF_* variables are dropped
    so each test states its own hub situation.
    """

    def run(*args: str, timeout: float = 120, **env: str) -> tuple[subprocess.CompletedProcess, float]:
        environment = {key: value for key, value in os.environ.items() if not key.startswith("HF_")}
        environment.update(PYTHONPATH=str(REPO), **env)
        start = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "search.cli", *args],
            capture_output=True, text=True, env=environment, cwd=REPO, timeout=timeout,
        )
        return done, time.monotonic() - start

    return run
