"""Clinical performance metrics of predicted probabilities, with their confidence intervals.

Everything here is a pure function of labels ``y`` (0/1) and predicted probabilities ``p``:
input checks, weighted AUROC/AUPRC/Brier score and calibration, bootstrap percentile intervals,
Wilson intervals, calibration curves and net benefit. ``evaluate`` assembles them into one
evaluation of a test set.

The bootstrap is vectorised: one ``(n_boot, n)`` index matrix is drawn and turned into a matrix
of case weights (how often each row appears in each resample). Every metric is then a weighted
statistic of the original rows, computed for all resamples at once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy.special import expit, logit
from scipy.stats import norm

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

# Keeps logit(p) finite for p of exactly 0 or 1.
PROBABILITY_CLIP = 1e-6
# 0.05, 0.06, ..., 0.60 built from integers so the grid has no floating-point drift.
DEFAULT_DCA_THRESHOLDS: tuple[float, ...] = tuple(k / 100 for k in range(5, 61))


# --------------------------------------------------------------------------- result types


@dataclass(frozen=True)
class Estimate:
    """A whole-sample point estimate with its bootstrap percentile interval."""

    estimate: float
    ci_low: float
    ci_high: float
    n_resamples: int  # bootstrap resamples that gave a finite value


def with_ci(estimate: float, low: float, high: float, digits: int = 3, level: str = "") -> str:
    """``0.712 (0.650 to 0.770)``: the one text form of a value with its interval. "to", not a
    dash, which reads as a minus sign beside negative bounds (``-0.21-0.19``)."""
    if not np.isfinite(estimate):
        return "not defined"  # e.g. PPV when nobody is flagged: 0/0, never printed as nan
    inside = f"{level} " if level else ""
    if not (np.isfinite(low) and np.isfinite(high)):
        return f"{estimate:.{digits}f} ({inside or 'CI '}not estimable)"
    return f"{estimate:.{digits}f} ({inside}{low:.{digits}f} to {high:.{digits}f})"


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


# --------------------------------------------------------------------------- input checks
# Public because evaluate and the figures check their inputs with them too: one wording of
# each error, naming the parameter at fault.


def check_labels(y: npt.ArrayLike, name: str = "y") -> IntArray:
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


def check_rule(rule: npt.ArrayLike, name: str) -> BoolArray:
    """A yes/no rule such as ``crp > 3``: booleans, or 0/1 numbers without NaN."""
    arr = np.asarray(rule)
    if arr.dtype.kind == "b" and arr.ndim == 1:
        return arr.copy()
    try:
        return check_labels(arr, name).astype(bool)
    except ValueError as exc:
        raise ValueError(f"{exc} A rule must be a boolean array such as `crp > 3`.") from None


def check_same_length(
    y: npt.NDArray[np.generic], other: npt.NDArray[np.generic], name: str
) -> None:
    if len(other) != len(y):
        raise ValueError(
            f"The '{name}' parameter must have one entry per row of 'y' ({len(y)}). "
            f"Got {len(other)}."
        )


def check_thresholds(thresholds: Sequence[float], name: str) -> FloatArray:
    arr = np.asarray(thresholds, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0 or not np.all((arr > 0) & (arr < 1)):
        raise ValueError(
            f"The '{name}' parameter must be a non-empty sequence of numbers strictly between "
            f"0 and 1. Got {list(np.atleast_1d(arr))}."
        )
    return arr


def check_positive_int(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"The '{name}' parameter must be a positive integer. Got {value!r}.")
    return int(value)


def check_alpha(alpha: float) -> float:
    if not 0 < alpha < 1:
        raise ValueError(f"The 'alpha' parameter must be between 0 and 1. Got {alpha!r}.")
    return float(alpha)


def check_y_p(y: npt.ArrayLike, p: npt.ArrayLike) -> tuple[IntArray, FloatArray]:
    y_arr, p_arr = check_labels(y), _check_probabilities(p)
    check_same_length(y_arr, p_arr, "p")
    if y_arr.size == 0:
        raise ValueError("The 'y' parameter must not be empty. Got 0 rows.")
    return y_arr, p_arr


def check_both_classes(y: IntArray) -> None:
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
    b, done = _calibration_slope(x, yf, w, max_iter, tol, damped=False)
    if not done.all():  # e.g. far too extreme predictions: full Newton steps overshoot
        again = ~done
        b[again], done[again] = _calibration_slope(x, yf, w[again], max_iter, tol, damped=True)
    slope = np.where(done & np.isfinite(b), b, np.nan)
    return intercept, slope


# A calibration slope beyond this is no estimate but separation (the fit runs off to infinity).
SLOPE_GIVE_UP = 50.0


def _calibration_slope(
    x: FloatArray, yf: FloatArray, w: FloatArray, max_iter: int, tol: float, damped: bool
) -> tuple[FloatArray, np.ndarray]:
    """Newton-Raphson for ``logit P(y=1) = a + b x`` per weight row, from (0, 1): the slope
    and whether it converged. ``damped`` halves a step while it raises the deviance (a slope
    far from 1, e.g. 0.16, makes the full steps diverge), and computes only the rows still
    iterating: a row that never converges (separation) must not cost the whole matrix 40
    deviances a step (it made a training run's subgroup bootstraps take minutes)."""
    a, b = np.zeros(len(w)), np.ones(len(w))
    done = np.zeros(len(w), dtype=bool)
    gave_up = np.zeros(len(w), dtype=bool)

    def deviance(a: FloatArray, b: FloatArray, w: FloatArray) -> FloatArray:
        eta = a[:, None] + b[:, None] * x
        return (w * (np.logaddexp(0.0, eta) - yf * eta)).sum(axis=1)

    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        for _ in range(max_iter if not damped else 4 * max_iter):
            # Undamped, every row is computed (as it always was: a subset of rows can change
            # the last bit of BLAS sums, and with it figures that must stay byte-identical).
            rows = np.flatnonzero(~done) if damped else np.arange(len(w))
            wr, ar, br = w[rows], a[rows], b[rows]
            mu = expit(ar[:, None] + br[:, None] * x)
            r = wr * (yf - mu)
            g0, g1 = r.sum(axis=1), r @ x
            v = wr * mu * (1 - mu)
            h00, h01, h11 = v.sum(axis=1), v @ x, v @ (x * x)
            det = h00 * h11 - h01 * h01
            da, db = (h11 * g0 - h01 * g1) / det, (h00 * g1 - h01 * g0) / det
            converged = (np.abs(da) < tol) & (np.abs(db) < tol)  # by the full Newton step
            if damped:
                now = deviance(ar, br, wr)
                for _ in range(40):
                    worse = ~(deviance(ar + da, br + db, wr) <= now)
                    if not worse.any():
                        break
                    da, db = np.where(worse, da / 2, da), np.where(worse, db / 2, db)
            finished = done[rows]
            a[rows] = ar + np.where(finished, 0.0, da)
            b[rows] = br + np.where(finished, 0.0, db)
            done[rows] |= converged
            if damped:  # separation: the slope runs off to infinity; give the row up (NaN)
                off = rows[~done[rows] & ~(np.abs(b[rows]) <= SLOPE_GIVE_UP)]
                b[off], gave_up[off] = np.nan, True
                done[off] = True
            if done.all():
                break
    return b, done & ~gave_up


def calibration_intercept_slope(y: npt.ArrayLike, p: npt.ArrayLike) -> tuple[float, float]:
    """Whole-sample calibration intercept (in the large) and calibration slope."""
    y_arr, p_arr = check_y_p(y, p)
    check_both_classes(y_arr)
    intercept, slope = weighted_calibration(y_arr, p_arr, np.ones((1, len(y_arr))))
    return float(intercept[0]), float(slope[0])


# --------------------------------------------------------------------------- bootstrap


def bootstrap_weights(n: int, n_boot: int, seed: int) -> FloatArray:
    """Case weights of ``n_boot`` bootstrap resamples: row b counts each row's draws."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    flat = (np.arange(n_boot)[:, None] * n + idx).ravel()
    return np.bincount(flat, minlength=n_boot * n).reshape(n_boot, n).astype(np.float64)


def percentile_ci(point: float, samples: FloatArray, alpha: float) -> Estimate:
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
    y_arr, p_arr = check_y_p(y, p)
    check_both_classes(y_arr)
    n_boot = check_positive_int(n_boot, "n_boot")
    alpha = check_alpha(alpha)

    whole = np.ones((1, len(y_arr)))
    w = bootstrap_weights(len(y_arr), n_boot, seed)
    events = w @ y_arr
    ok = (events > 0) & (events < len(y_arr))
    w = w[ok]

    def ci(fn: Callable[[IntArray, FloatArray, FloatArray], FloatArray]) -> Estimate:
        return percentile_ci(float(fn(y_arr, p_arr, whole)[0]), fn(y_arr, p_arr, w), alpha)

    intercept, slope = weighted_calibration(y_arr, p_arr, whole)
    intercept_boot, slope_boot = weighted_calibration(y_arr, p_arr, w)
    return BootstrapResult(
        auroc=ci(weighted_auroc),
        auprc=ci(weighted_average_precision),
        brier=ci(weighted_brier),
        calibration_intercept=percentile_ci(float(intercept[0]), intercept_boot, alpha),
        calibration_slope=percentile_ci(float(slope[0]), slope_boot, alpha),
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
    y_arr, p_arr = check_y_p(y, p)
    n_bins = check_positive_int(n_bins, "n_bins")
    alpha = check_alpha(alpha)
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


def local_linear(x: FloatArray, y: FloatArray, at: FloatArray, frac: float) -> FloatArray:
    """Local linear fit of ``y`` on ``x`` with tricube weights over the nearest ``frac`` of
    points, evaluated at ``at``. Memory is O(len(at) * len(x))."""
    k = max(math.ceil(frac * len(x)), 2) if len(x) > 1 else 1
    dist = np.abs(at[:, None] - x[None, :])
    bandwidth = np.maximum(np.partition(dist, k - 1, axis=1)[:, k - 1], 1e-12)
    w = (1 - np.clip(dist / bandwidth[:, None], 0, 1) ** 3) ** 3
    sw = w.sum(axis=1)
    mx, my = (w @ x) / sw, (w @ y) / sw
    dx = x[None, :] - mx[:, None]
    sxx = (w * dx**2).sum(axis=1)
    sxy = (w * dx * (y[None, :] - my[:, None])).sum(axis=1)
    # Where all weighted points share one x value, fall back to their mean y.
    slope = np.divide(sxy, sxx, out=np.zeros_like(sxy), where=sxx > 1e-15)
    return np.asarray(my + slope * (at - mx), dtype=np.float64)


def lowess_calibration(
    y: npt.ArrayLike, p: npt.ArrayLike, frac: float = 2 / 3, n_grid: int = 101
) -> pd.DataFrame:
    """Smoothed calibration curve: LOWESS of y on p, evaluated on a grid of predicted risks.

    Local linear fits with tricube weights over the nearest ``frac`` of patients, without the
    robustness iterations (as ``rms::val.prob`` does for binary outcomes, where every point
    would look like an outlier). Estimates are clipped to [0, 1]. Memory is O(n_grid * n).
    """
    y_arr, p_arr = check_y_p(y, p)
    if not 0 < frac <= 1:
        raise ValueError(f"The 'frac' parameter must be in (0, 1]. Got {frac!r}.")
    grid = np.linspace(p_arr.min(), p_arr.max(), check_positive_int(n_grid, "n_grid"))
    observed = np.clip(local_linear(p_arr, y_arr.astype(np.float64), grid, frac), 0, 1)
    return pd.DataFrame({"predicted": grid, "observed": observed})


# --------------------------------------------------------------------------- net benefit & DCA


def net_benefit_from_counts(tp: Any, fp: Any, n: int, pt: Any) -> Any:
    """TP/n - FP/n * pt / (1 - pt): scalars, or arrays of counts and thresholds."""
    return tp / n - fp / n * pt / (1 - pt)


def net_benefit(y: npt.ArrayLike, positives: npt.ArrayLike, threshold: float) -> float:
    """Net benefit of treating ``positives``: TP/n - FP/n * pt / (1 - pt)."""
    y_arr = check_labels(y)
    pos = check_rule(positives, "positives")
    check_same_length(y_arr, pos, "positives")
    pt = float(check_thresholds([threshold], "threshold")[0])
    tp, fp = int(np.sum(pos & (y_arr == 1))), int(np.sum(pos & (y_arr == 0)))
    return float(net_benefit_from_counts(tp, fp, len(y_arr), pt))


def _net_benefit_curve(y: IntArray, positives: BoolArray, pts: FloatArray) -> FloatArray:
    """Net benefit at each threshold; ``positives`` is (len(pts), n) or (n,) for a fixed rule."""
    pos = np.broadcast_to(positives, (len(pts), len(y)))
    tp, fp = (pos & (y == 1)).sum(axis=1), (pos & (y == 0)).sum(axis=1)
    return np.asarray(net_benefit_from_counts(tp, fp, len(y), pts), dtype=np.float64)


def decision_curve(
    y: npt.ArrayLike,
    p: npt.ArrayLike,
    *,
    rule: npt.ArrayLike | None = None,
    thresholds: Sequence[float] = DEFAULT_DCA_THRESHOLDS,
) -> pd.DataFrame:
    """Net benefit of the model (treat if p >= pt), treat-all, treat-none and a fixed rule."""
    y_arr, p_arr = check_y_p(y, p)
    pts = check_thresholds(thresholds, "thresholds")
    table = pd.DataFrame(
        {
            "threshold": pts,
            "model": _net_benefit_curve(y_arr, p_arr[None, :] >= pts[:, None], pts),
            "treat_all": _net_benefit_curve(y_arr, np.ones(len(y_arr), dtype=bool), pts),
            "treat_none": np.zeros(len(pts)),
        }
    )
    if rule is not None:
        rule_arr = check_rule(rule, "rule")
        check_same_length(y_arr, rule_arr, "rule")
        table["rule"] = _net_benefit_curve(y_arr, rule_arr, pts)
    return table
