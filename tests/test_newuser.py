"""The new-user path (issue 11, item 5) and per-patient SHAP privacy: what a user meets running
the CLI as written, against a real SQLite MLflow store, in real subprocesses."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import REPO, synthetic_workspace
from inflamrx.cli import app
from inflamrx.config import OutcomeConfig, load_config
from inflamrx.data.outcomes import OutcomeWords, outcome_label
from inflamrx.data.schema import COLUMNS
from inflamrx.modeling.assessment import baseline_table, reported_thresholds
from inflamrx.modeling.evaluate import evaluate_predictions
from inflamrx.modeling.metrics import Estimate, with_ci
from inflamrx.modeling.samplesize import riley_criteria
from inflamrx.reporting import figures
from inflamrx.tracking.registry import BELOW_MINIMUM_TAG, VersionCard
from inflamrx.tracking.store import use_store

CLI = str(Path(sys.executable).parent / "inflamrx")
QUICK = [
    "--set", "split.strategy=holdout", "--set", "model.kind=xgboost",
    "--set", "evaluation.n_bootstrap=100", "--set", "split.cv_repeats=1",
    "--set", "split.cv_folds=2", "--set", "model.n_estimators=40",
    "--set", "report.max_patients=100",
]  # fmt: skip
# Lines libraries print on their own: MLflow's log and registry messages, alembic migrations,
# tqdm progress bars, Python warnings.
NOISE = re.compile(
    r"^(INFO|WARNING|DEBUG)\b|\bmlflow\.|alembic|Successfully registered model|"
    r"Created version '|Downloading artifacts|it/s\]|\d+%\|[^|]*\||Warning:",
    re.M,
)


def _cli(args: list[str], cwd: Path, uri: str) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"MLFLOW_TRACKING_URI": uri, "COLUMNS": "200"}
    env.pop("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", None)  # the CLI must switch bars off itself
    return subprocess.run(
        [CLI, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900, check=False
    )


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic_workspace(tmp_path_factory, "newuser", n=400, seed=1)


@pytest.fixture(scope="module")
def uri(workspace: Path) -> str:
    return f"sqlite:///{workspace / 'mlflow.db'}"


@pytest.fixture(scope="module")
def trained(workspace: Path, uri: str) -> dict[str, Any]:
    """`inflamrx train` as a user runs it (a subprocess), on 400 SYNTHETIC patients."""
    done = _cli(["train", "--data", "synthetic.csv", *QUICK], workspace, uri)
    assert done.returncode == 0, done.stderr
    run = re.search(r"^run ([0-9a-f]{32})$", done.stdout, re.M)
    version = re.search(r"registered version (\d+)", done.stdout)
    assert run and version, done.stdout
    return {"done": done, "run_id": run[1], "version": version[1]}


def _artifact_hashes(client: mlflow.MlflowClient, run_id: str, tmp: Path) -> dict[str, str]:
    local = Path(client.download_artifacts(run_id, "", str(tmp)))
    return {
        str(p.relative_to(local)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(local.rglob("*"))
        if p.is_file()
    }


# --- 1. per-patient SHAP privacy, and explain's own run --------------------------------------


@pytest.mark.slow
def test_training_run_logs_shap_without_patient_ids(trained: dict[str, Any], uri: str) -> None:
    table = pd.read_parquet(
        mlflow.artifacts.download_artifacts(
            run_id=trained["run_id"], artifact_path="explanations/shap_values.parquet",
            tracking_uri=uri,
        )
    )  # fmt: skip
    assert "patient_id" not in table.columns  # main: the held-out patients' ids
    assert list(table.columns[:2]) == ["row", "report_patient"]
    assert table["report_patient"].dropna().tolist() != []  # the report's patients, by number
    page = Path(
        mlflow.artifacts.download_artifacts(
            run_id=trained["run_id"], artifact_path="explanations/report.html", tracking_uri=uri
        )
    ).read_text(encoding="utf-8")
    assert "SYN-" not in page and "holds no patient id" in page


def test_config_asks_for_patient_ids_explicitly() -> None:
    assert load_config().report.include_patient_ids is False
    assert load_config(None, {"report.include_patient_ids": True}).report.include_patient_ids


@pytest.mark.slow
def test_explain_logs_its_own_run_and_never_touches_the_training_run(
    trained: dict[str, Any], workspace: Path, uri: str, tmp_path: Path
) -> None:
    client = mlflow.MlflowClient(uri)
    before = _artifact_hashes(client, trained["run_id"], tmp_path / "before")
    args = ["explain", "--model", f"models:/inflamrx-response/{trained['version']}",
            "--data", "synthetic.csv", "--out", "explained", "--run-name", "explain by hand",
            "--set", "report.max_patients=100"]  # fmt: skip
    done = _cli(args, workspace, uri)
    assert done.returncode == 0, done.stderr
    assert not NOISE.search(done.stdout + done.stderr), done.stdout + done.stderr
    after = _artifact_hashes(client, trained["run_id"], tmp_path / "after")
    assert after == before  # main: explanations/ of the training run overwritten
    experiment = client.get_run(trained["run_id"]).info.experiment_id
    (run,) = client.search_runs([experiment], f"tags.explains_run = '{trained['run_id']}'")
    assert run.info.run_name == "explain by hand" and run.info.status == "FINISHED"
    assert run.data.tags["mlflow.parentRunId"] == trained["run_id"]
    assert f"logged to run {run.info.run_id}" in done.stdout.replace("\n", " ")
    logged = pd.read_parquet(
        client.download_artifacts(
            run.info.run_id, "explanations/shap_values.parquet", str(tmp_path)
        )
    )
    assert "patient_id" not in logged and len(logged) == 400
    local = pd.read_parquet(workspace / "explained" / "shap_values.parquet")
    assert local["patient_id"].str.startswith("SYN-").all()  # the user's own folder keeps ids


# --- 2. registered versions describe themselves; below-minimum ones are marked ---------------


@pytest.mark.slow
def test_registered_version_carries_a_description_and_tags(
    trained: dict[str, Any], uri: str
) -> None:
    client = mlflow.MlflowClient(uri)
    version = client.get_model_version("inflamrx-response", trained["version"])
    tags = version.tags
    assert tags["outcome"].startswith("response") and tags["synthetic_data"] == "true"
    assert tags["data_digest"] == client.get_run(trained["run_id"]).data.tags["data_digest"]
    assert re.fullmatch(r"0\.\d{3} \(0\.\d{3} to 0\.\d{3}\)", tags["auroc_ci"])
    assert tags["validation"].startswith("holdout (n=100, ")
    assert "AUROC" in version.description and "SYNTHETIC" in version.description


def _card(events: int, features: int, test_events: int, low: float) -> VersionCard:
    size = riley_criteria(events + 200, events, features, c_statistic=0.7)
    return VersionCard(
        "response", "abc", True, Estimate(0.7, low, 0.8, 100), "holdout", test_events, size,
    )  # fmt: skip


def test_minimum_checks() -> None:
    assert _card(120, 50, 40, 0.61).shortfalls() == []
    assert ["sample size" in r for r in _card(30, 50, 40, 0.61).shortfalls()] == [True]
    assert ["sample size" in r for r in _card(120, 50, 5, 0.61).shortfalls()] == [True]
    (chance,) = _card(120, 50, 40, 0.45).shortfalls()
    assert "does not exclude 0.5" in chance and "(0.450 to 0.800)" in chance
    card = _card(8, 50, 3, 0.2)
    assert BELOW_MINIMUM_TAG in card.tags() and card.description().startswith("BELOW MINIMUM")
    assert BELOW_MINIMUM_TAG not in _card(120, 50, 40, 0.61).tags()


@pytest.mark.slow
def test_a_small_cohort_is_registered_marked_and_promote_needs_force(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    root = synthetic_workspace(tmp_path_factory, "tiny", n=60, seed=2)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    done = _cli(["train", "--data", "synthetic.csv", *QUICK, "--set", "report.enabled=false",
                 "--json"], root, uri)  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    client = mlflow.MlflowClient(uri)
    version = client.get_model_version("inflamrx-response", summary["registered_version"])
    assert "sample size" in version.tags[BELOW_MINIMUM_TAG]  # main: no tag, no description
    assert version.description.startswith("BELOW MINIMUM")
    refused = _cli(["promote", "--run", summary["run_id"], "--alias", "champion"], root, uri)
    assert refused.returncode == 2 and "below the minimum" in refused.stderr
    assert "--force" in refused.stderr and "Traceback" not in refused.stderr
    with pytest.raises(mlflow.exceptions.MlflowException):
        client.get_model_version_by_alias("inflamrx-response", "champion")
    forced = _cli(["promote", "--run", summary["run_id"], "--alias", "champion", "--force"],
                  root, uri)  # fmt: skip
    assert forced.returncode == 0, forced.stderr
    assert "below the minimum" in forced.stdout
    champion = client.get_model_version_by_alias("inflamrx-response", "champion")
    assert str(champion.version) == str(summary["registered_version"])


# --- 3. the outcome's own words ---------------------------------------------------------------


def test_figures_and_report_use_the_outcomes_words() -> None:
    screen = OutcomeConfig(kind="threshold", column="phq9_total", op=">=", value=10)
    assert outcome_label(screen) == f"{COLUMNS['phq9_total'].label} >= 10"
    assert outcome_label(OutcomeConfig()) == "response"
    words = OutcomeWords.of(outcome_label(screen))
    rng = np.random.default_rng(0)
    y = rng.binomial(1, 0.3, 300)
    evaluation = evaluate_predictions(y, np.clip(0.3 + 0.2 * (y - 0.3) + rng.normal(0, 0.15, 300),
                                                 0.01, 0.99), n_boot=50)  # fmt: skip
    texts = []
    for make in (figures.roc_figure, figures.precision_recall_figure,
                 figures.calibration_figure, figures.decision_curve_figure):  # fmt: skip
        ax = make(evaluation, words=words).axes[0]
        texts += [ax.get_xlabel(), ax.get_ylabel(), *(t.get_text() for t in ax.texts)]
        legend = ax.get_legend()
        texts += [t.get_text() for t in legend.get_texts()] if legend else []
    joined = " ".join(texts)
    assert "PHQ-9 total >= 10" in joined
    assert "respon" not in joined.lower()  # main: "responders", "response rate"


# --- 4. thresholds follow the prevalence and never report nan ---------------------------------


def test_thresholds_follow_the_prevalence_and_never_report_nan() -> None:
    rng = np.random.default_rng(1)
    risk = rng.beta(1.2, 12, 2000)  # about 9% prevalence, as PHQ-9 >= 10 in NHANES
    y = rng.binomial(1, risk)
    assert 0.06 < y.mean() < 0.12
    train, test = slice(0, 1500), slice(1500, None)
    chosen = reported_thresholds(None, float(y[train].mean()), risk[train])
    assert chosen and max(chosen) < 0.3
    evaluation = evaluate_predictions(y[test], risk[test], thresholds=chosen, n_boot=50)
    model = evaluation.threshold_table.query("classifier_kind == 'model'")
    assert model[["sensitivity", "ppv"]].notna().all().all() and (model["sensitivity"] > 0).all()
    fixed = evaluate_predictions(y[test], risk[test], thresholds=(0.3, 0.5), n_boot=50)
    assert fixed.threshold_table.query("classifier_kind == 'model'")["ppv"].isna().any()  # main
    table = baseline_table(
        fixed,
        {k: fixed.metrics.auroc for k in ("crp_rule_auroc", "crp_alone_auroc", "crp_alone_auprc")},
    )
    assert "nan" not in table.to_string() and "not defined" in table.to_string()
    # Named in the config: used as they are.
    assert reported_thresholds([0.3, 0.5], 0.09, risk) == (0.3, 0.5)


@pytest.mark.slow
def test_training_reports_at_prevalence_thresholds_and_serves_at_the_configured_one(
    trained: dict[str, Any], uri: str
) -> None:
    run = mlflow.MlflowClient(uri).get_run(trained["run_id"])
    keys = [k for k in run.data.metrics if k.startswith("test_model_sensitivity_at_")]
    prevalence = run.data.metrics["test_prevalence"]
    at = sorted(float(k.rsplit("_at_", 1)[1].replace("_", ".")) for k in keys)
    assert at and abs(at[0] - prevalence) < 0.08 and "0.5" not in keys[0]
    from inflamrx.serving.batch import load_model

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        loaded = load_model(f"runs:/{trained['run_id']}/model")
    assert loaded.settings.threshold == load_config().serving.threshold


# --- 5. the Python API takes a DataFrame or a path --------------------------------------------


@pytest.mark.slow
def test_python_api_takes_a_dataframe_or_a_path(
    trained: dict[str, Any], workspace: Path, uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import inflamrx

    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(workspace)
    model = f"models:/inflamrx-response/{trained['version']}"
    frame = inflamrx.predict(model, pd.read_csv("synthetic.csv"))  # main: AttributeError
    path = inflamrx.predict(model, "synthetic.csv")
    assert len(frame.predictions) == 400
    np.testing.assert_allclose(
        frame.predictions["response_probability"], path.predictions["response_probability"]
    )
    with pytest.raises(inflamrx.InputError, match="DataFrame, a file path"):
        inflamrx.predict(model, 42)  # type: ignore[arg-type]


# --- 6-8. quiet CLI, CIs with "to", run names ---------------------------------------------------


@pytest.mark.slow
def test_cli_train_prints_no_library_noise_and_cis_with_to(trained: dict[str, Any]) -> None:
    done = trained["done"]
    assert not NOISE.search(done.stdout + done.stderr), done.stderr  # main: MLflow's lines
    assert re.search(r"AUROC\s*│\s*0\.\d{3} \(\d\.\d{3} to \d\.\d{3}\)", done.stdout)
    assert not re.search(r"\d\.\d{3}-\d\.\d{3}", done.stdout)  # main: "(-0.558-0.375)"


def test_one_ci_format() -> None:
    assert with_ci(-0.02, -0.21, 0.19, 2) == "-0.02 (-0.21 to 0.19)"
    assert with_ci(0.71, 0.65, 0.77, 2, "95% CI") == "0.71 (95% CI 0.65 to 0.77)"
    assert with_ci(float("nan"), float("nan"), float("nan")) == "not defined"


@pytest.mark.slow
def test_runs_have_names_that_tell_them_apart(
    trained: dict[str, Any], workspace: Path, uri: str
) -> None:
    name = mlflow.MlflowClient(uri).get_run(trained["run_id"]).info.run_name
    assert name == "train xgboost | response | synthetic (SYNTHETIC) | n=400"  # main: train-xgboost
    runner = CliRunner()
    help_text = {c: runner.invoke(app, [c, "--help"]).output for c in ("train", "tune", "explain")}
    assert all("--run-name" in t for t in help_text.values())


# --- 9-10. the contract shipped with the package; the README as written -------------------------


def test_schema_command_prints_the_shipped_contract() -> None:
    runner = CliRunner()
    done = runner.invoke(app, ["schema", "--json"])
    assert done.exit_code == 0
    rows = {r["name"]: r for r in json.loads(done.output)["columns"]}
    assert rows.keys() == COLUMNS.keys()
    crp = rows["crp_mg_l"]
    assert crp["unit"] == "mg/L" and crp["minimum"] == COLUMNS["crp_mg_l"].minimum
    assert rows["age"]["required"] and rows["madrs_followup"]["role"] == "outcome"
    text = runner.invoke(app, ["schema"], env={"COLUMNS": "200"}).output
    assert "crp_mg_l" in text and "mg/L" in text


def test_readme_points_to_the_shipped_contract_and_the_store() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "../shared/cohort-schema.md" not in readme  # not in a clone
    assert "inflamrx schema" in readme
    assert "mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db" in readme
    assert "--default-artifact-root" in readme or "artifacts" in readme
    # Every command line in a sh block starts the venv's tool (or make, curl...), never a
    # bare `inflamrx`/`mlflow` that is only found with the venv on PATH.
    blocks = re.findall(r"```sh\n(.*?)```", readme, flags=re.S)
    lines = [ln.strip() for b in blocks for ln in b.splitlines() if ln.strip()]
    bare = [ln for ln in lines if re.match(r"(inflamrx|mlflow|python|pytest)\b", ln)]
    assert bare == [], bare


def test_report_uses_the_outcomes_words(tmp_path: Path) -> None:
    from inflamrx.data.outcomes import derive_outcome
    from inflamrx.data.simulate import simulate_cohort
    from inflamrx.data.validate import validate_frame
    from inflamrx.modeling.explanations import explain_rows
    from inflamrx.modeling.features import model_input_columns
    from inflamrx.modeling.kinds.base import fit_model
    from inflamrx.reporting.html import NO_VALIDATION, ReportContext, write_report

    overrides = {"outcome.kind": "threshold", "outcome.column": "phq9_total",
                 "outcome.op": ">=", "outcome.value": 10, "model.n_estimators": 20}  # fmt: skip
    config = load_config(None, overrides)
    cohort = validate_frame(simulate_cohort(300, seed=3).cohort, config.data).accepted
    y = derive_outcome(cohort, config.outcome)
    cohort, y = cohort[y.notna()].reset_index(drop=True), y.dropna().reset_index(drop=True)
    x = cohort[model_input_columns(list(cohort.columns), config.outcome)]
    explanation = explain_rows(fit_model(config, x, y.astype(int)), x, cohort["patient_id"])
    label = outcome_label(config.outcome)
    context = ReportContext("models:/m-test", "phq9_total >= 10", True, NO_VALIDATION, cohort, 0,
                            "test patients", outcome_label=label)  # fmt: skip
    page = write_report(explanation, context, load_config().report, tmp_path).report.read_text()
    shown = label.replace(">", "&gt;")  # as html.escape writes it
    assert f"predicted {shown}" in page and f"Predicted probability of {shown}" in page
    assert "respon" not in page.lower()  # main: "what drives predicted response"


def test_pointing_mlflow_at_the_store_leaves_no_registry_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A registry URI set globally by one command (predict, explain, export...) made a later
    client of another store read the first store's registry (seen: tests and API users got
    another run's model version)."""
    first, second = (f"sqlite:///{tmp_path / name}" for name in ("first.db", "second.db"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", first)
    try:
        assert use_store() == first
        mlflow.MlflowClient(second).create_registered_model("only-in-second")
        names = {m.name for m in mlflow.MlflowClient(first).search_registered_models()}
        assert "only-in-second" not in names
    finally:
        mlflow.set_tracking_uri(None)  # type: ignore[arg-type]  # back to the environment's
