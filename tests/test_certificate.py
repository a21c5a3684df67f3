"""replay.certificate: the fewest trainings that prove a table's true best by the monotone cap."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from replay.certificate import certificate, replay_certificate
from replay.families import generate
from search.surrogate import monotone_cap
from storage.points import is_feasible, table_threshold

# (1, 0.8) and (4, 0.5) are low; (4, 0) is faster than the best, (2, 0.5), and within the margin of the
# threshold (0.88), so only training it rules it out.
TABLE = pd.DataFrame(
    [
        (1, 0.0, 0.90, 1.0),
        (1, 0.5, 0.89, 1.6),
        (1, 0.8, 0.86, 2.5),
        (2, 0.0, 0.89, 1.9),
        (2, 0.5, 0.885, 3.0),
        (2, 0.8, 0.87, 4.6),
        (4, 0.0, 0.875, 3.6),
        (4, 0.5, 0.86, 5.5),
        (4, 0.8, 0.80, 8.0),
    ],
    columns=["N", "s", "accuracy", "throughput"],
)


def test_the_fewest_low_points_cover_the_faster_ones() -> None:
    proof = certificate(TABLE, 0.02, margin=0.005)
    assert set(proof) == {(1, 0.0), (2, 0.5), (4, 0.0), (1, 0.8), (4, 0.5)}
    assert proof[:2] == [(1, 0.0), (2, 0.5)]


def test_a_wider_margin_needs_more_trainings() -> None:
    # At 0.03 no point but (4, 0.8) is low: every faster point is trained.
    faster = {(2, 0.8), (4, 0.0), (4, 0.5), (4, 0.8)}
    assert set(certificate(TABLE, 0.02, margin=0.03)) == {(1, 0.0), (2, 0.5), *faster}


@pytest.mark.parametrize("family", ["additive", "cliff-N", "noise-high", "gpu-88"])
def test_a_certificate_proves_the_true_best(family: str) -> None:
    """Every faster point of a generated table is trained or ruled out by the cap of the certificate's points."""
    for seed in range(3):
        table = generate(family, seed)
        for budget in (0.01, 0.05, 0.09):
            result = replay_certificate(table.points, budget, table.eval_rows)
            assert result.hit and result.trainings < len(table.points)
            proof = certificate(table.points, budget, margin=0.01)
            measured = table.points.set_index(["N", "s"]).loc[proof].reset_index()
            threshold = table_threshold(table.points, budget)
            best = measured.loc[is_feasible(measured["accuracy"].to_numpy(), threshold), "throughput"].max()
            faster = table.points[table.points["throughput"] > best]
            unmeasured = faster[~faster.set_index(["N", "s"]).index.isin(proof)]
            cap = monotone_cap(measured, unmeasured["N"].to_numpy(), unmeasured["s"].to_numpy()) + 0.01
            assert not is_feasible(cap, threshold).any()
            assert np.isclose(
                best, table.points.loc[is_feasible(table.points["accuracy"].to_numpy(), threshold)]["throughput"].max()
            )
