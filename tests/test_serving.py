"""Serving end to end: train -> log the pyfunc -> export -> real `mlflow models serve` processes
-> real HTTP clients. One trained model and one server per module keep this file short."""

from __future__ import annotations

import csv
import fractions
import json
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
import requests
import skops.io
from mlflow.types import DataType, Schema
from sklearn.pipeline import Pipeline
from typer.testing import CliRunner

from conftest import (
    BIN,
    free_port,
    mlflow_served,
    quick_training,
    start_server,
    stop_server,
    synthetic_workspace,
    tracking_in,
)
from inflamrx.cli import app
from inflamrx.config import DataConfig, load_config
from inflamrx.data.schema import OUTCOME_COLUMNS
from inflamrx.data.simulate import simulate_cohort
from inflamrx.data.validate import validate_frame
from inflamrx.errors import InputError
from inflamrx.jobs.train import TrainResult, train
from inflamrx.modeling.safe_io import UntrustedArtifactError, load_trusted
from inflamrx.serving.batch import load_model, predict, predict_file
from inflamrx.serving.deploy import export, promote
from inflamrx.serving.pyfunc import MAX_ROWS

pytestmark = pytest.mark.slow

NAME = "inflamrx-response"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A folder with a synthetic cohort and its own SQLite MLflow, for the whole module."""
    root = synthetic_workspace(tmp_path_factory, "serve", n=600, seed=3)
    with tracking_in(root):
        yield root


@pytest.fixture(scope="module")
def trained(workspace: Path) -> TrainResult:
    return train(load_config(None, quick_training(workspace, "serve") | {"report.enabled": False}))


@pytest.fixture(scope="module")
def exported(trained: TrainResult, workspace: Path) -> Path:
    return export(f"models:/{NAME}/{trained.registered_version}", workspace / "models" / "m")


@pytest.fixture(scope="module")
def server(exported: Path, workspace: Path) -> Iterator[str]:
    with mlflow_served(exported, workspace / "server.log") as url:
        yield url


@pytest.fixture(scope="module")
def new_patients(workspace: Path) -> tuple[Path, list[dict[str, Any]]]:
    """New patients as a CSV (for `inflamrx predict`) and as JSON records for the server.

    The records carry the contract's parsed values: a typed service sends numbers, so a CRP
    written '<0.15' goes as its LOD/sqrt(2) value with crp_mg_l_below_lod = true."""
    cohort = simulate_cohort(40, seed=99).cohort
    path = workspace / "new.csv"
    cohort.to_csv(path, index=False)
    accepted = validate_frame(cohort).accepted
    accepted = accepted.drop(columns=[c for c in accepted if c in OUTCOME_COLUMNS])
    return path, json.loads(accepted.to_json(orient="records"))


def _post(url: str, body: Any, **kwargs: Any) -> requests.Response:
    return requests.post(url, json=body, timeout=60, **kwargs)


# --- the logged model -------------------------------------------------------------------------


def test_signature_types_optional_columns_params_and_example(
    trained: TrainResult, exported: Path
) -> None:
    info = mlflow.models.get_model_info(trained.model_uri)
    assert info.signature.inputs is None  # the data contract checks the input (pyfunc.py)
    inputs = Schema.from_json(json.dumps(info.metadata["input_columns"]))  # documented there
    assert set(inputs.required_input_names()) == {"age", "sex", "crp_mg_l"}
    types = {c.name: c.type for c in inputs.inputs}
    assert types["crp_mg_l"] == types["n_failed_antidepressants"] == DataType.double
    assert types["sex"] == types["patient_id"] == DataType.string
    assert not set(types) & OUTCOME_COLUMNS  # follow-up and outcome are never inputs
    (param,) = info.signature.params.params
    assert (param.name, param.default) == ("top_factors", 3)
    assert load_model(trained.model_uri).settings.threshold == 0.5
    example = (exported / "input_example.json").read_text()
    assert "ILLUSTRATIVE-1" in example and "SYN-" not in example  # an invented patient


def test_artifacts_are_not_pickles_and_load_as_the_fitted_pipeline(
    trained: TrainResult, exported: Path
) -> None:
    files = {p.name for p in exported.rglob("*") if p.is_file()}
    assert {"booster.ubj", "features.skops", "serving.json", "MLmodel"} <= files
    assert not [f for f in files if f.endswith((".pkl", ".pickle", ".joblib"))]
    loaded = load_model(trained.model_uri)
    pipeline = loaded.model.pipeline
    assert isinstance(pipeline, Pipeline) and list(pipeline.named_steps) == ["features", "model"]
    assert loaded.settings.top_factors == 3


def test_an_artifact_holding_an_untrusted_type_is_refused(exported: Path, tmp_path: Path) -> None:
    tampered = tmp_path / "tampered"
    shutil.copytree(exported, tampered)
    features = next(tampered.rglob("features.skops"))
    skops.io.dump({"weights": fractions.Fraction(1, 3)}, features)  # a type outside the list
    with pytest.raises(
        UntrustedArtifactError, match=r"not trusted for loading.*fractions\.Fraction"
    ):
        load_trusted(features)
    # The manifest check comes first: the changed file is named before skops reads it.
    with pytest.raises(InputError, match=r"model file artifacts/model/features\.skops was changed"):
        load_model(str(tampered))


# --- over HTTP ----------------------------------------------------------------------------


def test_split_and_records_bodies_match_inflamrx_predict(
    server: str, new_patients: tuple[Path, list[dict[str, Any]]], trained: TrainResult
) -> None:
    path, records = new_patients
    done = CliRunner().invoke(
        app, ["predict", "--model", trained.model_uri, "--data", str(path), "--out", "p.csv"]
    )
    assert done.exit_code == 0, done.output
    expected = pd.read_csv("p.csv")
    frame = pd.DataFrame(records)
    split = json.loads(frame.to_json(orient="split", index=False))
    for body in ({"dataframe_records": records}, {"dataframe_split": split}):
        answer = _post(server, body)
        assert answer.status_code == 200, answer.text
        got = pd.DataFrame(answer.json()["predictions"])
        np.testing.assert_allclose(
            got["response_probability"], expected["response_probability"], atol=1e-6
        )
        assert (got["predicted_response"] == expected["predicted_response"]).all()
        factors = got["top_factors"].iloc[0]
        assert len(factors) == 3
        assert set(factors[0]) == {"feature", "value", "direction", "log_odds", "points", "text"}


def test_top_factors_follow_the_request_params(
    server: str, new_patients: tuple[Path, list[dict[str, Any]]]
) -> None:
    records = new_patients[1][:2]
    off = _post(server, {"dataframe_records": records, "params": {"top_factors": 0}})
    assert off.status_code == 200, off.text
    assert [p["top_factors"] for p in off.json()["predictions"]] == [[], []]
    five = _post(server, {"dataframe_records": records, "params": {"top_factors": 5}})
    assert [len(p["top_factors"]) for p in five.json()["predictions"]] == [5, 5]


def test_predict_of_a_csv_file_in_chunks_writes_what_the_whole_table_gives(
    trained: TrainResult, tmp_path: Path
) -> None:
    cohort = simulate_cohort(60, seed=98).cohort.astype("str").fillna("")
    cohort.loc[3, "crp_mg_l"] = "high"
    cohort.loc[50, "patient_id"] = cohort.loc[2, "patient_id"]  # repeated in another chunk
    path = tmp_path / "new.csv"
    cohort.to_csv(path, index=False)
    whole = predict(trained.model_uri, str(path))
    whole.predictions.to_csv(tmp_path / "whole.csv", index=False, quoting=csv.QUOTE_ALL)
    whole.validation.rejected.to_csv(tmp_path / "whole-r.csv", index=False, quoting=csv.QUOTE_ALL)
    out, rejected = tmp_path / "p.csv", tmp_path / "r.csv"
    streamed = predict_file(trained.model_uri, DataConfig(path=str(path)), out, rejected, 7)
    assert out.read_bytes() == (tmp_path / "whole.csv").read_bytes()
    assert rejected.read_bytes() == (tmp_path / "whole-r.csv").read_bytes()
    assert streamed.n_scored == len(whole.predictions) == 57
    assert streamed.validation.rows_in == 60
    assert streamed.warnings == whole.warnings
    assert streamed.threshold == whole.threshold


def test_an_unusual_but_valid_value_is_scored_with_a_warning(
    server: str, new_patients: tuple[Path, list[dict[str, Any]]]
) -> None:
    record = new_patients[1][0] | {"crp_mg_l": 80.0}
    answer = _post(server, {"dataframe_records": [record]})
    assert answer.status_code == 200, answer.text
    (prediction,) = answer.json()["predictions"]
    assert 0 <= prediction["response_probability"] <= 1
    assert any("CRP above 10 mg/L" in w for w in prediction["warnings"])


def _without(record: dict[str, Any], column: str) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != column}


JSON = {"Content-Type": "application/json"}
# A value is quoted back only when it is a bounded number (never text: it may be patient data).
BAD_RECORDS = [
    ("missing required column", lambda r: _without(r, "crp_mg_l"), ["crp_mg_l", "missing"]),
    ("non-numeric marker", lambda r: r | {"il6_pg_ml": "high"}, ["row 2: il6_pg_ml: not a number", "not shown"]),
    ("negative CRP", lambda r: r | {"crp_mg_l": -2.0}, ["row 2: crp_mg_l = '-2'", "cannot be negative"]),
    ("MADRS 75", lambda r: r | {"madrs_total": 75}, ["row 2: madrs_total = '75'", "between 0 and 60"]),
    ("unknown sex", lambda r: r | {"sex": "X"}, ["row 2: sex: sex must be one of F, M", "not shown"]),
    ("not yes/no", lambda r: r | {"autoimmune_disease": "maybe"}, ["row 2: autoimmune_disease", "not shown"]),
]  # fmt: skip


@pytest.mark.parametrize(("case", "change", "words"), BAD_RECORDS, ids=[c[0] for c in BAD_RECORDS])
def test_a_bad_record_is_a_400_naming_column_value_and_rule(
    server: str,
    new_patients: tuple[Path, list[dict[str, Any]]],
    case: str,
    change: Any,
    words: list[str],
) -> None:
    good = new_patients[1][0]
    bad = change(good | {"patient_id": "BAD-1"})  # a unique id: only the change is wrong
    answer = _post(server, {"dataframe_records": [good, bad]})
    assert answer.status_code == 400, answer.text
    assert "Traceback" not in answer.text and "stack_trace" not in answer.json()
    message = answer.json()["message"]
    for word in words:
        assert word in message
    assert "BAD-1" not in message.split("\nError: ")[-1]  # the model's part never quotes an id
    if case != "missing required column":  # a table-wide refusal, not a row's
        assert "1 of 2 records" in message


@pytest.mark.parametrize(
    ("case", "body", "words"),
    [
        ("empty body", b"", ["valid JSON"]),
        ("invalid JSON", b'{"dataframe_records": [{"age": 4', ["valid JSON"]),
        ("no records", b'{"dataframe_records": []}', ["no patient record"]),
        ("top_factors 99", None, ["top_factors", "between 0 and 20"]),
        ("10 MB body", None, [f"at most {MAX_ROWS}"]),
    ],
)
def test_a_bad_request_is_a_4xx_never_a_500_and_the_server_keeps_serving(
    server: str,
    new_patients: tuple[Path, list[dict[str, Any]]],
    case: str,
    body: bytes | None,
    words: list[str],
) -> None:
    record = new_patients[1][0]
    if case == "top_factors 99":
        body = json.dumps({"dataframe_records": [record], "params": {"top_factors": 99}}).encode()
    elif case == "10 MB body":
        body = json.dumps({"dataframe_records": [record] * 14_000}).encode()
        assert len(body) > 10_000_000
    answer = requests.post(server, data=body, headers=JSON, timeout=120)
    assert answer.status_code in (400, 413, 422), answer.text[:500]
    assert "Traceback" not in answer.text
    for word in words:
        assert word in answer.text
    assert _post(server, {"dataframe_records": [record]}).status_code == 200


def test_eight_concurrent_clients_send_500_requests_without_error(
    server: str, new_patients: tuple[Path, list[dict[str, Any]]]
) -> None:
    records = new_patients[1]

    def one(i: int) -> tuple[int, int]:
        body: dict[str, Any] = {"dataframe_records": [records[i % len(records)]]}
        if i % 2:  # half without explanations: both paths under load, and a shorter test
            body["params"] = {"top_factors": 0}
        answer = requests.post(server, json=body, timeout=60)
        return answer.status_code, len(answer.json()["predictions"])

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(one, range(500)))
    assert results == [(200, 1)] * 500


# --- CLI: export, promote, serve ----------------------------------------------------------


def test_export_refuses_a_folder_in_use_and_an_unknown_model(exported: Path) -> None:
    runner = CliRunner()
    done = runner.invoke(app, ["export", "--model", f"models:/{NAME}/1", "--out", str(exported)])
    assert done.exit_code == 2 and "not empty" in done.output
    done = runner.invoke(app, ["export", "--model", "models:/no-such-model/1", "--out", "x"])
    assert done.exit_code == 2 and "cannot find the model" in done.output


def test_promote_then_inflamrx_serve_answers_models_alias(
    trained: TrainResult, workspace: Path, new_patients: tuple[Path, list[dict[str, Any]]]
) -> None:
    with pytest.raises(InputError, match="no model version"):
        promote("0" * 32, "champion")
    done = CliRunner().invoke(app, ["promote", "--run", trained.run_id, "--alias", "champion"])
    assert done.exit_code == 0, done.output
    assert f"models:/{NAME}@champion -> version {trained.registered_version}" in done.output
    port = free_port()
    command = [
        str(Path(BIN) / "inflamrx"), "serve", "--model", f"models:/{NAME}@champion",
        "--port", str(port),
    ]  # fmt: skip
    proc, url = start_server(command, port, workspace / "cli-server.log")
    try:
        answer = _post(url + "/invocations", {"dataframe_records": new_patients[1][:3]})
        assert answer.status_code == 200, answer.text
        assert len(answer.json()["predictions"]) == 3
    finally:
        stop_server(proc)
