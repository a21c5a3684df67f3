"""The front door of every job: all of its inputs checked and resolved before anything starts.

`check_job` is what `start`, `train`, `import`, `submit` (and any command that trains or
measures points) call first, in the process the user typed the command in: the task loads and
can be trained on, the base model and its tokenizer load for every N, the recipe parses, the
(N, s) points are valid, and the recipe fits the model. It writes nothing; a failure is one
ValueError (or OSError) whose message names the input and what is wrong, which the CLI prints
as one line with exit status 2.

Paths mean what the user typed: a relative task file or folder, model folder or recipe file is
resolved against the caller's working directory (``cwd``), and the job carries the absolute
form, which is what goes to the workers and into the study; ``given`` keeps the text typed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from trainers.evaluate import check_label_names
from trainers.models import CheckedModel, check_model
from trainers.point_spec import PointSpec, check_point
from trainers.recipes import RECIPES, Recipe, load_recipe, parse_overrides
from trainers.tasks import TaskData, check_task


@dataclass(frozen=True)
class Job:
    """A checked job: resolved inputs, the loaded recipe and task, and the model per N."""

    task: str  # a registered task name, or the absolute path of a local file or folder
    base_model: str  # an alias, a hub id, or the absolute path of a local folder
    recipe: Recipe  # with the overrides applied
    recipe_label: str  # the recipe's name or absolute path, plus its overrides: what the study records
    data: TaskData
    model: CheckedModel
    recipe_file: Path | None = None  # the recipe's JSON file, unless it is a shipped recipe
    given: dict[str, str] = field(default_factory=dict)  # the text typed for task, base_model, recipe

    def point(self, N: int, s: float, workdir: str | Path) -> PointSpec:
        """The job's point (N, s), trained in ``workdir`` with the job's recipe."""
        return PointSpec(self.task, self.base_model, N, s, self.recipe, workdir)

    def local_inputs(self) -> dict[str, Path]:
        """The inputs that are files on this machine (a cluster's other nodes may not have them)."""
        inputs = {"task file": self.task, "model folder": self.base_model, "recipe file": str(self.recipe_file or "")}
        return {what: Path(value) for what, value in inputs.items() if value and Path(value).is_absolute()}


def check_job(
    task: str,
    model: str,
    recipe: str | Path = "cpu-demo",
    overrides: Sequence[str] = (),
    *,
    grid_N: Sequence[int] = (1,),
    grid_s: Sequence[float] = (0.0,),
    cwd: str | Path | None = None,
    hub: bool = True,
    tokenizer: str | None = None,
) -> Job:
    """Check a job that trains the points ``grid_N x grid_s`` of ``task`` on ``model`` with ``recipe``.

    ``overrides`` are ``key=value`` recipe changes (the CLI's ``--set``); ``cwd`` is where
    relative paths are resolved (default: the working directory); ``tokenizer`` another model's
    tokenizer to use (``evaluate --tokenizer``). With ``hub=False`` hub-only
    models are not loaded here (a remote cluster's nodes fetch them themselves). Checks, in order:

    - the recipe: a shipped name or a JSON file; unknown fields (with the closest known name),
      wrong types and out-of-range values are named;
    - every point: N an integer >= 1, s in [0, 1);
    - the task (``trainers.tasks.check_task``): registered or a local file/folder that exists,
      reads as UTF-8 CSV/TSV/JSON/parquet with ``text``, optional ``text_pair`` and ``label``,
      has rows for every split, two labels or more in train, no unseen label in validation/test;
    - the model (``trainers.models.check_model``), which resolves the checkpoint of every N;
    - the recipe against the model: its sequence length fits the model's position embeddings;
    - a fine-tuned checkpoint's named labels against the task's (unnamed ones are checked on data in the trial).
    """
    root = Path(cwd or Path.cwd())
    loaded, label, recipe_file = _check_recipe(str(recipe), overrides, root)
    for N in grid_N:
        for s in grid_s:
            check_point(N, s)
    task_name, data = check_task(task, seed=loaded.seed, cwd=root)
    checked = check_model(model, grid_N, cwd=root, hub=hub, tokenizer=tokenizer)
    if checked.max_length is not None and loaded.seq_len > checked.max_length:
        raise ValueError(
            f"recipe {label}: seq_len {loaded.seq_len} is longer than base model {model!r} takes "
            f"({checked.max_length} positions); use --set seq_len={checked.max_length} or less"
        )
    for N, names in checked.label_names.items():
        check_label_names(names, data.spec.label_names, checked.checkpoints[N])
    given = {"task": task, "base_model": model, "recipe": str(recipe)}
    return Job(task_name, checked.name, loaded, label, data, checked, recipe_file, given)


def check_writable_dir(path: str | Path, what: str, cwd: str | Path | None = None) -> Path:
    """The absolute form of a folder a job will write, if it exists and is writable or can be
    created (its nearest existing parent is a writable folder). Creates nothing."""
    resolved = (Path(cwd or Path.cwd()) / Path(path).expanduser()).resolve()
    existing = resolved
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise OSError(f"cannot create {what} {resolved}: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        where = "" if existing == resolved else f" ({existing} is not writable)"
        raise OSError(f"{what} {resolved} is not writable{where}")
    return resolved


def _check_recipe(recipe: str, overrides: Sequence[str], root: Path) -> tuple[Recipe, str, Path | None]:
    """The loaded recipe, its label (name or absolute path, plus overrides) and its file unless shipped."""
    file = None if recipe in RECIPES else (root / Path(recipe).expanduser()).resolve()
    if file is not None and not file.is_file():
        raise ValueError(f"unknown recipe {recipe!r}; known: {', '.join(RECIPES)}, or a JSON file (looked for {file})")
    changes = parse_overrides(overrides)
    loaded = load_recipe(file or recipe, changes)
    label = str(file or recipe) + "".join(f" {key}={getattr(loaded, key)}" for key in sorted(changes))
    return loaded, label, file
