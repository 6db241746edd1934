"""The third model kind, added through the fitted-model protocol alone (its module
inflamrx/modeling/kinds/histgb.py and its config class): it trains, tunes, is served with top
factors by a real `inflamrx serve`, and appears in the report. SYNTHETIC cohorts.

Its trees (skops' TreePredictor, a type skops leaves untrusted) load only from files checked
against the model's SHA-256 manifest: `inflamrx serve`/`predict`, not plain MLflow."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
import requests

from conftest import (
    BIN,
    free_port,
    quick_training,
    start_server,
    stop_server,
    synthetic_workspace,
    tracking_in,
)
from inflamrx.config import load_config
from inflamrx.data.simulate import simulate_cohort
from inflamrx.data.validate import validate_frame
from inflamrx.jobs.train import TrainResult, train
from inflamrx.jobs.tune.job import tune
from inflamrx.jobs.tune.storage import TuneOptions
from inflamrx.modeling.kinds.base import kind_of
from inflamrx.serving.batch import load_model
from inflamrx.serving.deploy import export
from inflamrx.serving.integrity import verified_config, verify_model

pytestmark = pytest.mark.slow


def _histgb(root: Path, experiment: str) -> dict[str, Any]:
    quick = {k: v for k, v in quick_training(root, experiment).items() if k != "model.n_estimators"}
    return quick | {"model.kind": "histgb", "model.max_iter": 60}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = synthetic_workspace(tmp_path_factory, "histgb", n=600, seed=11)
    with tracking_in(root):
        yield root


@pytest.fixture(scope="module")
def trained(workspace: Path) -> TrainResult:
    return train(load_config(None, _histgb(workspace, "histgb")))


def test_histgb_trains_registers_and_logs_only_its_own_parameters(trained: TrainResult) -> None:
    assert trained.registered_version is not None
    assert 0.5 < trained.test_auroc < 0.9  # a realistic model, not leakage
    params = mlflow.get_run(trained.run_id).data.params
    assert params["model.kind"] == "histgb" and params["model.max_iter"] == "60"
    assert "model.n_estimators" not in params and "model.C" not in params
    loaded = load_model(trained.model_uri)
    assert loaded.model.kind.name == "histgb"
    files = Path(mlflow.artifacts.download_artifacts(trained.model_uri)).rglob("*")
    assert not [f for f in files if f.suffix in (".pkl", ".pickle", ".joblib")]


def test_histgb_appears_in_the_report_with_its_interactions(trained: TrainResult) -> None:
    path = mlflow.artifacts.download_artifacts(
        run_id=trained.run_id, artifact_path="explanations/report.html"
    )
    page = Path(path).read_text(encoding="utf-8")
    assert kind_of("histgb").label in page
    assert 'id="interactions"' in page and "no interactions by construction" not in page


def test_histgb_is_served_with_top_factors_that_add_up(
    trained: TrainResult, workspace: Path, tmp_path: Path
) -> None:
    folder = export(trained.model_uri, workspace / "exported")
    columns = ["age", "sex", "crp_mg_l", "il6_pg_ml", "bmi"]
    # Typed as a service sends them (the contract's parsed values; age as a double).
    records = validate_frame(simulate_cohort(5, seed=12).cohort).accepted[columns]
    body = {"dataframe_records": records.to_dict(orient="records")}
    port = free_port()
    command = [str(Path(BIN) / "inflamrx"), "serve", "--model", str(folder), "--port", str(port)]
    proc, url = start_server(command, port, workspace / "server.log")
    try:
        answer = requests.post(url + "/invocations", json=body, timeout=60)
    finally:
        stop_server(proc)
    assert answer.status_code == 200, answer.text
    rows = answer.json()["predictions"]
    assert len(rows) == 5 and all(len(r["top_factors"]) == 3 for r in rows)
    with pytest.raises(Exception, match=r"TreePredictor only once the model's files match"):
        mlflow.pyfunc.load_model(str(folder))  # not verified: the trees are not trusted
    verified = verify_model(str(folder), tmp_path)
    in_process = mlflow.pyfunc.load_model(
        str(verified), model_config=verified_config(verified)
    ).predict(pd.DataFrame(body["dataframe_records"]))
    np.testing.assert_allclose(
        [r["response_probability"] for r in rows], in_process["response_probability"], atol=1e-6
    )


def test_histgb_tunes_with_early_stopping_and_refits_the_rounds_kept(workspace: Path) -> None:
    space = {
        "max_iter": {"low": 20, "high": 80, "integer": True},
        "learning_rate": {"low": 0.03, "high": 0.3, "log": True},
    }
    config = load_config(
        None,
        _histgb(workspace, "histgb-tune")
        | {
            "tuning.space": space,
            "tuning.cv_folds": 3,
            "tuning.nested_folds": 2,
            "tuning.nested_trials": 2,
            "report.enabled": False,
        },
    )
    result = tune(config, TuneOptions(trials=4, study="histgb-tune"))
    assert result.counts.complete >= 1 and result.train is not None
    assert set(result.best_params) <= set(space)
    assert result.n_estimators_refit is not None and result.n_estimators_refit >= 1
    params = mlflow.get_run(result.train.run_id).data.params
    assert params["model.max_iter"] == str(result.n_estimators_refit)  # refit keeps the rounds
