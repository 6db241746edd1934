"""Benchmark: SHAP through inflamrx's explain path against raw XGBoost, memory, report time.

Run: .venv/bin/python benchmarks/explain_benchmark.py [--n 10000] [--train 2000] [--repeats 5]
Prints, on a SYNTHETIC cohort:
- the median wall time of ``explain.contributions`` (what ``inflamrx explain`` runs per row:
  the pipeline's own feature step, TreeExplainer, the model's margin, the additivity check)
  for ``--n`` patients, against ``booster.predict(DMatrix, pred_contribs=True)`` on the same,
  already transformed rows, and the ratio (aim: <= 1.5x);
- ``explain_rows`` (contributions + interaction values on a 200-row sample);
- ``patient_factors`` (top 3) for ``--n`` and for 100,000 rows (serving's top_factors);
- peak traced memory of ``contributions`` (tracemalloc) and the process's peak RSS;
- the time to write the HTML report (default ReportConfig: 2,000 patients in the figures).
With INFLAMRX_TEST_CHROMIUM set (``eval "$(.ci/services)"``) it also saves a screenshot of the
report to benchmarks/report_screenshot.png.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
from xgboost import DMatrix

from inflamrx.config import ReportConfig, load_config
from inflamrx.data.outcomes import derive_outcome
from inflamrx.data.simulate import simulate_cohort
from inflamrx.data.validate import validate_frame
from inflamrx.modeling.explanations import contributions, explain_rows
from inflamrx.modeling.factors import patient_factors
from inflamrx.modeling.features import model_input_columns
from inflamrx.modeling.kinds.base import fit_model
from inflamrx.reporting.html import NO_VALIDATION, ReportContext, write_report


def timed(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--train", type=int, default=2_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    config = load_config()  # default model: XGBoost, 300 trees, depth 3
    cohort = validate_frame(simulate_cohort(args.train + args.n, seed=0).cohort).accepted
    y = derive_outcome(cohort, config.outcome)
    x = cohort[model_input_columns(list(cohort.columns), config.outcome)]
    train = y.notna().to_numpy() & (np.arange(len(cohort)) < args.train)
    pipeline = fit_model(config, x[train], y[train].astype(int))
    rows = x.iloc[args.train :].reset_index(drop=True)
    ids = cohort["patient_id"].iloc[args.train :].reset_index(drop=True)
    print(f"SYNTHETIC cohort: trained on {int(train.sum())}, explaining {len(rows)} patients")

    booster = pipeline.estimator.get_booster()
    matrix = pipeline.transform(rows)
    raw = timed(lambda: booster.predict(DMatrix(matrix), pred_contribs=True), args.repeats)
    ours = timed(lambda: contributions(pipeline, rows), args.repeats)
    print(f"raw booster.predict(pred_contribs=True): {raw * 1000:8.1f} ms")
    print(
        f"explain.contributions:                   {ours * 1000:8.1f} ms  ({ours / raw:.2f}x raw)"
    )
    full = timed(lambda: explain_rows(pipeline, rows, ids), args.repeats)
    print(f"explain.explain_rows (+ interactions):   {full * 1000:8.1f} ms")

    contrib = contributions(pipeline, rows)
    factors = timed(lambda: patient_factors(contrib, rows, 3), args.repeats)
    print(f"patient_factors top 3, {len(rows)} rows:      {factors * 1000:8.1f} ms")
    big = rows.sample(100_000, replace=True, random_state=0).reset_index(drop=True)
    big_contrib = contributions(pipeline, big)
    big_time = timed(lambda: patient_factors(big_contrib, big, 3), 1)
    print(f"patient_factors top 3, 100000 rows:     {big_time * 1000:8.1f} ms")

    tracemalloc.start()
    contributions(pipeline, rows)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"peak traced memory of contributions:     {peak / 2**20:8.1f} MiB")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(f"process peak RSS so far:                 {rss:8.1f} MiB")

    explanation = explain_rows(pipeline, rows, ids)
    context = ReportContext(
        model_uri="(in memory)",
        outcome="response",
        synthetic=True,
        validation=NO_VALIDATION,
        cohort=cohort.iloc[args.train :],
        n_rejected=0,
        population="benchmark patients",
    )
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        files = write_report(explanation, context, ReportConfig(), Path(tmp))
        took = time.perf_counter() - start
        size = files.report.stat().st_size / 2**20
        print(f"report (default ReportConfig):           {took * 1000:8.1f} ms, {size:.1f} MiB")
        chromium = os.environ.get("INFLAMRX_TEST_CHROMIUM")
        if chromium:
            shot = Path(__file__).parent / "report_screenshot.png"
            subprocess.run(
                [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-sync",
                 "--disable-component-update", f"--user-data-dir={Path(tmp) / 'profile'}",
                 f"--screenshot={shot}", "--window-size=1280,4000", files.report.as_uri()],
                capture_output=True, timeout=120, check=True,
            )  # fmt: skip
            print(f"screenshot: {shot}")


if __name__ == "__main__":
    main()
