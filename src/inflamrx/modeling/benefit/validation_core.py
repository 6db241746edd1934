"""Building blocks of the benefit validation: input checks, per-patient effect scores,
rank-based matching of drug and placebo patients, bootstrap resamples and intervals.

Conventions shared by every statistic:
- ``y`` is 1 for response; ``treated`` is True for the drug arm.
- Observed benefit is always *response rate on drug minus response rate on placebo*, in
  probability of response, the scale of the model's ``benefit = p_treated - p_control``.
- The bootstrap resamples patients **within each arm** (arm sizes fixed, as randomised), so the
  randomisation ratio stays the design's and every statistic of one resample is paired with the
  same statistic of the reference rankings (CRP alone, the CRP rule).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from inflamrx.data.crp import crp_rule
from inflamrx.modeling.features import LOG_FLOOR
from inflamrx.modeling.metrics import (
    BoolArray,
    FloatArray,
    IntArray,
    check_labels,
    check_positive_int,
    wilson_interval,
)

MIN_PER_ARM = 5  # fewer patients in an arm and no benefit statistic means anything


@dataclass(frozen=True)
class BenefitInputs:
    """Checked, aligned arrays of one validation set (one row per patient)."""

    y: IntArray
    treated: BoolArray
    benefit: FloatArray
    p_treated: FloatArray | None
    p_control: FloatArray | None
    crp: FloatArray | None  # mg/L, NaN where missing

    @property
    def n(self) -> int:
        return len(self.y)

    @property
    def n_treated(self) -> int:
        return int(self.treated.sum())

    @property
    def n_control(self) -> int:
        return self.n - self.n_treated


def _check_numbers(values: npt.ArrayLike, name: str, n: int, allow_nan: bool = False) -> FloatArray:
    arr = np.asarray(values)
    if arr.ndim != 1 or arr.dtype.kind not in "biuf":
        raise ValueError(
            f"The '{name}' parameter must be a 1-dimensional array of numbers. "
            f"Got shape {arr.shape}, dtype {arr.dtype}."
        )
    arr = arr.astype(np.float64)
    if len(arr) != n:
        raise ValueError(
            f"The '{name}' parameter must have one entry per row of 'y' ({n}). Got {len(arr)}."
        )
    bad = ~np.isfinite(arr) if not allow_nan else np.isinf(arr)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"The '{name}' parameter must be finite numbers. Got {arr[row]} at row {row} "
            f"({int(bad.sum())} such rows)."
        )
    return arr


def _check_range(arr: FloatArray, name: str, low: float, high: float) -> None:
    outside = (arr < low) | (arr > high)
    if outside.any():
        row = int(np.flatnonzero(outside)[0])
        raise ValueError(
            f"The '{name}' parameter must lie in [{low:g}, {high:g}]. Got {arr[row]:g} at row "
            f"{row} ({int(outside.sum())} such rows)."
        )


def check_treated(treated: npt.ArrayLike, n: int) -> BoolArray:
    """The arm indicator: booleans, or 0/1 numbers (1 = drug)."""
    arr = np.asarray(treated)
    if arr.dtype.kind != "b":
        arr = check_labels(arr, "treated").astype(bool)
    if arr.ndim != 1 or len(arr) != n:
        raise ValueError(
            f"The 'treated' parameter must have one entry per row of 'y' ({n}). Got shape {arr.shape}."
        )
    return arr.copy()


def check_inputs(
    y: npt.ArrayLike,
    treated: npt.ArrayLike,
    benefit: npt.ArrayLike,
    p_treated: npt.ArrayLike | None = None,
    p_control: npt.ArrayLike | None = None,
    crp: npt.ArrayLike | None = None,
) -> BenefitInputs:
    """Check and align the inputs; each arm needs ``MIN_PER_ARM`` patients."""
    y_arr = check_labels(y)
    n = len(y_arr)
    arm = check_treated(treated, n)
    n_t = int(arm.sum())
    if min(n_t, n - n_t) < MIN_PER_ARM:
        raise ValueError(
            f"Each arm needs at least {MIN_PER_ARM} patients to estimate benefit. "
            f"Got {n_t} treated and {n - n_t} control."
        )
    ben = _check_numbers(benefit, "benefit", n)
    _check_range(ben, "benefit", -1.0, 1.0)
    probs: list[FloatArray | None] = []
    for name, p in (("p_treated", p_treated), ("p_control", p_control)):
        if p is None:
            probs.append(None)
            continue
        arr = _check_numbers(p, name, n)
        _check_range(arr, name, 0.0, 1.0)
        probs.append(arr)
    crp_arr = None
    if crp is not None:
        crp_arr = _check_numbers(crp, "crp", n, allow_nan=True)
        _check_range(crp_arr[~np.isnan(crp_arr)], "crp", 0.0, np.inf)
    return BenefitInputs(y_arr, arm, ben, probs[0], probs[1], crp_arr)


def crp_reference_scores(crp: FloatArray) -> tuple[FloatArray, FloatArray]:
    """The two reference rankings: log CRP (missing CRP ranked at the median log CRP, i.e.
    in the middle rather than dropped, so every ranking covers the same patients) and the
    CRP > 3 mg/L rule as 1.0/0.0 (missing CRP is rule-negative, as in ``crp_rule``)."""
    log_crp = np.log(np.maximum(crp, LOG_FLOOR))
    known = ~np.isnan(log_crp)
    fill = float(np.median(log_crp[known])) if known.any() else 0.0
    return np.where(known, log_crp, fill), crp_rule(crp).astype(np.float64)


# --- per-patient effect scores -----------------------------------------------------------------


def ipw_scores(y: IntArray, treated: BoolArray) -> FloatArray:
    """Inverse-probability-weighted effect scores with the trial's own allocation ratio
    ``e = n_treated / n``: ``W Y / e - (1 - W) Y / (1 - e)``. Their mean over any set of
    patients estimates the benefit of treating that set (unbiased under randomisation), and
    their mean over everyone is exactly rate(drug) - rate(placebo). Model-free on purpose: the
    model being judged never enters the yardstick."""
    e = treated.mean()
    return np.where(treated, y / e, -y / (1 - e)).astype(np.float64)


def tie_averaged(order: IntArray, score: FloatArray, values: FloatArray) -> FloatArray:
    """``values`` in ``order`` (``score`` descending), each replaced by the mean over its block
    of tied scores: cumulative sums along the ranking then equal their expectation over random
    orderings of tied patients (needed for the binary CRP rule)."""
    s = score[order]
    v = values[..., order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    sizes = np.diff(np.r_[starts, len(s)])
    means = np.add.reduceat(v, starts, axis=-1) / sizes
    return np.repeat(means, sizes, axis=-1)


def newcombe_difference(
    k1: npt.ArrayLike, n1: npt.ArrayLike, k2: npt.ArrayLike, n2: npt.ArrayLike, alpha: float
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """p1 - p2 with Newcombe's hybrid score interval (method 10, from two Wilson intervals):
    honest for small groups and never outside [-1, 1]. NaN where a group is empty."""
    k1a, n1a = np.asarray(k1, dtype=np.float64), np.asarray(n1, dtype=np.float64)
    k2a, n2a = np.asarray(k2, dtype=np.float64), np.asarray(n2, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        p1, p2 = k1a / n1a, k2a / n2a
    l1, u1 = wilson_interval(k1a, n1a, alpha)
    l2, u2 = wilson_interval(k2a, n2a, alpha)
    d = p1 - p2
    low = d - np.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    high = d + np.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return d, low, high


# --- matching --------------------------------------------------------------------------------


def rank_match(
    benefit: FloatArray, treated: BoolArray, rng: np.random.Generator
) -> tuple[IntArray, IntArray]:
    """Rank-based 1:1 matching on predicted benefit (van Klaveren et al. 2018).

    Each arm is sorted by predicted benefit (ties broken at random with ``rng``). Every patient
    of the *smaller* arm (m patients) is paired with the patient of the larger arm (M) at the
    same relative rank, position ``floor((i + 0.5) * M / m)``; the other M - m patients of the
    larger arm are left unmatched. Returns (treated index, control index) per pair, row
    positions into the inputs.
    """
    t_idx, c_idx = np.flatnonzero(treated), np.flatnonzero(~treated)
    t_sorted = t_idx[np.lexsort((rng.random(len(t_idx)), benefit[t_idx]))]
    c_sorted = c_idx[np.lexsort((rng.random(len(c_idx)), benefit[c_idx]))]
    small, large = (t_sorted, c_sorted) if len(t_sorted) <= len(c_sorted) else (c_sorted, t_sorted)
    m, big = len(small), len(large)
    picked = large[np.floor((np.arange(m) + 0.5) * big / m).astype(np.int64)]
    return (small, picked) if small is t_sorted else (picked, small)


MATCHING = (
    "rank-based 1:1 matching on predicted benefit: the smaller arm's patients each paired with "
    "the larger arm's patient at the same relative rank (ties broken at random with the seed); "
    "surplus patients of the larger arm unmatched"
)


def concordance(observed: FloatArray, predicted: FloatArray) -> float:
    """Concordance of ``predicted`` with ``observed`` over all pairs of items whose observed
    values differ; tied predictions count one half. NaN when no pair is comparable.

    For each distinct observed level, counts items of lower levels predicted lower (and tied),
    with one sort of the predictions: O(m log m)."""
    levels = np.unique(observed)
    if len(levels) < 2:
        return float("nan")
    concordant = comparable = 0.0
    lower = np.empty(0)  # predictions of all items at lower observed levels, sorted
    for level in levels:
        preds = predicted[observed == level]
        if lower.size:
            below = np.searchsorted(lower, preds, side="left")
            tied = np.searchsorted(lower, preds, side="right") - below
            concordant += float(below.sum() + 0.5 * tied.sum())
            comparable += float(len(preds) * len(lower))
        lower = np.sort(np.r_[lower, preds])
    return concordant / comparable if comparable else float("nan")


# --- resampling ------------------------------------------------------------------------------


def stratified_resamples(treated: BoolArray, n_boot: int, seed: int) -> IntArray:
    """``(n_boot, n)`` row indices: each resample draws each arm's rows with replacement
    from that arm (arm sizes fixed). Rows keep the arm of their position."""
    n_boot = check_positive_int(n_boot, "n_boot")
    rng = np.random.default_rng(seed)
    out = np.empty((n_boot, len(treated)), dtype=np.int64)
    for arm in (True, False):
        rows = np.flatnonzero(treated == arm)
        out[:, rows] = rows[rng.integers(0, len(rows), size=(n_boot, len(rows)))]
    return out


def counts_from_indices(indices: IntArray, n: int) -> FloatArray:
    """Case weights (how often each row is drawn) of each resample."""
    n_boot = len(indices)
    flat = (np.arange(n_boot)[:, None] * n + indices).ravel()
    return np.bincount(flat, minlength=n_boot * n).reshape(n_boot, n).astype(np.float64)
