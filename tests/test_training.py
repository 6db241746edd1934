"""End to end: simulate -> train -> log to a temporary SQLite MLflow -> load by URI -> predict."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import quick_training, synthetic_workspace, tracking_in
from inflamrx.cli import app
from inflamrx.config import load_config
from inflamrx.data.outcomes import derive_outcome, never_features
from inflamrx.data.simulate import simulate_cohort
from inflamrx.errors import InputError
from inflamrx.jobs.train import TrainResult, train
from inflamrx.serving.batch import predict

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic_workspace(tmp_path_factory, "train", n=600, seed=3)


@pytest.fixture(scope="module")
def trained(workspace: Path) -> tuple[TrainResult, str]:
    with tracking_in(workspace) as uri:
        result = train(load_config(None, quick_training(workspace, "e2e")))
    return result, uri


def test_metrics_have_cis_that_contain_the_point_estimates(
    trained: tuple[TrainResult, str],
) -> None:
    result, _ = trained
    low, high = result.test_auroc_ci
    assert low <= result.test_auroc <= high
    metrics = result.evaluation.metrics
    for est in (metrics.auprc, metrics.brier, metrics.calibration_slope):
        assert est.ci_low <= est.estimate <= est.ci_high
    assert 0.5 < result.test_auroc < 0.9  # realistic, not leakage-high
    assert result.n_train + result.n_test == 600
    assert len(result.cv_auroc) == 3


def test_run_is_tracked_without_patient_identifiers(trained: tuple[TrainResult, str]) -> None:
    result, uri = trained
    client = mlflow.MlflowClient(uri)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["synthetic_data"] == "true"
    assert {"git_commit", "inflamrx_version", "data_digest"} <= set(run.data.tags)
    assert run.data.params["model.kind"] == "xgboost"
    assert run.data.tags["validation"] == "holdout"
    # Neutral names beside release 0.1.0's test_ names (holdout keeps them as aliases).
    for key in ("auroc", "auroc_ci_low", "test_auroc_ci_low", "n_test"):
        assert key in run.data.metrics, key
    assert run.data.metrics["auroc"] == run.data.metrics["test_auroc"]
    assert "baseline_crp_alone_auroc" in run.data.metrics
    everything = json.dumps([run.data.params, run.data.tags, run.data.metrics])
    assert "SYN-" not in everything  # pseudonymous ids stay out of params, tags and metrics
    artifacts = {a.path for a in client.list_artifacts(result.run_id, "evaluation")}
    assert {
        "evaluation/roc_curve.png",
        "evaluation/calibration.png",
        "evaluation/metrics_table.csv",
    } <= artifacts
    inputs = run.inputs.dataset_inputs
    assert inputs and inputs[0].dataset.digest
    version = client.get_model_version("inflamrx-response", result.registered_version)
    assert version.run_id == result.run_id


def test_model_loads_by_uri_and_predicts_through_the_contract(
    trained: tuple[TrainResult, str], workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result, uri = trained
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    new = simulate_cohort(40, seed=99).cohort
    new.loc[3, "crp_mg_l"] = "-2"  # one bad row: rejected, never scored, never lost
    path = workspace / "new.csv"
    new.to_csv(path, index=False)
    out = predict(result.model_uri, load_config(None, {"data.path": str(path)}).data)
    assert len(out.predictions) + len(out.validation.rejected) == 40
    assert len(out.validation.rejected) == 1
    p = out.predictions["response_probability"]
    assert p.between(0, 1).all() and p.nunique() > 5
    assert (out.predictions["predicted_response"] == (p >= 0.5)).all()
    # The registered name resolves to the same model.
    again = predict(
        f"models:/inflamrx-response/{result.registered_version}",
        load_config(None, {"data.path": str(path)}).data,
    )
    pd.testing.assert_frame_equal(again.predictions, out.predictions)


def test_cli_train_json_and_predict(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{workspace / 'cli.db'}")
    monkeypatch.chdir(workspace)
    runner = CliRunner()
    args = ["train", "--data", "synthetic.csv", "--json", "--experiment", "cli",
            "--set", "evaluation.n_bootstrap=100", "--set", "split.cv_repeats=1",
            "--set", "model.kind=logistic", "--set", "data.synthetic=true"]  # fmt: skip
    done = runner.invoke(app, args)
    assert done.exit_code == 0, done.output
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    # The default validation: every patient fitted on, figures by repeated cross-validation.
    assert summary["validation"] == "resample-cv"
    assert {"run_id", "model_uri", "auroc", "auroc_ci", "calibration_slope", "n_train"} <= set(
        summary
    )
    assert "n_test" not in summary and "test_auroc" not in summary  # there is no test set
    assert summary["n_train"] == 600
    assert summary["synthetic"] is True
    done = runner.invoke(
        app,
        ["predict", "--model", summary["model_uri"], "--data", "synthetic.csv", "--out", "p.csv"],
    )
    assert done.exit_code == 0, done.output
    scored = pd.read_csv(workspace / "p.csv")
    assert list(scored.columns) == ["patient_id", "response_probability", "predicted_response"]
    assert len(scored) == 600


def test_outcome_and_followup_columns_can_never_be_features() -> None:
    config = load_config(None, {"features.include": ["madrs_followup", "crp_mg_l"]})
    with pytest.raises(InputError, match=r"madrs_followup.*can never be features"):
        train(config)


def test_threshold_outcome_bans_its_scale_and_items() -> None:
    config = load_config(None, {"outcome.kind": "threshold", "outcome.column": "phq9_total",
                                "outcome.op": ">=", "outcome.value": 10})  # fmt: skip
    banned = never_features(config.outcome)
    assert {"phq9_total", "phq9_1", "phq9_9", "madrs_followup"} <= banned
    assert "crp_mg_l" not in banned


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({}, [1.0, 0.0, np.nan]),  # MADRS response: 30 -> 14 yes, 30 -> 20 no, missing
        ({"outcome.kind": "remission"}, [0.0, 0.0, np.nan]),  # MADRS <= 10
        (
            {
                "outcome.kind": "threshold",
                "outcome.column": "madrs_total",
                "outcome.op": ">=",
                "outcome.value": 30,
            },
            [1.0, 0.0, 1.0],
        ),
    ],
)
def test_outcome_definitions(overrides: dict[str, object], expected: list[float]) -> None:
    cohort = pd.DataFrame(
        {"madrs_total": [30.0, 29.0, 31.0], "madrs_followup": [14.0, 20.0, np.nan]}
    )
    y = derive_outcome(cohort, load_config(None, overrides).outcome)
    np.testing.assert_array_equal(y.to_numpy(), np.array(expected))


def test_failed_job_marks_the_run_failed(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    uri = f"sqlite:///{workspace / 'failed.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    import inflamrx.jobs.train as training

    def explode(*_args: object, **_kwargs: object) -> list[float]:
        raise RuntimeError("boom in the model comparison")

    monkeypatch.setattr(training, "choose_kind", explode)  # the default job's first fitting
    config = load_config(
        None, {"data.path": str(workspace / "synthetic.csv"), "tracking.experiment": "f"}
    )
    with pytest.raises(RuntimeError, match="boom"):
        train(config)
    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name("f")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FAILED"
    assert "boom in the model comparison" in run.data.tags["error"]


def test_artifacts_are_stored_beside_the_sqlite_database(
    trained: tuple[TrainResult, str], workspace: Path
) -> None:
    result, uri = trained
    artifact_uri = mlflow.MlflowClient(uri).get_run(result.run_id).info.artifact_uri
    assert artifact_uri.startswith((workspace / "artifacts").resolve().as_uri())
