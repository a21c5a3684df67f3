"""The Auto-PruMUX surrogate: accuracy and throughput of a PruMUX model as functions of (N, s).

Accuracy (paper sec. 4.1): piecewise bilinear interpolation of the measured accuracies over
the grid of measured N and s values. Outside fully measured cells it falls back to the
paper's observation that losses add up, ``acc(N, s) ~ mu + r(N) + c(s)``: row and column
effects fitted by least squares on all measured points, interpolated along N and s in the
coordinates ``log N`` and ``-log(1 - s)`` (in which both losses and speed-ups are close to
linear), plus the measured residuals of nearby points (inverse-distance weighted).

Throughput (sec. 4.2): a measured throughput stands for its shape on every task. Other shapes
use a FLOP model calibrated on the measured shapes, ``T(N, s) = c * N / (f + (1 - f)(1 - s))``
(``f`` the share of encoder FLOPs that pruning cannot remove), times the residuals of nearby
measured shapes.

Censored points (a point stopped early: its final accuracy is at most a bound) are no
measurement and stay out of both fits; each caps the predicted accuracy of itself and of every
point at least as multiplexed and as pruned (N' >= N, s' >= s), the monotonicity the additive
model assumes.

Three bounds serve the sampler's optimism: ``pruned_throughput_cap`` (no more throughput than a
more pruned point of the same N), ``monotone_cap`` (no more accuracy than any point with
less N and less s) and ``concave_cap`` (no more than a decline concave in s allows on the point's
own N row: the loss of pruning is flat, then a cliff, so a chord between two measured sparsities
errs low and its neighbours' chords, extended, lie above the curve).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import minimize_scalar
from sklearn.base import BaseEstimator, clone

from search.grid import THROUGHPUT_COLUMNS, check_budget, read_points
from storage.points import dense_row, is_feasible, threshold

# Share of FLOPs that survive any pruning when the measured shapes cannot tell (one s value).
DEFAULT_FIXED_SHARE = 0.1
# An accuracy residual beyond this marks a collapsed run, which says nothing about its neighbours.
OUTLIER_RESIDUAL = 0.03
# Scale beyond which the additive fit down-weights a point (Huber), in accuracy.
HUBER_SCALE = 0.01
# Weight of the penalty on jumps between neighbouring effects, relative to one point.
SMOOTHNESS = 0.1


@dataclass(frozen=True)
class Prediction:
    """Predicted accuracy and throughput of a batch of (N, s) points.

    ``interpolated`` is True where the accuracy comes from a fully measured bilinear cell,
    False where it is extrapolated by the additive model. ``throughput_measured`` is True
    where the shape's throughput was measured rather than estimated.
    """

    N: np.ndarray
    s: np.ndarray
    accuracy: np.ndarray
    throughput: np.ndarray
    interpolated: np.ndarray
    throughput_measured: np.ndarray

    def to_frame(self) -> pd.DataFrame:
        """One row per point with the columns N, s, accuracy, throughput, interpolated."""
        return pd.DataFrame(
            {
                "N": self.N.astype(int),
                "s": self.s,
                "accuracy": self.accuracy,
                "throughput": self.throughput,
                "interpolated": self.interpolated,
                "throughput_measured": self.throughput_measured,
            }
        )


class AutoPruMUX(BaseEstimator):
    """Accuracy and throughput models over (N, s), fitted on measured points: a scikit-learn
    estimator (``get_params``, ``set_params``, ``clone``; fitted attributes end in ``_``).

    Parameters
    ----------
    accuracy_tolerance:
        Leave-one-out accuracy error counted as correct for ``M_A`` (1.5 points in the paper).
    throughput_tolerance:
        Relative leave-one-out throughput error counted as correct for ``M_T`` (20%).
    """

    def __init__(self, accuracy_tolerance: float = 0.015, throughput_tolerance: float = 0.2):
        self.accuracy_tolerance = accuracy_tolerance
        self.throughput_tolerance = throughput_tolerance

    def fit(
        self, points: pd.DataFrame, throughput: pd.DataFrame | None = None, censored: pd.DataFrame | None = None
    ) -> AutoPruMUX:
        """Fit on measured points (N, s, accuracy, throughput).

        ``throughput`` optionally gives measured throughputs (N, s, throughput) of more shapes,
        e.g. from another task; the task's own measurements take precedence. ``censored``
        optionally gives upper bounds (N, s, accuracy) of points stopped early.
        """
        points = read_points(points)
        self.censored_ = _read_censored(censored)
        self.points_ = points
        self.grid_N_ = np.sort(points["N"].unique()).astype(float)
        self.grid_s_ = np.sort(points["s"].unique())
        self.accuracy_grid_ = _as_grid(points, self.grid_N_, self.grid_s_, "accuracy")
        dense = dense_row(points)
        self.dense_accuracy_ = None if dense is None else float(dense["accuracy"])
        self._fit_additive(points)
        self._fit_throughput(points, throughput)
        return self

    def predict(self, N: np.ndarray | float, s: np.ndarray | float) -> Prediction:
        """Predicted accuracy and throughput at the given (N, s) (broadcast arrays)."""
        self._check_fitted()
        N, s = np.broadcast_arrays(np.atleast_1d(np.asarray(N, float)), np.atleast_1d(np.asarray(s, float)))
        if (N < 1).any() or ((s < 0) | (s >= 1)).any():
            raise ValueError("predict needs N >= 1 and s in [0, 1)")
        bilinear, interpolated = self._bilinear(N, s)
        accuracy = np.where(interpolated, bilinear, self.additive_accuracy(N, s))
        accuracy = np.minimum(accuracy, monotone_cap(self.censored_, N, s))
        throughput, measured = self._throughput(N, s)
        return Prediction(N, s, accuracy, throughput, interpolated, measured)

    def top_k(self, budget: float, k: int = 3, candidates: pd.DataFrame | None = None) -> pd.DataFrame:
        """The k candidates with the highest predicted throughput whose predicted accuracy is
        at least the dense (1, 0) accuracy minus ``budget``; candidates default to the
        measured points."""
        self._check_fitted()
        budget = check_budget(budget)
        if self.dense_accuracy_ is None:
            raise ValueError("the dense point (N=1, s=0) is not measured")
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        candidates = self.points_ if candidates is None else candidates
        frame = self.predict(candidates["N"].to_numpy(), candidates["s"].to_numpy()).to_frame()
        frame = frame[is_feasible(frame["accuracy"].to_numpy(), threshold(self.dense_accuracy_, budget))]
        frame = frame.sort_values(["throughput", "accuracy"], ascending=False, kind="stable")
        columns = ["N", "s", "accuracy", "throughput", "interpolated"]
        return frame[columns].head(k).reset_index(drop=True)

    def leave_one_out(self, points: pd.DataFrame, throughput: pd.DataFrame | None = None) -> dict[str, float]:
        """Leave-one-out quality (paper Table 1): ``M_A`` is the share of points whose accuracy,
        predicted from all others, is within ``accuracy_tolerance``; ``M_T`` the share whose
        throughput is within ``throughput_tolerance`` (relative); ``n`` the number of points."""
        points = read_points(points)
        if len(points) < 2:
            raise ValueError("leave-one-out needs at least 2 points")
        accuracy_hits = throughput_hits = 0
        for index, row in points.iterrows():
            model = clone(self).fit(points.drop(index), throughput)
            guess = model.predict(row["N"], row["s"])
            accuracy_hits += abs(guess.accuracy[0] - row["accuracy"]) <= self.accuracy_tolerance + 1e-12
            relative = abs(guess.throughput[0] - row["throughput"]) / row["throughput"]
            throughput_hits += relative <= self.throughput_tolerance + 1e-12
        n = len(points)
        return {"M_A": accuracy_hits / n, "M_T": throughput_hits / n, "n": n}

    def _check_fitted(self) -> None:
        if not hasattr(self, "points_"):
            raise ValueError("AutoPruMUX is not fitted yet: call fit(points) first")

    def _bilinear(self, N: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Bilinear value and whether every corner with non-zero weight is measured."""
        i, wN = _cell(self.grid_N_, N)
        j, ws = _cell(self.grid_s_, s)
        inside = (wN >= 0) & (ws >= 0)
        value = np.zeros(N.shape)
        complete = inside.copy()
        for di, weight_N in ((0, 1 - wN), (1, wN)):
            for dj, weight_s in ((0, 1 - ws), (1, ws)):
                weight = np.where(inside, weight_N * weight_s, 0.0)
                row = np.clip(i + di, 0, len(self.grid_N_) - 1)
                col = np.clip(j + dj, 0, len(self.grid_s_) - 1)
                corner = self.accuracy_grid_[row, col]
                used = weight > 0
                complete &= ~(used & np.isnan(corner))
                value += np.where(used, np.nan_to_num(corner) * weight, 0.0)
        return value, complete

    def _fit_additive(self, points: pd.DataFrame) -> None:
        accuracy = points["accuracy"].to_numpy()
        self.accuracy_effects_ = _fit_two_way(points["N"], points["s"], accuracy, robust=True)
        self.accuracy_residual_ = accuracy - self.accuracy_effects_(points["N"], points["s"])

    def additive_accuracy(self, N: np.ndarray | float, s: np.ndarray | float) -> np.ndarray:
        """Accuracy of the additive model alone (the fallback of ``predict``), everywhere."""
        self._check_fitted()
        N, s = np.broadcast_arrays(np.atleast_1d(np.asarray(N, float)), np.atleast_1d(np.asarray(s, float)))
        residual = np.where(np.abs(self.accuracy_residual_) <= OUTLIER_RESIDUAL, self.accuracy_residual_, 0.0)
        correction = _idw(self._coords(N, s), self._coords(self.points_["N"], self.points_["s"]), residual)
        return np.clip(self.accuracy_effects_(N, s) + correction, 0.0, 1.0)

    def _fit_throughput(self, points: pd.DataFrame, throughput: pd.DataFrame | None) -> None:
        known = points[list(THROUGHPUT_COLUMNS)]
        if throughput is not None:
            other = read_points(throughput, THROUGHPUT_COLUMNS)
            known = pd.concat([known, other]).drop_duplicates(["N", "s"], keep="first")
        self.throughput_table_ = known.reset_index(drop=True)
        N, s = known["N"].to_numpy(float), known["s"].to_numpy()
        log_t = np.log(known["throughput"].to_numpy())
        self.fixed_share_ = _fit_fixed_share(N, s, log_t)
        self.throughput_effects_ = _fit_two_way(N, s, log_t - _log_flop_model(N, s, self.fixed_share_))

    def _throughput(self, N: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        log_t = _log_flop_model(N, s, self.fixed_share_) + self.throughput_effects_(N, s)
        lookup = {(int(n), round(float(v), 9)): t for n, v, t in self.throughput_table_.itertuples(index=False)}
        found = [
            lookup.get((int(n), round(float(v), 9))) if n == int(n) else None for n, v in zip(N.ravel(), s.ravel())
        ]
        measured = np.array([value is not None for value in found]).reshape(N.shape)
        exact = np.array([value or 0.0 for value in found]).reshape(N.shape)
        return np.where(measured, exact, np.exp(log_t)), measured

    def _coords(self, N: np.ndarray | pd.Series, s: np.ndarray | pd.Series) -> np.ndarray:
        """Points in (log N, -log(1 - s)) scaled so the measured grid spans about one unit."""
        span_N = max(_u_N(self.grid_N_[-1]) - _u_N(self.grid_N_[0]), _u_N(2.0))
        span_s = max(_u_s(self.grid_s_[-1]) - _u_s(self.grid_s_[0]), _u_s(0.5))
        return np.stack([_u_N(np.asarray(N, float)) / span_N, _u_s(np.asarray(s, float)) / span_s], -1)


def monotone_cap(points: pd.DataFrame, N: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Lowest accuracy among ``points`` with no more N and no more s than each (N, s) (inf if none)."""
    N, s = np.asarray(N, float), np.asarray(s, float)
    below = (points["N"].to_numpy()[None, :] <= N.reshape(-1, 1)) & (
        points["s"].to_numpy()[None, :] <= s.reshape(-1, 1) + 1e-12
    )
    accuracy = np.where(below, points["accuracy"].to_numpy()[None, :], np.inf)
    return accuracy.min(axis=1, initial=np.inf).reshape(N.shape)


def concave_cap(points: pd.DataFrame, N: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Highest accuracy at each (N, s) that a decline concave in s allows, from the ``points`` of
    the same N: a concave curve lies below each chord's extension beyond its ends, so the chord
    through the two nearest measured s on either side, extended to s (inf where neither side has two)."""
    N, s = np.asarray(N, float), np.asarray(s, float)
    cap = np.full(N.shape, np.inf)
    known_N, known_s, known_a = (points[c].to_numpy(float) for c in ("N", "s", "accuracy"))
    for n in np.unique(N):
        on_row = np.isclose(known_N, n)
        order = np.argsort(known_s[on_row], kind="stable")
        xs, ys = known_s[on_row][order], known_a[on_row][order]
        if len(xs) < 2:
            continue
        here = np.flatnonzero(N == n)
        x = s.reshape(-1)[here]
        below = np.searchsorted(xs, x - 1e-12, side="left")  # measured s strictly below x: xs[:below]
        above = np.searchsorted(xs, x + 1e-12, side="right")  # strictly above: xs[above:]
        row_cap = np.full(len(x), np.inf)
        for lo, hi, usable in ((below - 2, below - 1, below >= 2), (above, above + 1, above <= len(xs) - 2)):
            lo, hi = np.clip(lo, 0, len(xs) - 1), np.clip(hi, 0, len(xs) - 1)
            slope = (ys[hi] - ys[lo]) / np.where(usable, xs[hi] - xs[lo], 1.0)
            row_cap = np.where(usable, np.minimum(row_cap, ys[lo] + slope * (x - xs[lo])), row_cap)
        cap.reshape(-1)[here] = row_cap
    return cap


def pruned_throughput_cap(points: pd.DataFrame, N: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Lowest throughput among ``points`` of the same N with no less s than each (N, s) (inf if none): pruning
    removes FLOPs, so a less pruned model of the same width is no faster."""
    N, s = np.asarray(N, float), np.asarray(s, float)
    same = (points["N"].to_numpy()[None, :] == N.reshape(-1, 1)) & (
        points["s"].to_numpy()[None, :] >= s.reshape(-1, 1) - 1e-12
    )
    throughput = np.where(same, points["throughput"].to_numpy()[None, :], np.inf)
    return throughput.min(axis=1, initial=np.inf).reshape(N.shape)


def _read_censored(censored: pd.DataFrame | None) -> pd.DataFrame:
    """Upper bounds (N, s, accuracy), the lowest kept where a point has several."""
    if censored is None or censored.empty:
        return pd.DataFrame(
            {"N": pd.Series(dtype=int), "s": pd.Series(dtype=float), "accuracy": pd.Series(dtype=float)}
        )
    lowest = censored.sort_values("accuracy").drop_duplicates(["N", "s"])
    return read_points(lowest.assign(accuracy=lowest["accuracy"].clip(0.0, 1.0)), ("N", "s", "accuracy"))


def _as_grid(points: pd.DataFrame, grid_N: np.ndarray, grid_s: np.ndarray, column: str) -> np.ndarray:
    table = np.full((len(grid_N), len(grid_s)), np.nan)
    rows = np.searchsorted(grid_N, points["N"].to_numpy(float))
    cols = np.searchsorted(grid_s, points["s"].to_numpy())
    table[rows, cols] = points[column].to_numpy()
    return table


def _cell(axis: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lower index of the bracketing cell and the weight of its upper end (-1 when outside)."""
    if len(axis) == 1:
        return np.zeros(x.shape, int), np.where(np.isclose(x, axis[0]), 0.0, -1.0)
    i = np.clip(np.searchsorted(axis, x, side="right") - 1, 0, len(axis) - 2)
    weight = (x - axis[i]) / (axis[i + 1] - axis[i])
    weight = np.where(np.isclose(weight, 0.0), 0.0, np.where(np.isclose(weight, 1.0), 1.0, weight))
    return i, np.where((weight < 0) | (weight > 1), -1.0, weight)


def _u_N(N: np.ndarray | float) -> np.ndarray:
    return np.log(np.asarray(N, float))


def _u_s(s: np.ndarray | float) -> np.ndarray:
    return -np.log1p(-np.asarray(s, float))


def _effect(x: np.ndarray, known_x: np.ndarray, known_y: np.ndarray, decline: bool) -> np.ndarray:
    """Piecewise-linear effect curve: flat below the measured range; beyond it flat, or with
    ``decline`` continued with the last segment's slope if that falls (more N or s never
    gains accuracy)."""
    if len(known_x) == 1:
        return np.full(x.shape, known_y[0])
    inside = np.interp(x, known_x, known_y)
    slope = min((known_y[-1] - known_y[-2]) / (known_x[-1] - known_x[-2]), 0.0) if decline else 0.0
    beyond = known_y[-1] + slope * (x - known_x[-1])
    return np.where(x > known_x[-1], beyond, inside)


def _idw(query: np.ndarray, known: np.ndarray, values: np.ndarray, power: float = 2.0) -> np.ndarray:
    """Inverse-distance-weighted residuals, exact at the known points."""
    distance = np.linalg.norm(query[..., None, :] - known, axis=-1)
    at_point = distance < 1e-12
    weight = 1.0 / np.maximum(distance, 1e-12) ** power
    weight = np.where(at_point.any(-1, keepdims=True), at_point.astype(float), weight)
    return (weight @ values) / weight.sum(-1)


@dataclass(frozen=True)
class _TwoWay:
    """``offset + row(N) + col(s)``, effects piecewise linear in log N and -log(1 - s);
    beyond the largest measured value they continue declining (``decline``) or stay flat."""

    axis_N: np.ndarray
    axis_s: np.ndarray
    offset: float
    row: np.ndarray
    col: np.ndarray
    decline: bool

    def __call__(self, N, s) -> np.ndarray:
        N, s = np.asarray(N, float), np.asarray(s, float)
        return (
            self.offset
            + _effect(_u_N(N), _u_N(self.axis_N), self.row, self.decline)
            + _effect(_u_s(s), _u_s(self.axis_s), self.col, self.decline)
        )


def _fit_two_way(N, s, target: np.ndarray, robust: bool = False) -> _TwoWay:
    """Least-squares row and column effects, the first of each pinned to 0.

    A light penalty on the jumps between neighbouring effects ties together points that share
    no row or column (effects otherwise undetermined); ``robust`` down-weights collapsed
    runs (Huber) and lets effects keep declining beyond the measured range (accuracy).
    """
    N, s = np.asarray(N, float), np.asarray(s, float)
    axis_N, axis_s = np.unique(N), np.unique(s)
    rows, cols = np.searchsorted(axis_N, N), np.searchsorted(axis_s, s)
    size = len(axis_N) + len(axis_s) - 1
    design = np.zeros((len(target), size))
    design[:, 0] = 1.0
    design[rows > 0, rows[rows > 0]] = 1.0
    design[cols > 0, len(axis_N) - 1 + cols[cols > 0]] = 1.0
    penalty = _smoothness(len(axis_N), len(axis_s), size)
    weight = np.ones(len(target))
    for _ in range(10 if robust else 1):
        root = np.sqrt(weight)[:, None]
        system = np.vstack([design * root, penalty])
        coef = np.linalg.lstsq(system, np.concatenate([target * root[:, 0], np.zeros(len(penalty))]), rcond=None)[0]
        weight = HUBER_SCALE / np.maximum(np.abs(target - design @ coef), HUBER_SCALE)
    row = np.concatenate([[0.0], coef[1 : len(axis_N)]])
    col = np.concatenate([[0.0], coef[len(axis_N) :]])
    return _TwoWay(axis_N, axis_s, float(coef[0]), row, col, decline=robust)


def _smoothness(n_rows: int, n_cols: int, size: int) -> np.ndarray:
    """Penalty rows on the differences of consecutive row effects and of column effects."""
    rows = []
    for first, count in ((0, n_rows), (n_rows - 1, n_cols)):
        for k in range(count - 1):
            row = np.zeros(size)
            if k > 0:
                row[first + k] = -1.0
            row[first + k + 1] = 1.0
            rows.append(row * SMOOTHNESS)
    return np.array(rows).reshape(-1, size)


def _log_flop_model(N: np.ndarray, s: np.ndarray, fixed_share: float) -> np.ndarray:
    return np.log(N) - np.log(fixed_share + (1.0 - fixed_share) * (1.0 - s))


def _fit_fixed_share(N: np.ndarray, s: np.ndarray, log_t: np.ndarray) -> float:
    """Least-squares fixed share on log throughput; the default when all shapes share one s."""
    if np.ptp(s) == 0:
        return DEFAULT_FIXED_SHARE

    def loss(fixed_share: float) -> float:
        residual = log_t - _log_flop_model(N, s, fixed_share)
        return float(np.var(residual))

    return float(minimize_scalar(loss, bounds=(1e-3, 1.0), method="bounded").x)
