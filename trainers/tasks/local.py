"""Tasks from the user's own files: CSV, TSV, JSON, JSON Lines or parquet.

A file needs the columns `text` and `label`, and `text_pair` for a pair task. A path is
either one file, or a folder holding `train.*` and optionally `validation.*` (or `valid.*`,
`dev.*`) and `test.*`. Labels are mapped to ids in sorted order of their values. Missing
splits are held out from train (10% each, seeded, stratified by label).
"""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
from pyarrow.lib import ArrowException

from storage.errors import first_line
from trainers.tasks.spec import SPLITS, TaskData, TaskSpec
from trainers.tasks.splits import split_frame

SUFFIXES = (".csv", ".tsv", ".json", ".jsonl", ".parquet")
MIN_ROWS_TO_HOLD_OUT = 10  # every 10 rows give 8 to train, 1 to validation, 1 to test
_KINDS = {".csv": "CSV", ".tsv": "TSV", ".json": "JSON", ".jsonl": "JSON Lines", ".parquet": "parquet"}
_SPLIT_STEMS = {"train": ("train",), "validation": ("validation", "valid", "dev"), "test": ("test",)}


def looks_like_path(name: str) -> bool:
    """Whether a task name refers to a file or folder rather than a registered task."""
    return Path(name).exists() or name.lower().endswith(SUFFIXES) or "/" in name


def load_local(path: str | Path, seed: int = 0) -> TaskData:
    """Load a task from a file or folder of files (see the module docstring)."""
    path = Path(path)
    if not path.exists():
        raise OSError(f"task file or folder {str(path)!r} does not exist")
    if not path.is_file() and not path.is_dir():
        raise ValueError(f"task {str(path)!r} is neither a file nor a folder")
    frames = _read_splits(path)
    is_pair = _is_pair(frames)
    label_names, frames = _label_ids(frames)
    frames = _complete_splits(frames, seed, path.name)
    spec = TaskSpec(
        name=str(path),
        label_names=label_names,
        is_pair=is_pair,
        description=f"local task from {path.name}",
        source=str(path.resolve()),
    )
    return TaskData(spec, *(frames[split][spec.columns] for split in SPLITS))


def _is_pair(frames: dict[str, pd.DataFrame]) -> bool:
    with_pair = {split for split, frame in frames.items() if "text_pair" in frame.columns}
    if with_pair and with_pair != set(frames):
        raise ValueError(f"only some task files have a text_pair column ({', '.join(sorted(with_pair))})")
    return bool(with_pair)


def _read_splits(path: Path) -> dict[str, pd.DataFrame]:
    if path.is_file():
        return {"train": _read_file(path)}
    found = {split: _split_file(path, stems) for split, stems in _SPLIT_STEMS.items()}
    if found["train"] is None:
        raise ValueError(f"folder {str(path)!r} has no train file (train{'/'.join(SUFFIXES)})")
    return {split: _read_file(file) for split, file in found.items() if file is not None}


def _split_file(folder: Path, stems: tuple[str, ...]) -> Path | None:
    files = [folder / f"{stem}{suffix}" for stem in stems for suffix in SUFFIXES]
    files = [file for file in files if file.is_file()]
    if len(files) > 1:
        raise ValueError(f"folder {str(folder)!r} has several files for one split: {', '.join(f.name for f in files)}")
    return files[0] if files else None


def _read_file(file: Path) -> pd.DataFrame:
    suffix = file.suffix.lower()
    if suffix not in SUFFIXES:
        raise ValueError(f"unsupported task file {file.name!r}; use one of {', '.join(SUFFIXES)}")
    try:
        text = None if suffix == ".parquet" else _utf8_text(file)
        frame = pd.read_parquet(file) if text is None else _read_text_table(suffix, text)
    except _UnusableFile:
        raise
    except OSError as error:
        raise OSError(f"cannot read task file {str(file)!r}: {error.strerror or error}") from None
    except (ValueError, ArrowException) as error:  # what pandas and pyarrow raise on malformed content
        raise ValueError(
            f"task file {file.name!r} is not valid {_KINDS[suffix]}: {_brief(first_line(error))}"
        ) from None
    return _checked(frame, file)


class _UnusableFile(ValueError):
    """Raised while reading a task file, with the message to show as is."""


def _utf8_text(file: Path) -> str:
    data = file.read_bytes()
    if not data.strip():
        raise _UnusableFile(f"task file {file.name!r} is empty")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise _UnusableFile(
            f"task file {file.name!r} is not UTF-8 text (byte 0x{data[error.start]:02x} at offset {error.start}); "
            "save it as UTF-8"
        ) from None


def _read_text_table(suffix: str, text: str) -> pd.DataFrame:
    if suffix in (".json", ".jsonl"):
        # A .json file may hold one array of records or one record per line.
        lines = suffix == ".jsonl" or not text.lstrip().startswith("[")
        return pd.read_json(io.StringIO(text), lines=lines)
    return pd.read_csv(io.StringIO(text), sep="\t" if suffix == ".tsv" else ",")


def _checked(frame: pd.DataFrame, file: Path) -> pd.DataFrame:
    missing = [column for column in ("text", "label") if column not in frame.columns]
    if missing:
        found = ", ".join(_brief(str(column), 30) for column in list(frame.columns)[:6])
        more = f" and {len(frame.columns) - 6} more" if len(frame.columns) > 6 else ""
        raise ValueError(
            f"task file {file.name!r} lacks column(s) {', '.join(missing)}; it needs text and label "
            f"(and text_pair for pair tasks), found {found or 'no columns'}{more}"
        )
    if frame.empty:
        raise ValueError(f"task file {file.name!r} has no rows, only a header")
    columns = [column for column in ("text", "text_pair", "label") if column in frame.columns]
    incomplete = int(frame[columns].isna().any(axis=1).sum())
    if incomplete:
        raise ValueError(f"task file {file.name!r} has {incomplete} row(s) with an empty {', '.join(columns)} value")
    texts = {column: frame[column].astype(str) for column in ("text", "text_pair") if column in frame.columns}
    return frame[columns].assign(**texts).reset_index(drop=True)


def _complete_splits(frames: dict[str, pd.DataFrame], seed: int, name: str) -> dict[str, pd.DataFrame]:
    """Hold out the missing validation / test splits from train; held-out parts of present splits stay in train."""
    pieces = dict(zip(SPLITS, split_frame(frames["train"], seed, stratify="label")))
    completed = {split: frames.get(split, pieces[split]) for split in ("validation", "test")}
    completed["train"] = pd.concat(
        [pieces["train"], *(pieces[split] for split in ("validation", "test") if split in frames)], ignore_index=True
    )
    if min(len(frame) for frame in completed.values()) == 0:
        missing = " and ".join(split for split in ("validation", "test") if split not in frames)
        raise ValueError(
            f"task {name!r} has {len(frames['train'])} training row(s); a local task needs at least "
            f"{MIN_ROWS_TO_HOLD_OUT} to hold out {missing} (10% each), or {missing} files beside train in a folder"
        )
    return completed


def _brief(text: str, limit: int = 120) -> str:
    """``text`` cut to ``limit`` characters, for messages that quote the user's data."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _label_ids(frames: dict[str, pd.DataFrame]) -> tuple[tuple[str, ...], dict[str, pd.DataFrame]]:
    """Map label values to ids 0..C-1 in sorted order; return the label names and relabelled frames."""
    values = pd.concat([frame["label"] for frame in frames.values()])
    try:
        ordered = sorted(values.unique())
    except TypeError:
        raise ValueError("task labels mix numbers and strings; use one kind in every file") from None
    ids = {value: index for index, value in enumerate(ordered)}
    relabelled = {split: frame.assign(label=frame["label"].map(ids).astype("int64")) for split, frame in frames.items()}
    return tuple(str(value) for value in ordered), relabelled
