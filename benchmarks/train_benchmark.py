"""Benchmark: test AUROC against the oracle AUROC of the generator's true probabilities.

Run: .venv/bin/python benchmarks/train_benchmark.py [--seeds 0 1] [--n 2000]
Prints, per seed, the model's held-out AUROC (95% CI), the oracle AUROC on the same test
patients (true probabilities against realised outcomes), the gap, the calibration slope and
the wall time of `train`, then the time of the metric bootstrap. The data are SYNTHETIC;
tracking goes to a temporary SQLite store.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from inflamrx.config import load_config
from inflamrx.data.simulate import simulate_cohort, write_cohort
from inflamrx.jobs.train import train
from inflamrx.modeling.metrics import bootstrap_metric_ci


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--model", default="xgboost")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{Path(tmp) / 'bench.db'}"
        for seed in args.seeds:
            sim = simulate_cohort(args.n, seed)
            path = Path(tmp) / f"synthetic-{seed}.csv"
            write_cohort(sim, path)
            config = load_config(
                "configs/default.yaml",
                {
                    "data.path": str(path),
                    "model.kind": args.model,
                    "split.strategy": "holdout",  # a test set to hold the oracle against
                    "tracking.experiment": "bench",
                },
            )
            start = time.perf_counter()
            result = train(config)
            seconds = time.perf_counter() - start
            truth = sim.truth.set_index("patient_id").loc[result.test_patient_ids]
            cohort = sim.cohort.set_index("patient_id").loc[result.test_patient_ids]
            y = (cohort["madrs_followup"] <= 0.5 * cohort["madrs_total"]).astype(int).to_numpy()
            oracle = bootstrap_metric_ci(
                y, truth["p_response"].to_numpy(), n_boot=1000, seed=0
            ).auroc
            rows.append(
                {
                    "seed": seed,
                    "n_test": result.n_test,
                    "test_auroc": f"{result.test_auroc:.3f} ({result.test_auroc_ci[0]:.3f}-{result.test_auroc_ci[1]:.3f})",
                    "oracle_auroc": f"{oracle.estimate:.3f} ({oracle.ci_low:.3f}-{oracle.ci_high:.3f})",
                    "gap": round(oracle.estimate - result.test_auroc, 3),
                    "cv_auroc": round(float(np.mean(result.cv_auroc)), 3),
                    "calibration_slope": round(
                        result.evaluation.metrics.calibration_slope.estimate, 3
                    ),
                    "train_seconds": round(seconds, 1),
                }
            )
    print(f"SYNTHETIC cohorts, n = {args.n}, model = {args.model}")
    print(pd.DataFrame(rows).to_string(index=False))
    print_bootstrap_time()


def print_bootstrap_time() -> None:
    """The metric bootstrap every run pays for its CIs (1,000 resamples of 2,000 patients)."""
    rng = np.random.default_rng(5)
    p = rng.uniform(size=2_000)
    y = rng.binomial(1, p)
    start = time.perf_counter()
    bootstrap_metric_ci(y, p, n_boot=1_000)
    print(f"bootstrap CIs, 1,000 resamples of 2,000 patients: {time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
    main()
