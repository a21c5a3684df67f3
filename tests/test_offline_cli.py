"""`prumux-search predict` and `replay` through the real CLI entry point, in process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli.main import main

POINTS = """N,s,accuracy,throughput
1,0,0.90,1.0
1,0.5,0.89,2.0
1,0.9,0.85,6.0
2,0,0.885,2.0
2,0.5,0.875,4.0
2,0.9,0.83,12.0
"""
TABLE = Path(__file__).parents[1] / "benchmarks" / "tables" / "qqp.csv"


def cli(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as stop:
        main(list(args))
        raise SystemExit(0)
    captured = capsys.readouterr()
    return stop.value.code or 0, captured.out, captured.err


@pytest.fixture
def points(tmp_path) -> Path:
    path = tmp_path / "measured.csv"
    path.write_text(POINTS)
    return path


def test_predict_reproduces_hand_computed_top_3(capsys, points):
    # threshold 0.90 - 0.03 = 0.87: (2, 0.5) 4.0x, then the 2.0x tie, more accurate first.
    code, out, _ = cli(capsys, "predict", "--points", str(points), "--budget", "0.03", "--format", "json")
    assert code == 0
    top = json.loads(out)
    assert top["budget"] == 0.03
    assert [(r["N"], r["s"], r["throughput"]) for r in top["top"]] == [(2, 0.5, 4.0), (1, 0.5, 2.0), (2, 0.0, 2.0)]


def test_predict_budgets_report_true_best_share(capsys, points):
    code, out, _ = cli(capsys, "predict", "--points", str(points), "--budgets", "0:0.06:0.03")
    assert code == 0
    assert "actual best: (N=1, s=0.9)  in top" in out
    assert "true best within top 3: 3/3 budgets (100.0%)" in out
    code, out, _ = cli(capsys, "predict", "--points", str(points), "--budgets", "0,0.06", "--format", "json")
    assert [entry["budget"] for entry in json.loads(out)] == [0.0, 0.06]


def test_predict_candidates_come_from_throughput_table(capsys, points, tmp_path):
    # threshold 0.85; (2, 0.7) is bilinear between (2, 0.5) and (2, 0.9): 0.8525, at 7.0x
    other = tmp_path / "other.csv"
    other.write_text("N,s,throughput\n1,0,1.0\n2,0.5,4.0\n2,0.7,7.0\n2,0.9,12.0\n")
    code, out, _ = cli(
        capsys,
        "predict",
        "--points",
        str(points),
        "--budget",
        "0.05",
        "--throughput-from",
        str(other),
        "--top",
        "1",
        "--format",
        "json",
    )
    assert code == 0
    assert [(r["N"], r["s"]) for r in json.loads(out)["top"]] == [(2, 0.7)]


def test_replay_reports_samplers(capsys):
    code, out, _ = cli(
        capsys,
        "replay",
        "--table",
        str(TABLE),
        "--budget",
        "0.03",
        "--sampler",
        "random",
        "--seeds",
        "2",
        "--format",
        "json",
    )
    assert code == 0
    summary = {row["sampler"]: row for row in json.loads(out)["summary"]}
    assert summary["autoprumux"]["hit_pct"] == 100.0 and summary["random"]["searches"] == 2
