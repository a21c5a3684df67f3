"""The HTML report opened in a real headless Chromium (Debian's `chromium`), offline."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from test_dashboards import IMPORTED, TRAINED, seed_study

import storage
from dashboards import write_report

import conftest

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-logging=stderr",
    "--v=0",
    "--virtual-time-budget=5000",
]
# with --enable-logging, every console message of the page is logged as "...:CONSOLE..." lines
CONSOLE = re.compile(r":CONSOLE[^\]]*\] (.*)")


@pytest.fixture(scope="module")
def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        conftest._missing("Debian's chromium is not installed (apt-get install -y chromium)")
    return path


def open_page(chromium: str, page: Path, tmp_path: Path, *extra: str) -> tuple[str, list[str]]:
    """Load ``page``; return the rendered DOM and the page's console messages."""
    run = subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *extra, "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return run.stdout, CONSOLE.findall(run.stderr)


def test_console_errors_are_caught(chromium: str, tmp_path: Path) -> None:
    page = tmp_path / "broken.html"
    page.write_text("<html><body><script>throw new Error('boom');</script></body></html>")
    _, console = open_page(chromium, page, tmp_path)
    assert any("Uncaught Error: boom" in message for message in console)


def test_report_renders_both_figures_without_errors(chromium: str, tmp_path: Path) -> None:
    study = seed_study(storage.default_url(tmp_path / "run"))
    report = write_report(study, tmp_path / "report.html", png_dir=tmp_path / "png")
    screenshot = tmp_path / "report.png"
    dom, console = open_page(chromium, report, tmp_path, f"--screenshot={screenshot}", "--window-size=1300,1800")
    assert console == []
    frontier, surrogate_map = dom.split('id="surrogate-map"')
    frontier = frontier.split('id="frontier"')[1]
    measured = len(TRAINED) + len(IMPORTED)
    # one marker per complete trial plus the recommended star; one (N, s) label per trial
    assert len(re.findall(r'class="point[ "]', frontier)) == measured + 1
    assert len(re.findall(r'class="textpoint"', frontier)) == measured
    assert ">(2, 0.7)<" in frontier
    assert surrogate_map.count('class="hm"') == 2  # the two heat maps
    assert len(re.findall(r'class="point[ "]', surrogate_map.split("</table>")[0])) == 2 * measured
    assert screenshot.stat().st_size > 10_000
    assert sorted(path.name for path in (tmp_path / "png").iterdir()) == ["frontier.png", "surrogate-map.png"]
