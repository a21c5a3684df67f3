"""AutoPruMUX: bilinear accuracy model, additive fallback, throughput model, top_k, LOO."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.interpolate import RegularGridInterpolator

from search import AutoPruMUX
from search.surrogate import concave_cap, pruned_throughput_cap

GRID_N = [1, 2, 5]
GRID_S = [0.0, 0.5, 0.9]


def full_grid() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = [
        (n, s, 0.9 - 0.01 * n - 0.05 * s * s + rng.normal(0, 0.002), n / (0.1 + 0.9 * (1 - s)))
        for n in GRID_N
        for s in GRID_S
    ]
    return pd.DataFrame(rows, columns=["N", "s", "accuracy", "throughput"])


def test_exact_at_measured_points():
    points = full_grid()
    prediction = AutoPruMUX().fit(points).predict(points["N"], points["s"])
    np.testing.assert_allclose(prediction.accuracy, points["accuracy"])
    np.testing.assert_allclose(prediction.throughput, points["throughput"])
    assert prediction.interpolated.all() and prediction.throughput_measured.all()


def test_matches_reference_bilinear_inside_cells():
    points = full_grid()
    grid = points.pivot(index="N", columns="s", values="accuracy").to_numpy()
    reference = RegularGridInterpolator((GRID_N, GRID_S), grid, method="linear")
    rng = np.random.default_rng(1)
    N, s = rng.uniform(1, 5, 50), rng.uniform(0, 0.9, 50)
    prediction = AutoPruMUX().fit(points).predict(N, s)
    np.testing.assert_allclose(prediction.accuracy, reference(np.stack([N, s], -1)), atol=1e-12)
    assert prediction.interpolated.all()


def test_holes_and_outside_fall_back_to_additive_model():
    points = full_grid()
    holed = points[~((points["N"] == 5) & (points["s"] == 0.9))]
    model = AutoPruMUX().fit(holed)
    prediction = model.predict([5, 3, 10, 2], [0.9, 0.7, 0.5, 0.5])
    assert prediction.interpolated.tolist() == [False, False, False, True]
    # additive: (5, 0.9) ~ acc(5, 0) + acc(1, 0.9) - acc(1, 0) with the measured residuals nearby
    truth = points.set_index(["N", "s"])["accuracy"]
    assert abs(prediction.accuracy[0] - truth[(5, 0.9)]) < 0.01
    assert prediction.accuracy[2] < prediction.accuracy[0] + 0.05  # beyond the range: no gain


def test_throughput_model_estimates_unmeasured_shapes():
    points = full_grid()
    model = AutoPruMUX().fit(points[points["s"] != 0.5])
    prediction = model.predict([2, 10], [0.5, 0.9])
    expected = np.array([2 / (0.1 + 0.45), 10 / 0.19])
    np.testing.assert_allclose(prediction.throughput, expected, rtol=0.05)
    assert not prediction.throughput_measured.any()


def test_throughput_from_another_task_stands_for_all_tasks():
    points = full_grid().iloc[:3]
    other = full_grid()[["N", "s", "throughput"]].assign(throughput=lambda f: f["throughput"] * 1.1)
    prediction = AutoPruMUX().fit(points, throughput=other).predict([1, 5], [0.0, 0.9])
    assert prediction.throughput[0] == pytest.approx(points["throughput"].iloc[0])
    assert prediction.throughput[1] == pytest.approx(1.1 * 5 / 0.19)


def test_top_k_honours_the_budget():
    points = full_grid()
    model = AutoPruMUX().fit(points)
    for budget in (0.0, 0.02, 0.05, 0.2):
        top = model.top_k(budget, k=3)
        assert (top["accuracy"] >= model.dense_accuracy_ - budget - 1e-12).all()
        assert top["throughput"].is_monotonic_decreasing
        feasible = points[points["accuracy"] >= model.dense_accuracy_ - budget]
        assert top["throughput"].iloc[0] == feasible["throughput"].max()
    assert len(model.top_k(0.0, k=5)) >= 1


@pytest.mark.parametrize("budget", [-0.01, 1.5, float("nan")])
def test_top_k_rejects_bad_budget(budget):
    with pytest.raises(ValueError, match="budget"):
        AutoPruMUX().fit(full_grid()).top_k(budget)


def test_top_k_needs_dense_point():
    points = full_grid().iloc[1:]
    with pytest.raises(ValueError, match="dense"):
        AutoPruMUX().fit(points).top_k(0.03)


def test_leave_one_out_on_a_hand_checked_table():
    # Additive accuracies and throughput exactly N / (0.1 + 0.9 (1 - s)): every left-out
    # point is predicted exactly, except (5, 0.9), whose accuracy was broken by 3 points.
    rows = [(n, s, 0.9 - 0.01 * n - 0.05 * s, n / (0.1 + 0.9 * (1 - s))) for n in GRID_N for s in GRID_S]
    points = pd.DataFrame(rows, columns=["N", "s", "accuracy", "throughput"])
    assert AutoPruMUX().leave_one_out(points) == {"M_A": 1.0, "M_T": 1.0, "n": 9}
    broken = points.copy()
    broken.loc[(broken["N"] == 5) & (broken["s"] == 0.9), "accuracy"] -= 0.03
    result = AutoPruMUX().leave_one_out(broken)
    assert result["M_A"] == pytest.approx(8 / 9) and result["M_T"] == 1.0


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda f: f.drop(columns="accuracy"), "missing column"),
        (lambda f: f.assign(accuracy=f["accuracy"].where(f.index != 2)), "NaN"),
        (lambda f: pd.concat([f, f.iloc[[0]]]), "duplicate"),
        (lambda f: f.assign(N=f["N"] + 0.5), "positive integer"),
        (lambda f: f.iloc[:0], "no points"),
    ],
)
def test_fit_rejects_bad_points(change, message):
    with pytest.raises(ValueError, match=message):
        AutoPruMUX().fit(change(full_grid()))


def test_autoprumux_is_a_scikit_learn_estimator() -> None:
    from sklearn.base import clone

    model = AutoPruMUX(accuracy_tolerance=0.02)
    assert model.get_params() == {"accuracy_tolerance": 0.02, "throughput_tolerance": 0.2}
    assert model.set_params(throughput_tolerance=0.3).throughput_tolerance == 0.3
    copy = clone(model)
    assert copy.get_params() == model.get_params() and not hasattr(copy, "points_")


def test_censored_points_cap_the_points_they_dominate():
    points = full_grid()
    measured = points[(points["N"] == 1) | (points["s"] == 0.0)]
    free = AutoPruMUX().fit(measured).predict(np.array([2, 2, 5, 5]), np.array([0.5, 0.9, 0.5, 0.9])).accuracy
    censored = pd.DataFrame({"N": [2], "s": [0.5], "accuracy": [0.6]})
    capped = (
        AutoPruMUX().fit(measured, censored=censored).predict(np.array([2, 2, 5, 5]), np.array([0.5, 0.9, 0.5, 0.9]))
    )
    np.testing.assert_allclose(capped.accuracy, np.minimum(free, 0.6))
    assert (capped.accuracy <= 0.6).all() and (free > 0.6).all()
    # Points it does not dominate (less N or less s) keep their prediction.
    np.testing.assert_allclose(
        AutoPruMUX().fit(measured, censored=censored).predict([1, 5], [0.9, 0.0]).accuracy,
        AutoPruMUX().fit(measured).predict([1, 5], [0.9, 0.0]).accuracy,
    )


def test_concave_cap_extends_the_neighbouring_chords():
    points = pd.DataFrame({"N": [1, 1, 1, 2], "s": [0.0, 0.5, 0.7, 0.0], "accuracy": [0.90, 0.88, 0.84, 0.7]})
    cap = concave_cap(points, np.array([1, 1, 1, 2, 5]), np.array([0.9, 0.6, 0.3, 0.5, 0.5]))
    # (1, 0.9): the chord 0.5 -> 0.7 carried on; (1, 0.6): the chord 0 -> 0.5 carried on (one point lies
    # above 0.6, no chord there); (1, 0.3): the chord 0.5 -> 0.7 carried back; rows without two points: none.
    np.testing.assert_allclose(cap[:3], [0.80, 0.876, 0.92])
    assert np.isinf(cap[3:]).all()


def test_pruned_throughput_cap_is_the_slowest_more_pruned_point_of_the_row():
    points = pd.DataFrame({"N": [2, 2, 2, 5], "s": [0.3, 0.5, 0.7, 0.1], "throughput": [3.0, 4.5, 4.0, 9.0]})
    cap = pruned_throughput_cap(points, np.array([2, 2, 2, 2, 5, 1]), np.array([0.1, 0.3, 0.6, 0.8, 0.0, 0.0]))
    assert cap == pytest.approx([3.0, 3.0, 4.0, np.inf, 9.0, np.inf])
