"""Benchmark: is the default job better than a CRP blood test, and is its validation honest?

Run: .venv/bin/python benchmarks/accuracy_benchmark.py [--seeds 0 1 2 3 4 5 6 7] [--n-train 1500]
         [--n-test 20000] [--n-ceiling 50000] [--no-nhanes]

On each seed of the project's SYNTHETIC generator (a training cohort of --n-train, an
independent test cohort of --n-test from other seeds, true probabilities known) it fits the
default job's model the way ``inflamrx train`` does with the embedded defaults (model.kind
auto, split.strategy resample: candidates compared on the same cross-validation, the chosen
one fitted on every patient, recalibrated when its validated slope is outside 0.9-1.1) and
prints, on the test cohort: its AUROC and calibration slope beside CRP alone, the CRP > 3 mg/L
rule, a plain logistic regression on the raw columns, XGBoost with its default settings, the
oracle (true probabilities), and the ceiling (the candidates fitted on --n-ceiling patients);
then the resampling estimate of AUROC (95% CI) against the test AUROC. Pooled over seeds: the
mean difference default minus CRP alone with a bootstrap CI (test patients resampled within
each seed), the mean slope, the gap to the ceiling.

On the real NHANES 2017-2018 data (configs/nhanes.yaml: PHQ-9 >= 10, cross-sectional, no
truth and no independent test set) it prints each approach's cross-validated AUROC on the
same folds, and the default job's choice.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
import pandas as pd
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from inflamrx.config import Config, load_config
from inflamrx.data.crp import crp_rule
from inflamrx.data.outcomes import derive_outcome
from inflamrx.data.simulate import simulate_cohort
from inflamrx.data.validate import validate_cohort, validate_frame
from inflamrx.modeling.choice import candidate_config, compare
from inflamrx.modeling.features import model_input_columns
from inflamrx.modeling.kinds.base import fit_model
from inflamrx.modeling.metrics import (
    bootstrap_weights,
    calibration_intercept_slope,
    percentile_ci,
    weighted_auroc,
)
from inflamrx.modeling.validation import corrected_metrics, recalibrated, resample

N_BOOT = 300


def prepared(cohort: pd.DataFrame, config: Config) -> tuple[pd.DataFrame, pd.DataFrame, pd.Series]:
    accepted = validate_frame(cohort, config.data).accepted
    y = derive_outcome(accepted, config.outcome)
    known = y.notna().to_numpy()
    accepted = accepted[known].reset_index(drop=True)
    x = accepted[model_input_columns(list(accepted.columns), config.outcome)]
    return accepted, x, y[known].astype(int).reset_index(drop=True)


def raw_logistic(x: pd.DataFrame, y: pd.Series) -> Any:
    """A plain logistic regression on the raw numeric columns (no clinical features)."""
    numeric = x.apply(pd.to_numeric, errors="coerce")
    columns = [c for c in numeric if numeric[c].notna().mean() > 0.5]
    model = make_pipeline(
        SimpleImputer(strategy="median"), StandardScaler(), LogisticRegression(max_iter=2000)
    )
    model.fit(numeric[columns], y)
    return lambda frame: model.predict_proba(frame.apply(pd.to_numeric, errors="coerce")[columns])[
        :, 1
    ]


def default_job(config: Config, x: pd.DataFrame, y: pd.Series) -> dict[str, Any]:
    """What `inflamrx train` does with the embedded defaults, without the tracking."""
    e = config.evaluation
    choice = compare(config, x, y, e.n_bootstrap, e.seed)
    found, note = recalibrated(choice.chosen, y.to_numpy())
    metrics = corrected_metrics(found, y.to_numpy(), e.n_bootstrap, e.seed)
    return {
        "fitted": found.fitted,
        "kind": found.kind,
        "recalibrated": note is not None,
        "estimate": metrics.auroc,
        "slope_estimate": metrics.calibration_slope.estimate,
        "table": choice.table,
    }


def auroc(y: np.ndarray, p: np.ndarray) -> float:
    return float(weighted_auroc(y, p, np.ones((1, len(y))))[0])


def slope(y: np.ndarray, p: np.ndarray) -> float:
    return calibration_intercept_slope(y, np.clip(p, 1e-6, 1 - 1e-6))[1]


def one_seed(seed: int, args: argparse.Namespace, config: Config) -> dict[str, Any]:
    clock = time.perf_counter()
    _, x, y = prepared(simulate_cohort(args.n_train, seed).cohort, config)
    test_sim = simulate_cohort(args.n_test, 10_000 + seed)
    test, xt, yt = prepared(test_sim.cohort, config)
    truth = test_sim.truth.set_index("patient_id")["p_response"]
    oracle = truth.loc[test["patient_id"]].to_numpy()
    yv = yt.to_numpy()
    job = default_job(config, x, y)
    p_job = job["fitted"].probability(xt)
    xgb = fit_model(
        config.model_copy(update={"model": load_config(None, {"model.kind": "xgboost"}).model}),
        x,
        y,
    )
    crp = test["crp_mg_l"].to_numpy(dtype=float)
    preds = {
        "default job": p_job,
        "CRP alone": crp / (1 + crp),
        "CRP > 3 rule": crp_rule(crp).astype(float),
        "logistic, raw columns": raw_logistic(x, y)(xt),
        "XGBoost, defaults": xgb.probability(xt),
        "oracle": oracle,
    }
    seconds_job = time.perf_counter() - clock
    _, xc, yc = prepared(simulate_cohort(args.n_ceiling, 20_000 + seed).cohort, config)
    ceiling = {
        k: auroc(yv, fit_model(candidate_config(config, k), xc, yc).probability(xt))
        for k in config.model.candidates  # type: ignore[union-attr]
    }
    row: dict[str, Any] = {"seed": seed, "chosen": job["kind"], "recalibrated": job["recalibrated"]}
    for name, p in preds.items():
        row[f"{name} AUROC"] = auroc(yv, p)
        if name not in ("CRP > 3 rule", "CRP alone"):
            row[f"{name} slope"] = slope(yv, p)
    row["ceiling AUROC"] = max(ceiling.values())
    row["ceiling kind"] = max(ceiling, key=lambda k: ceiling[k])
    est = job["estimate"]
    row |= {"CV estimate": est.estimate, "CV CI low": est.ci_low, "CV CI high": est.ci_high}
    row["test in CI"] = est.ci_low <= row["default job AUROC"] <= est.ci_high
    row["seconds"] = seconds_job
    w = bootstrap_weights(len(yv), N_BOOT, seed)
    diff = weighted_auroc(yv, p_job, w) - weighted_auroc(yv, preds["CRP alone"], w)
    print(job["table"].round(3).to_string(index=False))
    return row | {"_diff_boot": diff}


def nhanes(config: Config) -> pd.DataFrame:
    """Cross-validated AUROC of each approach on the real NHANES cohort (same folds)."""
    nh = load_config("configs/nhanes.yaml", {"data.synthetic": False})
    nh = nh.model_copy(update={"model": config.model, "split": config.split})
    accepted = validate_cohort(nh.data).accepted
    y_all = derive_outcome(accepted, nh.outcome)
    known = y_all.notna().to_numpy()
    cohort = accepted[known].reset_index(drop=True)
    x = cohort[model_input_columns(list(cohort.columns), nh.outcome)]
    y = y_all[known].astype(int).reset_index(drop=True)
    yv = y.to_numpy()
    crp = pd.to_numeric(cohort["crp_mg_l"], errors="coerce").to_numpy()
    seen = np.isfinite(crp)
    rows = [
        ("CRP alone (no fitting)", auroc(yv[seen], crp[seen])),
        ("CRP > 3 rule (no fitting)", auroc(yv[seen], crp_rule(crp[seen]).astype(float))),
    ]
    job = default_job(nh, x, y)
    rows.append((f"default job (chose {job['kind']}), CV", job["estimate"].estimate))
    xgb = nh.model_copy(update={"model": load_config(None, {"model.kind": "xgboost"}).model})
    rows.append(("XGBoost defaults, CV", resample(xgb, x, y).corrected["auroc"]))
    print(job["table"].round(3).to_string(index=False))
    print(f"NHANES: {len(y)} adults, {int(y.sum())} with PHQ-9 >= 10")
    return pd.DataFrame(rows, columns=["approach", "AUROC"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    # Eight seeds: with three, one lucky or unlucky training cohort sways the mean gap.
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(8)))
    parser.add_argument("--n-train", type=int, default=1500)
    parser.add_argument("--n-test", type=int, default=20_000)
    parser.add_argument("--n-ceiling", type=int, default=50_000)
    parser.add_argument("--no-nhanes", action="store_true")
    args = parser.parse_args()
    config = load_config(None)
    assert config.model.kind == "auto" and config.split.strategy == "resample"
    rows = [one_seed(seed, args, config) for seed in args.seeds]
    diffs = np.mean([r.pop("_diff_boot") for r in rows], axis=0)
    table = pd.DataFrame(rows)
    with pd.option_context("display.width", 250, "display.max_columns", 40):
        print(table.round(3).T.to_string())
    point = float(np.mean(table["default job AUROC"] - table["CRP alone AUROC"]))
    pooled = percentile_ci(point, diffs, 0.05)
    gap = float(np.mean(table["ceiling AUROC"] - table["default job AUROC"]))
    print(
        f"\nSYNTHETIC, {len(rows)} seeds, {args.n_train} training / {args.n_test} test patients:"
        f"\n  default job minus CRP alone (pooled AUROC difference): {point:.3f} "
        f"(95% CI {pooled.ci_low:.3f} to {pooled.ci_high:.3f})"
        f"\n  mean calibration slope of the default job: {table['default job slope'].mean():.3f}"
        f"\n  ceiling ({args.n_ceiling} patients) minus default job: {gap:.3f}"
        f"\n  resampling estimate's CI holds the test AUROC: {int(table['test in CI'].sum())}"
        f" of {len(rows)} seeds"
    )
    if not args.no_nhanes:
        print(nhanes(config).round(3).to_string(index=False))


if __name__ == "__main__":
    main()
