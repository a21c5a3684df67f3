"""Where the trials' files (models, figures) are stored for optuna-dashboard."""

from __future__ import annotations

from pathlib import Path

from optuna.artifacts import FileSystemArtifactStore

from storage.remote import is_uri


def artifact_dir(run_dir: str | Path) -> Path:
    """Return the artifact folder of a run directory."""
    return Path(run_dir).expanduser().resolve() / "artifacts"


def open_artifact_store(run_dir: str | Path, create: bool = True) -> FileSystemArtifactStore | None:
    """Return the run directory's artifact store; without ``create``, None if it has none
    (always None for a run directory at a URI)."""
    if is_uri(run_dir):
        return None
    folder = artifact_dir(run_dir)
    if create:
        folder.mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(folder) if folder.is_dir() else None
