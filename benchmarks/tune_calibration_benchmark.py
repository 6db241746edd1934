"""Benchmark: is a tuned model calibrated on new patients?

Run: .venv/bin/python benchmarks/tune_calibration_benchmark.py [--seeds 0 1 2] [--trials 30]
         [--n-train 1500] [--n-test 20000] [--guards 0.1 0.3]

On each seed of the project's SYNTHETIC generator it runs the search of ``inflamrx tune`` with
the embedded defaults (in memory, no tracking: XGBoost, the training part of the held-out
split, the same folds, sampler and pruner), for each calibration guard of the objective
(``tuning.calibration_guard``, set per run here); then refits the best configuration as the
tune job does (``calibrated_refit``: recalibrated when its own cross-validated slope is outside
0.9-1.1) and prints, on an independent test cohort of --n-test patients from another seed, the
AUROC and calibration slope of the plain refit and of the job's (possibly recalibrated) refit.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
import optuna
import pandas as pd
from accuracy_benchmark import prepared
from sklearn.metrics import roc_auc_score

import inflamrx.jobs.tune.search as search
from inflamrx.config import Config, TuningConfig, for_tuning, load_config
from inflamrx.data.simulate import simulate_cohort
from inflamrx.data.validate import validate_frame
from inflamrx.jobs.tune.job import calibrated_refit
from inflamrx.modeling.metrics import calibration_intercept_slope
from inflamrx.modeling.splits import prepare


def one_run(config: Config, seed: int, guard: float, args: argparse.Namespace) -> dict[str, Any]:
    clock = time.perf_counter()
    tuning = config.tuning.model_copy(update={"calibration_guard": guard})
    config = config.model_copy(update={"tuning": tuning})
    data = prepare(validate_frame(simulate_cohort(args.n_train, seed).cohort, config.data), config)
    _, x_test, y_test = prepared(simulate_cohort(args.n_test, 10_000 + seed).cohort, config)
    splits = search.task_splits(data, config)
    study = optuna.create_study(
        direction="maximize",
        sampler=search.make_sampler(config.tuning.seed),
        pruner=search.make_pruner(config, len(splits)),
    )
    objective = search.Objective(config, data.x_train, data.y_train, splits)
    study.optimize(objective, n_trials=args.trials, catch=(Exception,))
    refit = calibrated_refit(search.final_config(config, study.best_trial), data)
    y = y_test.to_numpy()
    row: dict[str, Any] = {"seed": seed, "guard": guard, "cv slope": refit.cv_slope}
    plain = refit.fitted.kind.predict(refit.fitted.estimator, refit.fitted.transform(x_test))
    for name, p in (
        ("plain refit", plain.iloc[:, 0].to_numpy()),
        ("job's refit", refit.fitted.probability(x_test)),
    ):
        p = np.clip(p, 1e-6, 1 - 1e-6)
        row[f"{name} AUROC"] = roc_auc_score(y, p)
        row[f"{name} slope"] = calibration_intercept_slope(y, p)[1]
    row["recalibrated"] = refit.fitted.recalibration is not None
    row["seconds"] = time.perf_counter() - clock
    print(row, flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--guards", type=float, nargs="+", default=[TuningConfig().calibration_guard])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--n-train", type=int, default=1500)
    parser.add_argument("--n-test", type=int, default=20_000)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    config = for_tuning(load_config(None))
    rows = [one_run(config, s, g, args) for g in args.guards for s in args.seeds]
    table = pd.DataFrame(rows)
    with pd.option_context("display.width", 250, "display.max_columns", 20):
        print(table.round(3).to_string(index=False))
        print(table.groupby("guard").mean(numeric_only=True).drop(columns="seed").round(3))


if __name__ == "__main__":
    main()
