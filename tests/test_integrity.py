"""Model integrity: the SHA-256 manifest recorded at logging is checked before anything of a
model is imported, the skops policy trusts exact types, and no pickle is ever loaded.

Every tamper case carries a payload that writes a marker file when it runs; the marker must
not exist afterwards ("refused before any model code runs")."""

from __future__ import annotations

import builtins
import json
import os
import pickle
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import requests
import skops.io
import yaml
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer
from typer.testing import CliRunner

from conftest import (
    BIN,
    free_port,
    quick_training,
    start_server,
    stop_server,
    synthetic_workspace,
    tracking_in,
)
from inflamrx.cli import app
from inflamrx.config import load_config
from inflamrx.data.schema import OUTCOME_COLUMNS
from inflamrx.data.validate import validate_frame
from inflamrx.jobs.train import TrainResult, train
from inflamrx.modeling.safe_io import UntrustedArtifactError, load_trusted
from inflamrx.serving.deploy import export, resolve_model
from inflamrx.serving.integrity import MANIFEST_FILE, MANIFEST_TAG, file_manifest, serving_env

pytestmark = pytest.mark.slow

NAME = "inflamrx-response"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = synthetic_workspace(tmp_path_factory, "integrity", n=300, seed=5)
    with tracking_in(root):
        yield root


@pytest.fixture(scope="module")
def trained(workspace: Path) -> TrainResult:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sys, "dont_write_bytecode", False)  # as a user's Python runs
        config = load_config(None, quick_training(workspace, "integ") | {"report.enabled": False})
        return train(config)


@pytest.fixture(scope="module")
def exported(trained: TrainResult, workspace: Path) -> Path:
    return export(f"models:/{NAME}/{trained.registered_version}", workspace / "exported")


@pytest.fixture(scope="module")
def patients(workspace: Path) -> Path:
    path = workspace / "patients.csv"
    pd.read_csv(workspace / "synthetic.csv").head(5).to_csv(path, index=False)
    return path


# --- payloads: each writes `marker` when it runs -----------------------------------------


def _code(marker: Path) -> str:
    return f"open({str(marker)!r}, 'w').write('ran')"


class _Payload:
    """Unpickling this runs ``code``."""

    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return builtins.exec, (self.code,)


def exec_chain(marker: Path) -> Pipeline:
    """FunctionTransformer(builtins.exec) behind numpy.full_like: every type it holds sits
    under a prefix that looks safe (builtins., numpy.)."""
    fill = {"fill_value": _code(marker), "dtype": object, "shape": ()}
    return Pipeline(
        [
            ("fill", FunctionTransformer(np.full_like, kw_args=fill)),
            ("text", FunctionTransformer(builtins.str)),
            ("run", FunctionTransformer(builtins.exec)),
        ]
    )


def _edit_mlmodel(folder: Path, edit: Callable[[dict[str, object]], None]) -> None:
    path = folder / "MLmodel"
    spec = yaml.safe_load(path.read_text())
    edit(spec["flavors"])
    path.write_text(yaml.safe_dump(spec))


def tamper_exec_chain(folder: Path, marker: Path) -> str:
    features = next(folder.rglob("features.skops"))
    skops.io.dump(exec_chain(marker), features)
    return features.relative_to(folder).as_posix()


def tamper_sklearn_flavour(folder: Path, marker: Path) -> str:
    (folder / "model.pkl").write_bytes(pickle.dumps(_Payload(_code(marker))))

    def edit(flavors: dict[str, object]) -> None:
        flavors["sklearn"] = {"pickled_model": "model.pkl", "serialization_format": "cloudpickle",
                              "sklearn_version": "1.9.1", "code": None}  # fmt: skip
        flavors["python_function"] = {"loader_module": "mlflow.sklearn", "model_path": "model.pkl",
                                      "env": {"virtualenv": "python_env.yaml"},
                                      "python_version": "3.11.7"}  # fmt: skip

    _edit_mlmodel(folder, edit)
    return "MLmodel"


def tamper_python_model(folder: Path, marker: Path) -> str:
    (folder / "python_model.pkl").write_bytes(pickle.dumps(_Payload(_code(marker))))

    def edit(flavors: dict[str, object]) -> None:
        pyfunc = flavors["python_function"]
        assert isinstance(pyfunc, dict)
        pyfunc.pop("model_code_path")
        pyfunc.pop("model_config", None)
        pyfunc |= {"loader_module": "mlflow.pyfunc.model", "python_model": "python_model.pkl"}

    _edit_mlmodel(folder, edit)
    return "MLmodel"


def tamper_model_code(folder: Path, marker: Path) -> str:
    with (folder / "inflamrx_model.py").open("a") as f:
        f.write("\n" + _code(marker) + "\n")
    return "inflamrx_model.py"


TAMPERS = {
    "exec-chain": tamper_exec_chain,
    "pickle-via-sklearn-flavour": tamper_sklearn_flavour,
    "pickle-via-python_model": tamper_python_model,
    "code-appended": tamper_model_code,
}


def _copy(exported: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(exported, tmp_path / "model"))


def _predict(model: str, patients: Path, out: Path) -> tuple[int, str]:
    done = CliRunner().invoke(
        app, ["predict", "--model", model, "--data", str(patients), "--out", str(out)]
    )
    return done.exit_code, " ".join(done.output.split())


# --- the tamper cases ----------------------------------------------------------------------


@pytest.mark.parametrize("case", TAMPERS)
def test_a_tampered_model_is_refused_naming_the_file_before_its_code_runs(
    case: str, exported: Path, patients: Path, tmp_path: Path
) -> None:
    folder, marker = _copy(exported, tmp_path), tmp_path / "MARKER"
    named = TAMPERS[case](folder, marker)
    code, output = _predict(str(folder), patients, tmp_path / "p.csv")
    assert not marker.exists(), "the payload ran"
    assert code == 2, output
    assert f"model file {named} was changed" in output
    assert not (tmp_path / "p.csv").exists()


@pytest.mark.parametrize("case", ["exec-chain", "pickle-via-sklearn-flavour", "pickle-via-python_model"])  # fmt: skip
def test_a_tamper_with_a_rewritten_manifest_is_still_refused(
    case: str, exported: Path, patients: Path, tmp_path: Path
) -> None:
    """An exported folder carries its own manifest, which an attacker can rewrite: the exact
    type list and the models-from-code check still refuse the payloads (code appended to a
    .py file is the one case a rewritten folder manifest cannot reveal; the registry's is
    out of the folder's reach, see the test below)."""
    folder, marker = _copy(exported, tmp_path), tmp_path / "MARKER"
    TAMPERS[case](folder, marker)
    (folder / MANIFEST_FILE).write_text(json.dumps(file_manifest(folder)))
    code, output = _predict(str(folder), patients, tmp_path / "p.csv")
    assert not marker.exists(), "the payload ran"
    assert code == 2, output
    assert ("builtins.exec" in output) if case == "exec-chain" else ("MLmodel" in output)


def test_exact_types_refuse_the_exec_chain_and_hold_tree_predictor_for_verified_files(
    tmp_path: Path,
) -> None:
    marker = tmp_path / "MARKER"
    skops.io.dump(exec_chain(marker), tmp_path / "evil.skops")
    with pytest.raises(UntrustedArtifactError, match=r"builtins\.exec.*numpy\.full_like"):
        load_trusted(tmp_path / "evil.skops")
    with pytest.raises(UntrustedArtifactError, match=r"builtins\.exec"):
        load_trusted(tmp_path / "evil.skops", verified=True)  # never trusted, verified or not
    assert not marker.exists()
    x, y = np.arange(40.0).reshape(20, 2), np.arange(20) % 2
    skops.io.dump(HistGradientBoostingClassifier(max_iter=3).fit(x, y), tmp_path / "hgb.skops")
    with pytest.raises(UntrustedArtifactError, match=r"TreePredictor only once the model's files"):
        load_trusted(tmp_path / "hgb.skops")
    assert load_trusted(tmp_path / "hgb.skops", verified=True).n_iter_ == 3


def test_a_file_changed_in_the_registry_store_is_refused_for_each_uri(
    trained: TrainResult, patients: Path, tmp_path: Path
) -> None:
    client = mlflow.MlflowClient()
    model_id = trained.model_uri.removeprefix("models:/")
    stored = Path(client.get_logged_model(model_id).artifact_location.removeprefix("file://"))
    code_file = stored / "inflamrx_model.py"
    original = code_file.read_bytes()
    marker = tmp_path / "MARKER"
    code_file.write_bytes(original + ("\n" + _code(marker) + "\n").encode())
    try:
        for uri in (
            f"models:/{NAME}/{trained.registered_version}",
            trained.model_uri,
            f"runs:/{trained.run_id}/model",
        ):
            code, output = _predict(uri, patients, tmp_path / "p.csv")
            assert code == 2 and "model file inflamrx_model.py was changed" in output, output
        assert not marker.exists()
    finally:
        code_file.write_bytes(original)


@pytest.mark.parametrize("command", ["predict", "explain", "export", "serve"])
def test_every_command_that_loads_a_model_refuses_a_mismatch_with_exit_2(
    command: str, exported: Path, patients: Path, tmp_path: Path
) -> None:
    folder, marker = _copy(exported, tmp_path), tmp_path / "MARKER"
    package_init = folder / "code" / "inflamrx" / "__init__.py"  # runs when a server imports it
    with package_init.open("a") as f:
        f.write("\n" + _code(marker) + "\n")
    args = {
        "predict": ["--data", str(patients), "--out", str(tmp_path / "p.csv")],
        "explain": ["--data", str(patients), "--out", str(tmp_path / "explained")],
        "export": ["--out", str(tmp_path / "exported")],
        "serve": ["--port", str(free_port())],
    }[command]
    # A real process, as a user starts it (serve would otherwise become the server).
    done = subprocess.run(
        [str(Path(BIN) / "inflamrx"), command, "--model", str(folder), *args],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    message = " ".join(done.stderr.split())
    assert done.returncode == 2, done.stderr[-2000:]
    assert "model file code/inflamrx/__init__.py was changed" in message
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr  # one line, no traceback
    assert not marker.exists()
    assert not (tmp_path / "exported").exists()


def test_a_model_without_a_manifest_is_refused_with_the_migration_command(
    exported: Path, patients: Path, tmp_path: Path
) -> None:
    folder = _copy(exported, tmp_path)
    (folder / MANIFEST_FILE).unlink()
    code, output = _predict(str(folder), patients, tmp_path / "p.csv")
    assert code == 2 and "has no integrity manifest" in output
    assert f"inflamrx trust-model --model {folder}" in output
    done = CliRunner().invoke(app, ["trust-model", "--model", str(folder)])
    assert done.exit_code == 0, done.output
    assert _predict(str(folder), patients, tmp_path / "p.csv")[0] == 0
    done = CliRunner().invoke(app, ["trust-model", "--model", str(folder)])
    assert done.exit_code == 2 and "already has an integrity manifest" in done.output


# --- what an untampered model does ------------------------------------------------------


def test_the_manifest_is_recorded_in_the_registry_and_the_exported_folder(
    trained: TrainResult, exported: Path
) -> None:
    client = mlflow.MlflowClient()
    version = client.get_model_version(NAME, str(trained.registered_version))
    recorded = json.loads(version.tags[MANIFEST_TAG])
    logged = client.get_logged_model(trained.model_uri.removeprefix("models:/"))
    assert json.loads(logged.tags[MANIFEST_TAG]) == recorded
    assert json.loads((exported / MANIFEST_FILE).read_text()) == recorded == file_manifest(exported)
    assert {"MLmodel", "inflamrx_model.py", "code/inflamrx/__init__.py"} <= set(recorded)
    assert all(len(h) == 64 for h in recorded.values())
    assert not [p for p in recorded if "__pycache__" in p]  # no bytecode logged as model files


def test_serve_runs_a_verified_copy_with_pickle_off_and_writes_nothing_into_the_model(
    trained: TrainResult, exported: Path, patients: Path, tmp_path: Path
) -> None:
    # What `inflamrx serve` hands its workers: a checked copy, pickle off, no bytecode.
    served = resolve_model(str(exported), tmp_path / "copy")
    assert served != exported and file_manifest(served) == file_manifest(exported)
    env = serving_env(served)
    assert env["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] == "false"
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    shutil.rmtree(served)
    before = file_manifest(exported)
    code, output = _predict(f"models:/{NAME}/{trained.registered_version}", patients, tmp_path / "p.csv")  # fmt: skip
    assert code == 0, output
    expected = pd.read_csv(tmp_path / "p.csv")["response_probability"].to_numpy()
    port = free_port()
    cli = [str(Path(BIN) / "inflamrx"), "serve", "--model", str(exported), "--port", str(port)]
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("PYTHONDONTWRITEBYTECODE", raising=False)  # as a user's shell has it
        proc, url = start_server(cli, port, tmp_path / "server.log")
    try:
        accepted = validate_frame(pd.read_csv(patients)).accepted
        records = accepted.drop(columns=[c for c in accepted if c in OUTCOME_COLUMNS]).head(3)
        body = {"dataframe_records": json.loads(records.to_json(orient="records"))}
        answer = requests.post(url + "/invocations", json=body, timeout=60)
    finally:
        stop_server(proc)
    assert answer.status_code == 200, answer.text
    got = [r["response_probability"] for r in answer.json()["predictions"]]
    np.testing.assert_allclose(got, expected[:3], atol=1e-6)
    assert not list(exported.rglob("__pycache__"))
    assert file_manifest(exported) == before
    assert os.environ.get("MLFLOW_ALLOW_PICKLE_DESERIALIZATION") is None  # restored in-process
