"""Internal validation on every patient: the model is fitted on all rows and its performance on
new patients is estimated by resampling (``split.strategy: resample``).

cv (default): ``cv_repeats`` x ``cv_folds`` cross-validation; the estimate is the mean over
repeats of each repeat's metric on its pooled out-of-fold predictions.

bootstrap (Harrell, Lee & Mark 1996; Steyerberg et al. 2001; R's ``rms::validate``): each
resample refits the whole pipeline on a bootstrap sample; its optimism is its metric on that
sample minus its metric on the original patients; the optimism-corrected metric is the apparent
metric (final model, all patients) minus the mean optimism. Sound for regression models; it
under-corrects learners that memorise their sample (tree ensembles), because 63% of the
"original" patients a refit is tested on were in its bootstrap sample: on an outcome of pure
noise (tests/test_validation.py) it gives the small-sample XGBoost an AUROC near 0.70 where
cross-validation gives 0.5. Hence cv is the default, and bootstrap on a tree kind says so.

Confidence intervals, both modes: the percentile interval of the metric over
``evaluation.n_bootstrap`` patient resamples (model fixed) of the predictions it was measured
on (bootstrap: the final model's apparent predictions; cv: the out-of-fold predictions),
shifted to the corrected estimate. It carries the uncertainty from which patients were
sampled, not that of the optimism itself (whose spread across resamples is reported as
``optimism_sd``).

Decision curves, threshold tables, calibration curves and subgroups come from out-of-sample
predictions: each patient's mean prediction by the refits that did not see them (out-of-bag),
or their cross-validated prediction.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import expit, logit

from inflamrx.config import Config
from inflamrx.errors import InputError
from inflamrx.modeling.evaluate import Evaluation
from inflamrx.modeling.kinds.base import FittedModel, fit_model
from inflamrx.modeling.metrics import (
    BootstrapResult,
    Estimate,
    bootstrap_weights,
    percentile_ci,
    weighted_auroc,
    weighted_average_precision,
    weighted_brier,
    weighted_calibration,
)
from inflamrx.modeling.splits import cv_folds

METRICS = ("auroc", "auprc", "brier", "calibration_intercept", "calibration_slope")
Fit = Callable[[Config, pd.DataFrame, pd.Series], FittedModel]


def metric_matrix(y: np.ndarray, p: np.ndarray, weights: np.ndarray) -> dict[str, np.ndarray]:
    """Every metric of ``METRICS`` for each row of case weights."""
    intercept, slope = weighted_calibration(y, p, weights)
    return {
        "auroc": weighted_auroc(y, p, weights),
        "auprc": weighted_average_precision(y, p, weights),
        "brier": weighted_brier(y, p, weights),
        "calibration_intercept": intercept,
        "calibration_slope": slope,
    }


def metrics_of(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    return {k: float(v[0]) for k, v in metric_matrix(y, p, np.ones((1, len(y)))).items()}


@dataclass(frozen=True)
class Resampled:
    """What resampling says of one configuration (one model kind) on these patients."""

    kind: str
    method: str  # "bootstrap" or "cv"
    n_resamples: int  # refits (bootstrap) or repeats (cv) that were used
    apparent: dict[str, float]  # bootstrap: the final model on the patients it was fitted on
    optimism: dict[str, float]  # mean optimism (cv: apparent - cross-validated)
    optimism_sd: dict[str, float]
    corrected: dict[str, float]
    p_apparent: np.ndarray  # the final model's predictions for the patients it was fitted on
    p_reference: np.ndarray  # predictions whose patient resamples give the CI width
    p_out_of_sample: np.ndarray  # out-of-bag mean / cross-validated prediction; NaN if none
    fitted: FittedModel  # fitted on every patient


def bootstrap_indices(y: np.ndarray, n_resamples: int, seed: int) -> list[np.ndarray]:
    """``n_resamples`` bootstrap samples with both outcome classes (the same for every kind
    compared on a cohort: the comparison is paired)."""
    rng = np.random.default_rng(seed)
    out: list[np.ndarray] = []
    for _ in range(50 * n_resamples):  # single-class draws only happen in tiny cohorts
        idx = rng.integers(0, len(y), len(y))
        if 0 < y[idx].sum() < len(idx):
            out.append(idx)
        if len(out) == n_resamples:
            return out
    raise InputError("the outcome has too few patients in one class to bootstrap")


def _optimism_bootstrap(
    config: Config, x: pd.DataFrame, y: pd.Series, fit: Fit
) -> tuple[list[dict[str, float]], np.ndarray]:
    """Per resample: apparent minus original-sample metric; and the out-of-bag mean."""
    yv = y.to_numpy()
    optimism: list[dict[str, float]] = []
    oob_sum, oob_n = np.zeros(len(yv)), np.zeros(len(yv))
    for idx in bootstrap_indices(yv, config.split.n_resamples, config.split.seed):
        p = fit(config, x.iloc[idx], y.iloc[idx]).probability(x)
        on_sample, on_original = metrics_of(yv[idx], p[idx]), metrics_of(yv, p)
        optimism.append({k: on_sample[k] - on_original[k] for k in METRICS})
        out = np.ones(len(yv), dtype=bool)
        out[idx] = False
        oob_sum[out] += p[out]
        oob_n[out] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        return optimism, np.where(oob_n > 0, oob_sum / oob_n, np.nan)


def _cross_validated(
    config: Config, x: pd.DataFrame, y: pd.Series, fit: Fit
) -> tuple[list[dict[str, float]], np.ndarray]:
    """Per repeat: metrics of the pooled out-of-fold predictions; and their mean per patient."""
    s = config.split
    folds = cv_folds(y, None, s.cv_folds, s.seed, repeats=s.cv_repeats).required()
    n_per_repeat = len(folds) // s.cv_repeats
    yv = y.to_numpy()
    per_repeat, preds = [], []
    for r in range(s.cv_repeats):
        p = np.full(len(yv), np.nan)
        for fit_idx, score_idx in folds[r * n_per_repeat : (r + 1) * n_per_repeat]:
            fold_config = same_penalty_per_patient(config, len(fit_idx), len(yv))
            p[score_idx] = fit(fold_config, x.iloc[fit_idx], y.iloc[fit_idx]).probability(
                x.iloc[score_idx]
            )
        seen = np.isfinite(p)
        per_repeat.append(metrics_of(yv[seen], p[seen]))
        preds.append(p)
    return per_repeat, np.nanmean(np.vstack(preds), axis=0)


def same_penalty_per_patient(config: Config, n_fit: int, n_all: int) -> Config:
    """A fold's config with the logistic penalty per patient of the final fit. scikit-learn's
    ``C`` multiplies the summed loss, so a fixed ``C`` penalises a fold of 80% of the patients
    harder than the final model: its predictions come out flatter and the validated slope
    too high (about 1.13 for the lasso where new patients show 1.0, accuracy_benchmark.py)."""
    model = config.model
    if not hasattr(model, "C") or n_fit == n_all:
        return config
    scaled = model.model_copy(update={"C": model.C * n_all / n_fit})
    return config.model_copy(update={"model": scaled})


def resample(config: Config, x: pd.DataFrame, y: pd.Series, fit: Fit = fit_model) -> Resampled:
    """Fit ``config`` on every patient and estimate its performance on new ones."""
    fitted = fit(config, x, y)
    yv = y.to_numpy()
    p_all = fitted.probability(x)
    apparent = metrics_of(yv, p_all)
    if config.split.resample == "bootstrap":
        rows, p_oos = _optimism_bootstrap(config, x, y, fit)
        optimism = {k: float(np.nanmean([r[k] for r in rows])) for k in METRICS}
        sd = {k: float(np.nanstd([r[k] for r in rows])) for k in METRICS}
        corrected = {k: apparent[k] - optimism[k] for k in METRICS}
        reference = p_all
    else:
        rows, p_oos = _cross_validated(config, x, y, fit)
        corrected = {k: float(np.nanmean([r[k] for r in rows])) for k in METRICS}
        optimism = {k: apparent[k] - corrected[k] for k in METRICS}
        sd = {k: float(np.nanstd([r[k] for r in rows])) for k in METRICS}
        reference = p_oos
    return Resampled(
        kind=config.model.kind,
        method=config.split.resample,
        n_resamples=len(rows),
        apparent=apparent,
        optimism=optimism,
        optimism_sd=sd,
        corrected=corrected,
        p_apparent=p_all,
        p_reference=reference,
        p_out_of_sample=p_oos,
        fitted=fitted,
    )


def corrected_metrics(
    found: Resampled, y: np.ndarray, n_boot: int, seed: int, alpha: float = 0.05
) -> BootstrapResult:
    """The corrected estimates with their shifted percentile intervals (see the module doc)."""
    w = bootstrap_weights(len(y), n_boot, seed)
    events = w @ y
    ok = (events > 0) & (events < len(y))
    p = found.p_reference
    seen = np.isfinite(p)
    samples = metric_matrix(y[seen], p[seen], w[ok][:, seen])
    measured = metrics_of(y[seen], p[seen])
    est: dict[str, Estimate] = {}
    for k in METRICS:
        shift = found.corrected[k] - measured[k]
        raw = percentile_ci(measured[k], samples[k], alpha)
        est[k] = Estimate(
            found.corrected[k], raw.ci_low + shift, raw.ci_high + shift, raw.n_resamples
        )
    return BootstrapResult(
        auroc=est["auroc"],
        auprc=est["auprc"],
        brier=est["brier"],
        calibration_intercept=est["calibration_intercept"],
        calibration_slope=est["calibration_slope"],
        n_boot=n_boot,
        n_skipped_single_class=int((~ok).sum()),
        seed=seed,
        alpha=alpha,
    )


def describe_method(found: Resampled, n_boot: int) -> str:
    """One sentence saying how the figures were obtained (reports, runs, the CLI)."""
    if found.method == "bootstrap":
        how = (
            f"bootstrap optimism correction ({found.n_resamples} refits on bootstrap samples; "
            "model fitted on every patient)"
        )
        curves = "out-of-bag predictions"
    else:
        how = f"repeated cross-validation ({found.n_resamples} repeats; model fitted on every patient)"
        curves = "cross-validated predictions"
    return (
        f"{how}; 95% CIs: percentile intervals over {n_boot} patient resamples, shifted to the "
        f"corrected estimate; curves, thresholds and subgroups from {curves}"
    )


def caveat(found: Resampled) -> str | None:
    """Why a figure may be optimistic: Harrell's bootstrap on a kind that memorises."""
    if found.method == "bootstrap" and found.kind != "logistic":
        return (
            f"Bootstrap optimism correction under-corrects {found.kind} (tree ensembles "
            "memorise their bootstrap sample): its figures are optimistic; prefer "
            "split.resample: cv."
        )
    return None


def with_corrected(evaluation: Evaluation, metrics: BootstrapResult) -> Evaluation:
    """An out-of-sample evaluation whose headline metrics are the corrected ones."""
    return dataclasses.replace(evaluation, metrics=metrics)


SLOPE_BAND = (0.9, 1.1)


def recalibration(slope: float, y: np.ndarray, p_fitted: np.ndarray) -> tuple[float, float] | None:
    """Logistic recalibration (intercept, slope) when an out-of-sample calibration ``slope`` is
    outside ``SLOPE_BAND``: the slope itself (uniform shrinkage as in ``rms``), and the
    intercept re-estimated on the patients the model was fitted on (``y``, ``p_fitted``) with
    the shrunk log-odds as an offset. None when the slope is inside the band or not usable."""
    low, high = SLOPE_BAND
    if not np.isfinite(slope) or low <= slope <= high or slope <= 0:
        return None
    shrunk = expit(slope * logit(np.clip(p_fitted, 1e-12, 1 - 1e-12)))
    intercept = float(weighted_calibration(y, shrunk, np.ones((1, len(y))))[0][0])
    return intercept, float(slope)


def recalibration_note(ab: tuple[float, float], where: str) -> str:
    a, b = ab
    low, high = SLOPE_BAND
    return (
        f"The calibration slope {b:.2f} ({where}) is outside {low}-{high}: the model's log-odds "
        f"are recalibrated (x {b:.2f}, intercept {a:+.2f}; uniform shrinkage as in rms)."
    )


def recalibrated(found: Resampled, y: np.ndarray) -> tuple[Resampled, str | None]:
    """The final model, recalibrated where its validated slope is outside ``SLOPE_BAND``. The
    validated figures stay those of the model before recalibration (the recalibration is
    estimated from them, so validating it on the same resamples would be circular); the
    benchmark checks its effect on independent patients."""
    ab = recalibration(found.corrected["calibration_slope"], y, found.p_apparent)
    if ab is None:
        return found, None
    fitted = dataclasses.replace(found.fitted, recalibration=ab)
    note = recalibration_note(ab, "validated") + " The figures shown are before recalibration."
    return dataclasses.replace(found, fitted=fitted), note
