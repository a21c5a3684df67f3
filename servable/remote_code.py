"""Our model's code written into an exported folder, so that plain transformers loads it (remote code).

Users of an exported model do not have our package. The folder gets `servable.hf_modeling` as
``modeling_prumux.py`` and every module of ours it imports at module level, recursively (the
model, its encoder, multiplexer, heads and config), each as ``prumux_<name>.py`` with its imports
of our package made relative: transformers copies a remote module's relative imports with it. An
import of ours inside a function that the folder does not ship (the loaders of other checkpoints,
pruning) becomes a one-line ImportError there. The files are generated from the installed sources
at export time, never kept as a second copy.
"""

from __future__ import annotations

import ast
import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ENTRY_MODULE = "servable.hf_modeling"
ENTRY_FILE = "modeling_prumux"
OURS = ("prumux", "servable", "storage")  # the packages at or below servable, so all an import of it may name
CONFIG_JSON = "config.json"


def write_remote_code(folder: Path) -> list[str]:
    """Write ``modeling_prumux.py`` and the modules of ours it needs into ``folder``; the file names written."""
    files = {module: _file_name(module) for module in _shipped_modules()}
    for module, name in files.items():
        source = _source(module)
        header = f"# Written by `prumux-search export` from {module} (imports of our package made relative).\n"
        (folder / name).write_text(header + relative_imports(source, module, files))
    return sorted(files.values())


def write_hf_config(folder: Path, prumux: dict[str, Any], seq_len: int, label_names: tuple[str, ...]) -> None:
    """Write transformers' ``config.json``: our config, the sequence length, the labels, and where the classes are."""
    from transformers import __version__

    entry = ENTRY_FILE
    config = {
        "model_type": "prumux",
        "architectures": ["PruMUXForSequenceClassification"],
        "auto_map": {
            "AutoConfig": f"{entry}.PruMUXHFConfig",
            "AutoModelForSequenceClassification": f"{entry}.PruMUXForSequenceClassification",
        },
        "custom_pipelines": {
            "text-classification": {
                "impl": f"{entry}.PruMUXClassificationPipeline",
                "pt": ["AutoModelForSequenceClassification"],
                "type": "text",
            }
        },
        "id2label": {str(index): name for index, name in enumerate(label_names)},
        "label2id": {name: index for index, name in enumerate(label_names)},
        "prumux": prumux,
        "seq_len": seq_len,
        "transformers_version": __version__,
    }
    (folder / CONFIG_JSON).write_text(json.dumps(config, indent=2) + "\n")


def relative_imports(source: str, module: str, shipped: dict[str, str]) -> str:
    """``source`` with each import of our package rewritten: relative where ``shipped`` names the module's file,
    else (only inside a function) a statement raising ImportError."""
    lines = source.splitlines(keepends=True)
    for node in sorted(_our_imports(ast.parse(source)), key=lambda node: node.lineno, reverse=True):
        indent = lines[node.lineno - 1][: node.col_offset]
        if node.module in shipped:
            node.module, node.level = shipped[node.module].removesuffix(".py"), 1
            statement = ast.unparse(node)
        else:
            statement = (
                f'raise ImportError("{node.module} is not part of this exported model folder: '
                'it needs the prumux-search package")'
            )
        lines[node.lineno - 1 : node.end_lineno] = [f"{indent}{statement}\n"]
    return "".join(lines)


def _shipped_modules() -> list[str]:
    """The entry module and, recursively, every module of ours imported at module level."""
    found, pending = [], [ENTRY_MODULE]
    while pending:
        module = pending.pop()
        if module in found:
            continue
        found.append(module)
        tree = ast.parse(_source(module))
        for node in tree.body:
            if isinstance(node, ast.ImportFrom) and _is_ours(node):
                if importlib.util.find_spec(node.module).submodule_search_locations is not None:
                    raise RuntimeError(f"{module} imports the package {node.module} at module level; name its module")
                pending.append(node.module)
    return found


def _our_imports(tree: ast.AST) -> Iterator[ast.ImportFrom]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(alias.name.split(".")[0] in OURS for alias in node.names):
            raise RuntimeError(f"`import {node.names[0].name}` (line {node.lineno}): use `from ... import ...`")
        if isinstance(node, ast.ImportFrom) and _is_ours(node):
            yield node


def _is_ours(node: ast.ImportFrom) -> bool:
    return node.level == 0 and (node.module or "").split(".")[0] in OURS


def _file_name(module: str) -> str:
    return f"{ENTRY_FILE}.py" if module == ENTRY_MODULE else module.replace(".", "_") + ".py"


def _source(module: str) -> str:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise RuntimeError(f"the module {module} is not installed")
    return Path(spec.origin).read_text()
