"""Benchmark `inflamrx tune` on a SYNTHETIC cohort.

Run: .venv/bin/python benchmarks/tune_benchmark.py [--n 2000] [--trials 40] [--nested-trials 10]
     [--cv-folds 5] [--rate-trials 120]

Prints
1. tuned against default parameters, both estimated honestly: the nested-CV AUROC of the whole
   tuning procedure against the default parameters scored on the same outer folds (pooled
   out-of-fold predictions, 95% bootstrap CIs), and the held-out test AUROC of each;
2. the fraction of cross-validation fold fits that pruning saved;
3. the wall time of `inflamrx tune` (a real subprocess: imports, validation, SQLite study with
   heartbeat, nested CV, MLflow parent and child runs, refit, evaluation, registration) beside a
   plain Optuna + XGBoost loop over the same trials (in-memory study, no tracking), phase by phase;
4. trials per minute of the search with 1 and 2 worker processes.
Tracking and studies go to a temporary folder; the cohort is made like
`inflamrx simulate --n N --seed 0`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split
from xgboost import XGBClassifier

from inflamrx.config import Config, load_config
from inflamrx.data.simulate import simulate_cohort, write_cohort
from inflamrx.data.validate import validate_cohort
from inflamrx.jobs.train import train
from inflamrx.jobs.tune.nested import outer_splits
from inflamrx.jobs.tune.search import make_pruner, search_space, task_splits
from inflamrx.jobs.tune.storage import create_study, fingerprint, open_storage
from inflamrx.jobs.tune.workers import _search
from inflamrx.modeling.features import build_feature_transformer
from inflamrx.modeling.kinds.base import fit_model
from inflamrx.modeling.metrics import Estimate, bootstrap_metric_ci
from inflamrx.modeling.splits import PreparedCohort, prepare


def ci(e: Estimate) -> str:
    return f"{e.estimate:.3f} ({e.ci_low:.3f}-{e.ci_high:.3f})"


def plain_loop(config: Config, data: PreparedCohort, n_trials: int) -> tuple[float, dict[str, Any]]:
    """The same trials without inflamrx: in-memory study, features + XGBoost by hand."""
    x, y = data.x_train, data.y_train
    splits = task_splits(data, config)
    t = config.tuning
    space = search_space(config)

    def objective(trial: optuna.Trial) -> float:
        params: dict[str, Any] = {}
        for name, r in space.items():  # the default space is numeric only
            assert r.low is not None and r.high is not None
            if r.integer:
                params[name] = trial.suggest_int(name, int(r.low), int(r.high), log=r.log)
            else:
                params[name] = trial.suggest_float(name, r.low, r.high, log=r.log)
        scores = []
        for step, (fit_idx, score_idx) in enumerate(splits):
            xf, yf = x.iloc[fit_idx], y.iloc[fit_idx]
            inner, valid = train_test_split(
                np.arange(len(yf)),
                test_size=t.validation_fraction,
                stratify=yf,
                random_state=t.seed,
            )
            features = build_feature_transformer(None, []).fit(xf.iloc[inner], yf.iloc[inner])
            model = XGBClassifier(**params, tree_method="hist", eval_metric="logloss",
                                  random_state=0, n_jobs=1,
                                  early_stopping_rounds=t.early_stopping_rounds)  # fmt: skip
            model.fit(features.transform(xf.iloc[inner]), yf.iloc[inner], verbose=False,
                      eval_set=[(features.transform(xf.iloc[valid]), yf.iloc[valid])])  # fmt: skip
            p = model.predict_proba(features.transform(x.iloc[score_idx]))[:, 1]
            scores.append(roc_auc_score(y.iloc[score_idx], p))
            trial.report(float(np.mean(scores)), step)
            if step < len(splits) - 1 and trial.should_prune():
                raise optuna.TrialPruned()
        return float(np.mean(scores))

    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=t.seed),
        pruner=make_pruner(config, len(splits)),
    )
    start = time.perf_counter()
    study.optimize(objective, n_trials=n_trials)
    return time.perf_counter() - start, study.best_params


def default_on_outer_folds(config: Config, data: PreparedCohort) -> Estimate:
    """Default parameters scored on the nested estimate's outer folds (pooled, bootstrap CI)."""
    x, y = data.x_train, data.y_train
    idx, p = [], []
    for fit_idx, score_idx in outer_splits(data, config):
        fitted = fit_model(config, x.iloc[fit_idx], y.iloc[fit_idx])
        idx.append(score_idx)
        p.append(fitted.probability(x.iloc[score_idx]))
    y_pooled = y.to_numpy()[np.concatenate(idx)]
    return bootstrap_metric_ci(y_pooled, np.concatenate(p), n_boot=1000, seed=0).auroc


def trials_per_minute(
    config: Config, data: PreparedCohort, folder: Path, workers: int, n: int
) -> float:
    url = f"sqlite:///{folder / f'rate-{workers}.db'}"
    study = create_study(open_storage(url, 5), "rate", fingerprint(config, data.digest), config)
    start = time.perf_counter()
    _search(study, url, data, config, n, None, workers, datetime.now(), lambda _c: None)
    return n / (time.perf_counter() - start) * 60


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--nested-trials", type=int, default=10)
    parser.add_argument("--cv-folds", type=int, default=5)
    parser.add_argument("--rate-trials", type=int, default=120)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sets = {"tuning.cv_folds": args.cv_folds, "tuning.nested_trials": args.nested_trials,
            "report.enabled": False, "tracking.experiment": "bench"}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{folder / 'mlflow.db'}"
        write_cohort(simulate_cohort(args.n, 0), folder / "synthetic.csv")
        config = load_config(None, sets | {"data.path": str(folder / "synthetic.csv")})
        data = prepare(validate_cohort(config.data), config)

        cli = [str(Path(sys.executable).parent / "inflamrx"), "tune", "--trials", str(args.trials),
               "--study", "bench", "--json"]  # fmt: skip
        for key, value in sets.items():
            cli += ["--set", f"{key}={value}"]
        start = time.perf_counter()
        done = subprocess.run([*cli, "--data", str(folder / "synthetic.csv")], cwd=folder,
                              capture_output=True, text=True, check=True)  # fmt: skip
        tune_wall = time.perf_counter() - start
        result = json.loads(done.stdout.strip().splitlines()[-1])

        plain_seconds, plain_best = plain_loop(config, data, args.trials)
        default_outer = default_on_outer_folds(config, data)
        default_train = train(config)
        rate1 = trials_per_minute(config, data, folder, 1, args.rate_trials)
        rate2 = trials_per_minute(config, data, folder, 2, args.rate_trials)

    s = result["seconds"]
    lo, hi = result["nested_auroc_ci"]
    t_lo, t_hi = result["test_auroc_ci"]
    print(f"SYNTHETIC cohort n = {args.n} (seed 0), n_train = {result['n_train']}, "
          f"{args.trials} trials x {args.cv_folds} folds, nested {config.tuning.nested_folds} "
          f"outer folds x {args.nested_trials} trials")  # fmt: skip
    print("\n1. Tuned against default parameters (AUROC, 95% bootstrap CI)")
    rows = [
        ("tuned (nested CV, whole procedure)", f"{result['nested_auroc']:.3f} ({lo:.3f}-{hi:.3f})"),
        ("default params (same outer folds)", ci(default_outer)),
        ("tuned, held-out test set", f"{result['test_auroc']:.3f} ({t_lo:.3f}-{t_hi:.3f})"),
        ("default params, held-out test set", ci(default_train.evaluation.metrics.auroc)),
        ("best trial CV AUROC (optimistic)", f"{result['best_cv_auroc']:.3f}"),
    ]
    print(pd.DataFrame(rows, columns=["estimate", "AUROC"]).to_string(index=False))
    print(f"\n2. Pruning: {result['n_pruned']} of {result['n_trials']} trials pruned; "
          f"{result['fold_fits_saved_by_pruning']:.0%} of fold fits saved")  # fmt: skip
    search = s["search"]
    print("\n3. Wall time (s)")
    print(f"  inflamrx tune, whole command        {tune_wall:7.1f}")
    for phase, value in s.items():
        print(f"    {phase:<32} {value:7.1f}")
    print(f"  plain Optuna + XGBoost loop (search) {plain_seconds:6.1f}")
    print(f"  search phase ratio tune/plain        {search / plain_seconds:6.2f}x")
    print(f"  search + prepare + tracking ratio    "
          f"{(search + s['prepare']) / plain_seconds:6.2f}x")  # fmt: skip
    print(f"  same best params as the plain loop:  {plain_best == result['best_params']}")
    print(
        f"\n4. Search throughput ({args.rate_trials} trials, SQLite study, worker start included)"
    )
    print(f"  1 worker  {rate1:5.1f}\n  2 workers {rate2:5.1f}")


if __name__ == "__main__":
    main()
