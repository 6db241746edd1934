"""Clinical validation of predicted treatment benefit (drug vs placebo), out of sample.

Inputs, one row per patient of a validation set (cross-fitted or held out): ``y`` (1 =
response), ``treated`` (True = drug arm), the model's ``benefit`` = ``p_treated - p_control``
(probability of response on drug minus on placebo), optionally ``p_treated``, ``p_control``
and ``crp`` (mg/L). :func:`validate_benefit` computes, each with a percentile bootstrap CI
(patients resampled within arm; one set of resamples for all statistics, so comparisons with
CRP are paired):

- C-for-benefit (van Klaveren et al., J Clin Epidemiol 2018) on rank-matched pairs;
- calibration for benefit: observed vs predicted benefit in quantile groups (Newcombe CIs),
  intercept and slope of observed pair benefit regressed (least squares) on predicted pair
  benefit, and E-for-benefit (E_avg, E50, E90; Maas et al., BMC Med Res Methodol 2023);
- the Qini curve and coefficient, and RATE (AUTOC) with the TOC curve (Yadlowsky et al.);
- observed benefit among the patients the model would treat (benefit > harm threshold) vs
  the rest;
- the decision curve for treatment benefit across harm thresholds (``validation_stats``);
- the prespecified CRP x arm logistic interaction (log-odds ratio, Wald CI);
- AUROC and calibration of each arm's outcome model (``p_treated`` among treated,
  ``p_control`` among controls);
- the same ranking statistics for "CRP alone" (score = log CRP) and the "CRP > 3 mg/L" rule,
  and whether the data can tell the model from CRP alone.

Statistics that cannot be estimated (e.g. a concordance with no comparable pair) are NaN,
and left out of :meth:`BenefitValidation.as_metrics`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import numpy.typing as npt
import pandas as pd

from inflamrx.data.crp import CRP_RULE
from inflamrx.modeling.benefit.validation_core import (
    MATCHING,
    BenefitInputs,
    check_inputs,
    counts_from_indices,
    crp_reference_scores,
    ipw_scores,
    newcombe_difference,
    stratified_resamples,
)
from inflamrx.modeling.benefit.validation_stats import (
    CrpInteraction,
    GroupBenefit,
    PairStats,
    benefit_decision_curve,
    benefit_groups,
    bootstrap_pairs,
    crp_interaction,
    curve_table,
    group_benefit,
    matched_pairs,
    n_benefit_groups,
    pair_estimate,
    policy_net_benefit,
    ranking_curves,
    row_estimate,
    smoothed_pairs,
    weighted_benefit,
)
from inflamrx.modeling.features import LOG_FLOOR
from inflamrx.modeling.metrics import (
    BootstrapResult,
    Estimate,
    bootstrap_metric_ci,
    check_alpha,
    percentile_ci,
)

__all__ = [
    "DEFAULT_HARM_THRESHOLDS",
    "MATCHING",
    "BenefitCalibration",
    "BenefitValidation",
    "CrpInteraction",
    "GroupBenefit",
    "Ranking",
    "c_for_benefit",
    "calibration_for_benefit",
    "crp_arm_interaction",
    "decision_curve_for_benefit",
    "rank_benefit",
    "validate_benefit",
]

# 0, 0.01, ..., 0.30: absolute benefit (probability of response) a patient would need.
DEFAULT_HARM_THRESHOLDS: tuple[float, ...] = tuple(k / 100 for k in range(31))
SMALL_ARM = 100  # below this many patients in an arm, say plainly that intervals are wide
MODEL, CRP_ALONE = "model", "CRP alone"


@dataclass(frozen=True)
class Ranking:
    """How well one ranking (the model, CRP alone, the CRP rule) orders patients by benefit."""

    name: str
    c_for_benefit: Estimate
    autoc: Estimate  # RATE with AUTOC weights
    qini_coefficient: Estimate
    qini: pd.DataFrame  # fraction, qini, ci_low, ci_high
    toc: pd.DataFrame  # fraction, toc, ci_low, ci_high
    selection: str  # who this ranking would treat, in words
    selected: GroupBenefit
    rest: GroupBenefit
    selected_minus_rest: Estimate  # bootstrap CI
    # Per-resample values, for paired comparisons between rankings on the same resamples.
    c_for_benefit_boot: np.ndarray = field(
        repr=False, compare=False, default_factory=lambda: np.empty(0)
    )
    autoc_boot: np.ndarray = field(repr=False, compare=False, default_factory=lambda: np.empty(0))


@dataclass(frozen=True)
class BenefitCalibration:
    groups: pd.DataFrame  # benefit_groups(): predicted_mean, observed with Newcombe CI
    intercept: Estimate  # observed pair benefit = intercept + slope * predicted (least squares)
    slope: Estimate
    e_avg: Estimate
    e50: Estimate
    e90: Estimate
    smooth: pd.DataFrame  # predicted, observed: loess of observed pair benefit
    mean_predicted: float
    observed_overall: Estimate  # rate on drug - rate on placebo, Newcombe CI
    n_pairs: int


@dataclass(frozen=True)
class BenefitValidation:
    n: int
    n_treated: int
    n_control: int
    harm_threshold: float
    alpha: float
    seed: int
    n_boot: int
    matching: str
    model: Ranking
    calibration: BenefitCalibration
    crp_alone: Ranking | None
    crp_rule: Ranking | None
    decision_curve: pd.DataFrame  # threshold, model, treat_all, treat_none[, crp_rule]
    net_benefit: dict[str, Estimate]  # at harm_threshold: model, treat_all, crp_rule, diffs
    interaction: CrpInteraction | None
    arm_treated: BootstrapResult | None
    arm_control: BootstrapResult | None
    autoc_vs_crp: Estimate | None  # model minus CRP alone, paired bootstrap
    c_for_benefit_vs_crp: Estimate | None
    distinguishable_from_crp: bool | None  # None without CRP
    messages: tuple[str, ...]

    def as_metrics(self) -> dict[str, float]:
        """Flat ``{name: value}`` for MLflow and ``train --json``: each estimate as ``name``,
        ``name_ci_low``, ``name_ci_high``; non-finite values are left out."""
        out: dict[str, float] = {
            "n_treated": float(self.n_treated),
            "n_control": float(self.n_control),
            "harm_threshold": self.harm_threshold,
            "mean_predicted_benefit": self.calibration.mean_predicted,
        }

        def put(name: str, est: Estimate | None) -> None:
            if est is not None:
                for key, value in ((name, est.estimate), (f"{name}_ci_low", est.ci_low),
                                   (f"{name}_ci_high", est.ci_high)):  # fmt: skip
                    if np.isfinite(value):
                        out[key] = float(value)

        cal = self.calibration
        put("observed_benefit", cal.observed_overall)
        put("calibration_for_benefit_intercept", cal.intercept)
        put("calibration_for_benefit_slope", cal.slope)
        put("e_for_benefit_avg", cal.e_avg)
        put("e_for_benefit_50", cal.e50)
        put("e_for_benefit_90", cal.e90)
        for prefix, ranking in (("", self.model), ("crp_alone_", self.crp_alone),
                                ("crp_rule_", self.crp_rule)):  # fmt: skip
            if ranking is None:
                continue
            put(f"{prefix}c_for_benefit", ranking.c_for_benefit)
            put(f"{prefix}rate_autoc", ranking.autoc)
            put(f"{prefix}qini_coefficient", ranking.qini_coefficient)
            put(f"{prefix}observed_benefit_selected", ranking.selected.observed)
            put(f"{prefix}observed_benefit_rest", ranking.rest.observed)
            put(f"{prefix}observed_benefit_selected_minus_rest", ranking.selected_minus_rest)
        for key, est in self.net_benefit.items():
            put(f"net_benefit_{key}", est)
        if self.interaction is not None:
            put("crp_interaction_log_or", self.interaction.log_or)
        for arm, result in (("treated", self.arm_treated), ("control", self.arm_control)):
            if result is not None:
                put(f"{arm}_arm_auroc", result.auroc)
                put(f"{arm}_arm_calibration_intercept", result.calibration_intercept)
                put(f"{arm}_arm_calibration_slope", result.calibration_slope)
        put("rate_autoc_minus_crp_alone", self.autoc_vs_crp)
        put("c_for_benefit_minus_crp_alone", self.c_for_benefit_vs_crp)
        if self.distinguishable_from_crp is not None:
            out["distinguishable_from_crp"] = float(self.distinguishable_from_crp)
        return out


# --- one statistic at a time -------------------------------------------------------------------


def _weights(
    inputs: BenefitInputs, n_boot: int, seed: int
) -> tuple[npt.NDArray[np.int64], np.ndarray]:
    resamples = stratified_resamples(inputs.treated, n_boot, seed)
    return resamples, np.vstack([np.ones(inputs.n), counts_from_indices(resamples, inputs.n)])


def c_for_benefit(
    y: npt.ArrayLike,
    treated: npt.ArrayLike,
    benefit: npt.ArrayLike,
    *,
    seed: int = 0,
    n_boot: int = 1000,
    alpha: float = 0.05,
) -> Estimate:
    """C-for-benefit with a bootstrap percentile CI (rematched in each resample); see
    ``MATCHING`` for the matching. ``benefit`` may be any score where higher = more benefit."""
    inputs = check_inputs(y, treated, benefit)
    resamples = stratified_resamples(inputs.treated, n_boot, seed)
    point, boot = bootstrap_pairs(
        inputs.y, inputs.treated, inputs.benefit, resamples, seed, calibration=False
    )
    return pair_estimate(point, boot, "c_for_benefit", check_alpha(alpha))


def calibration_for_benefit(
    y: npt.ArrayLike,
    treated: npt.ArrayLike,
    benefit: npt.ArrayLike,
    *,
    n_groups: int | None = None,
    seed: int = 0,
    n_boot: int = 1000,
    alpha: float = 0.05,
) -> BenefitCalibration:
    """Observed vs predicted benefit by quantile group, intercept/slope on matched pairs and
    E-for-benefit; ``n_groups`` defaults to 5, fewer when an arm is small."""
    inputs = check_inputs(y, treated, benefit)
    alpha = check_alpha(alpha)
    resamples = stratified_resamples(inputs.treated, n_boot, seed)
    return _calibration(inputs, resamples, seed, alpha, n_groups)


def _calibration(
    inputs: BenefitInputs,
    resamples: npt.NDArray[np.int64],
    seed: int,
    alpha: float,
    n_groups: int | None,
    pairs: tuple[PairStats, list[PairStats]] | None = None,
) -> BenefitCalibration:
    y, arm, ben = inputs.y, inputs.treated, inputs.benefit
    groups = n_groups or n_benefit_groups(inputs.n_treated, inputs.n_control)
    point, boot = pairs or bootstrap_pairs(y, arm, ben, resamples, seed, calibration=True)
    observed, predicted = matched_pairs(y, arm, ben, np.random.default_rng(seed))
    d, low, high = newcombe_difference(
        y[arm].sum(), inputs.n_treated, y[~arm].sum(), inputs.n_control, alpha
    )
    return BenefitCalibration(
        groups=benefit_groups(y, arm, ben, groups, alpha),
        intercept=pair_estimate(point, boot, "intercept", alpha),
        slope=pair_estimate(point, boot, "slope", alpha),
        e_avg=pair_estimate(point, boot, "e_avg", alpha),
        e50=pair_estimate(point, boot, "e50", alpha),
        e90=pair_estimate(point, boot, "e90", alpha),
        smooth=smoothed_pairs(observed, predicted),
        mean_predicted=float(ben.mean()),
        observed_overall=Estimate(float(d), float(low), float(high), 0),
        n_pairs=point.n_pairs,
    )


def rank_benefit(
    y: npt.ArrayLike,
    treated: npt.ArrayLike,
    score: npt.ArrayLike,
    selected: npt.ArrayLike,
    *,
    name: str = MODEL,
    selection: str = "",
    seed: int = 0,
    n_boot: int = 1000,
    alpha: float = 0.05,
) -> Ranking:
    """C-for-benefit, Qini, TOC, RATE and observed benefit among ``selected`` vs the rest for
    ranking patients by ``score`` (higher = treat first)."""
    inputs = check_inputs(y, treated, np.zeros(len(np.asarray(y))))
    sel = np.asarray(selected, dtype=bool)
    resamples, weights = _weights(inputs, n_boot, seed)
    scores = np.asarray(score, dtype=np.float64)
    return _ranking(
        inputs, scores, sel, name, selection, resamples, weights, seed, check_alpha(alpha)
    )


def _ranking(
    inputs: BenefitInputs,
    score: np.ndarray,
    selected: np.ndarray,
    name: str,
    selection: str,
    resamples: npt.NDArray[np.int64],
    weights: np.ndarray,
    seed: int,
    alpha: float,
    pairs: tuple[PairStats, list[PairStats]] | None = None,
) -> Ranking:
    y, arm = inputs.y, inputs.treated
    point, boot = pairs or bootstrap_pairs(y, arm, score, resamples, seed, calibration=False)
    curves = ranking_curves(score, ipw_scores(y, arm), weights)
    gap = weighted_benefit(y, arm, selected, weights) - weighted_benefit(y, arm, ~selected, weights)
    return Ranking(
        name=name,
        c_for_benefit=pair_estimate(point, boot, "c_for_benefit", alpha),
        autoc=row_estimate(curves.autoc, alpha),
        qini_coefficient=row_estimate(curves.qini_coefficient, alpha),
        qini=curve_table(curves.qini, alpha, "qini"),
        toc=curve_table(curves.toc, alpha, "toc"),
        selection=selection,
        selected=group_benefit(y, arm, selected, alpha),
        rest=group_benefit(y, arm, ~selected, alpha),
        selected_minus_rest=row_estimate(gap, alpha),
        c_for_benefit_boot=np.array([b.c_for_benefit for b in boot]),
        autoc_boot=curves.autoc[1:],
    )


def decision_curve_for_benefit(
    y: npt.ArrayLike,
    treated: npt.ArrayLike,
    benefit: npt.ArrayLike,
    *,
    crp: npt.ArrayLike | None = None,
    thresholds: Sequence[float] = DEFAULT_HARM_THRESHOLDS,
) -> pd.DataFrame:
    """Net benefit of "treat if predicted benefit > t" against treat all, treat none and, with
    ``crp``, the CRP > 3 mg/L rule, across harm thresholds ``t`` (definition in
    ``validation_stats``)."""
    inputs = check_inputs(y, treated, benefit, crp=crp)
    rule = None if inputs.crp is None else crp_reference_scores(inputs.crp)[1] > 0
    return benefit_decision_curve(
        inputs.y, inputs.treated, inputs.benefit, rule, _thresholds(thresholds)
    )


def _thresholds(thresholds: Sequence[float]) -> np.ndarray:
    arr = np.asarray(thresholds, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0 or not np.all((arr >= 0) & (arr < 1)):
        raise ValueError(
            "The 'thresholds' parameter must be a non-empty sequence of harm thresholds in "
            f"[0, 1). Got {list(np.atleast_1d(arr))}."
        )
    return arr


def crp_arm_interaction(
    y: npt.ArrayLike, treated: npt.ArrayLike, crp: npt.ArrayLike, *, alpha: float = 0.05
) -> CrpInteraction:
    """The classical analysis beside the model: arm x log CRP logistic interaction."""
    inputs = check_inputs(y, treated, np.zeros(len(np.asarray(y))), crp=crp)
    assert inputs.crp is not None
    return crp_interaction(inputs.y, inputs.treated, inputs.crp, check_alpha(alpha), LOG_FLOOR)


def _arm_model(
    y: np.ndarray, p: np.ndarray | None, n_boot: int, seed: int, alpha: float
) -> BootstrapResult | None:
    if p is None or y.min() == y.max():
        return None
    return bootstrap_metric_ci(y, p, n_boot=n_boot, seed=seed, alpha=alpha)


# --- everything --------------------------------------------------------------------------------


def validate_benefit(
    y: npt.ArrayLike,
    treated: npt.ArrayLike,
    benefit: npt.ArrayLike,
    p_treated: npt.ArrayLike | None = None,
    p_control: npt.ArrayLike | None = None,
    crp: npt.ArrayLike | None = None,
    *,
    harm_threshold: float = 0.05,
    seed: int = 0,
    n_boot: int = 1000,
    alpha: float = 0.05,
    thresholds: Sequence[float] = DEFAULT_HARM_THRESHOLDS,
) -> BenefitValidation:
    """All of the module docstring's statistics for one out-of-sample validation set."""
    inputs = check_inputs(y, treated, benefit, p_treated, p_control, crp)
    alpha = check_alpha(alpha)
    harm = float(_thresholds([harm_threshold])[0])
    pts = _thresholds(thresholds)
    resamples, weights = _weights(inputs, n_boot, seed)
    y_arr, arm, ben = inputs.y, inputs.treated, inputs.benefit
    treat = ben > harm
    # The model's pairs serve both its C-for-benefit and its calibration (one matching).
    pairs = bootstrap_pairs(y_arr, arm, ben, resamples, seed, calibration=True)
    model = _ranking(
        inputs, ben, treat, MODEL, f"predicted benefit > {harm:g}", resamples, weights, seed,
        alpha, pairs,
    )  # fmt: skip
    crp_alone = crp_rule_ranking = None
    rule = None
    if inputs.crp is not None:
        log_crp, rule_score = crp_reference_scores(inputs.crp)
        rule = rule_score > 0
        # CRP alone has no benefit scale: it treats as many patients as the model, highest first.
        k = int(treat.sum())
        top = np.zeros(inputs.n, dtype=bool)
        top[np.argsort(-log_crp, kind="stable")[:k]] = True
        crp_alone = _ranking(
            inputs, log_crp, top, CRP_ALONE, f"the {k} highest CRP (as many as the model)",
            resamples, weights, seed, alpha,
        )  # fmt: skip
        crp_rule_ranking = _ranking(
            inputs, rule_score, rule, CRP_RULE, CRP_RULE, resamples, weights, seed, alpha
        )

    net = {
        "model": policy_net_benefit(y_arr, arm, treat, harm, weights),
        "treat_all": policy_net_benefit(y_arr, arm, np.ones(inputs.n, dtype=bool), harm, weights),
    }
    if rule is not None:
        net["crp_rule"] = policy_net_benefit(y_arr, arm, rule, harm, weights)
        net["model_minus_crp_rule"] = net["model"] - net["crp_rule"]
    net["model_minus_treat_all"] = net["model"] - net["treat_all"]

    vs_autoc = vs_c = None
    distinguishable = None
    if crp_alone is not None:
        vs_autoc = _difference(
            model.autoc, crp_alone.autoc, model.autoc_boot, crp_alone.autoc_boot, alpha
        )
        vs_c = _difference(
            model.c_for_benefit, crp_alone.c_for_benefit,
            model.c_for_benefit_boot, crp_alone.c_for_benefit_boot, alpha,
        )  # fmt: skip
        distinguishable = bool(vs_autoc.ci_low > 0 or vs_autoc.ci_high < 0)

    y_t, y_c = y_arr[arm], y_arr[~arm]
    arm_t = _arm_model(
        y_t, None if inputs.p_treated is None else inputs.p_treated[arm], n_boot, seed, alpha
    )
    arm_c = _arm_model(
        y_c, None if inputs.p_control is None else inputs.p_control[~arm], n_boot, seed, alpha
    )
    interaction = (
        None if inputs.crp is None else crp_interaction(y_arr, arm, inputs.crp, alpha, LOG_FLOOR)
    )
    result = BenefitValidation(
        n=inputs.n,
        n_treated=inputs.n_treated,
        n_control=inputs.n_control,
        harm_threshold=harm,
        alpha=alpha,
        seed=seed,
        n_boot=n_boot,
        matching=MATCHING,
        model=model,
        calibration=_calibration(inputs, resamples, seed, alpha, None, pairs),
        crp_alone=crp_alone,
        crp_rule=crp_rule_ranking,
        decision_curve=benefit_decision_curve(y_arr, arm, ben, rule, pts),
        net_benefit={key: row_estimate(values, alpha) for key, values in net.items()},
        interaction=interaction,
        arm_treated=arm_t,
        arm_control=arm_c,
        autoc_vs_crp=vs_autoc,
        c_for_benefit_vs_crp=vs_c,
        distinguishable_from_crp=distinguishable,
        messages=(),
    )
    return _with_messages(result)


def _difference(
    a: Estimate, b: Estimate, a_boot: np.ndarray, b_boot: np.ndarray, alpha: float
) -> Estimate:
    """a - b with the percentile interval of the paired per-resample differences."""
    return percentile_ci(a.estimate - b.estimate, a_boot - b_boot, alpha)


def _with_messages(v: BenefitValidation) -> BenefitValidation:
    level = f"{100 * (1 - v.alpha):g}% CI"
    messages = []
    if min(v.n_treated, v.n_control) < SMALL_ARM:
        messages.append(
            f"Small trial: {v.n_treated} patients on drug and {v.n_control} on placebo. "
            "Every interval below is wide; benefit for individual patients cannot be "
            "estimated reliably from so few."
        )
    if v.distinguishable_from_crp is False and v.autoc_vs_crp is not None:
        d = v.autoc_vs_crp
        messages.append(
            "The data cannot distinguish the model's ranking from ranking by CRP alone: "
            f"RATE (AUTOC) difference {d.estimate:+.3f} ({level} {d.ci_low:+.3f} to "
            f"{d.ci_high:+.3f}) includes 0."
        )
    elif v.distinguishable_from_crp and v.autoc_vs_crp is not None:
        d = v.autoc_vs_crp
        better = "better" if d.estimate > 0 else "worse"
        messages.append(
            f"The model ranks patients by benefit {better} than CRP alone: RATE (AUTOC) "
            f"difference {d.estimate:+.3f} ({level} {d.ci_low:+.3f} to {d.ci_high:+.3f})."
        )
    c = v.model.c_for_benefit
    if not np.isfinite(c.estimate):
        messages.append(
            "C-for-benefit is not estimable: no two matched pairs differ in observed benefit."
        )
    elif np.isfinite(c.ci_low) and c.ci_low <= 0.5 <= c.ci_high:
        messages.append(
            f"C-for-benefit {c.estimate:.2f} ({level} {c.ci_low:.2f} to {c.ci_high:.2f}) "
            "does not exclude 0.5 (no better than chance at ordering benefit)."
        )
    if v.interaction is not None and not v.interaction.converged:
        messages.append(v.interaction.message)
    return replace(v, messages=tuple(messages))
