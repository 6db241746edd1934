"""Tests for inflamrx.modeling.metrics and inflamrx.modeling.evaluate: hand-computed net benefit,
calibration, bootstrap, validation."""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import pandas as pd
import pytest
from mlflow.utils.validation import _validate_metric
from scipy.optimize import brentq
from scipy.special import expit, logit
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

from inflamrx.modeling.evaluate import (
    classification_at_thresholds,
    evaluate_predictions,
    subgroup_auroc,
    subgroup_keys,
)
from inflamrx.modeling.metrics import (
    _calibration_slope,
    bootstrap_metric_ci,
    bootstrap_weights,
    calibration_bins,
    calibration_intercept_slope,
    decision_curve,
    lowess_calibration,
    net_benefit,
    weighted_auroc,
    weighted_average_precision,
    weighted_brier,
    weighted_calibration,
    wilson_interval,
)

# Ten patients, three responders. Hand arithmetic in the tests below uses these.
Y10 = np.array([1, 1, 1, 0, 0, 0, 0, 0, 0, 0])
P10 = np.array([0.9, 0.6, 0.1, 0.7, 0.4, 0.3, 0.2, 0.1, 0.05, 0.05])
RULE10 = np.array([True, False, True, True, False, False, False, False, False, False])


@pytest.fixture
def cohort() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(42)
    z = rng.normal(size=400)
    return rng.binomial(1, expit(z - 0.3)), expit(0.9 * z - 0.2)


def _counts(idx: np.ndarray, n: int) -> np.ndarray:
    return np.stack([np.bincount(row, minlength=n) for row in idx]).astype(float)


# --------------------------------------------------------------------------- net benefit


def test_net_benefit_matches_hand_arithmetic() -> None:
    # pt = 0.25: p >= 0.25 flags rows 0, 1 (responders) and 3, 4, 5 (non-responders).
    #   NB = 2/10 - 3/10 * 0.25/0.75 = 0.2 - 0.1 = 0.1
    # pt = 0.60: p >= 0.60 flags rows 0, 1 (responders) and 3 (non-responder).
    #   NB = 2/10 - 1/10 * 0.6/0.4 = 0.2 - 0.15 = 0.05
    # Treat all (3 responders, 7 not):
    #   pt = 0.25: 3/10 - 7/10 * 1/3 = 0.0666...;  pt = 0.60: 3/10 - 7/10 * 1.5 = -0.75
    # Rule flags rows 0, 2 (responders) and 3 (non-responder), whatever the threshold:
    #   pt = 0.25: 2/10 - 1/10 * 1/3 = 0.1666...;  pt = 0.60: 2/10 - 1/10 * 1.5 = 0.05
    dca = decision_curve(Y10, P10, rule=RULE10, thresholds=[0.25, 0.60])
    np.testing.assert_allclose(dca["model"], [0.1, 0.05])
    np.testing.assert_allclose(dca["treat_all"], [0.3 - 0.7 / 3, -0.75])
    np.testing.assert_allclose(dca["treat_none"], [0.0, 0.0])
    np.testing.assert_allclose(dca["rule"], [0.2 - 0.1 / 3, 0.05])
    assert net_benefit(Y10, P10 >= 0.25, 0.25) == pytest.approx(0.1)


def test_threshold_table_counts_and_proportions_by_hand() -> None:
    table = classification_at_thresholds(Y10, P10, [0.25], rule=RULE10, rule_name="CRP > 3")
    model = table[table["classifier"] == "model"].iloc[0]
    # TP = 2, FP = 3, FN = 1 (row 2), TN = 4.
    assert (model["tp"], model["fp"], model["fn"], model["tn"]) == (2, 3, 1, 4)
    assert model["sensitivity"] == pytest.approx(2 / 3)
    assert model["specificity"] == pytest.approx(4 / 7)
    assert model["ppv"] == pytest.approx(2 / 5)
    assert model["npv"] == pytest.approx(4 / 5)
    assert model["sensitivity_ci_low"] < 2 / 3 < model["sensitivity_ci_high"]
    rule = table[table["classifier"] == "CRP > 3"].iloc[0]
    assert (rule["tp"], rule["fp"], rule["fn"], rule["tn"]) == (2, 1, 1, 6)
    assert set(table["classifier_kind"]) == {"model", "treat_all", "rule"}


def test_default_decision_curve_grid_is_exact() -> None:
    grid = decision_curve(Y10, P10)["threshold"].to_numpy()
    assert len(grid) == 56
    assert grid[0] == 0.05 and grid[-1] == 0.60 and grid[30] == 0.35


def test_wilson_interval_known_values() -> None:
    # 0 of 10: upper limit z^2 / (n + z^2) = 3.8415 / 13.8415 = 0.2775
    low, high = wilson_interval(0, 10)
    assert float(low) == 0.0
    assert float(high) == pytest.approx(0.2775, abs=1e-4)
    low, high = wilson_interval(0, 0)
    assert math.isnan(float(low)) and math.isnan(float(high))


# --------------------------------------------------------------------------- calibration


def test_calibration_is_perfect_on_data_drawn_from_p() -> None:
    rng = np.random.default_rng(0)
    p = expit(rng.normal(-0.5, 1.5, size=50_000))
    y = rng.binomial(1, p)
    intercept, slope = calibration_intercept_slope(y, p)
    assert intercept == pytest.approx(0.0, abs=0.05)
    assert slope == pytest.approx(1.0, abs=0.05)


def test_calibration_slope_half_when_predictions_twice_too_extreme() -> None:
    # logit(p) = 2z but the truth is logit P(y=1) = z = 0.5 * logit(p): slope 0.5.
    rng = np.random.default_rng(1)
    z = rng.normal(size=50_000)
    y = rng.binomial(1, expit(z))
    _, slope = calibration_intercept_slope(y, expit(2 * z))
    assert slope == pytest.approx(0.5, abs=0.03)


def test_calibration_fits_agree_with_reference_solvers() -> None:
    rng = np.random.default_rng(2)
    p = expit(rng.normal(size=200))
    y = rng.binomial(1, expit(0.3 + 0.7 * logit(p)))
    x = logit(p)
    intercept, slope = calibration_intercept_slope(y, p)

    # Slope: the coefficient of an unpenalised logistic regression of y on logit(p).
    # (C=inf is sklearn 1.9's spelling of penalty=None, which is deprecated.)
    reference = LogisticRegression(C=np.inf, tol=1e-12, max_iter=10_000).fit(x[:, None], y)
    assert slope == pytest.approx(reference.coef_[0, 0], rel=1e-5)
    _, slopes = weighted_calibration(y, p, np.ones((1, 200)))
    assert slopes[0] == pytest.approx(slope)

    # Intercept with logit(p) as offset: root of the score equation sum(y - expit(a + x)) = 0.
    a = brentq(lambda a: float(np.sum(y - expit(a + x))), -5, 5, xtol=1e-12)
    assert intercept == pytest.approx(a, abs=1e-8)


def test_calibration_bins_and_smooth_curve() -> None:
    rng = np.random.default_rng(3)
    p = rng.uniform(0.05, 0.95, size=5_000)
    y = rng.binomial(1, p)
    bins = calibration_bins(y, p, n_bins=10)
    assert len(bins) == 10 and bins["n"].sum() == 5_000 and bins["events"].sum() == y.sum()
    assert (bins["predicted_low"] <= bins["mean_predicted"]).all()
    assert (bins["mean_predicted"] <= bins["predicted_high"]).all()
    np.testing.assert_allclose(bins["observed"], bins["mean_predicted"], atol=0.07)
    smooth = lowess_calibration(y, p)
    middle = smooth[(smooth["predicted"] > 0.15) & (smooth["predicted"] < 0.85)]
    np.testing.assert_allclose(middle["observed"], middle["predicted"], atol=0.05)


def test_calibration_bins_survive_heavy_ties() -> None:
    y = np.array([0, 1] * 10)
    p = np.array([0.2] * 15 + [0.8] * 5)
    bins = calibration_bins(y, p, n_bins=10)
    assert bins["n"].sum() == 20 and len(bins) <= 2


# --------------------------------------------------------------------------- bootstrap


def test_bootstrap_point_estimates_equal_sklearn_and_cis_contain_them(cohort: Any) -> None:
    y, p = cohort
    result = bootstrap_metric_ci(y, p, n_boot=300, seed=7)
    assert result.auroc.estimate == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert result.auprc.estimate == pytest.approx(average_precision_score(y, p), abs=1e-12)
    assert result.brier.estimate == pytest.approx(brier_score_loss(y, p), abs=1e-12)
    for est in (
        result.auroc,
        result.auprc,
        result.brier,
        result.calibration_intercept,
        result.calibration_slope,
    ):
        assert est.ci_low <= est.estimate <= est.ci_high
        assert est.n_resamples == 300
    assert result.n_skipped_single_class == 0
    again = bootstrap_metric_ci(y, p, n_boot=300, seed=7)
    assert again == result


def test_vectorised_metrics_equal_sklearn_on_resamples_with_ties() -> None:
    rng = np.random.default_rng(4)
    n = 150
    y = rng.binomial(1, 0.4, size=n)
    p = np.round(rng.uniform(size=n), 1)  # eleven distinct values: many ties
    idx = rng.integers(0, n, size=(25, n))
    w = _counts(idx, n)
    auroc = weighted_auroc(y, p, w)
    ap = weighted_average_precision(y, p, w)
    brier = weighted_brier(y, p, w)
    for b, rows in enumerate(idx):
        assert auroc[b] == pytest.approx(roc_auc_score(y[rows], p[rows]), abs=1e-12)
        assert ap[b] == pytest.approx(average_precision_score(y[rows], p[rows]), abs=1e-12)
        assert brier[b] == pytest.approx(brier_score_loss(y[rows], p[rows]), abs=1e-12)


def test_bootstrap_weights_are_resample_counts() -> None:
    w = bootstrap_weights(50, 40, seed=0)
    assert w.shape == (40, 50)
    np.testing.assert_array_equal(w.sum(axis=1), 50)
    assert (w >= 0).all()


def test_single_class_resamples_are_skipped_and_counted() -> None:
    # One responder in eight: P(resample without them) = (7/8)^8, about 0.34.
    y = np.array([1, 0, 0, 0, 0, 0, 0, 0])
    p = np.linspace(0.9, 0.1, 8)
    result = bootstrap_metric_ci(y, p, n_boot=200, seed=0)
    assert 30 < result.n_skipped_single_class < 110
    assert result.auroc.n_resamples == 200 - result.n_skipped_single_class


# --------------------------------------------------------------------------- subgroups


def test_subgroups_report_small_and_single_class_levels_without_crashing(cohort: Any) -> None:
    y, p = cohort
    sex = np.where(np.arange(len(y)) % 2 == 0, "female", "male").astype(object)
    site = np.array(["A"] * (len(y) - 15) + ["B"] * 10 + ["C"] * 5, dtype=object)
    y = y.copy()
    y[-15:-5] = 1  # site B: responders only
    sex[3] = None
    table = subgroup_auroc(y, p, {"sex": sex, "site": site}, n_boot=100)
    by_level = {(r["variable"], r["level"]): r for r in table.to_dict("records")}
    assert {level for var, level in by_level if var == "sex"} == {"female", "male", "missing"}
    b, c = by_level[("site", "B")], by_level[("site", "C")]
    assert math.isnan(b["auroc"]) and b["note"] == "only one outcome class"
    assert (b["n"], b["events"], b["non_events"]) == (10, 10, 0)
    assert math.isnan(c["auroc"]) and c["note"] == "fewer than 10 rows" and c["n"] == 5
    female = by_level[("sex", "female")]
    assert female["ci_low"] <= female["auroc"] <= female["ci_high"]


# --------------------------------------------------------------------------- entry point


def test_evaluate_predictions_flat_metrics_and_table(cohort: Any) -> None:
    y, p = cohort
    groups = {"sex": np.where(np.arange(len(y)) % 2 == 0, "F", "M")}
    evaluation = evaluate_predictions(
        y, p, baseline_rule=p > 0.5, subgroups=groups, thresholds=(0.3, 0.5), n_boot=200
    )
    metrics = evaluation.to_mlflow_metrics()
    assert all(isinstance(v, float) and math.isfinite(v) for v in metrics.values())
    for key in [
        "test_auroc",
        "test_auroc_ci_low",
        "test_auroc_ci_high",
        "test_auprc",
        "test_brier",
        "test_calibration_intercept",
        "test_calibration_slope_ci_high",
        "test_model_sensitivity_at_0_3",
        "test_model_npv_at_0_5",
        "test_model_net_benefit_at_0_3",
        "test_treat_all_net_benefit_at_0_3",
        "test_rule_net_benefit_at_0_5",
        "test_rule_sensitivity",
        "test_subgroup_sex_f_auroc",
        "test_bootstrap_skipped_single_class",
    ]:
        assert key in metrics
    assert metrics["test_auroc"] == pytest.approx(roc_auc_score(y, p))
    assert len(metrics) < 100  # aggregates only: nothing grows with the number of patients

    table = evaluation.to_frame()
    assert list(table.columns) == [
        "metric",
        "scope",
        "estimate",
        "ci_low",
        "ci_high",
        "ci_method",
        "n",
        "note",
    ]
    assert {"AUROC", "Calibration slope", "Net benefit", "NPV"} <= set(table["metric"])
    assert len(evaluation.decision_curve) == 56 and "rule" in evaluation.decision_curve


def test_evaluate_predictions_notes_warn_about_leakage_and_few_events() -> None:
    rng = np.random.default_rng(6)
    y = np.array([1] * 40 + [0] * 160)
    p = np.clip(0.8 * y + rng.uniform(0, 0.2, size=200), 0, 1)  # near-perfect separation
    evaluation = evaluate_predictions(y, p, n_boot=50)
    notes = " ".join(evaluation.notes)
    assert "leakage" in notes and "40 events" in notes


def test_duplicate_metric_keys_are_refused() -> None:
    rng = np.random.default_rng(7)
    y, p = rng.binomial(1, 0.5, size=60), rng.uniform(size=60)
    # Subgroup keys are made unique (below); thresholds are keyed by 6 significant digits.
    evaluation = evaluate_predictions(y, p, thresholds=(0.1234561, 0.1234562), n_boot=20)
    with pytest.raises(ValueError, match="occurs twice"):
        evaluation.to_mlflow_metrics()


def _subgroup_sizes(levels: list[str], variable: str = "site") -> dict[str, float]:
    """The ``_n`` metric of each subgroup level, by key."""
    rng = np.random.default_rng(7)
    y, p = rng.binomial(1, 0.5, size=len(levels)), rng.uniform(size=len(levels))
    evaluation = evaluate_predictions(y, p, subgroups={variable: levels}, n_boot=20)
    metrics = evaluation.to_mlflow_metrics()
    for key, value in metrics.items():
        _validate_metric(key, value, 0, 0)  # what mlflow.log_metrics checks: name and length
    return {k: v for k, v in metrics.items() if k.startswith("test_subgroup_") and k.endswith("_n")}


@pytest.mark.parametrize(
    ("variable", "levels", "hashed"),
    [
        ("site", ["site-A", "Site A"], r"test_subgroup_site_site_a_[0-9a-f]{8}_n"),
        ("g", ["A+", "A-"], r"test_subgroup_g_a_[0-9a-f]{8}_n"),
    ],
)
def test_levels_that_slug_alike_get_distinct_keys(
    variable: str, levels: list[str], hashed: str
) -> None:
    sizes = _subgroup_sizes([*levels, "B"] * 20, variable)
    assert len(sizes) == 3 and sum(sizes.values()) == 60  # no level merged or lost
    assert sizes.pop(f"test_subgroup_{variable}_b_n") == 20  # a clean level keeps its plain key
    assert all(re.fullmatch(hashed, key) for key in sizes)


def test_subgroup_keys_are_stable() -> None:
    pairs = [("site", "site-A"), ("site", "Site A"), ("sex", "F")]
    assert subgroup_keys(pairs) == [
        "subgroup_site_site_a_d46abf0c",
        "subgroup_site_site_a_27c34b71",
        "subgroup_sex_f",
    ]


def test_a_240_character_site_gives_a_short_hashed_key() -> None:
    site = ("Outpatient clinic of the university hospital, " * 6)[:240]
    sizes = _subgroup_sizes([site] * 30 + ["B"] * 30)
    (key,) = (k for k in sizes if k != "test_subgroup_site_b_n")
    assert re.fullmatch(
        r"test_subgroup_site_outpatient_clinic_of_the_university_hosp_[0-9a-f]{8}_n", key
    )


def test_subgroup_keys_are_unique_sanitised_and_bounded() -> None:
    levels = ["", " ", "+++", "日本", "A", "a", "A ", "a-1", "A_1", "x" * 300, "x" * 300 + "y"]
    levels += ["missing", "Site #3 (Dr. Müller's ward)", "subgroup_site_a", "9" * 40]
    pairs = [("site", level) for level in levels] + [("site a", "b"), ("site", "a b")]
    keys = subgroup_keys(pairs)
    assert len(set(keys)) == len(pairs)
    assert all(re.fullmatch(r"subgroup(_[a-z0-9]+)+", key) and len(key) <= 99 for key in keys)
    # A level spelling another key's hash cannot take that key.
    taken = subgroup_keys([("site", "+++")])[0]
    pairs = [("site", "+++"), ("site", taken.removeprefix("subgroup_site_"))]
    assert len(set(subgroup_keys(pairs))) == 2
    sizes = _subgroup_sizes([level for level in levels for _ in range(4)])
    assert len(sizes) == len(levels)


# --------------------------------------------------------------------------- validation

GOOD: dict[str, Any] = {"y": Y10, "p": P10}


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ({"y": [0, 1, 2, 0, 0, 0, 0, 0, 0, 1]}, r"'y' parameter must contain only 0 and 1\. Got"),
        ({"y": np.r_[Y10[:-1], np.nan]}, r"'y' parameter must not contain NaN"),
        ({"y": np.array(["yes", "no"] * 5)}, r"'y' parameter must be numeric 0/1 labels"),
        ({"y": np.zeros(10)}, r"'y' parameter must contain both outcome classes"),
        ({"y": [], "p": []}, r"'y' parameter must not be empty"),
        ({"p": np.r_[P10[:-1], 1.5]}, r"'p' parameter must be probabilities in \[0, 1\]"),
        ({"p": np.r_[P10[:-1], np.nan]}, r"'p' parameter must not contain NaN"),
        ({"p": P10[:-1]}, r"'p' parameter must have one entry per row of 'y' \(10\)\. Got 9"),
        ({"p": P10.reshape(5, 2)}, r"'p' parameter must be 1-dimensional"),
        ({"baseline_rule": RULE10[:-1]}, r"'baseline_rule' parameter must have one entry"),
        ({"baseline_rule": np.arange(10)}, r"'baseline_rule' .* boolean array such as"),
        ({"thresholds": (0.0, 0.5)}, r"'thresholds' parameter must be .* strictly between"),
        ({"dca_thresholds": (1.0,)}, r"'dca_thresholds' parameter"),
        ({"n_boot": 0}, r"'n_boot' parameter must be a positive integer\. Got 0"),
        ({"alpha": 1.5}, r"'alpha' parameter must be between 0 and 1"),
        ({"subgroups": {"sex": ["F"] * 9}}, r"subgroups\['sex'\]' parameter must have one entry"),
    ],
)
def test_invalid_inputs_are_named_in_the_error(override: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        evaluate_predictions(**{**GOOD, "n_boot": 10, **override})


def test_evaluate_does_not_modify_inputs() -> None:
    y, p = pd.Series(Y10), pd.Series(P10)
    evaluate_predictions(y, p, baseline_rule=RULE10, n_boot=10)
    pd.testing.assert_series_equal(y, pd.Series(Y10))
    pd.testing.assert_series_equal(p, pd.Series(P10))


def test_calibration_slope_far_below_one_is_found_where_full_newton_steps_diverge() -> None:
    # Log-odds 6x too extreme (an over-fitted model): Newton from slope 1 overshoots; the damped
    # fallback still reaches the unpenalised logistic regression's coefficient.
    rng = np.random.default_rng(4)
    z = rng.normal(size=400)
    y = rng.binomial(1, expit(z))
    p = expit(6 * z + rng.normal(scale=3, size=400))
    _, slope = calibration_intercept_slope(y, p)
    x = logit(np.clip(p, 1e-6, 1 - 1e-6))
    reference = LogisticRegression(C=np.inf, tol=1e-12, max_iter=10_000).fit(x[:, None], y)
    assert slope == pytest.approx(reference.coef_[0, 0], rel=1e-5)


def test_a_separated_resample_is_given_up_by_the_damped_slope_fit() -> None:
    """Outcomes perfectly separated by the prediction: the slope runs off to infinity, so the
    damped retry gives the resample up (NaN, not converged) instead of iterating on."""
    rng = np.random.default_rng(3)
    p = rng.uniform(0.05, 0.95, size=300)
    y = (p > 0.5).astype(float)
    x = np.log(p / (1 - p))
    w = bootstrap_weights(len(y), 100, 0)
    slope, converged = _calibration_slope(x, y, w, max_iter=50, tol=1e-9, damped=True)
    assert np.isnan(slope).all() and not converged.any()
