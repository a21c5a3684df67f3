"""benchmarks/gpu_check.py runs end to end on CPU (`--device cpu --quick`), so the GPU check cannot rot.

One run (a few minutes on two shared cores: two local Ray instances, the default search's command on the
tiny recipe, Ray Serve), then its report is read section by section.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SECTIONS = (
    "1. The paper's protocol",
    "2. The default search",
    "3. Multiplexing a plain base",
    "4. Serving",
    "5a. Encoder",
    "5b. Ray Tune",
    "Findings",
)
QUICK_POINTS = [(1, 0.0), (1, 0.6), (2, 0.0), (2, 0.6)]  # gpu_check.QUICK's protocol grid
ROW = re.compile(r"([\d,]+) \(([\d.]+)x, ([\d.]+)\)")  # instances/s (speed-up, share of the model FLOP ideal)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """The report as printed and as written to --out."""
    pytest.importorskip("ray")
    pytest.importorskip("onnxruntime")
    out = tmp_path_factory.mktemp("gpu-check") / "report.md"
    environment = os.environ | {"PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "benchmarks/gpu_check.py", "--device", "cpu", "--quick", "--out", str(out)],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=1200,
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


def number(cell: str) -> float:
    return float(cell.replace(",", "").rstrip("x%"))


def test_report_has_every_section_in_order_and_is_written_to_out(report: tuple[str, str]) -> None:
    printed, written = report
    ours = "\n".join(line for line in printed.splitlines() if "(raylet)" not in line)  # Ray's own notices aside
    assert written.strip() in ours
    assert [title for title in SECTIONS if f"\n## {title}" in written] == list(SECTIONS)
    positions = [written.index(f"\n## {title}") for title in SECTIONS]
    assert positions == sorted(positions)
    assert "failed:" not in written and "skipped:" not in written


def test_every_finding_says_where_the_report_explains_it(report: tuple[str, str]) -> None:
    findings = [line for line in section(report[1], "Findings").splitlines() if line.startswith("- ")]
    assert findings
    assert all("; see: " in line for line in findings) or findings == ["- every figure meets its expectation"]


def test_protocol_times_every_shape_eager_and_on_each_runtime_in_both_dtypes(report: tuple[str, str]) -> None:
    text = section(report[1], "1. The paper's protocol")
    float32, bfloat16 = (section(text.replace("### ", "## "), dtype) for dtype in ("float32", "bfloat16"))
    for dtype_text, runtimes in ((float32, ("eager", "torch", "onnx")), (bfloat16, ("eager", "torch"))):
        rows = tables(dtype_text)[0]
        points = {(int(row[1]), float(row[2])): row for row in rows}
        assert set(points) == {*QUICK_POINTS, (1, 1.0), (2, 1.0)}  # and each N's floor
        assert points[(1, 0.0)][4].endswith("(1.00x, 1.00)")
        for (n, s), row in points.items():
            ideal = number(row[3])
            cells = dict(zip(("eager", "torch", "onnx"), row[4:]))
            for runtime in runtimes if s < 1 else ("eager",):
                speed, speedup, share = ROW.fullmatch(cells[runtime]).groups()
                assert number(speed) > 0 and float(share) == pytest.approx(float(speedup) / ideal, rel=0.01, abs=0.01)
            assert ideal >= 1 and (ideal > 1) == ((n, s) != (1, 0.0))
    assert "onnx: not run in bfloat16: `prumux.inference` exports the graph in float32" in bfloat16


def test_default_search_runs_start_whole_and_reports_its_outcome(report: tuple[str, str]) -> None:
    text = section(report[1], "2. The default search")
    assert re.search(r"`prumux-search start --run-dir \S+ --time-budget \d+ --model \S+ --recipe tiny", text)
    assert "exit 0" in text and "stopped: the search is done" in text
    rows = tables(text)[0]
    assert {(int(row[1]), float(row[2])) for row in rows} <= {(n, s) for n in (1, 2) for s in (0.0, 0.5)}
    assert (1, 0.0) in {(int(row[1]), float(row[2])) for row in rows}
    assert all(row[3] in {"COMPLETE", "PRUNED"} for row in rows)
    rate = re.search(r"steps per wall second of the whole search: ([\d.]+) here, 0.70 on 2 CPU cores", text)
    assert rate and float(rate.group(1)) > 0
    assert re.search(r"recommended: (trial \d+, \(N=\d+, s=[\d.]+\)|none \()", text)


def test_multiplexing_trains_each_path_and_length_against_dense(report: tuple[str, str]) -> None:
    text = section(report[1], "3. Multiplexing a plain base")
    dense = float(re.search(r"dense \(1, 0\) trained as a search trains it: ([\d.]+)", text).group(1))
    rows = tables(text)[0]
    assert [(row[0].split(" (")[0], int(row[1])) for row in rows] == [
        ("phase 2 from the dense classifier", 2),
        ("retrieval, then MLM, then phase 2", 2),
        ("phase 2 from the dense classifier", 5),
    ]
    for row in rows:
        assert len(row) == 5  # 2, 4 and 8 steps
        for cell in row[2:]:
            accuracy, points, seconds = re.fullmatch(r"([\d.]+) \(([+-][\d.]+), (\d+) s\)", cell).groups()
            assert 0 <= float(accuracy) <= 1 and float(seconds) >= 0
            assert float(points) == pytest.approx(100 * (float(accuracy) - dense), abs=0.06)


def test_serving_measures_each_runtime_at_1_and_32_texts_a_request(report: tuple[str, str]) -> None:
    text = section(report[1], "4. Serving")
    model_level = number(re.search(r"model-level \(eager, batches of 128 N\): ([\d,]+) instances/s", text).group(1))
    rows = tables(text)[0]
    measured = [row for row in rows if len(row) == 9]
    saturated = [(row[0], int(row[1])) for row in measured if row[2] == "saturation"]
    assert saturated == [("eager", 1), ("eager", 32), ("onnx", 1), ("onnx", 32)]
    assert "ONNX Runtime's provider: CPUExecutionProvider;" in text
    for row in measured:
        assert number(row[4]) > 0 and number(row[8]) == pytest.approx(100 * number(row[4]) / model_level, abs=0.1)


def test_encoder_matches_bert_model_and_is_timed_in_both_dtypes(report: tuple[str, str]) -> None:
    rows = {row[0]: row for row in tables(section(report[1], "5a. Encoder"))[0]}
    assert set(rows) == {"bfloat16", "float32"}
    for dtype, (_, ours, theirs, ratio, difference) in rows.items():
        assert number(ours) > 0 and number(theirs) > 0
        assert number(ratio) == pytest.approx(number(ours) / number(theirs), rel=0.02)
        assert float(difference) < (1e-4 if dtype == "float32" else 3e-2)  # the same function of the same weights


def test_tune_ran_four_trials_at_once_and_completed(report: tuple[str, str]) -> None:
    text = section(report[1], "5b. Ray Tune")
    assert "cpus_per_trial 0.5, concurrency 4" in text
    assert "outcome: the search is done" in text
    assert int(re.search(r"most trials running at once: (\d+)", text).group(1)) == 4
    rows = tables(text)[0]
    assert len(rows) == 4 and {row[3] for row in rows} == {"COMPLETE"}
    assert all(row[4].endswith("threads)") for row in rows)  # hardware_name of a CPU device
    assert all(0 <= float(row[5]) <= 1 and number(row[6]) > 0 for row in rows)


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
