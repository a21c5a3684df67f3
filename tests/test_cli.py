"""The `prumux-search` group: every listed command resolves to a real command with help."""

from __future__ import annotations

import pytest

from cli.main import COMMANDS, HELP


def test_help_lists_every_command(run_main) -> None:
    code, out, _ = run_main("--help")
    assert code == 0
    assert all(name in out for name in COMMANDS) and set(HELP) == set(COMMANDS)


@pytest.mark.parametrize("name", list(COMMANDS))
def test_each_command_has_its_own_help(name: str, run_main) -> None:
    code, out, err = run_main(name, "--help")
    assert code == 0, err
    assert f"Usage: prumux-search {name}" in out
