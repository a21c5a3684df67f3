"""Checkpoints: atomic round trip of model, optimiser, scheduler and RNG; corrupt files fail loudly and stay."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from trainers.checkpoint import load_checkpoint, restore_rng_state, save_checkpoint


def _trained_pieces() -> tuple[torch.nn.Module, torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 / (step + 1))
    model(torch.randn(2, 4)).sum().backward()
    optimizer.step()
    scheduler.step()
    return model, optimizer, scheduler


def test_round_trip_restores_state_and_random_streams(tmp_path) -> None:
    model, optimizer, scheduler = _trained_pieces()
    path = tmp_path / "stage.pt"
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
    save_checkpoint(path, "job-a", step=5, elapsed=1.5, state=state)
    expected = (random.random(), np.random.rand(), torch.rand(2))

    payload = load_checkpoint(path, "job-a")
    restore_rng_state(payload["rng"])
    assert (random.random(), np.random.rand()) == expected[:2]
    assert torch.equal(torch.rand(2), expected[2])
    assert payload["step"] == 5 and payload["elapsed"] == 1.5

    fresh, fresh_optimizer, fresh_scheduler = _trained_pieces()
    fresh.load_state_dict(payload["state"]["model"])
    fresh_optimizer.load_state_dict(payload["state"]["optimizer"])
    fresh_scheduler.load_state_dict(payload["state"]["scheduler"])
    assert torch.equal(fresh.weight, model.weight)
    assert fresh_scheduler.last_epoch == scheduler.last_epoch
    assert [p.name for p in tmp_path.iterdir()] == ["stage.pt"]  # no temporary file left behind


def test_corrupt_checkpoint_raises_one_line_and_is_kept(tmp_path) -> None:
    path = tmp_path / "stage.pt"
    save_checkpoint(path, "job-a", 1, 0.0, {"model": torch.nn.Linear(2, 2).state_dict()})
    damaged = path.read_bytes()[:200]
    path.write_bytes(damaged)
    with pytest.raises(ValueError, match="corrupt") as error:
        load_checkpoint(path, "job-a")
    assert "\n" not in str(error.value)
    assert path.read_bytes() == damaged


def test_foreign_or_unknown_files_are_refused(tmp_path) -> None:
    path = tmp_path / "stage.pt"
    save_checkpoint(path, "job-a", 1, 0.0, {})
    with pytest.raises(ValueError, match="belongs to job"):
        load_checkpoint(path, "job-b")
    torch.save({"something": 1}, path)
    with pytest.raises(ValueError, match="not a prumux-checkpoint"):
        load_checkpoint(path, "job-a")
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt", "job-a")
