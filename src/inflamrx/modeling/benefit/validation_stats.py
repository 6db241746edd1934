"""The statistics of benefit validation, each with a bootstrap CI from shared resamples.

Pair-based (van Klaveren et al. 2018; Maas et al. 2023), on rank-matched drug/placebo pairs
(see ``validation_core.rank_match``): C-for-benefit, calibration for benefit (intercept and
slope of observed pair benefit regressed on predicted pair benefit by least squares), and the
E-for-benefit statistics.

Ranking-based (Radcliffe 2007; Yadlowsky et al., JASA 2024), on IPW effect scores
(``validation_core.ipw_scores``): the Qini curve ``Q(q)`` = estimated extra responders per
patient of the cohort from treating the top fraction ``q`` by the score, rather than nobody;
the TOC curve ``TOC(q)`` = benefit among the top ``q`` minus the benefit among everyone;
RATE as AUTOC = integral of TOC(q) dq and the Qini coefficient = integral of q TOC(q) dq (the
area between the Qini curve and random targeting, ``q`` times the average benefit).

The decision curve for treatment benefit, in the spirit of Vickers, Kattan & Sargent (Trials
2007;8:14), charges each treated patient the harm threshold ``t`` (the absolute benefit, in
probability of response, a patient needs to accept the drug's risks and cost):

    net benefit(policy S, t) = (|S| / n) * (observed benefit in S - t)

where the observed benefit in S is the response rate on drug minus on placebo among the
trial's patients in S: extra responders per patient of the cohort from treating S rather than
nobody, minus ``t`` times the fraction treated. Treat none: 0; treat all: (rate on drug - rate
on placebo) - t. This is the same estimate as "observed benefit among those the model would
treat" (ratio of rates within S); the Qini/TOC curves use the IPW scores instead (Yadlowsky's
estimator), which agree with it in large samples but can differ in small ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import norm

from inflamrx.modeling.benefit.validation_core import (
    concordance,
    newcombe_difference,
    rank_match,
)
from inflamrx.modeling.metrics import (
    BoolArray,
    Estimate,
    FloatArray,
    IntArray,
    local_linear,
    percentile_ci,
)

CURVE_GRID = tuple(k / 50 for k in range(1, 51))  # 2% steps of the ranked cohort
SMOOTH_FRAC = 0.75  # loess span of the E-for-benefit smoother (R's loess default)
SMOOTH_GRID = 30  # the smoother is evaluated on a grid and interpolated: O(grid * pairs)
MIN_PER_ARM_PER_GROUP = 20  # calibration groups hold about this many patients of each arm


# --- matched pairs -----------------------------------------------------------------------------


@dataclass(frozen=True)
class PairStats:
    """Statistics of one matching of one data set."""

    c_for_benefit: float
    intercept: float
    slope: float
    e_avg: float
    e50: float
    e90: float
    n_pairs: int


def matched_pairs(
    y: IntArray, treated: BoolArray, score: FloatArray, rng: np.random.Generator
) -> tuple[FloatArray, FloatArray]:
    """(observed pair benefit y_t - y_c in {-1, 0, 1}, predicted pair benefit = mean of the
    pair's two scores) for the rank-matched pairs."""
    t, c = rank_match(score, treated, rng)
    return (y[t] - y[c]).astype(np.float64), (score[t] + score[c]) / 2


def pair_statistics(observed: FloatArray, predicted: FloatArray, calibration: bool) -> PairStats:
    c = concordance(observed, predicted)
    nan = float("nan")
    if not calibration:
        return PairStats(c, nan, nan, nan, nan, nan, len(observed))
    spread = predicted - predicted.mean()
    sxx = float(spread @ spread)
    slope = float(spread @ (observed - observed.mean())) / sxx if sxx > 1e-15 else nan
    intercept = float(observed.mean() - slope * predicted.mean())
    lo, hi = float(predicted.min()), float(predicted.max())
    grid = np.linspace(lo, hi, SMOOTH_GRID) if hi > lo else np.array([lo])
    smooth = local_linear(predicted, observed, grid, SMOOTH_FRAC)
    error = np.abs(np.interp(predicted, grid, smooth) - predicted)
    e50, e90 = np.quantile(error, [0.5, 0.9])
    return PairStats(
        c, intercept, slope, float(error.mean()), float(e50), float(e90), len(observed)
    )


def bootstrap_pairs(
    y: IntArray,
    treated: BoolArray,
    score: FloatArray,
    resamples: IntArray,
    seed: int,
    calibration: bool,
) -> tuple[PairStats, list[PairStats]]:
    """Whole-sample statistics and one set per resample, rematched in every resample."""
    rng = np.random.default_rng(seed)
    point = pair_statistics(*matched_pairs(y, treated, score, rng), calibration)
    boot = [
        pair_statistics(*matched_pairs(y[r], treated[r], score[r], rng), calibration)
        for r in resamples
    ]
    return point, boot


def pair_estimate(point: PairStats, boot: list[PairStats], field: str, alpha: float) -> Estimate:
    samples = np.array([getattr(b, field) for b in boot], dtype=np.float64)
    return percentile_ci(float(getattr(point, field)), samples, alpha)


def smoothed_pairs(observed: FloatArray, predicted: FloatArray) -> pd.DataFrame:
    """The E-for-benefit smoother on a grid, for the calibration plot."""
    lo, hi = float(predicted.min()), float(predicted.max())
    grid = np.linspace(lo, hi, SMOOTH_GRID) if hi > lo else np.array([lo])
    return pd.DataFrame(
        {"predicted": grid, "observed": local_linear(predicted, observed, grid, SMOOTH_FRAC)}
    )


# --- groups ----------------------------------------------------------------------------------


def n_benefit_groups(n_treated: int, n_control: int) -> int:
    """5 quantile groups of predicted benefit, fewer (never under 2) when an arm is small."""
    return int(np.clip(min(n_treated, n_control) // MIN_PER_ARM_PER_GROUP, 2, 5))


def benefit_groups(
    y: IntArray, treated: BoolArray, benefit: FloatArray, n_groups: int, alpha: float
) -> pd.DataFrame:
    """Quantile groups of predicted benefit (all patients): per group the mean predicted
    benefit and the observed benefit (rate on drug - rate on placebo, Newcombe CI)."""
    edges = np.unique(np.quantile(benefit, np.linspace(0, 1, n_groups + 1)))
    group = np.digitize(benefit, edges[1:-1]) + 1
    frame = pd.DataFrame({"group": group, "y": y, "t": treated, "b": benefit})
    rows = []
    for g, part in frame.groupby("group"):
        on = part[part["t"]]
        off = part[~part["t"]]
        rows.append(
            {
                "group": int(g),
                "n_treated": len(on),
                "n_control": len(off),
                "responders_treated": int(on["y"].sum()),
                "responders_control": int(off["y"].sum()),
                "predicted_low": float(part["b"].min()),
                "predicted_high": float(part["b"].max()),
                "predicted_mean": float(part["b"].mean()),
            }
        )
    table = pd.DataFrame(rows)
    d, low, high = newcombe_difference(
        table["responders_treated"], table["n_treated"],
        table["responders_control"], table["n_control"], alpha,
    )  # fmt: skip
    table["observed"], table["observed_ci_low"], table["observed_ci_high"] = d, low, high
    return table


# --- ranking curves ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RankingCurves:
    """Per weight row (row 0 the whole sample): areas and curves on ``CURVE_GRID``."""

    autoc: FloatArray
    qini_coefficient: FloatArray
    qini: FloatArray  # (rows, grid)
    toc: FloatArray  # (rows, grid)


def ranking_curves(score: FloatArray, gamma: FloatArray, weights: FloatArray) -> RankingCurves:
    """Qini and TOC curves, AUTOC and Qini coefficient of ranking by ``score`` (descending),
    for each row of case weights. Tied scores share their block's mean effect score (the
    expectation over random orderings of tied patients)."""
    order = np.argsort(-score, kind="stable")
    s = score[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    sizes = np.diff(np.r_[starts, len(s)])
    w = np.atleast_2d(weights)[:, order]
    g = gamma[order]
    block_w = np.add.reduceat(w, starts, axis=1)
    block_g = np.add.reduceat(w * g, starts, axis=1)
    mean_g = np.divide(block_g, block_w, out=np.zeros_like(block_g), where=block_w > 0)
    cum_g = np.cumsum(w * np.repeat(mean_g, sizes, axis=1), axis=1)
    cum_w = np.cumsum(w, axis=1)
    total = cum_w[:, -1:]
    ate = cum_g[:, -1:] / total
    with np.errstate(invalid="ignore", divide="ignore"):
        toc_steps = np.where(cum_w > 0, cum_g / cum_w - ate, 0.0)
    share = w / total
    autoc = (share * toc_steps).sum(axis=1)
    qini_coefficient = (share * (cum_w / total) * toc_steps).sum(axis=1)
    grid = np.asarray(CURVE_GRID)
    qini = np.vstack(
        [
            np.interp(grid * total[b, 0], np.r_[0.0, cum_w[b]], np.r_[0.0, cum_g[b]]) / total[b, 0]
            for b in range(len(w))
        ]
    )
    toc = qini / grid - ate
    return RankingCurves(autoc, qini_coefficient, qini, toc)


def curve_table(values: FloatArray, alpha: float, name: str) -> pd.DataFrame:
    """Whole-sample curve (row 0) with pointwise bootstrap percentile bands (other rows)."""
    boot = values[1:]
    if len(boot) >= 2:
        low, high = np.nanquantile(boot, [alpha / 2, 1 - alpha / 2], axis=0)
    else:
        low = high = np.full(values.shape[1], np.nan)
    return pd.DataFrame({"fraction": CURVE_GRID, name: values[0], "ci_low": low, "ci_high": high})


def row_estimate(values: FloatArray, alpha: float) -> Estimate:
    return percentile_ci(float(values[0]), values[1:], alpha)


# --- selected vs rest --------------------------------------------------------------------------


@dataclass(frozen=True)
class GroupBenefit:
    """Observed benefit (rate on drug - rate on placebo) in a group, Newcombe CI."""

    n_treated: int
    n_control: int
    observed: Estimate


def group_benefit(
    y: IntArray, treated: BoolArray, members: BoolArray, alpha: float
) -> GroupBenefit:
    on, off = members & treated, members & ~treated
    d, low, high = newcombe_difference(y[on].sum(), on.sum(), y[off].sum(), off.sum(), alpha)
    return GroupBenefit(
        int(on.sum()), int(off.sum()), Estimate(float(d), float(low), float(high), 0)
    )


def weighted_benefit(
    y: IntArray, treated: BoolArray, members: BoolArray, weights: FloatArray
) -> FloatArray:
    """Rate on drug - rate on placebo among ``members``, for each weight row; NaN when an arm
    of the group is empty in that row."""
    w = np.atleast_2d(weights)
    on, off = (members & treated).astype(float), (members & ~treated).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray((w @ (on * y)) / (w @ on) - (w @ (off * y)) / (w @ off))


# --- decision curve ----------------------------------------------------------------------------


def policy_net_benefit(
    y: IntArray,
    treated: BoolArray,
    treat: BoolArray,
    threshold: float,
    weights: FloatArray,
) -> FloatArray:
    """Net benefit of treating ``treat`` at a harm threshold, for each weight row (module
    docstring); 0 when nobody is treated, NaN when the treated group lacks an arm."""
    w = np.atleast_2d(weights)
    share = (w @ treat.astype(np.float64)) / w.sum(axis=1)
    gain = weighted_benefit(y, treated, treat, w)
    with np.errstate(invalid="ignore"):
        return np.asarray(np.where(share > 0, share * (gain - threshold), 0.0))


def benefit_decision_curve(
    y: IntArray,
    treated: BoolArray,
    benefit: FloatArray,
    rule: BoolArray | None,
    thresholds: FloatArray,
) -> pd.DataFrame:
    """Net benefit across harm thresholds: the model (treat if predicted benefit > t), treat
    all, treat none and, when given, the rule (e.g. CRP > 3 mg/L)."""
    ones = np.ones((1, len(y)))

    def curve(policy: Callable[[float], BoolArray]) -> list[float]:
        return [
            float(policy_net_benefit(y, treated, policy(float(t)), float(t), ones)[0])
            for t in thresholds
        ]

    everyone = np.ones(len(y), dtype=bool)
    table = pd.DataFrame(
        {
            "threshold": thresholds,
            "model": curve(lambda t: benefit > t),
            "treat_all": curve(lambda t: everyone),
            "treat_none": np.zeros(len(thresholds)),
        }
    )
    if rule is not None:
        table["crp_rule"] = curve(lambda t: rule)
    return table


# --- the prespecified CRP x arm interaction ------------------------------------------------------


@dataclass(frozen=True)
class CrpInteraction:
    """Logistic regression ``logit P(response) = b0 + b1 arm + b2 (ln CRP - ln 3)
    + b3 arm (ln CRP - ln 3)``, Wald CIs from the observed information.

    ``log_or`` (b3): change in the drug-vs-placebo log-odds ratio per unit of natural-log CRP
    (e-fold CRP). ``arm_log_or_at_3``: (b1) drug-vs-placebo log-odds ratio at CRP 3 mg/L."""

    log_or: Estimate
    p_value: float
    arm_log_or_at_3: Estimate
    n_used: int
    n_missing_crp: int
    converged: bool
    message: str


def _logistic_newton(
    x: FloatArray, y: FloatArray, max_iter: int = 100, tol: float = 1e-10
) -> tuple[FloatArray, FloatArray, bool]:
    """Unpenalised maximum likelihood by Newton-Raphson: (coefficients, covariance, converged).
    Not converged (e.g. separation) leaves NaN coefficients."""
    beta = np.zeros(x.shape[1])
    for _ in range(max_iter):
        mu = 1 / (1 + np.exp(-np.clip(x @ beta, -30, 30)))
        info = (x * (mu * (1 - mu))[:, None]).T @ x
        try:
            step = np.linalg.solve(info, x.T @ (y - mu))
        except np.linalg.LinAlgError:
            break
        beta = beta + step
        if np.max(np.abs(step)) < tol:
            cov = np.asarray(np.linalg.inv(info), dtype=np.float64)
            # Separation shows as coefficients running off with vast variances.
            if np.all(np.isfinite(cov)) and np.max(np.abs(beta)) < 15:
                return beta, cov, True
            break
    nan = np.full(x.shape[1], np.nan)
    return nan, np.full((x.shape[1], x.shape[1]), np.nan), False


def crp_interaction(
    y: IntArray, treated: BoolArray, crp: FloatArray, alpha: float, log_floor: float
) -> CrpInteraction:
    known = ~np.isnan(crp)
    n_used, n_missing = int(known.sum()), int((~known).sum())
    arm = treated[known].astype(np.float64)
    centred = np.log(np.maximum(crp[known], log_floor)) - np.log(3.0)
    x = np.column_stack([np.ones(n_used), arm, centred, arm * centred])
    beta, cov, ok = _logistic_newton(x, y[known].astype(np.float64))
    z = norm.ppf(1 - alpha / 2)
    nan = Estimate(float("nan"), float("nan"), float("nan"), 0)
    if n_used == 0:
        message = "No patient has a CRP value: no CRP x arm interaction analysis."
        return CrpInteraction(nan, float("nan"), nan, 0, n_missing, False, message)
    if not ok:
        message = (
            f"The CRP x arm logistic model did not converge on {n_used} patients "
            "(too few, or outcomes perfectly separated): no interaction estimate."
        )
        return CrpInteraction(nan, float("nan"), nan, n_used, n_missing, False, message)
    se = np.sqrt(np.diag(cov))

    def wald(i: int) -> Estimate:
        return Estimate(float(beta[i]), float(beta[i] - z * se[i]), float(beta[i] + z * se[i]), 0)

    p = float(2 * norm.sf(abs(beta[3] / se[3])))
    message = (
        f"Prespecified CRP x arm interaction on {n_used} patients"
        + (f" ({n_missing} without CRP left out)" if n_missing else "")
        + f": log-odds ratio per e-fold CRP {beta[3]:+.2f} "
        f"({100 * (1 - alpha):g}% CI {beta[3] - z * se[3]:+.2f} to {beta[3] + z * se[3]:+.2f}), "
        f"Wald p = {p:.3g}."
    )
    return CrpInteraction(wald(3), p, wald(1), n_used, n_missing, True, message)
