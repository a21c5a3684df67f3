"""`prumux-search predict` and `replay` through the real CLI entry point, in process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from search.cli import main

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


@pytest.mark.parametrize(
    "content, args, message",
    [
        (POINTS, ["--budget", "-0.1"], "budget must be"),
        (POINTS, ["--budget", "1.5"], "budget must be"),
        (POINTS, ["--budgets", "0:0.1:0"], "budget range"),
        ("", ["--budget", "0.03"], "empty CSV"),
        ("N,s,accuracy\n1,0,0.9\n", ["--budget", "0.03"], "missing column(s) throughput"),
        (POINTS + "2,0.7,,5.0\n", ["--budget", "0.03"], "NaN"),
        (POINTS + "2,0.5,0.87,4.0\n", ["--budget", "0.03"], "duplicate point (N=2, s=0.5)"),
        (POINTS + "2.5,0.5,0.87,4.0\n", ["--budget", "0.03"], "N must be a positive integer"),
        (POINTS.replace("1,0,0.90,1.0\n", ""), ["--budget", "0.03"], "dense point"),
    ],
)
def test_predict_bad_input_exits_2_with_one_line(capsys, tmp_path, content, args, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    code, _, err = cli(capsys, "predict", "--points", str(path), *args)
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err


def test_replay_rejects_non_grid_table(capsys, tmp_path, points):
    path = tmp_path / "partial.csv"
    path.write_text(POINTS + "5,0,0.86,4.9\n")
    code, _, err = cli(capsys, "replay", "--table", str(path), "--budget", "0.03")
    assert code == 2 and "not a full grid" in err and err.count("\n") == 1
