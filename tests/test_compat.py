"""What release 0.1.0 left behind keeps working: models it exported (their files name the
module paths before the layered tree and hold the old four-artifact layout) load, predict,
explain and serve with the same answers; the studies it started keep their default names.

The fixtures were made by 0.1.0 (commit f2e8ba1): tests/fixtures/models-0.1.0.tar.gz holds an
exported XGBoost and a logistic model (SYNTHETIC training data) and expected.json their
pyfunc answers to three records; study-names-0.1.0.json the default study names and
fingerprints 0.1.0 derived for a few configs.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import Any

import mlflow
import optuna
import pandas as pd
import pytest
import requests
from typer.testing import CliRunner

from conftest import BIN, REPO, free_port, start_server, stop_server
from inflamrx.cli import app
from inflamrx.config import as_tuned_by_0_1_0, load_config
from inflamrx.errors import InputError
from inflamrx.jobs.explain import explain
from inflamrx.jobs.tune.storage import default_study_name, fingerprint, scored_as_started
from inflamrx.serving.batch import load_model
from inflamrx.serving.integrity import trust_model

FIXTURES = REPO / "tests" / "fixtures"
KINDS = ("xgboost", "logistic")


@pytest.fixture(scope="module")
def old_models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """The 0.1.0 folders after their one migration step: `inflamrx trust-model` records the
    SHA-256 manifest that 0.1.0 did not write (test below)."""
    root = tmp_path_factory.mktemp("release-0.1.0")
    with tarfile.open(FIXTURES / "models-0.1.0.tar.gz") as archive:
        archive.extractall(root, filter="data")
    for kind in KINDS:
        trust_model(str(root / f"model-0.1.0-{kind}"))
    return root, json.loads((root / "expected.json").read_text())


def test_a_0_1_0_model_is_refused_until_its_manifest_is_recorded(tmp_path: Path) -> None:
    with tarfile.open(FIXTURES / "models-0.1.0.tar.gz") as archive:
        archive.extractall(tmp_path, filter="data")
    folder = str(tmp_path / "model-0.1.0-xgboost")
    with pytest.raises(InputError, match=r"no integrity manifest.*inflamrx trust-model --model"):
        load_model(folder)
    done = CliRunner().invoke(app, ["trust-model", "--model", folder])
    assert done.exit_code == 0, done.output
    assert load_model(folder).model.kind.name == "xgboost"


def _same_answers(got: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        assert g["response_probability"] == pytest.approx(e["response_probability"], abs=1e-6)
        assert g["predicted_response"] == e["predicted_response"]
        assert [f["text"] for f in g["top_factors"]] == [f["text"] for f in e["top_factors"]]
        assert g["warnings"] == e["warnings"]


@pytest.mark.parametrize("kind", KINDS)
def test_a_0_1_0_model_loads_in_process_with_the_same_answers(
    kind: str, old_models: tuple[Path, dict[str, Any]]
) -> None:
    root, expected = old_models
    folder = root / f"model-0.1.0-{kind}"
    loaded = load_model(str(folder))  # the 0.1.0 layout, read through format 1, verified
    assert loaded.model.kind.name == kind
    assert loaded.settings.threshold == 0.5
    model = mlflow.pyfunc.load_model(str(folder))
    answers = model.predict(pd.DataFrame(expected["records"]))
    _same_answers(json.loads(answers.to_json(orient="records")), expected["expected"][kind])


def test_a_0_1_0_model_predicts_and_explains_from_the_cli(
    old_models: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    root, expected = old_models
    data = tmp_path / "records.csv"
    pd.DataFrame(expected["records"]).assign(patient_id=["a", "b", "c"]).to_csv(data, index=False)
    out = tmp_path / "scored.csv"
    model = str(root / "model-0.1.0-xgboost")
    done = CliRunner().invoke(app, ["predict", "--model", model, "--data", str(data), "--out", str(out)])  # fmt: skip
    assert done.exit_code == 0, done.output
    scored = pd.read_csv(out)
    want = [e["response_probability"] for e in expected["expected"]["xgboost"]]
    assert scored["response_probability"].tolist() == pytest.approx(want, abs=1e-6)
    explained = explain(model, load_config(None, {"data.path": str(data)}).data)
    assert len(explained.explanation.patient_ids) == 3


@pytest.mark.slow
def test_a_0_1_0_model_is_served_by_mlflow_models_serve(
    old_models: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    root, expected = old_models
    port = free_port()
    command = [
        str(Path(BIN) / "mlflow"), "models", "serve", "-m", str(root / "model-0.1.0-xgboost"),
        "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port),
    ]  # fmt: skip
    proc, url = start_server(command, port, tmp_path / "server.log")
    try:
        answer = requests.post(
            url + "/invocations", json={"dataframe_records": expected["records"]}, timeout=60
        )
    finally:
        stop_server(proc)
    assert answer.status_code == 200, answer.text
    _same_answers(answer.json()["predictions"], expected["expected"]["xgboost"])


def test_default_study_names_of_0_1_0_are_kept() -> None:
    """Re-running the same tune command resumes the study 0.1.0 started: same name and
    fingerprint, though the config's model section is now one class per kind."""
    saved = json.loads((FIXTURES / "study-names-0.1.0.json").read_text())
    digest = "0123456789abcdef"
    for case, overrides in saved["cases"].items():
        name, fp = saved["expected"][case]
        if "model.C" in overrides and overrides.get("model.kind", "xgboost") == "xgboost":
            # 0.1.0 accepted logistic parameters on an XGBoost run (they did nothing); they are
            # refused now, naming the kind's own keys: the one config that must be edited.
            with pytest.raises(InputError, match=r"unknown key 'model\.C'"):
                load_config(None, overrides)
            continue
        config = load_config(None, overrides)
        if config.model.kind == "auto":
            # No model section: 0.1.0 tuned XGBoost; auto now searches across kinds under its
            # own name, and a job finding 0.1.0's study resumes it as XGBoost (test_tune).
            assert default_study_name(config, digest).startswith(
                f"{config.tracking.experiment}-auto-"
            )
            assert fingerprint(config, digest) != fp, case
            config = as_tuned_by_0_1_0(config)
        assert default_study_name(config, digest) == name, case
        assert fingerprint(config, digest) == fp, case


def test_an_auto_search_is_fingerprinted_by_its_candidates_and_their_spaces() -> None:
    digest = "0123456789abcdef"
    auto = load_config(None, {})
    only = load_config(None, {"model.kind": "auto", "model.candidates": ["logistic"]})
    space = {"C": {"low": 0.01, "high": 1, "log": True}}
    narrower = load_config(None, {"tuning.logistic_space": space})
    prints = {fingerprint(c, digest) for c in (auto, only, narrower)}
    assert len(prints) == 3
    assert default_study_name(auto, digest) == f"inflamrx-auto-{fingerprint(auto, digest)[:8]}"


def test_a_0_1_0_study_is_resumed_with_the_score_it_was_started_with() -> None:
    """0.1.0 scored trials by AUROC alone; its studies (trials, no recorded guard) go on with
    that score and say so, while a new study records today's calibration-guarded score. A guard
    other than the default gets its own study (fingerprint), so a recorded guard always matches."""
    config = load_config(None)
    old = optuna.create_study(direction="maximize")
    old.add_trial(optuna.trial.create_trial(value=0.7))  # as 0.1.0 left it: no guard recorded
    resumed, warning = scored_as_started(old, config)
    assert resumed.tuning.calibration_guard == 0.0
    assert warning is not None and "AUROC alone" in warning and "--study" in warning

    new = optuna.create_study(direction="maximize")
    kept, warning = scored_as_started(new, config)
    assert (kept, warning) == (config, None)
    assert new.user_attrs["calibration_guard"] == 0.3
    new.add_trial(optuna.trial.create_trial(value=0.7))
    assert scored_as_started(new, config) == (config, None)

    other = load_config(None, {"tuning.calibration_guard": 0.5})
    assert fingerprint(other, "0123456789abcdef") != fingerprint(config, "0123456789abcdef")


@pytest.mark.slow
def test_a_0_1_0_model_is_served_by_inflamrx_serve_with_the_contract_as_its_input_check(
    old_models: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    """Its typed MLflow schema is set aside in the served process (serving/server.py): int64
    CSV columns are read, and an unknown column is refused rather than dropped."""
    root, expected = old_models
    port = free_port()
    command = [
        str(Path(BIN) / "inflamrx"), "serve", "--model", str(root / "model-0.1.0-xgboost"),
        "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    proc, url = start_server(command, port, tmp_path / "server.log")
    records = pd.DataFrame(expected["records"])
    try:
        answer = requests.post(
            url + "/invocations", json={"dataframe_records": expected["records"]}, timeout=60
        )
        csv = requests.post(
            url + "/invocations",
            data=records.to_csv(index=False).encode(),
            headers={"Content-Type": "text/csv"},
            timeout=60,
        )
        renamed = records.rename(columns={"crp_mg_l": "crp"}).assign(crp_mg_l=records["crp_mg_l"])
        unknown = requests.post(
            url + "/invocations",
            json={"dataframe_records": json.loads(renamed.to_json(orient="records"))},
            timeout=60,
        )
    finally:
        stop_server(proc)
    assert answer.status_code == 200, answer.text
    _same_answers(answer.json()["predictions"], expected["expected"]["xgboost"])
    assert csv.status_code == 200, csv.text
    _same_answers(csv.json()["predictions"], expected["expected"]["xgboost"])
    assert unknown.status_code == 400
    assert "column 'crp' is not a column of the data contract" in unknown.json()["message"]
