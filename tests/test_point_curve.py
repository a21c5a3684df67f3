"""A point's learning curve: every evaluation at the point's own step, the cached phases 1-2 included."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainers.curve import PointCurve, point_stages
from trainers.point import PausedPoint, train_point
from trainers.point_spec import PointSpec
from trainers.recipes import load_recipe

FAST = {"pruned_finetune_steps": 4}  # the step counts asserted below


def test_stages_are_placed_one_after_another() -> None:
    recipe = load_recipe("tiny", FAST)
    stages = point_stages(recipe, 2, 0.5, 64, ["retrieval", "finetune"])
    assert stages == [("retrieval", 6), ("finetune", 8), ("prune", 8), ("pruned_finetune", 4)]
    curve = PointCurve().plan(stages)
    curve("finetune", 4, 0.5)
    curve("prune", 8, 0.6)
    curve("mlm", 2, 0.9)  # not a stage of this point: ignored
    assert curve.rows() == [[10, 0.5, "finetune"], [22, 0.6, "prune"]]
    assert curve.total_steps_ == 26


def test_a_point_reports_its_whole_curve_and_a_cached_phase_2_again(tiny_bert_dir: Path, tmp_path: Path) -> None:
    recipe = load_recipe("tiny", FAST)
    pruned: list = []
    result = train_point(
        PointSpec("rt-polarity", str(tiny_bert_dir), 2, 0.5, recipe, tmp_path),
        progress=False,
        on_evaluation=pruned.append,
    )

    assert result.total_steps == 6 + 2 + 8 + 8 + 4
    assert [e.stage for e in pruned] == ["finetune"] * 2 + ["prune"] * 2 + ["pruned_finetune"]
    assert [e.step for e in pruned] == [12, 16, 20, 24, 28]
    assert all(e.total_steps == 28 for e in pruned)
    assert result.curve == [[e.step, e.accuracy, e.stage] for e in pruned]

    dense_mux: list = []
    other = train_point(
        PointSpec("rt-polarity", str(tiny_bert_dir), 2, 0.0, recipe, tmp_path),
        progress=False,
        on_evaluation=dense_mux.append,
    )
    assert other.cache_hit and other.total_steps == 16
    assert [(e.step, e.accuracy) for e in dense_mux] == [(e.step, e.accuracy) for e in pruned[:2]]


def test_a_resumed_stage_reports_its_earlier_evaluations(tiny_bert_dir: Path, tmp_path: Path) -> None:
    recipe = load_recipe("tiny", FAST | {"checkpoint_every_seconds": 0.0})
    first: list = []
    train_point(
        PointSpec("rt-polarity", str(tiny_bert_dir), 1, 0.0, recipe, tmp_path),
        progress=False,
        on_evaluation=first.append,
    )
    again: list = []
    (result_file,) = tmp_path.glob("points/**/result.json")
    result_file.unlink()  # the point's result is gone, its cached phase 2 is not: it is reported again
    train_point(
        PointSpec("rt-polarity", str(tiny_bert_dir), 1, 0.0, recipe, tmp_path),
        progress=False,
        on_evaluation=again.append,
    )
    assert [(e.step, e.accuracy, e.stage, e.cross_entropy) for e in again] == [
        (e.step, e.accuracy, e.stage, e.cross_entropy) for e in first
    ]
    assert all(e.cross_entropy > 0 for e in first)
    assert first and first[-1].step == 8


@pytest.mark.parametrize("stage", ["finetune"])
def test_stage_records_keep_their_evaluations(tiny_bert_dir: Path, tmp_path: Path, stage: str) -> None:
    import json

    recipe = load_recipe("tiny", FAST)
    train_point(PointSpec("rt-polarity", str(tiny_bert_dir), 1, 0.0, recipe, tmp_path), progress=False)
    (record,) = [json.loads(p.read_text()) for p in tmp_path.glob("cache/**/model/stage.json")]
    assert record["stage"] == stage
    assert [step for step, _, _ in record["evaluations"]] == [4, 8]


def test_a_point_stopped_at_any_steps_trains_exactly_as_one_that_is_not(tiny_bert_dir: Path, tmp_path: Path) -> None:
    recipe = load_recipe("tiny", FAST)
    straight = train_point(
        PointSpec("rt-polarity", str(tiny_bert_dir), 1, 0.5, recipe, tmp_path / "straight"), progress=False
    )
    assert straight.total_steps == 20 and [row[0] for row in straight.curve] == [4, 8, 12, 16, 20]

    stopped: list = []
    for step in (3, 10, 10, 13):  # in phase 2, in the pruning stage off its schedule, again, in its fine-tuning
        paused = train_point(
            PointSpec("rt-polarity", str(tiny_bert_dir), 1, 0.5, recipe, tmp_path / "stopped"),
            progress=False,
            stop_at_step=step,
            on_evaluation=stopped.append,
        )
        assert (
            paused == PausedPoint((("finetune", 8), ("prune", 8), ("pruned_finetune", 4)), 64)
            and max(e.step for e in stopped) == step
        )
    resumed = train_point(
        PointSpec("rt-polarity", str(tiny_bert_dir), 1, 0.5, recipe, tmp_path / "stopped"), progress=False
    )

    assert [row[0] for row in resumed.curve] == [3, 4, 8, 10, 12, 13, 16, 20]
    assert {row[0]: row[1] for row in resumed.curve} | {row[0]: row[1] for row in straight.curve} == {
        row[0]: row[1] for row in resumed.curve
    }
    assert (resumed.val_accuracy, resumed.test_accuracy, resumed.sparsity) == (
        straight.val_accuracy,
        straight.test_accuracy,
        straight.sparsity,
    )
