"""Tests for inflamrx.modeling.benefit.validation: hand-computed cases for every statistic, a
simulated known interaction, and a 30-patient trial that must get an honest answer."""

from __future__ import annotations

import json

import numpy as np
import pytest

from inflamrx.modeling.benefit.validation import (
    BenefitValidation,
    c_for_benefit,
    calibration_for_benefit,
    crp_arm_interaction,
    decision_curve_for_benefit,
    rank_benefit,
    validate_benefit,
)
from inflamrx.modeling.benefit.validation_core import (
    concordance,
    ipw_scores,
    newcombe_difference,
    rank_match,
)
from inflamrx.modeling.benefit.validation_stats import CURVE_GRID, ranking_curves

# --- a tiny trial computed by hand ----------------------------------------------------------
# Six patients per arm, distinct predicted benefits. Sorted by benefit within arm, equal arm
# sizes match rank i to rank i:
#   pair  treated (benefit, y)  control (benefit, y)  observed y_t - y_c  predicted (mean)
#   P1    T1 (0.10, 1)          C1 (0.05, 0)           1                 0.075
#   P2    T2 (0.20, 0)          C2 (0.15, 1)          -1                 0.175
#   P3    T3 (0.30, 1)          C3 (0.25, 0)           1                 0.275
#   P4    T4 (0.40, 1)          C4 (0.35, 1)           0                 0.375
#   P5    T5 (0.50, 0)          C5 (0.45, 0)           0                 0.475
#   P6    T6 (0.60, 1)          C6 (0.55, 0)           1                 0.575
# Pairs of pairs with unequal observed benefit (higher observed listed first):
#   level 1 vs 0:  P1-P4 no, P1-P5 no, P3-P4 no, P3-P5 no, P6-P4 yes, P6-P5 yes  -> 2 of 6
#   level 1 vs -1: P1-P2 no (0.075 < 0.175), P3-P2 yes, P6-P2 yes               -> 2 of 3
#   level 0 vs -1: P4-P2 yes, P5-P2 yes                                          -> 2 of 2
# C-for-benefit = 6 / 11.
# Rows are shuffled so nothing depends on the input order.
TREATED_ROWS = [(0.10, 1), (0.20, 0), (0.30, 1), (0.40, 1), (0.50, 0), (0.60, 1)]
CONTROL_ROWS = [(0.05, 0), (0.15, 1), (0.25, 0), (0.35, 1), (0.45, 0), (0.55, 0)]


def tiny_trial() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows = [(b, y, True) for b, y in TREATED_ROWS] + [(b, y, False) for b, y in CONTROL_ROWS]
    order = np.random.default_rng(3).permutation(len(rows))
    benefit = np.array([rows[i][0] for i in order])
    y = np.array([rows[i][1] for i in order])
    treated = np.array([rows[i][2] for i in order])
    return y, treated, benefit


def test_c_for_benefit_matches_the_hand_computed_example() -> None:
    y, treated, benefit = tiny_trial()
    est = c_for_benefit(y, treated, benefit, n_boot=200, seed=1)
    assert est.estimate == pytest.approx(6 / 11)
    assert est.ci_low <= est.estimate <= est.ci_high
    # A score that reverses the ranking reverses every comparable decision: 5 / 11.
    assert c_for_benefit(y, treated, -benefit, n_boot=10).estimate == pytest.approx(5 / 11)


def test_c_for_benefit_is_deterministic_with_a_seed() -> None:
    y, treated, benefit = tiny_trial()
    a = c_for_benefit(y, treated, benefit, n_boot=100, seed=7)
    b = c_for_benefit(y, treated, benefit, n_boot=100, seed=7)
    assert a == b


def test_concordance_counts_tied_predictions_as_half() -> None:
    # Observed 1 vs 0 with equal predictions: one comparable pair, half concordant.
    assert concordance(np.array([1.0, 0.0]), np.array([0.2, 0.2])) == 0.5
    # Three levels: (1: 0.3), (0: 0.2), (-1: 0.1, 0.4): 1v0 yes, 1v-1 one of two, 0v-1 one of two.
    observed = np.array([1.0, 0.0, -1.0, -1.0])
    assert concordance(observed, np.array([0.3, 0.2, 0.1, 0.4])) == pytest.approx(3 / 5)
    assert np.isnan(concordance(np.zeros(3), np.arange(3.0)))


def test_rank_matching_pairs_the_smaller_arm_at_equal_relative_ranks() -> None:
    # 3 treated, 6 controls: treated rank i is paired with control rank floor((i + .5) * 2),
    # i.e. the 2nd, 4th and 6th control by predicted benefit.
    benefit = np.array([0.3, 0.1, 0.2, 0.60, 0.10, 0.50, 0.20, 0.40, 0.30])
    treated = np.array([True, True, True, False, False, False, False, False, False])
    t, c = rank_match(benefit, treated, np.random.default_rng(0))
    assert list(t) == [1, 2, 0]  # treated by benefit: 0.1, 0.2, 0.3
    assert list(benefit[c]) == [0.2, 0.4, 0.6]


def test_calibration_for_benefit_matches_hand_computed_groups_and_slope() -> None:
    y, treated, benefit = tiny_trial()
    cal = calibration_for_benefit(y, treated, benefit, n_groups=2, n_boot=200)
    groups = cal.groups
    # Lower half (benefit <= 0.30): treated 2/3 responded, controls 1/3; mean predicted 0.175.
    # Upper half: treated 2/3, controls 1/3; mean predicted (0.35 + ... + 0.60) / 6 = 0.475.
    assert list(groups["n_treated"]) == [3, 3] and list(groups["n_control"]) == [3, 3]
    assert groups["observed"].tolist() == pytest.approx([1 / 3, 1 / 3])
    assert groups["predicted_mean"].tolist() == pytest.approx([0.175, 0.475])
    assert (groups["observed_ci_low"] < groups["observed"]).all()
    assert (groups["observed_ci_high"] > groups["observed"]).all()
    # Least squares of observed pair benefit [1, -1, 1, 0, 0, 1] on predicted pair benefit
    # [.075 ... .575]: sxx = 0.175, sxy = -.25 + .15 - .05 + .25 = 0.10, slope = 4/7,
    # intercept = 1/3 - 4/7 * 0.325.
    assert cal.slope.estimate == pytest.approx(0.10 / 0.175)
    assert cal.intercept.estimate == pytest.approx(1 / 3 - 0.10 / 0.175 * 0.325)
    assert cal.n_pairs == 6
    assert cal.observed_overall.estimate == pytest.approx(4 / 6 - 2 / 6)
    assert cal.mean_predicted == pytest.approx(np.mean(benefit))
    assert 0 <= cal.e50.estimate <= cal.e90.estimate


def test_e_for_benefit_is_small_for_a_calibrated_model_and_large_for_a_shifted_one() -> None:
    rng = np.random.default_rng(0)
    n = 6000
    treated = rng.permutation(np.arange(n) % 2 == 0)
    benefit = rng.uniform(-0.1, 0.4, n)
    p_control = np.full(n, 0.3)
    y = (rng.random(n) < np.where(treated, p_control + benefit, p_control)).astype(int)
    good = calibration_for_benefit(y, treated, benefit, n_boot=50)
    shifted = calibration_for_benefit(y, treated, benefit + 0.2, n_boot=50)
    assert good.e_avg.estimate < 0.05
    assert shifted.e_avg.estimate > 0.15
    assert good.slope.ci_low < 1 < good.slope.ci_high
    assert shifted.intercept.ci_high < -0.1  # observed = predicted - 0.2


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        ((56, 70, 48, 80), (0.0524, 0.3339)),
        ((9, 10, 3, 10), (0.1705, 0.8090)),
        ((6, 7, 2, 7), (0.0582, 0.8062)),
        ((5, 56, 0, 29), (-0.0381, 0.1926)),
    ],
)
def test_newcombe_interval_reproduces_newcombes_table(
    counts: tuple[int, int, int, int], expected: tuple[float, float]
) -> None:
    # Newcombe (Stat Med 1998;17:873), Table II, method 10, examples (a)-(d).
    d, low, high = newcombe_difference(*counts, 0.05)
    assert float(d) == pytest.approx(counts[0] / counts[1] - counts[2] / counts[3])
    assert (float(low), float(high)) == pytest.approx(expected, abs=5e-5)


# --- Qini, TOC, RATE ------------------------------------------------------------------------
# Four patients, two per arm (e = 0.5), ranked A > B > C > D:
#   A treated y=1 -> IPW score +2; B control y=0 -> 0; C treated y=0 -> 0; D control y=1 -> -2.
# Average effect 0. Cumulative scores 2, 2, 2, 0, so Qini(q) = cum / 4 = .5, .5, .5, 0 and
# TOC after k patients = cum / k - 0 = 2, 1, 2/3, 0.
# AUTOC = (2 + 1 + 2/3 + 0) / 4 = 11/12; Qini coefficient = (.25*2 + .5*1 + .75*2/3) / 4 = 3/8.
QINI_Y = np.array([1, 0, 0, 1])
QINI_TREATED = np.array([True, False, True, False])
QINI_SCORE = np.array([4.0, 3.0, 2.0, 1.0])


def test_qini_and_rate_match_the_hand_computed_example() -> None:
    gamma = ipw_scores(QINI_Y, QINI_TREATED)
    assert gamma.tolist() == [2.0, 0.0, 0.0, -2.0]
    curves = ranking_curves(QINI_SCORE, gamma, np.ones((1, 4)))
    assert curves.autoc[0] == pytest.approx(11 / 12)
    assert curves.qini_coefficient[0] == pytest.approx(3 / 8)
    grid = np.asarray(CURVE_GRID)
    at = {q: i for i, q in enumerate(CURVE_GRID)}
    assert curves.qini[0, at[0.5]] == pytest.approx(0.5)
    assert curves.qini[0, at[1.0]] == pytest.approx(0.0)
    assert curves.toc[0, at[0.5]] == pytest.approx(1.0)
    assert np.all(np.diff(grid) > 0)
    # The reversed ranking puts the harm first: both areas change sign.
    reverse = ranking_curves(-QINI_SCORE, gamma, np.ones((1, 4)))
    assert reverse.autoc[0] < 0 and reverse.qini_coefficient[0] < 0


def test_tied_scores_share_their_blocks_effect() -> None:
    gamma = ipw_scores(QINI_Y, QINI_TREATED)
    # One block of ties: every ordering is equally likely, TOC is 0 everywhere.
    flat = ranking_curves(np.zeros(4), gamma, np.ones((1, 4)))
    assert flat.autoc[0] == pytest.approx(0.0)
    assert np.allclose(flat.toc[0], 0.0)
    # A binary rule flagging A and B: blocks {A, B} (mean score 1) and {C, D} (mean -1) enter
    # evenly, cumulative 1, 2, 1, 0; TOC 1, 1, 1/3, 0; AUTOC = 7/12.
    rule = ranking_curves(np.array([1.0, 1.0, 0.0, 0.0]), gamma, np.ones((1, 4)))
    assert rule.autoc[0] == pytest.approx(7 / 12)


def test_rank_benefit_gives_intervals_and_selected_vs_rest() -> None:
    rng = np.random.default_rng(1)
    n = 2000
    treated = rng.permutation(np.arange(n) % 2 == 0)
    marker = rng.normal(size=n)
    # Drug helps only when the marker is high: +0.3 above 0, nothing below.
    p = 0.3 + np.where(treated & (marker > 0), 0.3, 0.0)
    y = (rng.random(n) < p).astype(int)
    good = rank_benefit(y, treated, marker, marker > 0, n_boot=200, name="marker")
    assert good.autoc.ci_low > 0 and good.qini_coefficient.ci_low > 0
    assert good.c_for_benefit.ci_low > 0.5
    assert good.selected.observed.estimate == pytest.approx(0.3, abs=0.06)
    assert good.rest.observed.estimate == pytest.approx(0.0, abs=0.06)
    assert good.selected_minus_rest.ci_low > 0.15
    noise = rank_benefit(y, treated, rng.normal(size=n), marker > 0, n_boot=200)
    assert noise.autoc.ci_low < 0 < noise.autoc.ci_high
    assert list(good.toc.columns) == ["fraction", "toc", "ci_low", "ci_high"]


# --- decision curve -------------------------------------------------------------------------


def test_benefit_decision_curve_values() -> None:
    y, treated, benefit = tiny_trial()
    # CRP > 3 flags T1, T2, C1, C2 (benefit 0.05-0.20): rates 1/2 vs 1/2, observed benefit 0.
    crp = np.where(benefit <= 0.2, 5.0, 1.0)
    dca = decision_curve_for_benefit(y, treated, benefit, crp=crp, thresholds=[0.0, 0.1, 0.3])
    row = dca.set_index("threshold")
    # Everyone: 4/6 - 2/6 = 1/3 observed benefit; net benefit = 1/3 - t.
    assert row["treat_all"].tolist() == pytest.approx([1 / 3, 1 / 3 - 0.1, 1 / 3 - 0.3])
    assert row["treat_none"].tolist() == [0.0, 0.0, 0.0]
    # t = 0.3: the model treats benefit > 0.3, i.e. T4-T6 and C4-C6 (half the trial),
    # whose observed benefit is 2/3 - 1/3: 0.5 * (1/3 - 0.3).
    assert row.loc[0.3, "model"] == pytest.approx(0.5 * (1 / 3 - 0.3))
    assert row.loc[0.0, "model"] == pytest.approx(1 / 3)
    # The rule treats a third of the trial with observed benefit 0: (1/3) * (0 - 0.1).
    assert row.loc[0.1, "crp_rule"] == pytest.approx(-0.1 / 3)


def test_decision_curve_refuses_thresholds_outside_0_1() -> None:
    y, treated, benefit = tiny_trial()
    with pytest.raises(ValueError, match=r"'thresholds'.*harm thresholds in \[0, 1\)"):
        decision_curve_for_benefit(y, treated, benefit, thresholds=[0.1, 1.5])


# --- the CRP x arm interaction ----------------------------------------------------------------


def test_crp_interaction_recovers_a_known_simulated_effect() -> None:
    # literature.md: logit P = -1.1 - 0.2 (ln CRP - ln 3) + drug (0.5 + 0.6 (ln CRP - ln 3)).
    rng = np.random.default_rng(11)
    n = 20_000
    treated = rng.permutation(np.arange(n) % 2 == 0)
    crp = np.exp(rng.normal(0.27, 1.35, n))
    z = np.log(crp) - np.log(3)
    logit = -1.1 - 0.2 * z + treated * (0.5 + 0.6 * z)
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    crp[:50] = np.nan  # missing CRP is left out, and counted
    fit = crp_arm_interaction(y, treated, crp)
    assert fit.converged and fit.n_used == n - 50 and fit.n_missing_crp == 50
    assert fit.log_or.ci_low < 0.6 < fit.log_or.ci_high
    assert fit.log_or.ci_high - fit.log_or.ci_low < 0.25
    assert fit.arm_log_or_at_3.ci_low < 0.5 < fit.arm_log_or_at_3.ci_high
    assert fit.p_value < 1e-6


def test_crp_interaction_reports_separation_instead_of_a_number() -> None:
    treated = np.array([True] * 6 + [False] * 6)
    crp = np.array([1, 2, 3, 4, 5, 6] * 2, dtype=float)
    y = np.array([0, 0, 0, 1, 1, 1, 1, 1, 1, 0, 0, 0])  # perfectly separated in each arm
    fit = crp_arm_interaction(y, treated, crp)
    assert not fit.converged and np.isnan(fit.log_or.estimate)
    assert "did not converge" in fit.message


# --- the entry point ------------------------------------------------------------------------


def two_arm_trial(n: int, seed: int) -> dict[str, np.ndarray]:
    """Outcomes drawn from the literature model; the true benefit is known."""
    rng = np.random.default_rng(seed)
    treated = rng.permutation(np.arange(n) % 2 == 0)
    crp = np.exp(rng.normal(0.27, 1.35, n))
    z = np.log(crp) - np.log(3)
    p_control = 1 / (1 + np.exp(1.1 + 0.2 * z))
    p_treated = 1 / (1 + np.exp(1.1 + 0.2 * z - 0.5 - 0.6 * z))
    y = (rng.random(n) < np.where(treated, p_treated, p_control)).astype(int)
    return {"y": y, "treated": treated, "p_treated": p_treated, "p_control": p_control, "crp": crp}


def validate(trial: dict[str, np.ndarray], benefit: np.ndarray, **kw: object) -> BenefitValidation:
    return validate_benefit(
        trial["y"], trial["treated"], benefit, trial["p_treated"], trial["p_control"],
        trial["crp"], **kw,  # type: ignore[arg-type]
    )  # fmt: skip


def test_validate_benefit_flat_metrics_for_mlflow_and_json() -> None:
    trial = two_arm_trial(1500, seed=5)
    v = validate(trial, trial["p_treated"] - trial["p_control"], n_boot=200, harm_threshold=0.05)
    metrics = v.as_metrics()
    for key in ("c_for_benefit", "crp_alone_c_for_benefit", "crp_rule_c_for_benefit",
                "rate_autoc", "qini_coefficient", "calibration_for_benefit_slope",
                "e_for_benefit_avg", "net_benefit_model", "crp_interaction_log_or",
                "treated_arm_auroc", "control_arm_auroc", "observed_benefit_selected"):  # fmt: skip
        assert metrics[f"{key}_ci_low"] <= metrics[key] <= metrics[f"{key}_ci_high"], key
    assert all(isinstance(v, float) and np.isfinite(v) for v in metrics.values())
    json.dumps(metrics)  # plain floats only
    assert v.n_treated == v.n_control == 750
    assert set(v.decision_curve.columns) == {
        "threshold",
        "model",
        "treat_all",
        "treat_none",
        "crp_rule",
    }
    assert v.crp_alone is not None and v.crp_rule is not None
    # Benefit here is a function of CRP only: CRP alone orders patients identically.
    assert v.crp_alone.autoc.estimate == pytest.approx(v.model.autoc.estimate)
    assert v.distinguishable_from_crp is False
    assert any("cannot distinguish" in m for m in v.messages)


def test_thirty_patient_trial_gets_an_honest_answer() -> None:
    """The tocilizumab pilot's size: no crash, wide intervals, fewer groups, and a plain
    statement that the model cannot be told from CRP alone."""
    trial = two_arm_trial(30, seed=2)
    rng = np.random.default_rng(0)
    overfit = np.clip(trial["p_treated"] - trial["p_control"] + rng.normal(0, 0.2, 30), -1, 1)
    v = validate(trial, overfit, n_boot=300, seed=0)
    assert (v.n_treated, v.n_control) == (15, 15)
    assert len(v.calibration.groups) == 2
    assert v.model.c_for_benefit.ci_high - v.model.c_for_benefit.ci_low > 0.3
    assert v.distinguishable_from_crp is False
    text = " ".join(v.messages)
    assert "Small trial: 15 patients on drug and 15 on placebo" in text
    assert "cannot distinguish the model's ranking from ranking by CRP alone" in text
    assert v.as_metrics()["distinguishable_from_crp"] == 0.0


def test_a_clearly_better_model_is_told_apart_from_crp() -> None:
    """Benefit driven by a second marker CRP does not see: the oracle beats CRP alone."""
    rng = np.random.default_rng(4)
    n = 3000
    treated = rng.permutation(np.arange(n) % 2 == 0)
    crp = np.exp(rng.normal(0.27, 1.35, n))
    other = rng.normal(size=n)
    benefit = np.clip(0.1 + 0.25 * other, -0.2, 0.5)
    p_control = np.full(n, 0.3)
    y = (rng.random(n) < np.where(treated, p_control + benefit, p_control)).astype(int)
    v = validate_benefit(y, treated, benefit, crp=crp, n_boot=200)
    assert v.distinguishable_from_crp is True
    assert v.autoc_vs_crp is not None and v.autoc_vs_crp.ci_low > 0
    assert any("better than CRP alone" in m for m in v.messages)
    assert v.arm_treated is None  # no arm probabilities given: no arm-model metrics
    assert "treated_arm_auroc" not in v.as_metrics()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"y": [0, 1, 2] + [0] * 9}, "'y' parameter must contain only 0 and 1"),
        ({"treated": [True] * 8 + [False] * 4}, "at least 5 patients.*Got 8 treated and 4 control"),
        (
            {"benefit": [1.5] + [0.1] * 11},
            "'benefit' parameter must lie in \\[-1, 1\\]. Got 1.5 at row 0",
        ),
        (
            {"benefit": [np.nan] + [0.1] * 11},
            "'benefit' parameter must be finite numbers. Got nan at row 0",
        ),
        (
            {"benefit": [0.1] * 11},
            "'benefit' parameter must have one entry per row of 'y' \\(12\\). Got 11",
        ),
        ({"crp": [-1.0] + [1.0] * 11}, "'crp' parameter must lie in \\[0, inf\\]. Got -1 at row 0"),
        ({"p_treated": [1.2] * 12}, "'p_treated' parameter must lie in \\[0, 1\\]"),
    ],
)
def test_bad_inputs_are_refused_with_the_rule(change: dict[str, object], message: str) -> None:
    y, treated, benefit = tiny_trial()
    args: dict[str, object] = {"y": y, "treated": treated, "benefit": benefit, "crp": np.ones(12)}
    args.update(change)
    with pytest.raises(ValueError, match=message):
        validate_benefit(**args, n_boot=10)  # type: ignore[arg-type]


def test_degenerate_trial_says_what_cannot_be_estimated() -> None:
    """Nobody responds and no CRP was measured: no crash, and the report says why numbers
    are missing instead of showing them."""
    rng = np.random.default_rng(0)
    treated = np.arange(30) % 2 == 0
    v = validate_benefit(
        np.zeros(30, dtype=int), treated, rng.uniform(-0.1, 0.2, 30), crp=np.full(30, np.nan),
        n_boot=50,
    )  # fmt: skip
    assert np.isnan(v.model.c_for_benefit.estimate)
    assert "c_for_benefit" not in v.as_metrics()
    text = " ".join(v.messages)
    assert "C-for-benefit is not estimable" in text
    assert "No patient has a CRP value" in text
