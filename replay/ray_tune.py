"""The Ray Tune baselines of the curves replay: real Tune runs of a function trainable that
reveals a point's curve with ``tune.report``, one result per evaluation.

Stock code a user would write: ``ASHAScheduler(time_attr="step", metric="accuracy", mode="max",
max_t=<longest curve>, grace_period=<first evaluation step>)`` stops trials on their validation
accuracy; the searcher is ``OptunaSearch(metric="objective", mode="max", sampler=TPESampler(seed))``
(``asha-optuna``) or Tune's random ``BasicVariantGenerator(random_state=seed)`` (``random-asha``),
over ``tune.choice`` of the grid's N and s. Each result carries ``objective``: the point's
throughput where its accuracy so far meets the threshold, else 0 (what OptunaSearch is told,
including for a trial the scheduler stopped, as stock OptunaSearch does).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

import optuna
import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.basic_variant import BasicVariantGenerator
from ray.tune.search.optuna import OptunaSearch


@contextmanager
def local_ray() -> Iterator[None]:
    """A local Ray instance (2 CPUs) for the block; one already initialised is used as is."""
    if ray.is_initialized():
        yield
        return
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="error")
    try:
        yield
    finally:
        ray.shutdown()


def ray_search(search, method: str, seed: int, trials: int) -> None:
    """Run one Ray Tune baseline over ``search`` (a replay.curves search) and record what it trained."""
    curves, lookup, threshold = search.curves, search.lookup, search.threshold
    table = {point: (curve.steps, curve.accuracies) for point, curve in curves.items()}
    speed = {point: float(lookup.loc[point, "throughput"]) for point in curves}

    def trainable(config: dict) -> None:
        point = (int(config["N"]), float(config["s"]))
        for step, accuracy in zip(*table[point]):
            objective = speed[point] if accuracy >= threshold else 0.0
            tune.report({"step": step, "accuracy": accuracy, "objective": objective})

    scheduler = ASHAScheduler(
        time_attr="step",
        metric="accuracy",
        mode="max",
        max_t=max(curve.total_steps for curve in curves.values()),
        grace_period=min(curve.steps[0] for curve in curves.values()),
    )
    if method == "asha-optuna":
        searcher = OptunaSearch(metric="objective", mode="max", sampler=optuna.samplers.TPESampler(seed=seed))
    else:
        searcher = BasicVariantGenerator(random_state=seed)
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Tune's newer console prints tables even at verbose=0
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # no result files: nothing reads them
    with tempfile.TemporaryDirectory(prefix="prumux-replay-") as storage:
        tuner = tune.Tuner(
            trainable,
            param_space={"N": tune.choice(search.grid_N), "s": tune.choice(search.grid_s)},
            tune_config=tune.TuneConfig(
                search_alg=searcher, scheduler=scheduler, num_samples=trials, reuse_actors=True
            ),
            run_config=tune.RunConfig(storage_path=storage, name="replay", verbose=0),
        )
        results = tuner.fit()
    for result in sorted(results, key=lambda r: r.metrics.get("trial_id", "")):
        _record(search, result)


def _record(search, result) -> None:
    point = (int(result.config["N"]), float(result.config["s"]))
    reached = int(result.metrics["step"]) if result.metrics and "step" in result.metrics else 0
    search.started.add(point)
    if reached >= search.curves[point].total_steps:
        search.finish(point)
        return
    if reached:
        search.ledger.train(point, reached)
    search.prune(point)
