"""``AutoPruMUXSampler``: an Optuna sampler that proposes the (N, s) the surrogate ranks best.

Trial layout (docs/ARCHITECTURE.md): categorical params ``N`` and ``s`` over the grid, values
``[accuracy, throughput]``. Everything is derived from ``study.get_trials()`` on each call, so
the sampler works under ask/tell, across restarts and with concurrent drivers on one storage.

Proposal order:

1. Anchors: the dense point (1, 0), then the far ends of the edges, (1, max s) and
   (max N, 0), which give the additive model both loss curves and the throughput model its
   range; an anchor that a point stopped early rules out (below) is skipped. While the dense accuracy is still unknown (its trial is running), the remaining edge
   points, then any untried points, are proposed instead.
2. Then the candidate (below) expected to settle the most candidates (``expected_settled``): the search
   is over when no candidate is left, so each training should remove as many as it can. A trained
   candidate settles itself; if it proves feasible (probability ``p_feasible``) it becomes the incumbent
   and settles every candidate no faster than it; if it measures low enough that its monotone cap (plus
   ``margin``) falls below the threshold it settles every candidate it dominates (no less N, no less s).
   On a long row whose accuracy crosses the threshold this trains the row's middle rather than the
   neighbour of its measured end (bisection, not a walk), and an (N, 0) point that may rule out its whole
   column goes early (generated families, benchmarks/tables/families.md: 27.8 -> 24.1 trainings on
   320-point grids). Ties (e.g. in the noise band, where an outcome settles only the point itself) go to
   the highest expected gain: the probability that the point meets the budget times the throughput it
   would add over the incumbent. Both probabilities take the
   predicted accuracy as the centre of a normal of width ``margin`` where the prediction is
   reliable and ``extrapolation_margin`` elsewhere, so a near-certain modest gain beats a
   long shot at a large one. Between two measured sparsities of its own N row the centre is
   halfway from the prediction to the concave bound below (``concave_cap``): a concave decline
   lies above its chord, and a chord-centred probability put the cpu-demo search's (1, 0.7),
   feasible, behind (1, 0.5) and cost it a training (measured by the replays in
   benchmarks/tables/README.md). Where no chord extends to the point (``concave_cap`` is
   infinite) the bound is the monotone cap (below): an infinite centre made the point certainly
   feasible and never low, on 8% of the proposals over the generated families (seeds 0-4), of
   which 17% were feasible. ``plan`` gives both probabilities (``p_feasible``, ``p_ruling_out``).
   A point whose N already has a phase 1-2 model (N appears in a running or finished trial, or
   ``is_cheap(N)``) counts ``tie_tolerance`` more in both.

Only *candidates* are proposed: untried points that could still beat the incumbent (the
best measured feasible point). A point is a candidate when its optimistic accuracy reaches the
threshold and its optimistic throughput exceeds the incumbent's. Optimistic accuracy is the
smaller of

* the prediction plus ``margin`` where it is reliable (bilinear, inside a measured cell whose
  corners are grid neighbours of the point); elsewhere the larger of the prediction and the
  additive model's, plus ``extrapolation_margin`` (a wide bilinear cell is a chord of a
  concave loss curve, so it errs low). On a measured N row even a reliable cell's chord errs
  low (by 0.8 and 0.9 points at (1, 0.5) between s = 0 and 0.7 on the cpu-demo rt-polarity and
  trec grids), so there the prediction is the larger of the chord and ``concave_cap``: the
  highest accuracy a decline concave in s allows (the neighbouring chords extended; with no
  chord to extend, only the monotone cap below bounds it), and
* the monotone cap: the lowest accuracy measured at any (N', s') with N' <= N and s' <= s,
  plus ``margin`` (more multiplexing or pruning does not gain accuracy, up to run noise), and
  the lowest accuracy bound of any such point stopped early (already conservative: no margin).

A point stopped early (a PRUNED trial recorded by ``storage.curves.record_stopped``) is decided:
it is never proposed again and ``is_done`` counts it. Its ``accuracy_bound`` is a censored
observation, an upper bound on its accuracy, given to the surrogate (``censored``) and to the
monotone cap. When its attr ``bound_column`` says the bound came from the phase-2 curve alone
(an (N, 0) point, or the teacher bound of search.curves), it bounds (N, 0) and so every point of
N and beyond: a phase-2 curve that cannot reach the threshold rules out its whole N column. Its
throughput, when ``throughput_source`` is ``measured``, counts as a measured shape.

Where the prediction lies more than ``cliff`` below the cap, the point sits on a drop the
models cannot place (the paper's non-linear collapses: a cell whose far corner fell to chance
interpolates a gentle slope through what may be a cliff further out), so only the cap counts.

Given ``validation_rows`` (the rows every final accuracy is a share of), ``margin`` and
``extrapolation_margin`` grow, in quadrature, by ``NOISE_ERRORS`` binomial standard errors of a
difference of two accuracies at the threshold (``search.noise``): the monotone cap, a chord and the
concave bound are differences of measured accuracies, and on a noisy grid a point that measured a few
tenths of a point low rules out the true best beyond it (generated families, benchmarks/tables/families.md).

Optimistic throughput is the measured throughput of the shape, or the estimate times
``1 + throughput_margin``, but no more than the lowest measured throughput of a more pruned point of
the same N (``pruned_throughput_cap``: pruning removes FLOPs, and a measured throughput is taken as
exact): without it a feasible point did not settle its slower row neighbours, whose estimates count 20%
more, wider than a sparsity step on a fine grid (generated families: 24.1 -> 20.4 trainings on 320-point
grids, benchmarks/tables/families.md). The search is done when no candidate is left and no trial is pending
(``is_done``). ``sample_relative`` raises ``SearchDone`` when it has nothing to propose, so
drivers check ``is_done`` before ``ask`` (and wait while ``next_point`` is None but trials are
pending); ``study.optimize`` loops pass the ``stop_when_done`` callback.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import optuna
import pandas as pd
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.trial import FrozenTrial, TrialState
from scipy.special import ndtr

from search.grid import THROUGHPUT_COLUMNS, check_budget, check_grid
from search.noise import ValidationNoise
from search.surrogate import AutoPruMUX, concave_cap, monotone_cap, pruned_throughput_cap
from storage.curves import STOPPED_ATTR
from storage.points import DENSE_POINT, FEASIBILITY_TOLERANCE, dense_row, is_feasible, threshold
from storage.trials import trial_point

NOISE_ERRORS = 2.0  # standard errors of a difference of two measured accuracies in the noise margin
TAKEN_STATES = (TrialState.RUNNING, TrialState.WAITING, TrialState.COMPLETE)


class SearchDone(RuntimeError):
    """Raised when a point is requested although no untried point can beat the incumbent."""


class AutoPruMUXSampler(optuna.samplers.BaseSampler):
    """Propose the untried (N, s) the Auto-PruMUX surrogate ranks best under ``budget``.

    Parameters
    ----------
    grid_N, grid_s:
        The grid's multiplexing widths and sparsities; (1, 0) must be among them.
    budget:
        Accuracy loss allowed below the dense (1, 0) accuracy, in [0, 1].
    margin:
        Accuracy a measured or interpolated value may be off by (run-to-run noise).
    extrapolation_margin:
        Accuracy an additive-model (extrapolated) prediction may be off by.
    throughput_margin:
        Relative error allowed on an estimated (not measured) throughput.
    tie_tolerance:
        How much more a point with a cheap N counts: its expected settled candidates and its expected gain
        are multiplied by ``1 + tie_tolerance``.
    cliff:
        Predicted accuracy drop below the monotone cap beyond which the models are not trusted
        (a cell spanning a collapse says nothing about where the collapse starts).
    is_cheap:
        Whether a phase 1-2 model already exists for N (beyond the Ns seen in the study).
    throughput:
        Optional measured throughputs (N, s, throughput) of shapes, e.g. from another task.
    seed:
        Seed of the random sampler used for parameters outside the (N, s) grid.
    validation_rows:
        Validation rows every measured accuracy is a share of (None: exact). Their binomial noise at
        the threshold (``search.noise``), ``NOISE_ERRORS`` standard errors of a difference of two
        accuracies, widens ``margin`` and ``extrapolation_margin`` (added in quadrature).
    """

    def __init__(
        self,
        grid_N: Sequence[int],
        grid_s: Sequence[float],
        budget: float,
        margin: float = 0.005,
        extrapolation_margin: float = 0.02,
        throughput_margin: float = 0.2,
        tie_tolerance: float = 0.05,
        cliff: float = 0.03,
        is_cheap: Callable[[int], bool] | None = None,
        throughput: pd.DataFrame | None = None,
        seed: int = 0,
        validation_rows: int | None = None,
    ) -> None:
        self.grid_N, self.grid_s = check_grid(grid_N, grid_s)
        self.budget = check_budget(budget)
        self.margin = margin
        self.extrapolation_margin = extrapolation_margin
        self.throughput_margin = throughput_margin
        self.tie_tolerance = tie_tolerance
        self.cliff = cliff
        self.is_cheap = is_cheap
        self.throughput = throughput
        self.seed = seed
        self.validation_rows = validation_rows
        self._fallback = optuna.samplers.RandomSampler(seed=seed)

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return search_space(self.grid_N, self.grid_s)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        if not search_space:
            return {}
        point = self.next_point(study, exclude=trial.number)
        if point is None:
            raise SearchDone("no untried (N, s) can beat the best measured point")
        return {"N": point[0], "s": point[1]}

    def sample_independent(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        # Reached only when N or s is suggested with other choices than the grid's.
        if param_name in ("N", "s"):
            point = self.next_point(study, exclude=trial.number)
            value = None if point is None else point[param_name == "s"]
            if isinstance(param_distribution, CategoricalDistribution) and value in param_distribution.choices:
                return value
        return self._fallback.sample_independent(study, trial, param_name, param_distribution)

    def is_done(self, study: optuna.Study) -> bool:
        """Whether no untried point can beat the best measured feasible point and no trial is
        pending (a pending result refits the models and may revive candidates)."""
        pending = any(t.state in (TrialState.RUNNING, TrialState.WAITING) for t in study.get_trials(deepcopy=False))
        return not pending and self.next_point(study) is None

    def next_point(self, study: optuna.Study, exclude: int | None = None) -> tuple[int, float] | None:
        """The point to train next, or None when there is none now (done, or waiting for
        pending trials when ``is_done`` is False); ``exclude`` is the asking trial's number."""
        trials = [t for t in study.get_trials(deepcopy=False) if t.number != exclude]
        measured = measured_points(trials)
        stopped = stopped_points(trials)
        taken = {trial_point(t) for t in trials if t.state in TAKEN_STATES or _is_stopped(t)} - {None}
        for point in self._anchors():
            if point not in taken and not _ruled_out(stopped, point):
                return point
        if dense_row(measured) is None:
            return self._next_without_model(taken)
        plan = self.plan(measured, taken, self._cheap_Ns(trials), stopped)
        candidates = plan[plan["candidate"]]
        if candidates.empty:
            return None
        best = candidates.iloc[0]
        return int(best["N"]), float(best["s"])

    def plan(
        self, measured: pd.DataFrame, taken: set, cheap_Ns: set, stopped: pd.DataFrame | None = None
    ) -> pd.DataFrame:
        """Every untried grid point with predictions, optimistic bounds and ``candidate``,
        best first; ``stopped`` (``stopped_points``) bounds the points it dominates."""
        censored = censored_points(stopped)
        model = AutoPruMUX().fit(measured, self._throughputs(stopped), censored)
        judged_by = threshold(model.dense_accuracy_, self.budget)
        feasible = measured[is_feasible(measured["accuracy"].to_numpy(), judged_by)]
        incumbent = feasible["throughput"].max()
        margin, extrapolation_margin = self.margins(judged_by)
        untried = [(n, s) for n in self.grid_N for s in self.grid_s if (n, s) not in taken]
        if not untried:
            return pd.DataFrame(columns=["N", "s", "candidate"])
        frame = model.predict(*np.array(untried).T).to_frame()
        reliable = (
            frame["interpolated"].to_numpy()
            & _tight(model.grid_N_, self.grid_N, frame["N"])
            & _tight(model.grid_s_, self.grid_s, frame["s"])
        )
        additive = model.additive_accuracy(frame["N"].to_numpy(), frame["s"].to_numpy())
        loose = np.maximum(frame["accuracy"], additive) + extrapolation_margin
        N, s = frame["N"].to_numpy(), frame["s"].to_numpy()
        cap = np.minimum(monotone_cap(measured, N, s) + margin, monotone_cap(censored, N, s))
        steep = cap - frame["accuracy"].to_numpy() > self.cliff
        # On a measured row the cell's chord errs low (the decline in s is concave): its concave bound counts.
        on_row = np.isin(N, measured["N"].to_numpy())
        chord = np.where(on_row, np.maximum(frame["accuracy"], concave_cap(measured, N, s)), frame["accuracy"])
        optimistic = np.where(steep, cap, np.where(reliable, chord + margin, loose))
        frame["optimistic_accuracy"] = np.minimum(optimistic, cap)
        estimated = ~frame["throughput_measured"].to_numpy()
        optimistic_throughput = frame["throughput"] * (1 + self.throughput_margin * estimated)
        frame["optimistic_throughput"] = np.minimum(optimistic_throughput, pruned_throughput_cap(measured, N, s))
        frame["candidate"] = is_feasible(frame["optimistic_accuracy"].to_numpy(), judged_by) & (
            frame["optimistic_throughput"] > incumbent
        )
        centre = np.where(reliable, frame["accuracy"], np.maximum(frame["accuracy"], additive))
        # Between two measured sparsities of its row the decline is concave, so the point is likelier above its
        # chord than below: centred halfway to its concave bound (the monotone cap where no chord extends to it).
        inside = _inside_row(measured, N, s)
        centre = np.where(inside, (centre + np.maximum(centre, np.minimum(chord, cap))) / 2, centre)
        spread = np.where(reliable, margin, extrapolation_margin)
        frame["p_feasible"] = ndtr((centre - judged_by + FEASIBILITY_TOLERANCE) / spread)
        cheap_bonus = 1 + self.tie_tolerance * frame["N"].isin(cheap_Ns).to_numpy()
        frame["score"] = frame["throughput"] * cheap_bonus
        gain = frame["optimistic_throughput"] - (incumbent if np.isfinite(incumbent) else 0.0)
        frame["expected_gain"] = frame["p_feasible"] * gain.clip(lower=0) * cheap_bonus
        frame["p_ruling_out"] = ndtr((judged_by - FEASIBILITY_TOLERANCE - margin - centre) / spread)
        settled = expected_settled(frame, frame["p_feasible"].to_numpy(), frame["p_ruling_out"].to_numpy())
        frame["expected_settled"] = settled * cheap_bonus
        order = frame.sort_values(
            ["candidate", "expected_settled", "expected_gain", "score"], ascending=False, kind="stable"
        )
        return order.reset_index(drop=True)

    def margins(self, judged_by: float) -> tuple[float, float]:
        """``margin`` and ``extrapolation_margin`` with the validation noise at the threshold added in quadrature."""
        if not self.validation_rows:
            return self.margin, self.extrapolation_margin
        noise = NOISE_ERRORS * ValidationNoise(self.validation_rows, judged_by).difference_error
        return math.hypot(self.margin, noise), math.hypot(self.extrapolation_margin, noise)

    def _throughputs(self, stopped: pd.DataFrame | None) -> pd.DataFrame | None:
        """The given throughputs and those measured on stopped points (the given ones first)."""
        if stopped is None or not stopped["throughput_measured"].any():
            return self.throughput
        own = stopped.loc[stopped["throughput_measured"], list(THROUGHPUT_COLUMNS)]
        return own if self.throughput is None else pd.concat([self.throughput[list(THROUGHPUT_COLUMNS)], own])

    def _anchors(self) -> list[tuple[int, float]]:
        anchors = [DENSE_POINT, (1, self.grid_s[-1]), (self.grid_N[-1], 0.0)]
        return list(dict.fromkeys(anchors))

    def _next_without_model(self, taken: set) -> tuple[int, float] | None:
        """Edge points first (the additive model's loss curves), then any untried point."""
        edges = [(1, s) for s in self.grid_s] + [(n, 0.0) for n in self.grid_N]
        rest = [(n, s) for n in self.grid_N for s in self.grid_s]
        return next((point for point in edges + rest if point not in taken), None)

    def _cheap_Ns(self, trials: list[FrozenTrial]) -> set[int]:
        seen = {trial_point(t)[0] for t in trials if t.state in TAKEN_STATES and trial_point(t)}
        extra = {n for n in self.grid_N if self.is_cheap is not None and self.is_cheap(n)}
        return seen | extra


def search_space(grid_N: Sequence[int], grid_s: Sequence[float]) -> dict[str, CategoricalDistribution]:
    """The categorical distributions of ``N`` and ``s`` every trial of a study must use."""
    return {"N": CategoricalDistribution(tuple(grid_N)), "s": CategoricalDistribution(tuple(grid_s))}


def suggest_point(trial: optuna.Trial, grid_N: Sequence[int], grid_s: Sequence[float]) -> tuple[int, float]:
    """Suggest (N, s) on a trial with the grid's distributions."""
    return int(trial.suggest_categorical("N", tuple(grid_N))), float(trial.suggest_categorical("s", tuple(grid_s)))


def measured_points(trials: Sequence[FrozenTrial]) -> pd.DataFrame:
    """N, s, accuracy, throughput of the complete trials (values ``[accuracy, throughput]``);
    a point measured twice keeps its latest result."""
    rows = []
    for trial in trials:
        if trial.state != TrialState.COMPLETE or trial_point(trial) is None:
            continue
        if trial.values is None or len(trial.values) != 2:
            raise ValueError(f"trial {trial.number} must have values [accuracy, throughput]")
        rows.append((*trial_point(trial), *trial.values))
    frame = pd.DataFrame(rows, columns=["N", "s", "accuracy", "throughput"])
    return frame.drop_duplicates(["N", "s"], keep="last").reset_index(drop=True)


def stopped_points(trials: Sequence[FrozenTrial]) -> pd.DataFrame:
    """N, s, accuracy_bound, column (the bound holds for every s of N), throughput,
    throughput_measured and threshold (the one it was stopped against) of the trials stopped early."""
    rows = []
    for trial in trials:
        if not _is_stopped(trial) or trial_point(trial) is None:
            continue
        attrs = trial.user_attrs
        throughput = attrs.get("throughput")
        rows.append(
            (
                *trial_point(trial),
                float(attrs["accuracy_bound"]),
                bool(attrs.get("bound_column", False)),
                np.nan if throughput is None else float(throughput),
                throughput is not None and attrs.get("throughput_source") == "measured",
                float(attrs.get("threshold", np.nan)),
            )
        )
    columns = ["N", "s", "accuracy_bound", "column", "throughput", "throughput_measured", "threshold"]
    return pd.DataFrame(rows, columns=columns)


def stop_when_done(study: optuna.Study, trial: FrozenTrial) -> None:
    """``study.optimize`` callback: stop the study once its AutoPruMUXSampler is done."""
    sampler = study.sampler
    if isinstance(sampler, AutoPruMUXSampler) and sampler.is_done(study):
        study.stop()


def _is_stopped(trial: FrozenTrial) -> bool:
    return (
        trial.state == TrialState.PRUNED and STOPPED_ATTR in trial.user_attrs and "accuracy_bound" in trial.user_attrs
    )


def censored_points(stopped: pd.DataFrame | None) -> pd.DataFrame:
    """Upper bounds (N, s, accuracy) of stopped points; a column bound sits at (N, 0)."""
    if stopped is None or stopped.empty:
        return pd.DataFrame(
            {"N": pd.Series(dtype=int), "s": pd.Series(dtype=float), "accuracy": pd.Series(dtype=float)}
        )
    s = np.where(stopped["column"].to_numpy(bool), 0.0, stopped["s"].to_numpy(float))
    return pd.DataFrame(
        {"N": stopped["N"].to_numpy(int), "s": s, "accuracy": stopped["accuracy_bound"].to_numpy(float)}
    )


def _ruled_out(stopped: pd.DataFrame, point: tuple[int, float]) -> bool:
    """Whether a point stopped below its threshold bounds ``point`` below it too (an anchor is
    proposed before the threshold is known, so the stop's own threshold decides)."""
    below = stopped[stopped["accuracy_bound"] < stopped["threshold"] - FEASIBILITY_TOLERANCE]
    return bool(np.isfinite(monotone_cap(censored_points(below), np.array([point[0]]), np.array([point[1]])))[0])


def expected_settled(frame: pd.DataFrame, p_feasible: np.ndarray, p_ruling_out: np.ndarray) -> np.ndarray:
    """Candidates each candidate is expected to settle when trained: itself, the candidates no faster than it
    if it proves feasible (``p_feasible``), those it dominates (no less N, no less s) if it measures low
    enough for its monotone cap to rule them out (``p_ruling_out``); 0 for a point that is no candidate."""
    candidate = frame["candidate"].to_numpy(bool)
    N, s = frame["N"].to_numpy(float), frame["s"].to_numpy(float)
    throughput, optimistic = frame["throughput"].to_numpy(float), frame["optimistic_throughput"].to_numpy(float)
    other = candidate[None, :] & ~np.eye(len(frame), dtype=bool)
    slower = (optimistic[None, :] <= throughput[:, None]) & other
    dominated = (N[None, :] >= N[:, None]) & (s[None, :] >= s[:, None] - 1e-12) & other
    settled = 1 + p_feasible * slower.sum(1) + p_ruling_out * dominated.sum(1)
    return np.where(candidate, settled, 0.0)


def _inside_row(measured: pd.DataFrame, N: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Whether each (N, s) lies between two measured sparsities of its own N row."""
    rows = {n: group["s"].to_numpy() for n, group in measured.groupby("N")}
    return np.array([n in rows and (rows[n] < x).any() and (rows[n] > x).any() for n, x in zip(N, s)], dtype=bool)


def _tight(measured_axis: np.ndarray, grid_axis: Sequence[float], values: pd.Series) -> np.ndarray:
    """Whether the measured values bracketing each value are its grid neighbours (or itself)."""
    grid = np.asarray(grid_axis, float)
    x = values.to_numpy(float)
    lower = np.array([measured_axis[measured_axis <= v + 1e-12].max(initial=-np.inf) for v in x])
    upper = np.array([measured_axis[measured_axis >= v - 1e-12].min(initial=np.inf) for v in x])
    gap = np.searchsorted(grid, upper - 1e-12) - np.searchsorted(grid, lower - 1e-12)
    return np.isfinite(lower) & np.isfinite(upper) & (gap <= 2)
