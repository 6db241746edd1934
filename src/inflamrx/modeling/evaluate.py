"""Honest clinical evaluation of predicted probabilities on a held-out test set.

Everything here is a pure function of the test labels ``y`` (0/1) and predicted probabilities
``p``. Confidence intervals for AUROC, AUPRC, Brier score and the calibration intercept/slope
are bootstrap percentile intervals from one shared set of resamples; proportions at a
threshold (sensitivity, specificity, PPV, NPV) get Wilson score intervals.

The bootstrap is vectorised: one ``(n_boot, n)`` index matrix is drawn and turned into a matrix
of case weights (how often each row appears in each resample). Every metric is then a weighted
statistic of the original rows, computed for all resamples at once.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy.special import expit, logit
from scipy.stats import norm
from sklearn.metrics import precision_recall_curve, roc_curve

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

# Keeps logit(p) finite for p of exactly 0 or 1.
PROBABILITY_CLIP = 1e-6
DEFAULT_THRESHOLDS: tuple[float, ...] = (0.2, 0.3, 0.4, 0.5)
# 0.05, 0.06, ..., 0.60 built from integers so the grid has no floating-point drift.
DEFAULT_DCA_THRESHOLDS: tuple[float, ...] = tuple(k / 100 for k in range(5, 61))
MIN_SUBGROUP_SIZE = 10
# Above this on real clinical data leakage is likelier than discovery (see ENGINEERING.md).
SUSPICIOUS_AUROC = 0.85
# Validation studies need about 100 events for usable precision (Collins et al., 2016).
MIN_VALIDATION_EVENTS = 100


# --------------------------------------------------------------------------- result types


@dataclass(frozen=True)
class Estimate:
    """A whole-sample point estimate with its bootstrap percentile interval."""

    estimate: float
    ci_low: float
    ci_high: float
    n_resamples: int  # bootstrap resamples that gave a finite value


@dataclass(frozen=True)
class BootstrapResult:
    """Whole-sample metrics with bootstrap percentile intervals from one set of resamples."""

    auroc: Estimate
    auprc: Estimate
    brier: Estimate
    calibration_intercept: Estimate
    calibration_slope: Estimate
    n_boot: int
    n_skipped_single_class: int
    seed: int
    alpha: float

    def headline(self) -> list[tuple[str, str, Estimate]]:
        """(metric key, readable label, estimate) of the five whole-sample metrics."""
        return [
            ("auroc", "AUROC", self.auroc),
            ("auprc", "AUPRC (average precision)", self.auprc),
            ("brier", "Brier score", self.brier),
            (
                "calibration_intercept",
                "Calibration intercept (in the large)",
                self.calibration_intercept,
            ),
            ("calibration_slope", "Calibration slope", self.calibration_slope),
        ]


@dataclass(frozen=True)
class EventsPerVariable:
    """min(events, non-events) per candidate predictor, with a warning when it is low."""

    events: int
    non_events: int
    n_features: int
    epv: float
    warning: str | None


@dataclass(frozen=True, eq=False)
class Evaluation:
    """Everything measured on one test set. Holds aggregates only, never patient rows.

    Tables (one row per item, plain columns) are DataFrames; the plots read them directly.
    """

    n: int
    n_events: int
    metrics: BootstrapResult
    roc_curve: pd.DataFrame  # false_positive_rate, sensitivity
    pr_curve: pd.DataFrame  # sensitivity, ppv
    calibration_bins: pd.DataFrame
    calibration_smooth: pd.DataFrame  # predicted, observed
    threshold_table: pd.DataFrame
    decision_curve: pd.DataFrame
    subgroups: pd.DataFrame
    rule_name: str | None
    notes: tuple[str, ...]

    @property
    def prevalence(self) -> float:
        return self.n_events / self.n

    def to_mlflow_metrics(self, prefix: str = "test_") -> dict[str, float]:
        """Flat ``{name: float}`` for ``mlflow.log_metrics``; non-finite values are left out."""
        out: dict[str, float] = {}

        def put(key: str, value: float) -> None:
            key = prefix + key
            if key in out:
                raise ValueError(f"Metric key {key!r} occurs twice; rename a subgroup level.")
            if math.isfinite(value):
                out[key] = float(value)

        put("n", self.n)
        put("events", self.n_events)
        put("prevalence", self.prevalence)
        m = self.metrics
        for name, _, est in m.headline():
            put(name, est.estimate)
            put(f"{name}_ci_low", est.ci_low)
            put(f"{name}_ci_high", est.ci_high)
        put("bootstrap_n", m.n_boot)
        put("bootstrap_skipped_single_class", m.n_skipped_single_class)
        proportions = ("sensitivity", "specificity", "ppv", "npv")
        for row in _records(self.threshold_table):
            kind, at = row["classifier_kind"], f"at_{_slug(format(row['threshold'], 'g'))}"
            put(f"{kind}_net_benefit_{at}", row["net_benefit"])
            # Treat-all has sensitivity 1 and specificity 0 by definition: nothing to log.
            if kind == "model":
                for col in proportions:
                    put(f"model_{col}_{at}", row[col])
        # A fixed rule's proportions do not depend on the threshold: log them once.
        for row in _records(self.threshold_table.query("classifier_kind == 'rule'").head(1)):
            for col in proportions:
                put(f"rule_{col}", row[col])
        for row in _records(self.subgroups):
            key = f"subgroup_{_slug(str(row['variable']))}_{_slug(str(row['level']))}"
            put(f"{key}_n", row["n"])
            put(f"{key}_events", row["events"])
            put(f"{key}_auroc", row["auroc"])
            put(f"{key}_auroc_ci_low", row["ci_low"])
            put(f"{key}_auroc_ci_high", row["ci_high"])
        return out

    def to_frame(self) -> pd.DataFrame:
        """Tidy table of every metric with its interval: one row per (metric, scope)."""
        boot = f"bootstrap percentile ({self.metrics.n_boot} resamples)"
        rows: list[dict[str, object]] = []
        for _, label, est in self.metrics.headline():
            rows.append(_row(label, "overall", est.estimate, est.ci_low, est.ci_high, boot, self.n))
        for r in _records(self.threshold_table):
            scope = f"{r['classifier']} at threshold {r['threshold']:g}"
            for col, label, n in [
                ("sensitivity", "Sensitivity", r["tp"] + r["fn"]),
                ("specificity", "Specificity", r["tn"] + r["fp"]),
                ("ppv", "PPV", r["tp"] + r["fp"]),
                ("npv", "NPV", r["tn"] + r["fn"]),
            ]:
                low, high = r[f"{col}_ci_low"], r[f"{col}_ci_high"]
                rows.append(_row(label, scope, r[col], low, high, "Wilson", n))
            rows.append(_row("Net benefit", scope, r["net_benefit"], np.nan, np.nan, "", self.n))
        for r in _records(self.subgroups):
            scope = f"{r['variable']} = {r['level']}"
            rows.append(
                _row("AUROC", scope, r["auroc"], r["ci_low"], r["ci_high"], boot, r["n"], r["note"])
            )
        return pd.DataFrame(rows)


def _row(
    metric: str,
    scope: str,
    estimate: float,
    low: float,
    high: float,
    method: str,
    n: int,
    note: str = "",
) -> dict[str, object]:
    return {
        "metric": metric,
        "scope": scope,
        "estimate": float(estimate),
        "ci_low": float(low),
        "ci_high": float(high),
        "ci_method": method,
        "n": int(n),
        "note": note,
    }


def _records(table: pd.DataFrame) -> list[dict[str, Any]]:
    return [{str(k): v for k, v in row.items()} for row in table.to_dict("records")]


def _slug(text: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", text.lower()).strip("_")


# --------------------------------------------------------------------------- input checks


def _check_labels(y: npt.ArrayLike, name: str = "y") -> IntArray:
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise ValueError(f"The '{name}' parameter must be 1-dimensional. Got shape {arr.shape}.")
    if arr.dtype.kind not in "biuf":
        raise ValueError(
            f"The '{name}' parameter must be numeric 0/1 labels. Got dtype {arr.dtype} instead."
        )
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        bad = int(np.sum(~np.isfinite(arr)))
        raise ValueError(f"The '{name}' parameter must not contain NaN or inf. Got {bad} such.")
    values = np.unique(arr)
    if not np.all(np.isin(values, [0, 1])):
        shown = values[~np.isin(values, [0, 1])][:5].tolist()
        raise ValueError(f"The '{name}' parameter must contain only 0 and 1. Got values {shown}.")
    return arr.astype(np.int64)


def _check_probabilities(p: npt.ArrayLike, name: str = "p") -> FloatArray:
    arr = np.asarray(p)
    if arr.ndim != 1:
        raise ValueError(f"The '{name}' parameter must be 1-dimensional. Got shape {arr.shape}.")
    if arr.dtype.kind not in "biuf":
        raise ValueError(
            f"The '{name}' parameter must be numeric probabilities. Got dtype {arr.dtype} instead."
        )
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        bad = int(np.sum(~np.isfinite(arr)))
        raise ValueError(f"The '{name}' parameter must not contain NaN or inf. Got {bad} such.")
    if arr.size and (arr.min() < 0 or arr.max() > 1):
        raise ValueError(
            f"The '{name}' parameter must be probabilities in [0, 1]. "
            f"Got values from {arr.min():g} to {arr.max():g}."
        )
    return arr


def _check_rule(rule: npt.ArrayLike, name: str) -> BoolArray:
    """A yes/no rule such as ``crp > 3``: booleans, or 0/1 numbers without NaN."""
    arr = np.asarray(rule)
    if arr.dtype.kind == "b" and arr.ndim == 1:
        return arr.copy()
    try:
        return _check_labels(arr, name).astype(bool)
    except ValueError as exc:
        raise ValueError(f"{exc} A rule must be a boolean array such as `crp > 3`.") from None


def _check_same_length(
    y: npt.NDArray[np.generic], other: npt.NDArray[np.generic], name: str
) -> None:
    if len(other) != len(y):
        raise ValueError(
            f"The '{name}' parameter must have one entry per row of 'y' ({len(y)}). "
            f"Got {len(other)}."
        )


def _check_thresholds(thresholds: Sequence[float], name: str) -> FloatArray:
    arr = np.asarray(thresholds, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0 or not np.all((arr > 0) & (arr < 1)):
        raise ValueError(
            f"The '{name}' parameter must be a non-empty sequence of numbers strictly between "
            f"0 and 1. Got {list(np.atleast_1d(arr))}."
        )
    return arr


def _check_positive_int(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"The '{name}' parameter must be a positive integer. Got {value!r}.")
    return int(value)


def _check_alpha(alpha: float) -> float:
    if not 0 < alpha < 1:
        raise ValueError(f"The 'alpha' parameter must be between 0 and 1. Got {alpha!r}.")
    return float(alpha)


def _check_y_p(y: npt.ArrayLike, p: npt.ArrayLike) -> tuple[IntArray, FloatArray]:
    y_arr, p_arr = _check_labels(y), _check_probabilities(p)
    _check_same_length(y_arr, p_arr, "p")
    if y_arr.size == 0:
        raise ValueError("The 'y' parameter must not be empty. Got 0 rows.")
    return y_arr, p_arr


def _check_both_classes(y: IntArray) -> None:
    events = int(y.sum())
    if events in (0, len(y)):
        raise ValueError(
            "The 'y' parameter must contain both outcome classes (0 and 1). "
            f"Got {events} events among {len(y)} rows."
        )


# --------------------------------------------------------------------------- weighted metrics
# ``weights`` has shape (n_sets, n): row b says how often each observation counts in set b.
# A row of ones is the whole sample; a bootstrap resample gives a row of counts.
# These inner functions trust their inputs (already checked by the public entry points).


def _class_counts_by_score(
    y: IntArray, p: FloatArray, weights: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Weighted positives and negatives per distinct score, scores ascending: (n_sets, G)."""
    order = np.argsort(p, kind="stable")
    p_sorted = p[order]
    starts = np.flatnonzero(np.r_[True, p_sorted[1:] != p_sorted[:-1]])
    w = weights[:, order]
    pos = np.add.reduceat(w * y[order], starts, axis=1)
    neg = np.add.reduceat(w * (1 - y[order]), starts, axis=1)
    return pos, neg


def weighted_auroc(y: IntArray, p: FloatArray, weights: FloatArray) -> FloatArray:
    """AUROC for each row of ``weights`` (the Mann-Whitney statistic, ties counted as 1/2).

    Equivalent to ranking with mid-ranks, but grouping the original rows by distinct score
    needs one sort in total instead of one per resample. NaN where a set has one class only.
    """
    pos, neg = _class_counts_by_score(y, p, np.atleast_2d(weights))
    neg_below = np.cumsum(neg, axis=1) - neg
    n_pos, n_neg = pos.sum(axis=1), neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (pos * (neg_below + 0.5 * neg)).sum(axis=1) / (n_pos * n_neg)
    return np.where((n_pos > 0) & (n_neg > 0), auc, np.nan)


def weighted_average_precision(y: IntArray, p: FloatArray, weights: FloatArray) -> FloatArray:
    """Average precision (step-wise area under the PR curve, as sklearn) for each weight row."""
    pos, neg = _class_counts_by_score(y, p, np.atleast_2d(weights))
    # Walk thresholds from the highest score down; tied scores enter together.
    pos, neg = pos[:, ::-1], neg[:, ::-1]
    tp, fp = np.cumsum(pos, axis=1), np.cumsum(neg, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        ap = (pos * precision).sum(axis=1) / pos.sum(axis=1)
    return np.where(pos.sum(axis=1) > 0, ap, np.nan)


def weighted_brier(y: IntArray, p: FloatArray, weights: FloatArray) -> FloatArray:
    w = np.atleast_2d(weights)
    return (w @ (p - y) ** 2) / w.sum(axis=1)


def _logit_clipped(p: FloatArray) -> FloatArray:
    return np.asarray(logit(np.clip(p, PROBABILITY_CLIP, 1 - PROBABILITY_CLIP)), dtype=np.float64)


def weighted_calibration(
    y: IntArray, p: FloatArray, weights: FloatArray, max_iter: int = 50, tol: float = 1e-9
) -> tuple[FloatArray, FloatArray]:
    """Calibration intercept and slope for each weight row, by vectorised Newton-Raphson.

    Intercept (calibration-in-the-large): ``logit P(y=1) = a + logit(p)``, logit(p) an offset.
    Slope: ``logit P(y=1) = a + b * logit(p)``; ``b`` is reported. Both start at the perfectly
    calibrated solution (a=0, b=1), where Newton converges in a few steps. A set that has not
    converged after ``max_iter`` steps (e.g. separation in a tiny resample) gets NaN.
    """
    w = np.atleast_2d(weights).astype(np.float64)
    x = _logit_clipped(p)
    yf = y.astype(np.float64)

    # Intercept with offset: one parameter per set.
    a = np.zeros(len(w))
    done = np.zeros(len(w), dtype=bool)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        for _ in range(max_iter):
            mu = expit(a[:, None] + x)
            step = (w @ yf - (w * mu).sum(axis=1)) / (w * mu * (1 - mu)).sum(axis=1)
            a = a + np.where(done, 0.0, step)
            done |= np.abs(step) < tol
            if done.all():
                break
    intercept = np.where(done & np.isfinite(a), a, np.nan)

    # Intercept and slope: the 2x2 Newton system is solved in closed form for all sets at once.
    a, b = np.zeros(len(w)), np.ones(len(w))
    done = np.zeros(len(w), dtype=bool)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        for _ in range(max_iter):
            mu = expit(a[:, None] + b[:, None] * x)
            r = w * (yf - mu)
            g0, g1 = r.sum(axis=1), r @ x
            v = w * mu * (1 - mu)
            h00, h01, h11 = v.sum(axis=1), v @ x, v @ (x * x)
            det = h00 * h11 - h01 * h01
            da, db = (h11 * g0 - h01 * g1) / det, (h00 * g1 - h01 * g0) / det
            a, b = a + np.where(done, 0.0, da), b + np.where(done, 0.0, db)
            done |= (np.abs(da) < tol) & (np.abs(db) < tol)
            if done.all():
                break
    slope = np.where(done & np.isfinite(b), b, np.nan)
    return intercept, slope


def calibration_intercept_slope(y: npt.ArrayLike, p: npt.ArrayLike) -> tuple[float, float]:
    """Whole-sample calibration intercept (in the large) and calibration slope."""
    y_arr, p_arr = _check_y_p(y, p)
    _check_both_classes(y_arr)
    intercept, slope = weighted_calibration(y_arr, p_arr, np.ones((1, len(y_arr))))
    return float(intercept[0]), float(slope[0])


# --------------------------------------------------------------------------- bootstrap


def bootstrap_weights(n: int, n_boot: int, seed: int) -> FloatArray:
    """Case weights of ``n_boot`` bootstrap resamples: row b counts each row's draws."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    flat = (np.arange(n_boot)[:, None] * n + idx).ravel()
    return np.bincount(flat, minlength=n_boot * n).reshape(n_boot, n).astype(np.float64)


def _percentile_ci(point: float, samples: FloatArray, alpha: float) -> Estimate:
    finite = samples[np.isfinite(samples)]
    if finite.size < 2:
        return Estimate(float(point), np.nan, np.nan, int(finite.size))
    low, high = np.quantile(finite, [alpha / 2, 1 - alpha / 2])
    return Estimate(float(point), float(low), float(high), int(finite.size))


def bootstrap_metric_ci(
    y: npt.ArrayLike,
    p: npt.ArrayLike,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> BootstrapResult:
    """AUROC, AUPRC, Brier, calibration intercept and slope with percentile bootstrap CIs.

    Resamples that contain one outcome class only are skipped for every metric (so all
    intervals come from the same resamples) and counted in ``n_skipped_single_class``.
    Memory is O(n_boot * n): about 16 MB for 1,000 resamples of 2,000 rows.
    """
    y_arr, p_arr = _check_y_p(y, p)
    _check_both_classes(y_arr)
    n_boot = _check_positive_int(n_boot, "n_boot")
    alpha = _check_alpha(alpha)

    whole = np.ones((1, len(y_arr)))
    w = bootstrap_weights(len(y_arr), n_boot, seed)
    events = w @ y_arr
    ok = (events > 0) & (events < len(y_arr))
    w = w[ok]

    def ci(fn: Callable[[IntArray, FloatArray, FloatArray], FloatArray]) -> Estimate:
        return _percentile_ci(float(fn(y_arr, p_arr, whole)[0]), fn(y_arr, p_arr, w), alpha)

    intercept, slope = weighted_calibration(y_arr, p_arr, whole)
    intercept_boot, slope_boot = weighted_calibration(y_arr, p_arr, w)
    return BootstrapResult(
        auroc=ci(weighted_auroc),
        auprc=ci(weighted_average_precision),
        brier=ci(weighted_brier),
        calibration_intercept=_percentile_ci(float(intercept[0]), intercept_boot, alpha),
        calibration_slope=_percentile_ci(float(slope[0]), slope_boot, alpha),
        n_boot=n_boot,
        n_skipped_single_class=int((~ok).sum()),
        seed=seed,
        alpha=alpha,
    )


# --------------------------------------------------------------------------- calibration curve


def wilson_interval(
    successes: npt.ArrayLike, n: npt.ArrayLike, alpha: float = 0.05
) -> tuple[FloatArray, FloatArray]:
    """Wilson score interval for a binomial proportion; NaN where ``n`` is 0."""
    k, m = np.asarray(successes, dtype=np.float64), np.asarray(n, dtype=np.float64)
    z = norm.ppf(1 - alpha / 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        phat = k / m
        denom = 1 + z**2 / m
        centre = (phat + z**2 / (2 * m)) / denom
        half = z / denom * np.sqrt(phat * (1 - phat) / m + z**2 / (4 * m**2))
    low, high = np.clip(centre - half, 0, 1), np.clip(centre + half, 0, 1)
    return np.where(m > 0, low, np.nan), np.where(m > 0, high, np.nan)


def calibration_bins(
    y: npt.ArrayLike, p: npt.ArrayLike, n_bins: int = 10, alpha: float = 0.05
) -> pd.DataFrame:
    """Quantile bins of predicted risk: counts, mean predicted and observed proportion (Wilson).

    Bins hold about equal numbers of patients; tied predictions can merge bins.
    """
    y_arr, p_arr = _check_y_p(y, p)
    n_bins = _check_positive_int(n_bins, "n_bins")
    alpha = _check_alpha(alpha)
    edges = np.unique(np.quantile(p_arr, np.linspace(0, 1, n_bins + 1)))
    # Interior edges only, so the maximum falls in the last bin rather than a bin of its own.
    bin_id = np.digitize(p_arr, edges[1:-1])
    table = (
        pd.DataFrame({"bin": bin_id + 1, "y": y_arr, "p": p_arr})
        .groupby("bin")
        .agg(
            n=("y", "size"),
            events=("y", "sum"),
            predicted_low=("p", "min"),
            predicted_high=("p", "max"),
            mean_predicted=("p", "mean"),
        )
        .reset_index()
    )
    table["observed"] = table["events"] / table["n"]
    table["observed_ci_low"], table["observed_ci_high"] = wilson_interval(
        table["events"], table["n"], alpha
    )
    return table


def lowess_calibration(
    y: npt.ArrayLike, p: npt.ArrayLike, frac: float = 2 / 3, n_grid: int = 101
) -> pd.DataFrame:
    """Smoothed calibration curve: LOWESS of y on p, evaluated on a grid of predicted risks.

    Local linear fits with tricube weights over the nearest ``frac`` of patients, without the
    robustness iterations (as ``rms::val.prob`` does for binary outcomes, where every point
    would look like an outlier). Estimates are clipped to [0, 1]. Memory is O(n_grid * n).
    """
    y_arr, p_arr = _check_y_p(y, p)
    if not 0 < frac <= 1:
        raise ValueError(f"The 'frac' parameter must be in (0, 1]. Got {frac!r}.")
    grid = np.linspace(p_arr.min(), p_arr.max(), _check_positive_int(n_grid, "n_grid"))
    k = max(math.ceil(frac * len(p_arr)), 2) if len(p_arr) > 1 else 1
    dist = np.abs(grid[:, None] - p_arr[None, :])
    bandwidth = np.maximum(np.partition(dist, k - 1, axis=1)[:, k - 1], 1e-12)
    w = (1 - np.clip(dist / bandwidth[:, None], 0, 1) ** 3) ** 3
    sw = w.sum(axis=1)
    mx, my = (w @ p_arr) / sw, (w @ y_arr) / sw
    dx = p_arr[None, :] - mx[:, None]
    sxx = (w * dx**2).sum(axis=1)
    sxy = (w * dx * (y_arr[None, :] - my[:, None])).sum(axis=1)
    # Where all weighted points share one predicted value, fall back to their mean outcome.
    slope = np.divide(sxy, sxx, out=np.zeros_like(sxy), where=sxx > 1e-15)
    observed = np.clip(my + slope * (grid - mx), 0, 1)
    return pd.DataFrame({"predicted": grid, "observed": observed})


# --------------------------------------------------------------------------- thresholds & DCA


def _net_benefit(tp: Any, fp: Any, n: int, pt: Any) -> Any:
    """TP/n - FP/n * pt / (1 - pt): scalars, or arrays of counts and thresholds."""
    return tp / n - fp / n * pt / (1 - pt)


def net_benefit(y: npt.ArrayLike, positives: npt.ArrayLike, threshold: float) -> float:
    """Net benefit of treating ``positives``: TP/n - FP/n * pt / (1 - pt)."""
    y_arr = _check_labels(y)
    pos = _check_rule(positives, "positives")
    _check_same_length(y_arr, pos, "positives")
    pt = float(_check_thresholds([threshold], "threshold")[0])
    tp, fp = int(np.sum(pos & (y_arr == 1))), int(np.sum(pos & (y_arr == 0)))
    return float(_net_benefit(tp, fp, len(y_arr), pt))


def _net_benefit_curve(y: IntArray, positives: BoolArray, pts: FloatArray) -> FloatArray:
    """Net benefit at each threshold; ``positives`` is (len(pts), n) or (n,) for a fixed rule."""
    pos = np.broadcast_to(positives, (len(pts), len(y)))
    tp, fp = (pos & (y == 1)).sum(axis=1), (pos & (y == 0)).sum(axis=1)
    return np.asarray(_net_benefit(tp, fp, len(y), pts), dtype=np.float64)


def decision_curve(
    y: npt.ArrayLike,
    p: npt.ArrayLike,
    *,
    rule: npt.ArrayLike | None = None,
    thresholds: Sequence[float] = DEFAULT_DCA_THRESHOLDS,
) -> pd.DataFrame:
    """Net benefit of the model (treat if p >= pt), treat-all, treat-none and a fixed rule."""
    y_arr, p_arr = _check_y_p(y, p)
    pts = _check_thresholds(thresholds, "thresholds")
    table = pd.DataFrame(
        {
            "threshold": pts,
            "model": _net_benefit_curve(y_arr, p_arr[None, :] >= pts[:, None], pts),
            "treat_all": _net_benefit_curve(y_arr, np.ones(len(y_arr), dtype=bool), pts),
            "treat_none": np.zeros(len(pts)),
        }
    )
    if rule is not None:
        rule_arr = _check_rule(rule, "rule")
        _check_same_length(y_arr, rule_arr, "rule")
        table["rule"] = _net_benefit_curve(y_arr, rule_arr, pts)
    return table


def classification_at_thresholds(
    y: npt.ArrayLike,
    p: npt.ArrayLike,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    *,
    rule: npt.ArrayLike | None = None,
    rule_name: str = "rule",
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Counts, sensitivity, specificity, PPV, NPV (Wilson CIs) and net benefit per threshold.

    One row per threshold for the model (positive means p >= threshold), for treat-all, and
    for the fixed ``rule`` if given. The rule's counts do not depend on the threshold, but
    its net benefit does, so it is repeated per threshold to make the comparison direct.
    """
    y_arr, p_arr = _check_y_p(y, p)
    pts = _check_thresholds(thresholds, "thresholds")
    alpha = _check_alpha(alpha)
    candidates: list[tuple[str, str, BoolArray | None]] = [
        ("model", "model", None),
        ("treat all", "treat_all", np.ones(len(y_arr), dtype=bool)),
    ]
    if rule is not None:
        rule_arr = _check_rule(rule, "rule")
        _check_same_length(y_arr, rule_arr, "rule")
        candidates.append((rule_name, "rule", rule_arr))
    rows = []
    for pt in pts:
        for name, kind, fixed in candidates:
            pos = p_arr >= pt if fixed is None else fixed
            tp, fp = int(np.sum(pos & (y_arr == 1))), int(np.sum(pos & (y_arr == 0)))
            fn, tn = int(np.sum(~pos & (y_arr == 1))), int(np.sum(~pos & (y_arr == 0)))
            row: dict[str, object] = {
                "classifier": name,
                "classifier_kind": kind,
                "threshold": float(pt),
                "tp": tp,
                "fp": fp,
                "tn": tn,
                "fn": fn,
            }
            for col, k, m in [
                ("sensitivity", tp, tp + fn),
                ("specificity", tn, tn + fp),
                ("ppv", tp, tp + fp),
                ("npv", tn, tn + fn),
            ]:
                low, high = wilson_interval(k, m, alpha)
                row[col] = k / m if m else np.nan
                row[f"{col}_ci_low"], row[f"{col}_ci_high"] = float(low), float(high)
            row["net_benefit"] = _net_benefit(tp, fp, len(y_arr), pt)
            rows.append(row)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- subgroups & EPV


def subgroup_auroc(
    y: npt.ArrayLike,
    p: npt.ArrayLike,
    subgroups: Mapping[str, npt.ArrayLike],
    *,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    min_size: int = MIN_SUBGROUP_SIZE,
) -> pd.DataFrame:
    """AUROC with bootstrap CI per level of each subgroup variable (missing labels: 'missing').

    A level with fewer than ``min_size`` rows or one outcome class gets NaN and a ``note``;
    it never raises, because small subgroups are expected and must still be reported.
    """
    y_arr, p_arr = _check_y_p(y, p)
    rows = []
    for variable, labels in subgroups.items():
        values = pd.Series(np.asarray(labels, dtype=object))
        _check_same_length(y_arr, values.to_numpy(), f"subgroups[{variable!r}]")
        levels = values.astype(str).where(values.notna(), "missing")
        for level in sorted(levels.unique()):
            mask = (levels == level).to_numpy()
            yy, pp = y_arr[mask], p_arr[mask]
            events = int(yy.sum())
            note, est = "", Estimate(np.nan, np.nan, np.nan, 0)
            if len(yy) < min_size:
                note = f"fewer than {min_size} rows"
            elif events in (0, len(yy)):
                note = "only one outcome class"
            else:
                w = bootstrap_weights(len(yy), n_boot, seed)
                point = float(weighted_auroc(yy, pp, np.ones((1, len(yy))))[0])
                est = _percentile_ci(point, weighted_auroc(yy, pp, w), alpha)
                if est.n_resamples < n_boot:
                    note = f"{n_boot - est.n_resamples} single-class resamples skipped"
            rows.append(
                {
                    "variable": variable,
                    "level": level,
                    "n": len(yy),
                    "events": events,
                    "non_events": len(yy) - events,
                    "auroc": est.estimate,
                    "ci_low": est.ci_low,
                    "ci_high": est.ci_high,
                    "note": note,
                }
            )
    columns = ["variable", "level", "n", "events", "non_events", "auroc", "ci_low", "ci_high"]
    return pd.DataFrame(rows, columns=[*columns, "note"])


def events_per_variable(y: npt.ArrayLike, n_features: int) -> EventsPerVariable:
    """min(events, non-events) / candidate predictors, computed on the *development* data."""
    y_arr = _check_labels(y)
    n_features = _check_positive_int(n_features, "n_features")
    events = int(y_arr.sum())
    non_events = len(y_arr) - events
    epv = min(events, non_events) / n_features
    warning = None
    if epv < 5:
        warning = (
            f"Events per variable is {epv:.1f} (< 5): severe risk of overfitting. Reduce the "
            "candidate predictors, use strong penalisation, and expect a poor calibration slope."
        )
    elif epv < 10:
        warning = (
            f"Events per variable is {epv:.1f} (< 10): risk of overfitting. Prefer penalised "
            "models and check the calibration slope on held-out data."
        )
    return EventsPerVariable(events, non_events, n_features, epv, warning)


# --------------------------------------------------------------------------- entry point


def evaluate_predictions(
    y: npt.ArrayLike,
    p: npt.ArrayLike,
    *,
    baseline_rule: npt.ArrayLike | None = None,
    baseline_rule_name: str = "baseline rule",
    subgroups: Mapping[str, npt.ArrayLike] | None = None,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    dca_thresholds: Sequence[float] = DEFAULT_DCA_THRESHOLDS,
    n_bins: int = 10,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> Evaluation:
    """Evaluate predicted probabilities ``p`` against outcomes ``y`` on a held-out test set.

    ``baseline_rule`` is a boolean array (e.g. ``crp > 3``) compared with the model at each
    threshold and on the decision curve. ``subgroups`` maps a name to one label per row.
    Choose ``thresholds`` on clinical grounds before looking at the test set.
    """
    y_arr, p_arr = _check_y_p(y, p)
    _check_both_classes(y_arr)
    _check_thresholds(dca_thresholds, "dca_thresholds")
    rule = None
    if baseline_rule is not None:
        rule = _check_rule(baseline_rule, "baseline_rule")
        _check_same_length(y_arr, rule, "baseline_rule")

    metrics = bootstrap_metric_ci(y_arr, p_arr, n_boot=n_boot, seed=seed, alpha=alpha)
    fpr, tpr, _ = roc_curve(y_arr, p_arr)
    precision, recall, _ = precision_recall_curve(y_arr, p_arr)

    notes = []
    if metrics.auroc.estimate > SUSPICIOUS_AUROC:
        notes.append(
            f"AUROC {metrics.auroc.estimate:.2f} is above {SUSPICIOUS_AUROC}: on real clinical "
            "data check for leakage (follow-up measurements, duplicated patients) first."
        )
    if int(y_arr.sum()) < MIN_VALIDATION_EVENTS:
        notes.append(
            f"Only {int(y_arr.sum())} events in the test set (< {MIN_VALIDATION_EVENTS}): "
            "calibration and threshold metrics are imprecise."
        )
    if not math.isfinite(metrics.calibration_slope.estimate):
        notes.append(
            "Calibration slope not estimable: the predictions separate the outcomes perfectly."
        )
    if metrics.n_skipped_single_class:
        notes.append(f"{metrics.n_skipped_single_class} single-class bootstrap resamples skipped.")

    return Evaluation(
        n=len(y_arr),
        n_events=int(y_arr.sum()),
        metrics=metrics,
        roc_curve=pd.DataFrame({"false_positive_rate": fpr, "sensitivity": tpr}),
        pr_curve=pd.DataFrame({"sensitivity": recall, "ppv": precision}),
        calibration_bins=calibration_bins(y_arr, p_arr, n_bins, alpha),
        calibration_smooth=lowess_calibration(y_arr, p_arr),
        threshold_table=classification_at_thresholds(
            y_arr, p_arr, thresholds, rule=rule, rule_name=baseline_rule_name, alpha=alpha
        ),
        decision_curve=decision_curve(y_arr, p_arr, rule=rule, thresholds=dca_thresholds),
        subgroups=subgroup_auroc(
            y_arr, p_arr, subgroups or {}, n_boot=n_boot, seed=seed, alpha=alpha
        ),
        rule_name=baseline_rule_name if rule is not None else None,
        notes=tuple(notes),
    )
