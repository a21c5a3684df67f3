"""benchmarks/gpu_check.py runs end to end on CPU (`--device cpu --quick`), so the GPU check cannot rot.

One run (about 1.5 minutes on two shared cores: a local Ray with 2 CPUs, a smoke search, Ray Serve),
then its report is read section by section.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SECTIONS = ("1. Encoder", "2. The paper's throughput table", "3. Ray Tune", "4. Serving", "Findings")


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """The report as printed and as written to --out."""
    pytest.importorskip("ray")
    out = tmp_path_factory.mktemp("gpu-check") / "report.md"
    environment = os.environ | {"PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "benchmarks/gpu_check.py", "--device", "cpu", "--quick", "--out", str(out)],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout, out.read_text()


def section(text: str, title: str) -> str:
    return text.split(f"## {title}", 1)[1].split("\n## ", 1)[0]


def tables(text: str) -> list[list[list[str]]]:
    """The cells of the body rows of each markdown table in ``text``."""
    blocks = [block.splitlines() for block in text.split("\n\n")]
    return [
        [[cell.strip() for cell in line.strip("|").split("|")] for line in block[2:]]
        for block in blocks
        if block and block[0].startswith("|")
    ]


def table_rows(text: str) -> list[list[str]]:
    """The cells of the first markdown table's body rows."""
    return tables(text)[0]


def number(cell: str) -> float:
    return float(cell.replace(",", "").rstrip("x%"))


def test_report_has_every_section_and_is_written_to_out(report: tuple[str, str]) -> None:
    printed, written = report
    assert written in printed
    assert [title for title in SECTIONS if f"\n## {title}" in written] == list(SECTIONS)
    assert "failed:" not in written and "skipped:" not in written


def test_encoder_matches_bert_model_and_is_timed_in_both_dtypes(report: tuple[str, str]) -> None:
    rows = {row[0]: row for row in table_rows(section(report[1], "1. Encoder"))}
    assert set(rows) == {"bfloat16", "float32"}
    for dtype, (_, ours, theirs, ratio, difference) in rows.items():
        assert number(ours) > 0 and number(theirs) > 0
        assert number(ratio) == pytest.approx(number(ours) / number(theirs), rel=0.02)
        assert float(difference) < (1e-4 if dtype == "float32" else 3e-2)  # the same function of the same weights


def test_throughput_table_holds_every_point_with_its_flop_ideals(report: tuple[str, str]) -> None:
    rows = table_rows(section(report[1], "2. The paper's throughput table"))
    points = {(int(row[1]), float(row[2])): row for row in rows}
    assert set(points) == {(n, s) for n in (1, 2, 5, 10) for s in (0.0, 0.6, 0.95)}
    assert points[(1, 0.0)][5] == "1.00x"
    for (n, s), row in points.items():
        assert (
            row[0]
            == {(False, False): "dense", (True, False): "DataMUX", (False, True): "CoFi", (True, True): "PruMUX"}[
                (n > 1, s > 0)
            ]
        )
        assert number(row[3]) == pytest.approx(s, abs=0.01)  # realised sparsity of the seeded mask
        speedup, model_ideal, share = number(row[5]), number(row[7]), number(row[9])
        assert speedup > 0 and model_ideal >= 1 and share == pytest.approx(speedup / model_ideal, abs=0.01)


def test_each_pruned_shape_is_timed_with_aligned_ffn_widths_and_against_its_floor(report: tuple[str, str]) -> None:
    rows = tables(section(report[1], "2. The paper's throughput table"))[1]
    assert [(int(row[0]), float(row[1])) for row in rows] == [(n, s) for n in (1, 2, 5, 10) for s in (0.6, 0.95)]
    for row in rows:
        speeds = [number(cell.split(" (")[0]) for cell in row[2:]]
        assert len(speeds) == 4 and min(speeds) > 0
    floors = {int(row[0]): row[-1] for row in rows}
    assert all(row[-1] == floors[int(row[0])] for row in rows)  # one floor per N


def test_search_ran_four_trials_at_once_and_completed(report: tuple[str, str]) -> None:
    text = section(report[1], "3. Ray Tune")
    assert "cpus_per_trial 0.5, concurrency 4" in text
    assert "outcome: the search is done" in text
    assert int(re.search(r"most trials running at once: (\d+)", text).group(1)) == 4
    rows = table_rows(text)
    assert len(rows) == 4 and {row[3] for row in rows} == {"COMPLETE"}
    assert all(row[4].endswith("threads)") for row in rows)  # hardware_name of a CPU device
    assert all(0 <= float(row[5]) <= 1 and number(row[6]) > 0 for row in rows)


def test_serving_answers_every_request_and_is_set_against_model_level(report: tuple[str, str]) -> None:
    text = section(report[1], "4. Serving")
    rows = table_rows(text)
    assert [row[0] for row in rows][::2] == ["N1-s0", "N2-s0.5"]
    assert all(number(row[6]) > 0 for row in rows)  # instances/s
    shares = re.findall(r"served end to end at ([\d.]+)% of its model-level", text)
    assert len(shares) == 2 and all(0 < float(share) for share in shares)


def test_a_bad_device_is_refused_before_anything_runs() -> None:
    done = subprocess.run(
        [sys.executable, "benchmarks/gpu_check.py", "--device", "tpu"],
        cwd=REPO,
        env=os.environ | {"PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "error: --device must be cpu or cuda[:K], got 'tpu'" in done.stderr
    assert done.stdout == ""
