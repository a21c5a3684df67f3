"""Training recipes: every hyperparameter of one (N, s) job, loaded from a JSON file.

A recipe is a flat dataclass. The four shipped recipes live beside this module in
`recipes/`: `paper` (Appendix A, Table 5 of the PruMUX paper, for GPUs), `cpu-demo` (MiniLM
on rt-polarity, one PruMUX point in a few minutes on 2 CPU cores), `smoke` (small, for tests)
and `tiny` (`smoke` with a few steps per stage on 64 examples: the tests' searches and the GPU
check's quick run). Any value can be overridden by name.

Units. Batch sizes count *mixed sequences* per step: a training batch holds
`batch_size * N` instance rows, so the paper's "pruning batch size 32*N" is 32 here.
Each phase's length is given in optimiser steps (`*_steps`) or in epochs over the task's
training set (`*_epochs`, which win when not null); see `Recipe.steps`.

A recipe may hold a `sweep`: fields, or tied groups of fields named together
(`"distill_alpha_layer,distill_alpha_ce"`), mapped to the values to try (a list of lists for a
group). Each combination is a *configuration*: the recipe with those values and no sweep, so its
digest and its phase 1-2 cache key are those of a plain recipe with the same values; the sweep
itself is in no digest. A point of a recipe with a sweep is trained as a bracket of its
configurations (`tuning.bracket`).
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import json
import math
import types
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from prumux.config import MUXING_VARIANTS

RECIPE_DIR = Path(__file__).with_name("recipes")
MUX_STARTS = ("base", "dense")
LAYER_DISTILL_VERSIONS = (3, 4, 6)  # CoFi's layer-distillation versions that `trainers.distill` implements
RECIPES: dict[str, Path] = {path.stem: path for path in sorted(RECIPE_DIR.glob("*.json"))}

# The stages whose length is set by `<stage>_steps` / `<stage>_epochs`.
STAGES = ("retrieval", "mlm", "finetune", "prune", "lagrangian_warmup", "pruned_finetune")
# The batch-size field (mixed sequences per step) of each stage.
STAGE_BATCH = {
    "retrieval": "pretrain_batch_size",
    "mlm": "pretrain_batch_size",
    "finetune": "finetune_batch_size",
    "prune": "prune_batch_size",
    "lagrangian_warmup": "prune_batch_size",
    "pruned_finetune": "finetune_batch_size",
}


PHASE = "prumux.phase"  # field metadata key: which part of a point's training reads the field


def phase12() -> Any:
    """Mark a recipe field as one that determines the phase 1-2 model (hashed into its cache key)."""
    return field(metadata={PHASE: "phase12"})


def phase3(default: Any = MISSING) -> Any:
    """Mark a recipe field as one that only phase 3 (pruning, then the pruned model's fine-tuning) reads."""
    return field(default=default, metadata={PHASE: "phase3"})


def pruned_finetune() -> Any:
    """Mark a phase-3 field as one that only the pruned model's fine-tuning reads (the pruning stage does not)."""
    return field(metadata={PHASE: "pruned_finetune"})


@dataclass(frozen=True)
class Recipe:
    """All hyperparameters of one (N, s) training job. ``phase12()`` marks the fields that determine
    the phase 1-2 model (they, and only they, make its cache key); ``phase3()`` those only phase 3 reads,
    ``pruned_finetune()`` those of them only the pruned model's fine-tuning reads."""

    name: str
    description: str
    seed: int = phase12()
    seq_len: int = phase12()
    max_train_examples: int | None = phase12()  # training rows used (a seeded sample); null = all
    max_eval_examples: int | None  # rows of validation/test in the final evaluation; null = all
    eval_examples: int | None  # validation rows used by evaluations during training
    eval_every: int  # steps between evaluations during training
    eval_batch_size: int  # mixed sequences per evaluation batch
    checkpoint_every_seconds: float
    warmup_ratio: float = phase12()  # linear learning-rate warm-up, as a fraction of each stage
    weight_decay: float = phase12()
    # How an N > 1 model is made from a plain base (MUX-PLM checkpoints keep their own vectors).
    muxing_variant: str = (
        phase12()
    )  # gaussian_hadamard (DataMUX's) or shifted_gaussian (1 + deviation: keeps the input readable)
    mux_start: str = (
        phase12()
    )  # "base": the base checkpoint; "dense": the search's dense (1, 0) model, trained first if missing
    # Phase 1: retrieval warm-up (skipped when N = 1).
    retrieval_steps: int = phase12()
    retrieval_epochs: float | None = phase12()
    retrieval_lr: float = phase12()
    retrieval_mux_norm: float = phase12()
    pretrain_batch_size: int = phase12()  # retrieval and MLM
    # Phase 2: optional MLM continuation, then task fine-tuning.
    mlm_steps: int = phase12()
    mlm_epochs: float | None = phase12()
    mlm_lr: float = phase12()
    mlm_probability: float = phase12()
    finetune_steps: int = phase12()
    finetune_epochs: float | None = phase12()
    finetune_lr: float = phase12()
    finetune_batch_size: int = phase12()  # also the batch of the pruned model's fine-tuning
    task_mux_norm: float = phase12()
    # Phase 3: CoFi pruning with distillation, then fine-tuning of the pruned model.
    prune_steps: int = phase3()
    prune_epochs: float | None = phase3()
    prune_batch_size: int = phase3()
    prune_lr: float = phase3()
    lagrangian_warmup_steps: int = phase3()
    lagrangian_warmup_epochs: float | None = phase3()
    reg_lr: float = phase3()  # learning rate of the log_alphas (descent) and the lambdas (ascent)
    reg_beta1: float = phase3()  # Adam betas of both; a short memory lets the gates follow the target within few steps
    reg_beta2: float = phase3()
    droprate_init: float = phase3()
    # Batches of Fisher importance that rank the initial gates; 0 = CoFi's uniform start.
    mask_init_batches: int = phase3()
    mask_init_spread: float = phase3()  # log_alpha shift between the least and the most important unit, halved
    prune_hidden: bool = phase3()  # also prune hidden (residual) dims; short runs keep them, as they need long training
    sparsity_epsilon: float = phase3()  # a pruning checkpoint is eligible when |sparsity - s| <= this
    pruned_finetune_steps: int = pruned_finetune()
    pruned_finetune_epochs: float | None = pruned_finetune()
    pruned_finetune_lr: float = pruned_finetune()
    distill_alpha_ce: float = phase3()
    distill_alpha_layer: float = phase3()
    distill_temperature: float = phase3()
    # Throughput (prumux's protocol: batch 128*N instances, padded to seq_len).
    throughput_batches: int
    throughput_warmup: int
    # Search: how long `prumux-search start` runs by default (seconds; null = until the sampler is done).
    search_time_budget: float | None
    # Fields with a default below are left out of `to_dict` (and so of every digest) at that default.
    # Phase 3: CoFi's layer-distillation version (3, 4 or 6; `trainers.distill`); null = our in-order matching.
    layer_distill_version: int | None = phase3(default=None)
    # Values to try per field (or tied group "a,b"), as ((key, (value, ...)), ...); see `Recipe.configurations`.
    sweep: tuple[tuple[str, tuple[Any, ...]], ...] = ()

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
                raise ValueError(f"recipe field {item.name} must be >= 0, got {value}")
        for name in (
            "seq_len",
            "eval_every",
            "eval_batch_size",
            "pretrain_batch_size",
            "finetune_batch_size",
            "prune_batch_size",
            "throughput_batches",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"recipe field {name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.mlm_probability < 1:
            raise ValueError(f"recipe field mlm_probability must be in (0, 1), got {self.mlm_probability}")
        if not (0 <= self.reg_beta1 < 1 and 0 <= self.reg_beta2 < 1):
            raise ValueError(
                f"recipe fields reg_beta1, reg_beta2 must be in [0, 1), got {self.reg_beta1}, {self.reg_beta2}"
            )
        if self.muxing_variant not in MUXING_VARIANTS:
            raise ValueError(
                f"recipe field muxing_variant must be one of {', '.join(MUXING_VARIANTS)}, got {self.muxing_variant!r}"
            )
        if self.mux_start not in MUX_STARTS:
            raise ValueError(f"recipe field mux_start must be one of {', '.join(MUX_STARTS)}, got {self.mux_start!r}")
        if not 0 < self.droprate_init < 1:
            raise ValueError(f"recipe field droprate_init must be in (0, 1), got {self.droprate_init}")
        if self.layer_distill_version not in (None, *LAYER_DISTILL_VERSIONS):
            raise ValueError(
                f"recipe field layer_distill_version must be null or one of {', '.join(map(str, LAYER_DISTILL_VERSIONS))}, "
                f"got {self.layer_distill_version}"
            )
        for values in self.sweep_values() if self.sweep else ():  # every configuration must be a valid recipe
            try:
                self.configure(values)
            except ValueError as error:
                raise ValueError(
                    f"recipe field sweep: the configuration {json.dumps(values)} is invalid: {error}"
                ) from None

    def sweep_values(self, s: float | None = None) -> list[dict[str, Any]]:
        """The swept values of each configuration, in the sweep's order (the last key varying fastest).

        At ``s == 0`` a point trains no phase 3, so entries that only set phase-3 fields are left
        out (the recipe's own values stay): the configurations that remain all train differently.
        """
        axes = []
        for key, values in self.sweep:
            names = key.split(",")
            if s == 0 and set(names) <= set(PHASE3_FIELDS):
                continue
            axes.append([dict(zip(names, value if len(names) > 1 else (value,))) for value in values])
        return [dict(item for row in combination for item in row.items()) for combination in itertools.product(*axes)]

    def configure(self, values: dict[str, Any]) -> Recipe:
        """The configuration with ``values``: this recipe with them set and no sweep."""
        return replace(self, sweep=(), **values)

    def configurations(self, s: float | None = None) -> list[Recipe]:
        """The recipes of the sweep's configurations (``sweep_values``); [self] without a sweep."""
        return [self.configure(values) for values in self.sweep_values(s)] if self.sweep else [self]

    def steps(self, stage: str, train_size: int, batch_rows: int) -> int:
        """Optimiser steps of `stage`: `<stage>_epochs` over `train_size` rows if set, else `<stage>_steps`."""
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; expected one of {', '.join(STAGES)}")
        epochs = getattr(self, f"{stage}_epochs")
        if epochs is None:
            return getattr(self, f"{stage}_steps")
        return math.ceil(epochs * train_size / batch_rows)

    def stage_steps(self, stage: str, train_size: int, N: int) -> int:
        """Optimiser steps of `stage` for a model of width N (its batches hold `batch_size * N` rows)."""
        return self.steps(stage, train_size, self.batch_rows(stage, N))

    def batch_rows(self, stage: str, N: int) -> int:
        """Instance rows in one training batch of `stage` at width N."""
        return getattr(self, STAGE_BATCH[stage]) * N

    def runs(self, stage: str) -> bool:
        """Whether `stage` has any steps (set by `<stage>_steps` or `<stage>_epochs`)."""
        return bool(getattr(self, f"{stage}_epochs") or getattr(self, f"{stage}_steps"))

    def to_dict(self) -> dict[str, Any]:
        """The recipe's values as JSON; the fields with a default only when they differ from it
        (``sweep`` as ``{key: [values]}``)."""
        values = asdict(self)
        for name, default in OPTIONAL_FIELDS.items():
            if values[name] == default:
                del values[name]
        if self.sweep:
            values["sweep"] = {
                key: [list(v) if isinstance(v, tuple) else v for v in items] for key, items in self.sweep
            }
        return values

    def digest(self, names: tuple[str, ...] | None = None) -> str:
        """A short stable hash of the values of `names` (all fields when None); the sweep is in none, nor an
        optional field at its default (`to_dict` leaves those out)."""
        values = self.to_dict()
        left_out = NOT_TRAINING + ("sweep",)
        chosen = {name: values[name] for name in (names or tuple(values)) if name in values and name not in left_out}
        return hashlib.sha256(json.dumps(chosen, sort_keys=True).encode()).hexdigest()[:12]


# Fields that do not change what a job trains: left out of every digest.
NOT_TRAINING = ("name", "description", "search_time_budget")

# The fields that determine the phase 1-2 model (marked ``phase12()``): its cache key hashes exactly these.
PHASE12_FIELDS = tuple(item.name for item in fields(Recipe) if item.metadata.get(PHASE) == "phase12")
RECIPE_FIELDS = tuple(item.name for item in fields(Recipe))
# The fields only phase 3 (pruning and the pruned model's fine-tuning) reads (``phase3()``, ``pruned_finetune()``).
PHASE3_FIELDS = tuple(item.name for item in fields(Recipe) if item.metadata.get(PHASE) in ("phase3", "pruned_finetune"))
# The fields only the pruned model's fine-tuning reads; the pruning stage reads every other one.
PRUNED_FINETUNE_FIELDS = tuple(item.name for item in fields(Recipe) if item.metadata.get(PHASE) == "pruned_finetune")
SWEEP = "sweep"


def fields_through(stage: str) -> tuple[str, ...] | None:
    """The fields that set a point's model up to the end of ``stage`` (None: every field): phases 1-2's
    at ``finetune``, all but the pruned fine-tuning's at ``prune``."""
    if stage == "finetune":
        return PHASE12_FIELDS
    if stage == "prune":
        return tuple(name for name in RECIPE_FIELDS if name not in PRUNED_FINETUNE_FIELDS)
    return None


# The fields with a default (added after recipes had digests): name -> default.
OPTIONAL_FIELDS = {item.name: item.default for item in fields(Recipe) if item.default is not MISSING}


def load_recipe(name_or_path: str | Path, overrides: dict[str, Any] | None = None) -> Recipe:
    """A shipped recipe by name, or a recipe JSON file, with `overrides` applied by field name.

    A file's values must have the fields' JSON types (an int where a step count goes, true or
    false for a flag); overrides may also be CLI strings, which are parsed. Every error names
    the file or the override it comes from.
    """
    path = recipe_path(name_or_path)
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"recipe file {path} is not valid JSON: {error}") from None
    except OSError as error:
        raise OSError(f"cannot read recipe file {path}: {error.strerror or error}") from None
    if not isinstance(values, dict):
        raise ValueError(f"recipe file {path} must hold a JSON object")
    try:
        recipe = recipe_from_dict(values, strict=True)
    except ValueError as error:
        raise ValueError(f"recipe file {path}: {error}") from None
    if not overrides:
        return recipe
    try:
        return recipe_from_dict({**values, **overrides})
    except ValueError as error:
        given = " ".join(f"{key}={value}" for key, value in overrides.items())
        raise ValueError(f"recipe {recipe.name} with overrides {given}: {error}") from None


def recipe_path(name_or_path: str | Path) -> Path:
    """The JSON file of a shipped recipe name, or the given file; ValueError if there is none."""
    path = RECIPES.get(str(name_or_path), Path(name_or_path).expanduser())
    if not path.is_file():
        known = ", ".join(RECIPES)
        if path.exists():
            raise ValueError(f"recipe {str(name_or_path)!r} is not a file; known recipes: {known} (or a JSON file)")
        raise ValueError(f"unknown recipe {str(name_or_path)!r}; known: {known} (or a JSON file)")
    return path


def recipe_from_dict(values: dict[str, Any], strict: bool = False) -> Recipe:
    """A Recipe from plain values, checking names and converting types.

    ``strict`` (values read from JSON): each value must already have its field's type; otherwise
    strings are parsed, as the CLI's ``--set`` gives them.
    """
    known = {item.name: item for item in fields(Recipe)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"unknown recipe field(s) {', '.join(_with_suggestion(name, known) for name in unknown)}")
    missing = sorted(set(known) - set(values) - set(OPTIONAL_FIELDS))
    if missing:
        raise ValueError(f"recipe is missing field(s) {', '.join(missing)}")
    hints = typing.get_type_hints(Recipe)
    convert = _checked_type if strict else _convert
    converted = {name: convert(name, value, hints[name]) for name, value in values.items() if name != SWEEP}
    return Recipe(**converted, sweep=parse_sweep(values.get(SWEEP, {}), hints))


def parse_sweep(value: Any, hints: dict[str, Any] | None = None) -> tuple[tuple[str, tuple[Any, ...]], ...]:
    """A sweep from JSON (a file's object, or ``--set sweep=`` text), checked: known fields, each
    swept once, non-empty lists of values of the fields' types, one value per field of a group."""
    hints = hints or typing.get_type_hints(Recipe)
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else {}
        except json.JSONDecodeError as error:
            raise ValueError(f"recipe field sweep must be a JSON object, got {value!r} ({error.msg})") from None
    if isinstance(value, tuple):  # already parsed (a Recipe's own sweep)
        return value
    if not isinstance(value, dict):
        raise ValueError(f"recipe field sweep must be a JSON object of field: [values], got {json.dumps(value)}")
    known = {name: name for name in RECIPE_FIELDS if name not in NOT_TRAINING + (SWEEP,)}
    seen: set[str] = set()
    sweep = []
    for key, values in value.items():
        names = [name.strip() for name in str(key).split(",")]
        for name in names:
            if name not in known:
                raise ValueError(f"recipe field sweep: unknown field {_with_suggestion(name, known)}")
            if name in seen:
                raise ValueError(f"recipe field sweep: field {name} is swept twice")
            seen.add(name)
        if not isinstance(values, list) or not values:
            raise ValueError(f"recipe field sweep: {key} needs a non-empty list of values, got {json.dumps(values)}")
        sweep.append((",".join(names), tuple(_sweep_value(names, item, hints) for item in values)))
    return tuple(sweep)


def _sweep_value(names: list[str], item: Any, hints: dict[str, Any]) -> Any:
    """One swept value (a tuple for a group), each of its field's JSON type."""
    key = ",".join(names)
    if len(names) == 1:
        return _checked_type(names[0], item, hints[names[0]])
    if not isinstance(item, list) or len(item) != len(names):
        raise ValueError(
            f"recipe field sweep: each value of {key} must be a list of {len(names)}, got {json.dumps(item)}"
        )
    return tuple(_checked_type(name, part, hints[name]) for name, part in zip(names, item))


def _with_suggestion(name: str, known: dict[str, Any]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    return f"{name} (did you mean {close[0]}?)" if close else f"{name} (not a field of a recipe)"


def parse_overrides(items: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """`["key=value", ...]` (the CLI's --set) as a dict of raw values; types are checked later."""
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"recipe override {item!r} is not of the form key=value")
        overrides[key.strip()] = value.strip()
    return overrides


def _convert(name: str, value: Any, hint: Any) -> Any:
    """`value` as the field's type; strings (from the CLI) are parsed, 'null'/'none' meaning None."""
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if isinstance(value, str) and value.lower() in ("null", "none") and type(None) in options:
        return None
    if value is None:
        if type(None) in options:
            return None
        raise ValueError(f"recipe field {name} cannot be null")
    kind = next(option for option in options if option is not type(None))
    if kind is bool:
        return _convert_bool(name, value)
    try:
        if kind is int:
            converted = float(value)
            if not converted.is_integer():
                raise ValueError
            return int(converted)
        return kind(value)
    except (TypeError, ValueError):
        raise ValueError(f"recipe field {name} must be {kind.__name__}, got {value!r}") from None


_JSON_TYPES = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def _checked_type(name: str, value: Any, hint: Any) -> Any:
    """`value` if it has the JSON type of the field (an int is a valid float); ValueError naming both otherwise."""
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None:
        if type(None) in options:
            return None
        raise ValueError(f"recipe field {name} cannot be null")
    kind = next(option for option in options if option is not type(None))
    fits = isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not fits:
        raise ValueError(f"recipe field {name} must be {_JSON_TYPES[kind]}, got {json.dumps(value)}")
    return value


def _convert_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.lower() in ("true", "1", "yes")
    raise ValueError(f"recipe field {name} must be true or false, got {value!r}")
