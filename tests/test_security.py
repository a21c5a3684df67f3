"""Security properties that hold by construction: no unsafe deserialisation of model files,
loopback-only servers by default, and the one-tenant warning in every exported model card.
(Database passwords in outputs, logs and the dashboard note: `test_faults.py`, on a real search.)"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import optuna
from optuna.distributions import CategoricalDistribution

from cli.commands.dashboard import dashboard
from servable import model_card

from conftest import REPO, client_env

PACKAGES = ("prumux", "trainers", "search", "storage", "dashboards", "servable", "serving", "benchmarks")
PICKLE_MODULES = {"pickle", "cPickle", "cloudpickle", "dill", "joblib", "shelve", "marshal"}


def unsafe_loads(path: Path) -> list[str]:
    """The calls and imports of ``path`` that could unpickle a file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        where = f"{path.relative_to(REPO)}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [alias.name for alias in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
            found += [f"{where} imports {name}" for name in names if name and name.split(".")[0] in PICKLE_MODULES]
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            call = ast.unparse(node.func)
            keywords = {k.arg: ast.unparse(k.value) for k in node.keywords}
            if call == "torch.load" and keywords.get("weights_only") != "True":
                found.append(f"{where} torch.load without weights_only=True")
            if node.func.attr == "read_pickle" or keywords.get("allow_pickle") == "True":
                found.append(f"{where} {call} unpickles")
    return found


def test_no_source_file_unpickles() -> None:
    files = [path for package in PACKAGES for path in (REPO / package).rglob("*.py")]
    assert len(files) > 20
    assert [problem for path in files for problem in unsafe_loads(path)] == []


def test_the_scan_finds_unsafe_loads(tmp_path: Path) -> None:
    bad = REPO / "tests" / f"_unsafe_{tmp_path.name}.py"
    bad.write_text(
        "import pickle\nimport torch\nstate = torch.load('m.pt')\nok = torch.load('m.pt', weights_only=True)\n"
    )
    try:
        assert [line.split(" ", 1)[1] for line in unsafe_loads(bad)] == [
            "imports pickle",
            "torch.load without weights_only=True",
        ]
    finally:
        bad.unlink()


def test_dashboard_and_serve_bind_to_loopback_by_default() -> None:
    from cli.commands.serve import serve

    for command in (dashboard, serve):
        host = next(option for option in command.params if option.name == "host")
        assert host.default == "127.0.0.1"


LOCAL_RAY = """
import os
import ray
from ray._private.authentication.authentication_utils import is_token_auth_enabled
from tuning.ray_session import connect_ray
with connect_ray():
    niceness = ray.get(ray.remote(lambda: os.nice(0)).remote())
    print(ray._private.worker.global_worker.node.webui_url or "no dashboard", is_token_auth_enabled(), niceness == os.nice(0))
"""


def test_local_ray_has_no_dashboard_requires_a_token_and_works_at_our_priority() -> None:
    """Ray's own ports listen on every interface (Ray cannot bind them to loopback): the local
    instance therefore runs no dashboard and keeps Ray's token authentication on. Its workers run
    at this process's priority, not Ray's default niceness 15."""
    done = subprocess.run(
        [sys.executable, "-c", LOCAL_RAY], capture_output=True, text=True, env=client_env(), timeout=180, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "no dashboard True True"


def test_model_card_warns_to_multiplex_one_tenant_only() -> None:
    trial = optuna.trial.create_trial(
        params={"N": 2, "s": 0.5},
        distributions={"N": CategoricalDistribution([1, 2]), "s": CategoricalDistribution([0.0, 0.5])},
        values=[0.88, 300.0],
        constraints={"accuracy": -0.01},
    )
    card = model_card(trial, None)
    assert "mixes instances in one forward pass" in card and "only" in card and "requests of one tenant" in card
