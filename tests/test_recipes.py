"""Recipes: the shipped files load, overrides are typed and checked, epochs become steps."""

from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path

import pytest

from prumux.config import MUXING_VARIANTS
from trainers.cache import cache_entry
from trainers.recipes import (
    MUX_STARTS,
    PHASE,
    PHASE3_FIELDS,
    PHASE12_FIELDS,
    PRUNED_FINETUNE_FIELDS,
    RECIPES,
    Recipe,
    load_recipe,
    parse_overrides,
)


def test_shipped_recipes_load() -> None:
    assert set(RECIPES) == {"paper", "cpu-demo", "smoke", "tiny"}
    for name in RECIPES:
        assert isinstance(load_recipe(name), Recipe)


def test_tiny_is_smoke_with_fewer_steps_and_examples() -> None:
    tiny, smoke = load_recipe("tiny"), load_recipe("smoke")
    changed = {item.name for item in fields(Recipe) if getattr(tiny, item.name) != getattr(smoke, item.name)}
    shortened = {
        "max_train_examples",
        "max_eval_examples",
        "eval_examples",
        "eval_every",
        "retrieval_steps",
        "mlm_steps",
        "finetune_steps",
        "prune_steps",
        "lagrangian_warmup_steps",
        "pruned_finetune_steps",
    }
    assert changed == {"name", "description", *shortened}
    assert all(getattr(tiny, name) < getattr(smoke, name) for name in shortened)


def test_paper_recipe_has_table_5_values() -> None:
    paper = load_recipe("paper")
    assert paper.seq_len == 128
    assert paper.prune_batch_size == 32  # "32*N" instances = 32 mixed sequences
    assert paper.finetune_batch_size == 64
    assert paper.prune_epochs == 40 and paper.pruned_finetune_epochs == 40
    assert paper.lagrangian_warmup_epochs == 2
    assert paper.prune_lr == 5e-5
    assert paper.sparsity_epsilon == 0.01
    assert paper.distill_temperature == 2
    assert (paper.distill_alpha_layer, paper.distill_alpha_ce) == (0.9, 0.1)


def test_cpu_demo_is_minilm_sized() -> None:
    demo = load_recipe("cpu-demo")
    assert demo.seq_len == 64 and demo.mlm_steps == 0


def test_overrides_from_cli_strings_are_typed() -> None:
    recipe = load_recipe("smoke", parse_overrides(["prune_steps=7", "reg_lr=0.5", "max_train_examples=none"]))
    assert recipe.prune_steps == 7 and isinstance(recipe.prune_steps, int)
    assert recipe.reg_lr == 0.5
    assert recipe.max_train_examples is None


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"nope": 1}, "unknown recipe field"),
        ({"prune_steps": "many"}, "must be int"),
        ({"prune_steps": 2.5}, "must be int"),
        ({"seq_len": 0}, "seq_len must be >= 1"),
        ({"reg_lr": -1}, "reg_lr must be >= 0"),
        ({"seq_len": None}, "cannot be null"),
    ],
)
def test_bad_overrides_raise_value_error(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_recipe("smoke", overrides)


def test_bad_override_syntax_and_unknown_recipe() -> None:
    with pytest.raises(ValueError, match="key=value"):
        parse_overrides(["prune_steps"])
    with pytest.raises(ValueError, match="unknown recipe"):
        load_recipe("no-such-recipe")


def test_recipe_file_path(tmp_path) -> None:
    path = tmp_path / "mine.json"
    path.write_text(RECIPES["smoke"].read_text())
    assert load_recipe(path) == load_recipe("smoke")
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_recipe(path)


def test_epochs_win_over_steps() -> None:
    recipe = load_recipe("smoke", {"prune_epochs": 2.0})
    assert recipe.steps("prune", train_size=100, batch_rows=16) == 13  # ceil(2 * 100 / 16)
    assert recipe.steps("finetune", train_size=100, batch_rows=16) == recipe.finetune_steps
    with pytest.raises(ValueError, match="unknown stage"):
        recipe.steps("nope", 1, 1)


def test_phase12_digest_ignores_phase3_values() -> None:
    base = load_recipe("smoke")
    assert load_recipe("smoke", {"prune_steps": 3}).digest(PHASE12_FIELDS) == base.digest(PHASE12_FIELDS)
    assert load_recipe("smoke", {"prune_steps": 3}).digest() != base.digest()
    assert load_recipe("smoke", {"finetune_lr": 0.5}).digest(PHASE12_FIELDS) != base.digest(PHASE12_FIELDS)


def _changed(value: object, name: str) -> object:
    """Another valid value of a recipe field."""
    others = {"muxing_variant": MUXING_VARIANTS, "mux_start": MUX_STARTS, "layer_distill_version": (3, 4, 6)}
    if name in others:
        return next(option for option in others[name] if option != value)
    if name == "sweep":  # a sweep of a phase 1-2 field: still no field of the cache key itself
        return (("finetune_lr", (0.5, 0.25)),)
    if isinstance(value, bool):
        return not value
    if isinstance(value, str):
        return value + "-changed"
    if value is None:
        return 1.0
    return value + 1 if isinstance(value, int) else (value / 2 if value else 0.25)


def test_the_phase12_cache_key_hashes_exactly_the_fields_marked_phase12(tmp_path: Path) -> None:
    base = load_recipe("smoke")
    key = cache_entry(tmp_path, "rt-polarity", "tiny", 2, base).directory
    changing = set()
    for item in fields(Recipe):
        other = replace(base, **{item.name: _changed(getattr(base, item.name), item.name)})
        if cache_entry(tmp_path, "rt-polarity", "tiny", 2, other).directory != key:
            changing.add(item.name)
    marked = {item.name for item in fields(Recipe) if item.metadata.get(PHASE) == "phase12"}
    assert changing == marked == set(PHASE12_FIELDS)
    assert {"seed", "seq_len", "mux_start", "muxing_variant", "finetune_lr"} <= marked
    assert not marked & {"prune_steps", "prune_lr", "eval_every", "name", "search_time_budget"}


def test_phase_membership_is_declared_per_field_not_by_position() -> None:
    declared = {item.name: item.metadata.get(PHASE) for item in fields(Recipe)}
    assert set(PHASE3_FIELDS) == {name for name, phase in declared.items() if phase in ("phase3", "pruned_finetune")}
    assert PRUNED_FINETUNE_FIELDS == ("pruned_finetune_steps", "pruned_finetune_epochs", "pruned_finetune_lr")
    assert {"prune_steps", "distill_temperature", "layer_distill_version", "sparsity_epsilon"} <= set(PHASE3_FIELDS)
    assert not set(PHASE3_FIELDS) & set(PHASE12_FIELDS)
    assert not set(PHASE3_FIELDS) & {"eval_every", "throughput_batches", "search_time_budget", "sweep"}


def test_boolean_fields_parse_cli_words() -> None:
    assert load_recipe("smoke", {"prune_hidden": "false"}).prune_hidden is False
    assert load_recipe("smoke", {"prune_hidden": "Yes"}).prune_hidden is True
    with pytest.raises(ValueError, match="prune_hidden must be true or false"):
        load_recipe("smoke", {"prune_hidden": "maybe"})


def test_search_time_budget_is_the_default_of_start_and_no_training_value() -> None:
    from cli.commands.study import _time_budget

    demo = load_recipe("cpu-demo")
    assert demo.search_time_budget == 1200 and load_recipe("paper").search_time_budget is None
    assert _time_budget(None, demo) == 1200
    assert _time_budget(300.0, demo) == 300 and _time_budget(0.0, demo) is None
    longer = load_recipe("cpu-demo", {"search_time_budget": 3600})
    assert longer.digest() == demo.digest()  # the same trained points
