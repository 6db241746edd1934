"""Tests for inflamrx.modeling.explanations: additivity, per-patient factors, validity on a cohort with known
drivers, and the `inflamrx explain` command end to end against a temporary SQLite MLflow."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import shap
from scipy.special import expit
from sklearn.pipeline import Pipeline
from typer.testing import CliRunner

from conftest import quick_training, synthetic_workspace, tracking_in
from inflamrx.cli import app
from inflamrx.config import load_config
from inflamrx.data.outcomes import derive_outcome
from inflamrx.data.simulate import simulate_cohort
from inflamrx.data.validate import validate_frame
from inflamrx.jobs.train import TrainResult, train
from inflamrx.modeling import explanations as ex
from inflamrx.modeling import factors as fx
from inflamrx.modeling.features import ClinicalFeatures, model_input_columns
from inflamrx.modeling.kinds._trees import tree_explainer
from inflamrx.modeling.kinds.base import FittedModel, fit_model, kind_of


def _cohort(n: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.Series]:
    """(accepted cohort with a known outcome, model inputs, outcome) of a SYNTHETIC cohort."""
    config = load_config()
    cohort = validate_frame(simulate_cohort(n, seed=seed).cohort, config.data).accepted
    y = derive_outcome(cohort, config.outcome)
    known = y.notna().to_numpy()
    cohort = cohort[known].reset_index(drop=True)
    x = cohort[model_input_columns(list(cohort.columns), config.outcome)]
    return cohort, x, y[known].astype(int).reset_index(drop=True)


def _fit(kind: str, x: pd.DataFrame, y: pd.Series) -> FittedModel:
    rounds = {"xgboost": {"model.n_estimators": 60}, "histgb": {"model.max_iter": 60}}
    config = load_config(None, {"model.kind": kind} | rounds.get(kind, {}))
    return fit_model(config, x, y)


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, pd.DataFrame, pd.Series]:
    return _cohort(500, seed=5)


@pytest.fixture(scope="module", params=["xgboost", "logistic", "histgb"])
def fitted(
    request: pytest.FixtureRequest, data: tuple[pd.DataFrame, pd.DataFrame, pd.Series]
) -> FittedModel:
    _, x, y = data
    return _fit(request.param, x, y)


def test_contributions_add_up_to_the_models_log_odds(
    fitted: FittedModel, data: tuple[pd.DataFrame, pd.DataFrame, pd.Series]
) -> None:
    _, x, _ = data
    contrib = ex.contributions(fitted, x)
    total = contrib.base_value + contrib.values.sum(axis=1).to_numpy()
    np.testing.assert_allclose(total, contrib.margin, atol=ex.ADDITIVITY_TOLERANCE)
    np.testing.assert_allclose(contrib.probability, fitted.probability(x), atol=1e-6)
    assert list(contrib.values.columns) == list(fitted.features.get_feature_names_out())
    assert "CRP (mg/L, log)" in contrib.values.columns  # clinical names, not num__x3


def test_tree_explainer_is_built_once_per_fitted_model_and_renewed_on_refit(
    data: tuple[pd.DataFrame, pd.DataFrame, pd.Series],
) -> None:
    _, x, y = data
    fitted = _fit("xgboost", x, y)
    model = fitted.estimator
    first = tree_explainer(model, model.get_booster())
    assert tree_explainer(model, model.get_booster()) is first  # served requests reuse it
    model.fit(fitted.transform(x), 1 - y)  # refitted in place: a new booster
    renewed = tree_explainer(model, model.get_booster())
    assert renewed is not first
    contrib = ex.contributions(fitted, x)  # explains the refitted model, additively
    np.testing.assert_allclose(contrib.probability, fitted.probability(x), atol=1e-6)


def test_additivity_violation_is_an_error(
    monkeypatch: pytest.MonkeyPatch, data: tuple[pd.DataFrame, pd.DataFrame, pd.Series]
) -> None:
    _, x, y = data
    pipeline = _fit("xgboost", x, y)

    class Tampered(shap.TreeExplainer):  # type: ignore[misc]
        def shap_values(self, *args: object, **kwargs: object) -> np.ndarray:
            values = np.array(super().shap_values(*args, **kwargs))
            values[7, 0] += 1e-3  # one cell off by more than the tolerance
            return values

    monkeypatch.setattr(shap, "TreeExplainer", Tampered)
    with pytest.raises(ex.AdditivityError, match=r"row 7"):
        ex.contributions(pipeline, x)


def test_linear_model_has_no_interactions_and_tree_model_has(
    fitted: FittedModel, data: tuple[pd.DataFrame, pd.DataFrame, pd.Series]
) -> None:
    _, x, _ = data
    contrib = ex.contributions(fitted, x)
    strength = ex.interaction_strength(fitted, contrib.features, max_rows=50)
    if fitted.kind.has_interactions:
        assert strength is not None and strength.to_numpy().max() > 0
        np.testing.assert_allclose(strength.to_numpy(), strength.to_numpy().T, atol=1e-6)
        pairs = ex.top_interactions(strength, 5)
        assert len(pairs) == 5 and (pairs["feature"] != pairs["with"]).all()
        assert ex.strongest_partner(contrib, "CRP (mg/L, log)", strength) in contrib.values
    else:
        assert strength is None
        assert ex.strongest_partner(contrib, "CRP (mg/L, log)") in contrib.values


def test_patient_factors_in_clinical_units(
    fitted: FittedModel, data: tuple[pd.DataFrame, pd.DataFrame, pd.Series]
) -> None:
    _, x, _ = data
    contrib = ex.contributions(fitted, x)
    factors = fx.patient_factors(contrib, x, 4)
    points = ex.probability_points(contrib)
    assert len(factors) == len(x) and all(len(f) == 4 for f in factors)
    for i, row in enumerate(factors[:50]):
        sizes = [abs(float(f["log_odds"])) for f in row]  # type: ignore[arg-type]
        assert sizes == sorted(sizes, reverse=True)
        assert sizes[0] == pytest.approx(contrib.values.iloc[i].abs().max())
        for f in row:
            assert set(f) == {"feature", "value", "direction", "log_odds", "points", "text"}
            assert f["points"] == pytest.approx(points.iloc[i][f["feature"]])
            assert f["direction"] == ("raises" if f["log_odds"] > 0 else "lowers")  # type: ignore[operator]
            assert str(f["text"]).endswith(" points")
    crp = [f for row in factors for f in row if f["feature"] == "CRP (mg/L, log)"]
    assert crp, "CRP drives the model; it must be among some patients' top factors"
    for f in crp:
        assert f["value"] == "missing" or str(f["value"]).endswith(" mg/L")
        assert str(f["text"]).startswith(f"CRP {f['value']}: ")  # "CRP 7.2 mg/L: +11 points"


def test_patient_factor_values_for_each_kind_of_feature(
    data: tuple[pd.DataFrame, pd.DataFrame, pd.Series],
) -> None:
    """Raw value in its unit for one-input features, the model's value for ratios and scores,
    missing/present for indicators; checked by asking for every feature of two patients."""
    _, x, y = data
    pipeline = _fit("xgboost", x, y)
    x2 = x.iloc[:2].copy()
    x2.loc[x2.index[0], ["crp_mg_l", "il6_pg_ml"]] = [7.2, 2.0]
    x2.loc[x2.index[0], ["neutrophils_10e9_l", "lymphocytes_10e9_l"]] = [4.3, 2.0]
    x2.loc[x2.index[1], "il6_pg_ml"] = np.nan
    contrib = ex.contributions(pipeline, x2)
    rows = [{f["feature"]: f for f in row} for row in fx.patient_factors(contrib, x2, 999)]
    assert rows[0]["CRP (mg/L, log)"]["value"] == "7.2 mg/L"
    assert rows[0]["CRP 3-10 mg/L"]["text"].startswith("CRP 3-10 mg/L (7.2 mg/L): ")  # type: ignore[union-attr]
    assert rows[1]["IL-6 (pg/mL, log)"]["value"] == "missing"
    assert rows[1]["IL-6 (pg/mL, log) missing"]["value"] == "missing"
    assert rows[0]["IL-6 (pg/mL, log) missing"]["value"] == "present"
    assert rows[0]["Neutrophil/lymphocyte ratio"]["value"] == "2.15"  # the ratio, no unit
    assert rows[0]["Age (years)"]["value"] == f"{x2['age'].iloc[0]:.3g} years"
    assert rows[0]["Female sex"]["value"] == str(x2["sex"].iloc[0])
    assert len(rows[0]) == contrib.values.shape[1]  # top > n features: every feature once


def _cell_by_cell(
    contrib: ex.Contributions, x: pd.DataFrame, r: int, name: str
) -> dict[str, object]:
    """One factor formatted on its own, value by value (as patient_factors first did)."""
    names = [str(c) for c in contrib.values.columns]
    source = fx.feature_sources(names)[names.index(name)]
    seen = float(contrib.features.iloc[r][name])
    if source.indicator:
        value = "missing" if seen > 0.5 else "present"
        subject = f"{name.removesuffix(' missing')} {value}"
    elif source.column is not None and source.column in x:
        value = fx._raw_text(x[source.column].astype(object).iloc[r], source.column)
        restated = f"{fx._label(source.column)} {value}"
        subject = restated if source.restates else f"{name} ({value})"
    else:
        value = "missing" if np.isnan(seen) else fx._number(seen)
        subject = f"{name} ({value})"
    log_odds = float(contrib.values.iloc[r][name])
    points = float(ex.probability_points(contrib).iloc[r][name])
    return {
        "feature": name,
        "value": value,
        "direction": "raises" if log_odds > 0 else "lowers",
        "log_odds": log_odds,
        "points": points,
        "text": f"{subject}: {fx._points_text(points)} points",
        "subject": subject,
    }


def test_patient_factors_match_a_cell_by_cell_formatting(
    fitted: FittedModel, data: tuple[pd.DataFrame, pd.DataFrame, pd.Series]
) -> None:
    """The vectorised formatting gives, factor for factor, what formatting each cell on its own
    gives; typed columns (float, boolean) and the same values as Python objects alike."""
    _, x, _ = data
    x = x.iloc[:40].copy()
    x.loc[x.index[:3], "mood_worse_with_illness"] = pd.NA  # a missing yes/no value is shown
    contrib = ex.contributions(fitted, x)
    factors = fx.patient_factors(contrib, x, 999, with_subject=True)
    for r, row in enumerate(factors):
        assert row == [_cell_by_cell(contrib, x, r, str(f["feature"])) for f in row]
    assert fx.patient_factors(contrib, x.astype(object), 5) == fx.patient_factors(contrib, x, 5)


def test_patient_factors_edge_cases(data: tuple[pd.DataFrame, pd.DataFrame, pd.Series]) -> None:
    _, x, y = data
    contrib = ex.contributions(_fit("xgboost", x, y), x.iloc[:3])
    assert fx.patient_factors(contrib, x.iloc[:3], 0) == [[], [], []]
    with pytest.raises(ValueError, match="'top' parameter must be >= 0"):
        fx.patient_factors(contrib, x.iloc[:3], -1)
    with pytest.raises(ValueError, match="x has 2 rows but the contributions explain 3"):
        fx.patient_factors(contrib, x.iloc[:2], 3)


def test_probability_points_sum_sensibly(
    fitted: FittedModel, data: tuple[pd.DataFrame, pd.DataFrame, pd.Series]
) -> None:
    _, x, _ = data
    contrib = ex.contributions(fitted, x)
    points = ex.probability_points(contrib)
    # Each point value has its log-odds' sign and at most a quarter of it (the logistic
    # slope is <= 1/4) ...
    assert (np.sign(points.to_numpy()) == np.sign(contrib.values.to_numpy())).all()
    assert (points.abs().to_numpy() <= 25 * contrib.values.abs().to_numpy() + 1e-9).all()
    # ... and their sum tracks the change from the average patient (not exactly: the
    # probability scale is not additive).
    change = 100 * (contrib.probability - expit(contrib.base_value))
    total = points.sum(axis=1).to_numpy()
    assert np.corrcoef(total, change)[0, 1] > 0.95
    assert np.median(np.abs(total - change)) < 5  # many small terms (logistic) drift most


def test_known_drivers_rank_top_and_noise_ranks_low() -> None:
    """Validity on a SYNTHETIC cohort whose true drivers are known (simulate: CRP and IL-6,
    with treatment failures and an inflammatory symptom cluster).

    The noise column is added through ClinicalFeatures' numeric path: the cohort is first
    turned into the clinical feature matrix by a fitted ClinicalFeatures, a pure-noise column
    is appended, and a new Pipeline(ClinicalFeatures(), XGBoost) is fitted on that numeric
    frame (numeric mode passes columns through under their names), so the explained pipeline
    is an ordinary one. "Near the bottom" is pinned as: below every true driver and under 10%
    of CRP's mean |SHAP|. It is not pinned as "last of all 70+ features": the cohort's many
    non-driver columns are noise too, and a continuous noise column gets more tree splits than
    a binary one, so its rank among those is arbitrary.
    """
    _, x, y = _cohort(2000, seed=1)
    clinical = ClinicalFeatures().fit(x)
    matrix = pd.DataFrame(clinical.transform(x), columns=clinical.get_feature_names_out())
    matrix["Pure noise"] = np.random.default_rng(0).normal(size=len(matrix))
    config = load_config(None, {"model.n_estimators": 60})
    pipeline = Pipeline(
        [("features", ClinicalFeatures()), ("model", kind_of("xgboost").estimator(config.model))]
    )
    pipeline.fit(matrix, y)
    fitted = FittedModel(kind_of("xgboost"), pipeline, list(matrix.columns))
    importance = ex.global_importance(ex.contributions(fitted, matrix))
    ranking = list(importance.index)
    assert {"CRP (mg/L, log)", "IL-6 (pg/mL, log)"} <= set(ranking[:3]), ranking[:5]
    drivers = ["CRP (mg/L, log)", "IL-6 (pg/mL, log)", "Failed antidepressants (n)"]
    assert ranking.index("Pure noise") > max(ranking.index(d) for d in drivers)
    assert importance["Pure noise"] < 0.1 * importance["CRP (mg/L, log)"]


# --- end to end through MLflow ------------------------------------------------------------


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic_workspace(tmp_path_factory, "explain", n=500, seed=4)


@pytest.fixture(scope="module")
def trained(workspace: Path) -> tuple[TrainResult, str]:
    """XGBoost trained with the report on (the default), logged to a temporary SQLite store."""
    with tracking_in(workspace) as uri:
        overrides = quick_training(workspace, "explain") | {"report.max_patients": 100}
        return train(load_config(None, overrides)), uri


@pytest.mark.slow
def test_train_logs_the_report_to_its_run(trained: tuple[TrainResult, str]) -> None:
    result, uri = trained
    client = mlflow.MlflowClient(uri)
    logged = {a.path for a in client.list_artifacts(result.run_id, "explanations")}
    assert {"explanations/report.html", "explanations/shap_values.parquet"} <= logged
    figures = {a.path for a in client.list_artifacts(result.run_id, "explanations/figures")}
    assert "explanations/figures/beeswarm.png" in figures
    assert result.report_uri is not None and result.report_uri.endswith(
        f"{result.run_id}/artifacts/explanations/report.html"
    )  # printed by `inflamrx train` and in its --json
    assert result.summary()["report_uri"] == result.report_uri
    run = client.get_run(result.run_id)
    everything = json.dumps([run.data.params, run.data.tags, run.data.metrics])
    assert "SYN-" not in everything  # identifiers never in params, tags or metrics
    table = pd.read_parquet(
        mlflow.artifacts.download_artifacts(
            run_id=result.run_id, artifact_path="explanations/shap_values.parquet",
            tracking_uri=uri,
        )
    )  # fmt: skip
    # Held-out patients, numbered by row: no patient id in the store unless the config asks.
    assert "patient_id" not in table and list(table["row"]) == list(range(1, result.n_test + 1))
    assert not {"site", "arm", "drug"} & set(table.columns)  # no other identifier


@pytest.mark.slow
def test_cli_explain_end_to_end(
    trained: tuple[TrainResult, str], workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result, uri = trained
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(workspace)
    cohort = pd.read_csv("synthetic.csv", dtype=str, keep_default_na=False)
    cohort.loc[3, "crp_mg_l"] = "-2"  # one bad row: rejected and reported, never explained
    cohort.to_csv("new.csv", index=False)
    runner = CliRunner()
    done = runner.invoke(app, ["explain", "--model", result.model_uri, "--data", "new.csv",
                               "--set", "report.max_patients=100", "--out", "out"])  # fmt: skip
    assert done.exit_code == 1, done.output  # as predict: 1 = some rows rejected
    assert "rejected 1" in done.output and f"(explaining run {result.run_id})" in done.output
    out = workspace / "out"
    assert (out / "report.html").exists() and (out / "figures" / "importance.png").exists()
    table = pd.read_parquet(out / "shap_values.parquet")
    assert len(table) == 499 and cohort.loc[3, "patient_id"] not in set(table["patient_id"])
    features = table.columns[5:]  # after patient_id, report_patient, probability, log_odds, base
    np.testing.assert_allclose(
        table["base_value"] + table[features].sum(axis=1), table["log_odds"], atol=1e-4
    )
    np.testing.assert_allclose(expit(table["log_odds"]), table["probability"], atol=1e-9)

    ids = [str(cohort.loc[10, "patient_id"]), str(cohort.loc[20, "patient_id"])]
    args = ["explain", "--model", result.model_uri, "--data", "synthetic.csv", "--out", "two"]
    done = runner.invoke(app, [*args, "--patient", ids[0], "--patient", ids[1]])
    assert done.exit_code == 0, done.output
    two = pd.read_parquet(workspace / "two" / "shap_values.parquet")
    assert list(two["patient_id"]) == ids and list(two["report_patient"]) == [1, 2]
    page = (workspace / "two" / "report.html").read_text()
    assert "Patient 2</h3>" in page and "SYN-" not in page  # numbered, never identified

    done = runner.invoke(app, [*args, "--patient", "SYN-NOPE"])
    assert done.exit_code == 2
    assert "SYN-NOPE" in done.output and "not among the accepted rows" in done.output


@pytest.mark.slow
def test_report_off_and_logistic_explained_by_cli(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = f"sqlite:///{workspace / 'logistic.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(workspace)
    config = load_config(
        None,
        {"data.path": "synthetic.csv", "model.kind": "logistic", "report.enabled": False,
         "evaluation.n_bootstrap": 100, "split.cv_repeats": 1, "split.cv_folds": 2,
         "registry.enabled": False, "tracking.experiment": "off"},
    )  # fmt: skip
    result = train(config)
    client = mlflow.MlflowClient(uri)
    assert client.list_artifacts(result.run_id, "explanations") == []
    done = CliRunner().invoke(
        app, ["explain", "--model", result.model_uri, "--data", "synthetic.csv", "--out", "lin"]
    )
    assert done.exit_code == 0, done.output
    page = (workspace / "lin" / "report.html").read_text()
    assert "no interactions by construction" in page
    # The training run's validation and how it was obtained, fetched from MLflow.
    assert "Validation: repeated cross-validation" in page
    assert client.list_artifacts(result.run_id, "explanations") == []  # its own run, not this
    (explain_run,) = client.search_runs(
        [client.get_run(result.run_id).info.experiment_id],
        f"tags.explains_run = '{result.run_id}'",
    )
    logged = {a.path for a in client.list_artifacts(explain_run.info.run_id, "explanations")}
    assert "explanations/report.html" in logged
