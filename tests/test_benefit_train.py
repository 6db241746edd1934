"""Two-arm training end to end: `inflamrx train --json` with a treatment section, the MLflow
run and registered model, `inflamrx predict`, a real `mlflow models serve` request, and a
30-patient trial that gets an honest answer."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
import requests
from scipy.special import logit
from typer.testing import CliRunner

from conftest import mlflow_served, tracking_in
from inflamrx.cli import app
from inflamrx.data.schema import OUTCOME_COLUMNS
from inflamrx.data.simulate import simulate_cohort, write_cohort
from inflamrx.data.validate import validate_frame
from inflamrx.serving.benefit import CAVEAT
from inflamrx.serving.deploy import export

pytestmark = pytest.mark.slow

NAME = "inflamrx-benefit"
QUICK = [
    "--set", "evaluation.n_bootstrap=100", "--set", "model.n_estimators=40",
    "--set", "treatment.crossfit_folds=3", "--set", f"registry.name={NAME}",
    "--set", "data.synthetic=true",
]  # fmt: skip
BENEFIT_COLUMNS = [
    "response_probability_treated",
    "response_probability_control",
    "predicted_benefit",
    "recommend_treatment",
    "recommendation",
]


def _train(data: Path, *extra: str) -> dict[str, Any]:
    args = ["train", "--data", str(data), "--json", "--set", "treatment.column=arm", *QUICK]
    done = CliRunner().invoke(app, [*args, *extra])
    assert done.exit_code == 0, done.output
    summary: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return summary


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("benefit")
    write_cohort(simulate_cohort(400, seed=21, two_arm=True), root / "trial.csv")
    write_cohort(simulate_cohort(30, seed=22, two_arm=True), root / "pilot.csv")
    write_cohort(simulate_cohort(25, seed=23, two_arm=True), root / "new.csv")
    with tracking_in(root):
        yield root


@pytest.fixture(scope="module")
def trained(workspace: Path) -> dict[str, Any]:
    # 200 per arm: every learner is a candidate.
    return _train(workspace / "trial.csv", "--set", "treatment.min_per_arm_for_learners=150")


def test_train_json_reports_c_for_benefit_with_its_ci_and_the_choice(
    trained: dict[str, Any],
) -> None:
    assert 0 <= trained["c_for_benefit"] <= 1
    low, high = trained["c_for_benefit_ci"]
    assert low <= trained["c_for_benefit"] <= high
    assert set(trained["candidates_c_for_benefit"]) == {
        "interaction", "risk", "t_learner", "x_learner", "dr_learner",
    }  # fmt: skip
    assert trained["benefit_learner"] in trained["candidates_c_for_benefit"]
    assert "highest cross-fitted C-for-benefit" in trained["selection_rule"]
    assert trained["validation"] == "cross-fitted on all 400 patients"
    assert (trained["n_treated"], trained["n_control"], trained["trust"]) == (200, 200, "ok")
    assert trained["synthetic"] is True and trained["registered_version"] == "1"


def test_the_run_holds_metrics_with_cis_the_rule_and_a_plot(trained: dict[str, Any]) -> None:
    run = mlflow.get_run(trained["run_id"])
    metrics = run.data.metrics
    assert {"c_for_benefit", "c_for_benefit_ci_low", "c_for_benefit_ci_high"} <= set(metrics)
    assert "candidate_dr_learner_c_for_benefit" in metrics
    assert run.data.tags["benefit_selection_rule"].startswith("the learner with the highest")
    assert run.data.tags["benefit_trust"] == "ok"
    files = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "benefit")}
    assert {
        "benefit/benefit_vs_crp.png", "benefit/calibration_for_benefit.png",
        "benefit/benefit_summary.json", "benefit/report.html",
    } <= files  # fmt: skip
    page = mlflow.artifacts.load_text(f"{run.info.artifact_uri}/benefit/report.html")
    assert 'id="benefit"' in page and "SYNTHETIC cohort" in page and "SYN-" not in page
    assert trained["report_uri"].endswith("benefit/report.html")
    summary = mlflow.artifacts.load_text(f"{run.info.artifact_uri}/benefit/benefit_summary.json")
    assert "SYN-" not in summary  # counts only: no patient identifier in the run


def test_predict_writes_both_arms_the_benefit_and_the_recommendation(
    trained: dict[str, Any], workspace: Path
) -> None:
    out = workspace / "predictions.csv"
    done = CliRunner().invoke(
        app,
        ["predict", "--model", trained["model_uri"], "--data", str(workspace / "new.csv"),
         "--out", str(out)],
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    written = pd.read_csv(out)
    assert list(written.columns) == ["patient_id", *BENEFIT_COLUMNS, "top_factors"]
    assert len(written) == 25
    gap = written["response_probability_treated"] - written["response_probability_control"]
    assert (gap - written["predicted_benefit"]).abs().max() < 1e-5
    assert written["recommendation"].str.contains(CAVEAT).all()
    assert ((written["predicted_benefit"] > 0.05) == written["recommend_treatment"]).all()


def test_explain_of_a_benefit_model_explains_the_benefit_in_its_own_run(
    trained: dict[str, Any], workspace: Path
) -> None:
    client = mlflow.MlflowClient()
    training = trained["run_id"]
    before = {a.path for a in client.list_artifacts(training, "benefit")}
    out = workspace / "explained"
    done = CliRunner().invoke(
        app,
        ["explain", "--model", trained["model_uri"], "--data", str(workspace / "new.csv"),
         "--out", str(out)],
    )  # fmt: skip
    assert done.exit_code == 0, done.output  # before: refused (exit 2)
    assert "explained 25" in done.output and "Traceback" not in done.output
    table = pd.read_parquet(out / "shap_values.parquet")
    scale = trained["benefit_explanation_scale"]
    assert set(table["scale"]) == {scale}
    features = list(table.columns[list(table.columns).index("base_value") + 1 :])
    total = (table["base_value"] + table[features].sum(axis=1)).to_numpy()
    treated, control = table["response_probability_treated"], table["response_probability_control"]
    if scale == "log odds ratio":
        expected = (logit(treated) - logit(control)).to_numpy()
    else:  # the risk difference, where no probability was clipped into [0, 1]
        inside = ((treated > 0) & (treated < 1)).to_numpy()
        total, expected = total[inside], table["predicted_benefit"].to_numpy()[inside]
    np.testing.assert_allclose(total, expected, atol=1e-4)
    page = (out / "report.html").read_text(encoding="utf-8")
    assert f"{scale} (drug vs placebo)" in page and "SYN-" not in page
    assert "C-for-benefit (model)" in page  # the training run's validation
    assert 'id="img-calibration-for-benefit"' in page

    (run,) = mlflow.search_runs(
        search_all_experiments=True,
        filter_string=f"tags.explains_run = '{training}'",
        output_format="list",
    )
    assert run.data.tags["mlflow.parentRunId"] == training
    logged = {a.path for a in client.list_artifacts(run.info.run_id, "explanations")}
    assert {"explanations/report.html", "explanations/shap_values.parquet"} <= logged
    path = client.download_artifacts(
        run.info.run_id, "explanations/shap_values.parquet", str(workspace)
    )
    assert "patient_id" not in pd.read_parquet(path).columns  # report.include_patient_ids off
    assert {a.path for a in client.list_artifacts(training, "benefit")} == before


@pytest.fixture(scope="module")
def server(trained: dict[str, Any], workspace: Path) -> Iterator[str]:
    folder = export(trained["model_uri"], workspace / "exported")
    with mlflow_served(folder, workspace / "server.log") as url:
        yield url


def test_a_served_request_returns_both_arms_the_benefit_and_its_factors(
    server: str, trained: dict[str, Any], workspace: Path
) -> None:
    cohort = validate_frame(pd.read_csv(workspace / "new.csv")).accepted
    records = json.loads(
        cohort.drop(columns=[c for c in cohort if c in OUTCOME_COLUMNS] + ["arm"])
        .head(5)
        .to_json(orient="records")
    )  # the arm is not sent: a served patient gets both arms
    answer = requests.post(server, json={"dataframe_records": records}, timeout=60)
    assert answer.status_code == 200, answer.text
    got = pd.DataFrame(answer.json()["predictions"])
    assert set(BENEFIT_COLUMNS) | {"top_factors", "warnings"} <= set(got.columns)
    assert got["recommendation"].str.contains(CAVEAT).all()
    factor = got["top_factors"].iloc[0][0]
    assert set(factor) == {"feature", "value", "direction", "contribution", "scale", "text"}
    assert factor["scale"] == trained["benefit_explanation_scale"]
    assert factor["direction"].endswith("the benefit")
    # The same patients through `inflamrx predict` give the same benefit.
    predicted = pd.read_csv(workspace / "predictions.csv").head(5)
    assert (got["predicted_benefit"] - predicted["predicted_benefit"]).abs().max() < 1e-6


def test_a_30_patient_trial_gets_an_honest_answer_not_a_crash(workspace: Path) -> None:
    summary = _train(workspace / "pilot.csv")
    assert summary["benefit_learner"] == "interaction"  # the only model 15 per arm support
    assert summary["trust"] == "limited"
    assert summary["candidates_c_for_benefit"] == {}
    text = " ".join(summary["warnings"])
    assert "small trial: 15 patients in the smaller arm" in text
    assert "registered but marked benefit_trust=limited" in text
    low, high = summary["c_for_benefit_ci"]
    if low is not None:
        assert high - low > 0.2  # wide, as 30 patients allow
    version = mlflow.MlflowClient().get_model_version(NAME, summary["registered_version"])
    assert version.tags["benefit_trust"] == "limited"
    assert version.description.startswith("LIMITED TRUST: two-arm benefit model (interaction)")


def test_tune_chooses_among_benefit_models_by_c_for_benefit_not_auroc(
    trained: dict[str, Any], workspace: Path
) -> None:
    args = ["tune", "--data", str(workspace / "trial.csv"), "--json", "--trials", "3",
            "--set", "treatment.column=arm", "--set", "treatment.min_per_arm_for_learners=150",
            "--set", "report.enabled=false", "--set", "tuning.nested_folds=2",
            "--set", "tuning.nested_trials=1", *QUICK]  # fmt: skip
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    search = summary["tuning"]
    assert search["metric"] == "cross-fitted C-for-benefit" and search["trials"] == 3
    assert search["best_params"]["learner"] == summary["benefit_learner"]
    assert "test_auroc" not in summary and summary["c_for_benefit"] is not None
    assert any("optimistic" in w for w in summary["warnings"])
    assert summary["study"].startswith("inflamrx-benefit-")  # the default study name
    low, high = summary["nested_c_for_benefit_ci"]  # the honest estimate beside it
    assert low <= summary["nested_c_for_benefit"] <= high
    tags = mlflow.get_run(summary["run_id"]).data.tags
    assert tags["job"] == "tune-benefit" and "best_params" in tags["benefit_tuning"]
