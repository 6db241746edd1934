"""Validation by resampling on every patient, the model choice of ``model.kind: auto``, smooth
marker terms and recalibration, and the configs of earlier releases mapped onto the modes."""

from __future__ import annotations

import warnings
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from conftest import synthetic_workspace, tracking_in
from inflamrx.config import Config, load_config
from inflamrx.data.outcomes import derive_outcome
from inflamrx.data.simulate import simulate_cohort
from inflamrx.data.validate import validate_frame
from inflamrx.jobs.train import train
from inflamrx.modeling.choice import candidate_config, compare
from inflamrx.modeling.explanations import contributions
from inflamrx.modeling.features import model_input_columns
from inflamrx.modeling.kinds.base import FittedModel, fit_model
from inflamrx.modeling.validation import caveat, recalibrated, recalibration, resample


def _cohort(n: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.Series]:
    config = load_config(None)
    cohort = validate_frame(simulate_cohort(n, seed=seed).cohort, config.data).accepted
    y = derive_outcome(cohort, config.outcome)
    known = y.notna().to_numpy()
    cohort = cohort[known].reset_index(drop=True)
    x = cohort[model_input_columns(list(cohort.columns), config.outcome)]
    return cohort, x, y[known].astype(int).reset_index(drop=True)


def _config(**sets: object) -> Config:
    base = {"split.n_resamples": 8, "evaluation.n_bootstrap": 200}
    return load_config(None, base | {k.replace("__", "."): v for k, v in sets.items()})


@pytest.fixture(scope="module")
def noise() -> tuple[pd.DataFrame, pd.Series]:
    """A cohort whose outcome is pure noise: every model's true AUROC is 0.5."""
    _, x, y = _cohort(400, seed=5)
    return x, pd.Series(np.random.default_rng(1).permutation(y.to_numpy()))


def test_cross_validation_on_every_patient_finds_no_skill_in_noise(
    noise: tuple[pd.DataFrame, pd.Series],
) -> None:
    x, y = noise
    found = resample(_config(model__kind="xgboost"), x, y)  # the default: resample cv
    assert found.method == "cv" and found.n_resamples == 2  # split.cv_repeats
    assert found.apparent["auroc"] > 0.9  # trees memorise noise
    assert found.corrected["auroc"] == pytest.approx(0.5, abs=0.06)
    assert np.isfinite(found.p_out_of_sample).all()  # every patient predicted out of fold


def test_bootstrap_optimism_correction_works_for_regression_and_warns_for_trees(
    noise: tuple[pd.DataFrame, pd.Series],
) -> None:
    x, y = noise
    linear = resample(_config(model__kind="logistic", split__resample="bootstrap"), x, y)
    assert linear.method == "bootstrap" and linear.n_resamples == 8
    assert linear.optimism["auroc"] > 0.1
    assert linear.corrected["auroc"] == pytest.approx(0.5, abs=0.08)
    assert caveat(linear) is None
    # Trees memorise their bootstrap sample: Harrell's correction leaves them optimistic
    # (about 0.8 on pure noise here), and the run says so.
    trees = resample(_config(model__kind="xgboost", split__resample="bootstrap"), x, y)
    assert trees.corrected["auroc"] > 0.6
    assert "under-corrects xgboost" in (caveat(trees) or "")
    # Out-of-bag predictions: a patient is predicted only by refits that did not see them.
    assert np.isfinite(trees.p_out_of_sample).mean() > 0.95


def test_auto_keeps_the_simpler_kind_when_it_is_not_distinguishable(
    noise: tuple[pd.DataFrame, pd.Series],
) -> None:
    x, y = noise
    choice = compare(_config(), x, y, n_boot=200, seed=0)
    table = choice.table
    assert list(table["kind"]) == ["logistic", "xgboost"]
    assert table["chosen"].sum() == 1
    # On noise neither kind is better: the simpler one is kept.
    assert choice.chosen.kind == "logistic" and choice.config.model.kind == "logistic"
    assert {"auroc", "calibration_slope", "difference_ci_low"} <= set(table.columns)


def test_smooth_marker_terms_are_explained_per_feature_and_round_trip(tmp_path: Path) -> None:
    _, x, y = _cohort(500, seed=2)
    config = candidate_config(load_config(None), "logistic")
    assert config.model.spline_knots == 4
    fitted = fit_model(config, x, y)
    splines = fitted.estimator.named_steps["splines"]
    assert len(splines.spline_columns_) == 3  # log CRP, IL-6, TNF-alpha
    assert fitted.n_parameters == len(fitted.feature_names) + 3 * 2  # 2 terms per 4 knots
    # SHAP values per feature (not per spline column) that add up to the log-odds.
    explained = contributions(fitted, x.head(50))  # checks base + sum = log-odds
    assert list(explained.values.columns) == fitted.feature_names
    fitted.save(tmp_path / "m")
    again = FittedModel.load(tmp_path / "m")
    np.testing.assert_allclose(again.probability(x), fitted.probability(x))


def test_a_miscalibrated_model_is_recalibrated_inside_the_saved_model(tmp_path: Path) -> None:
    _, x, y = _cohort(400, seed=5)
    found = resample(_config(model__kind="xgboost", model__max_depth=6), x, y)
    assert found.corrected["calibration_slope"] < 0.9  # deep trees over-fit 400 patients
    fixed, note = recalibrated(found, y.to_numpy())
    assert note is not None and "recalibrated" in note
    assert fixed.fitted.recalibration is not None
    p = fixed.fitted.probability(x)
    # Shrunk towards the mean: far less spread than the over-fitted model's predictions.
    assert np.std(p) < 0.6 * np.std(found.fitted.probability(x))
    assert abs(p.mean() - y.mean()) < 0.02
    fixed.fitted.save(tmp_path / "m")
    np.testing.assert_allclose(FittedModel.load(tmp_path / "m").probability(x), p)
    # Explanations stay additive on the recalibrated log-odds.
    explained = contributions(fixed.fitted, x.head(20))
    np.testing.assert_allclose(explained.probability, p[:20], rtol=1e-6)


def test_a_well_calibrated_model_is_left_alone() -> None:
    _, x, y = _cohort(1500, seed=4)
    found = resample(_config(model__kind="logistic", model__C=0.05), x, y)
    slope = found.corrected["calibration_slope"]
    _, note = recalibrated(found, y.to_numpy())
    assert (note is None) == (0.9 <= slope <= 1.1)


def test_old_split_keys_map_onto_the_validation_modes() -> None:
    with pytest.warns(DeprecationWarning, match="split.strategy: site"):
        site = load_config(None, {"split.group_by": "site"})
    assert site.split.strategy == "site" and site.split.group_by == "site"
    with pytest.warns(DeprecationWarning, match="holdout"):
        held = load_config(None, {"split.test_size": 0.3})
    assert held.split.strategy == "holdout" and held.split.test_size == 0.3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        default = load_config(None)
    assert (default.split.strategy, default.model.kind) == ("resample", "auto")
    # A model section of release 0.1.0 (no kind) is still XGBoost.
    assert load_config(None, {"model.max_depth": 4}).model.kind == "xgboost"


@pytest.mark.slow
def test_the_default_job_fits_every_patient_and_says_how_it_was_validated(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    root = synthetic_workspace(tmp_path_factory, "resample", n=500, seed=8)
    sets = {
        "data.path": str(root / "synthetic.csv"),
        "evaluation.n_bootstrap": 200,
        "report.max_patients": 60,
        "registry.enabled": False,
    }
    with tracking_in(root) as uri:
        result = train(load_config(None, sets))
    assert result.n_train == 500 and result.n_test == 0 and result.test_patient_ids == []
    assert result.validation == "resample-cv"
    assert "repeated cross-validation (2 repeats" in result.validation_method
    assert result.comparison is not None and result.comparison["chosen"].sum() == 1
    assert result.model_kind in ("logistic", "xgboost")
    summary = result.summary()
    assert summary["validation"] == "resample-cv" and "n_test" not in summary
    low, high = summary["auroc_ci"]
    assert low <= summary["auroc"] <= high
    assert not any(k.startswith("test_") for k in summary["metrics"])
    assert "Riley" in summary["sample_size"]
    run = mlflow.MlflowClient(uri).get_run(result.run_id)
    assert run.data.tags["validation"] == "resample-cv"
    assert run.data.tags["model_kind_chosen"] == result.model_kind
    assert "auroc" in run.data.metrics and "test_auroc" not in run.data.metrics
    assert "n_test" not in run.data.metrics and "expected_shrinkage" in run.data.metrics
    artifacts = {
        a.path for a in mlflow.MlflowClient(uri).list_artifacts(result.run_id, "evaluation")
    }
    assert "evaluation/model_comparison.csv" in artifacts
    page = Path(
        mlflow.artifacts.download_artifacts(result.report_uri or "", dst_path=str(root / "r"))
    ).read_text()
    assert "repeated cross-validation" in page


def test_recalibration_is_asked_for_only_outside_the_band() -> None:
    rng = np.random.default_rng(0)
    p = rng.uniform(0.05, 0.95, 2000)
    y = rng.binomial(1, p)
    assert recalibration(1.05, y, p) is None and recalibration(float("nan"), y, p) is None
    intercept, slope = recalibration(0.7, y, p) or (np.nan, np.nan)
    assert slope == 0.7
    shrunk = 1 / (1 + np.exp(-(intercept + 0.7 * np.log(p / (1 - p)))))
    assert shrunk.mean() == pytest.approx(y.mean(), abs=1e-6)  # calibrated in the large
