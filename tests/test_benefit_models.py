"""Benefit learners: each recovers a known effect direction, explains its benefit additively,
and survives save/load without pickle."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit, logit
from scipy.stats import spearmanr
from sklearn.model_selection import StratifiedKFold

from inflamrx.config import build_config
from inflamrx.data.simulate import simulate_cohort
from inflamrx.data.validate import validate_frame
from inflamrx.errors import InputError
from inflamrx.modeling.benefit.learners import LEARNERS, LOG_ODDS_RATIO, SIMPLEST_FIRST
from inflamrx.modeling.explanations import contributions
from inflamrx.modeling.features import model_input_columns
from inflamrx.modeling.kinds.base import FittedModel
from inflamrx.modeling.kinds.benefit import BENEFIT, CONTROL, TREATED, fit_benefit, scale_of
from inflamrx.modeling.kinds.logistic import RCS_QUANTILES, MarkerSplines
from inflamrx.modeling.safe_io import UntrustedArtifactError

pytestmark = pytest.mark.slow  # fits five learners on 1,600 patients

CONFIG = build_config({"treatment": {}, "model": {"n_estimators": 80, "max_depth": 2}})


def _known_effect(n: int, seed: int) -> tuple[pd.DataFrame, pd.Series, np.ndarray, np.ndarray]:
    """SYNTHETIC trial whose benefit is known: the drug helps more the higher the CRP, placebo
    response falls with age. Returns (inputs, outcome, arm 0/1, true benefit)."""
    sim = simulate_cohort(n, seed=seed, two_arm=True).cohort
    cohort = validate_frame(sim).accepted
    rng = np.random.default_rng(seed)
    treated = (cohort["arm"] == "drug").to_numpy().astype(int)
    x_crp = np.log(cohort["crp_mg_l"].to_numpy()) - np.log(3.0)
    base = -0.6 - 0.03 * (cohort["age"].to_numpy() - 45)
    p0, p1 = expit(base), expit(base + 0.3 + 1.2 * x_crp)
    y = pd.Series((rng.random(len(cohort)) < np.where(treated == 1, p1, p0)).astype(int))
    x = cohort[model_input_columns(list(cohort.columns), CONFIG.outcome)]
    return x, y, treated, p1 - p0


@pytest.fixture(scope="module")
def trial() -> tuple[pd.DataFrame, pd.Series, np.ndarray, np.ndarray]:
    return _known_effect(1600, seed=11)


@pytest.fixture(scope="module")
def new_patients() -> tuple[pd.DataFrame, pd.Series, np.ndarray, np.ndarray]:
    return _known_effect(800, seed=12)


@pytest.fixture(scope="module")
def fitted(trial: tuple[pd.DataFrame, pd.Series, np.ndarray, np.ndarray]) -> dict[str, FittedModel]:
    x, y, treated, _ = trial
    return {name: fit_benefit(CONFIG, name, x, y, treated) for name in SIMPLEST_FIRST}


@pytest.mark.parametrize("learner", SIMPLEST_FIRST)
def test_each_learner_recovers_the_known_effect_direction(
    learner: str, fitted: dict[str, FittedModel], new_patients: tuple[Any, ...]
) -> None:
    x, _y, _t, truth = new_patients
    predicted = fitted[learner].predict(x)
    assert list(predicted.columns) == [TREATED, CONTROL, BENEFIT]
    benefit = predicted[BENEFIT].to_numpy()
    np.testing.assert_allclose(benefit, predicted[TREATED] - predicted[CONTROL], atol=1e-12)
    assert spearmanr(benefit, truth)[0] > 0.5
    crp = x["crp_mg_l"].to_numpy()
    high, low = crp > np.quantile(crp, 2 / 3), crp < np.quantile(crp, 1 / 3)
    assert benefit[high].mean() > benefit[low].mean() + 0.1  # truth: about +0.35


def test_the_arm_is_never_an_input(fitted: dict[str, FittedModel]) -> None:
    for model in fitted.values():
        assert "arm" not in model.input_columns
        assert not any("arm" in name.lower() for name in model.feature_names)


@pytest.mark.parametrize("learner", SIMPLEST_FIRST)
def test_benefit_factors_add_up_on_the_stated_scale(
    learner: str, fitted: dict[str, FittedModel], new_patients: tuple[Any, ...]
) -> None:
    model = fitted[learner]
    x = new_patients[0].iloc[:300]
    explained = contributions(model, x)  # refuses an explanation whose sum misses the margin
    predicted = model.predict(x)
    total = explained.base_value + explained.values.sum(axis=1).to_numpy()
    if scale_of(model) == LOG_ODDS_RATIO:
        expected = logit(predicted[TREATED]) - logit(predicted[CONTROL])
    else:  # risk difference, where no probability was clipped into [0, 1]
        inside = (predicted[TREATED] > 0) & (predicted[TREATED] < 1)
        total, expected = total[inside.to_numpy()], predicted[BENEFIT][inside]
    np.testing.assert_allclose(total, expected, atol=1e-4)


def test_the_interaction_model_credits_only_its_prespecified_modifiers(
    fitted: dict[str, FittedModel], new_patients: tuple[Any, ...]
) -> None:
    explained = contributions(fitted["interaction"], new_patients[0].iloc[:50])
    used = explained.values.columns[(explained.values.abs() > 0).any()]
    assert set(used) == {"CRP (mg/L, log)", "IL-6 (pg/mL, log)"}


@pytest.mark.parametrize("learner", SIMPLEST_FIRST)
def test_save_and_load_round_trip_without_pickle(
    learner: str, fitted: dict[str, FittedModel], new_patients: tuple[Any, ...], tmp_path: Path
) -> None:
    model, x = fitted[learner], new_patients[0].iloc[:100]
    model.save(tmp_path)
    files = {p.name for p in tmp_path.iterdir()}
    assert not [f for f in files if f.endswith((".pkl", ".pickle", ".joblib"))]
    loaded = FittedModel.load(tmp_path)
    assert loaded.kind.name == "benefit" and type(loaded.estimator) is LEARNERS[learner]
    pd.testing.assert_frame_equal(loaded.predict(x), model.predict(x))
    np.testing.assert_allclose(
        contributions(loaded, x).values.to_numpy(), contributions(model, x).values.to_numpy()
    )


def test_meta_learners_use_missing_values_natively(
    trial: tuple[pd.DataFrame, pd.Series, np.ndarray, np.ndarray],
) -> None:
    x, y, treated, _ = trial
    holes = x.copy()
    holes.loc[holes.index[::3], "il6_pg_ml"] = np.nan
    model = fit_benefit(CONFIG, "x_learner", holes, y, treated)
    assert "imput" not in repr(model.estimator).lower()
    assert np.isfinite(model.predict(holes)[BENEFIT]).all()


def test_meta_learners_need_a_tree_kind(
    trial: tuple[pd.DataFrame, pd.Series, np.ndarray, np.ndarray],
) -> None:
    x, y, treated, _ = trial
    logistic = build_config({"treatment": {}, "model": {"kind": "logistic"}})
    with pytest.raises(Exception, match=r"needs a tree model kind"):
        fit_benefit(logistic, "t_learner", x.iloc[:200], y.iloc[:200], treated[:200])


def test_histgb_meta_learner_round_trips(
    trial: tuple[pd.DataFrame, pd.Series, np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    x, y, treated, _ = trial
    config = build_config({"treatment": {}, "model": {"kind": "histgb", "max_iter": 40}})
    model = fit_benefit(config, "dr_learner", x, y, treated)
    model.save(tmp_path)
    # HistGradientBoosting's TreePredictor loads only from files checked against a manifest:
    # refused as they stand, read when the caller vouches for them (these were just written).
    with pytest.raises(UntrustedArtifactError, match="TreePredictor"):
        FittedModel.load(tmp_path)
    loaded = FittedModel.load(tmp_path, verified=True)
    pd.testing.assert_frame_equal(loaded.predict(x.iloc[:50]), model.predict(x.iloc[:50]))


def test_the_interaction_model_splines_log_crp_with_the_logistic_kinds_rcs(
    fitted: dict[str, FittedModel], trial: tuple[pd.DataFrame, pd.Series, np.ndarray, np.ndarray]
) -> None:
    model = fitted["interaction"]
    learner, names = model.estimator, model.feature_names
    splines = learner.models_["splines"]
    assert type(splines) is MarkerSplines  # one spline implementation, trusted by exact name
    assert learner.spline_column_ == names.index("CRP (mg/L, log)")
    imputed = learner.models_["impute"].transform(model.transform(trial[0]))
    crp = imputed[:, learner.spline_column_]
    np.testing.assert_allclose(splines.knots_[0], np.quantile(crp, RCS_QUANTILES[4]))
    # Linear beyond the outer knots: the log OR has a constant slope in log CRP there.
    far = np.quantile(crp, 0.99) + np.array([0.5, 1.0, 1.5])
    rows = np.repeat(imputed[:1], 3, axis=0)
    rows[:, learner.spline_column_] = far
    m1, m0 = learner._margins(rows)
    assert np.diff(np.diff(m1 - m0)) == pytest.approx([0.0], abs=1e-9)


def test_an_interaction_model_saved_with_the_former_b_spline_term_is_refused(
    fitted: dict[str, FittedModel], tmp_path: Path
) -> None:
    old = copy.deepcopy(fitted["interaction"])
    # What a development build saved: uniform B-spline knots and no MarkerSplines.
    old.estimator.spline_knots_ = np.linspace(-2.0, 3.0, 4)[:, None]
    del old.estimator.models_["splines"]
    old.save(tmp_path)
    with pytest.raises(InputError, match=r"B-spline.*Retrain it with `inflamrx train`"):
        FittedModel.load(tmp_path)


def test_the_x_learner_imputes_each_effect_from_models_fitted_without_that_patient(
    trial: tuple[pd.DataFrame, pd.Series, np.ndarray, np.ndarray],
) -> None:
    x, y, treated = trial[0].iloc[:500], trial[1].to_numpy()[:500], trial[2][:500]
    model = fit_benefit(CONFIG, "x_learner", x, pd.Series(y), treated)
    learner, matrix = model.estimator, model.transform(x)
    imputed = learner.imputed_effects(matrix, y, treated)
    folds = StratifiedKFold(learner.folds, shuffle=True, random_state=learner.seed)
    for fit, scored in list(folds.split(matrix, 2 * treated + y))[:2]:
        on, off = fit[treated[fit] == 1], fit[treated[fit] == 0]  # other folds only
        p1 = learner._classifier(matrix[on], y[on], "treated").predict_proba(matrix[scored])[:, 1]
        p0 = learner._classifier(matrix[off], y[off], "control").predict_proba(matrix[scored])
        arm, outcome = treated[scored], y[scored]
        expected = np.where(arm == 1, outcome - p0[:, 1], p1 - outcome)
        np.testing.assert_allclose(imputed[scored], expected, atol=1e-6)
    # Not the arms' models fitted on every patient (the served outcome models).
    one = learner.models_["treated"].predict_proba(matrix)[:, 1]
    zero = learner.models_["control"].predict_proba(matrix)[:, 1]
    assert np.abs(imputed - np.where(treated == 1, y - zero, one - y)).max() > 0.01
