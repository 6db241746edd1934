"""Cold start: a command imports only the libraries it uses (each costs seconds on a small
machine). Each case runs the real command line in a fresh interpreter and looks at
``sys.modules`` when it ends."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TINY_HEADER, TINY_ROWS, csv_text

# Run the command in-process of a fresh interpreter, then report what was imported.
_PROBE = """
import json, sys
sys.argv = ["inflamrx", *json.loads(sys.argv[1])]
from inflamrx.cli import app
try:
    app()
except SystemExit as exit:
    code = exit.code
else:
    code = 0
print(json.dumps({"code": code, "modules": sorted(sys.modules)}), file=sys.stderr)
"""
MODELLING = {"sklearn", "xgboost", "shap", "optuna", "matplotlib", "skops", "pandera"}


def _run(
    args: list[str], cwd: Path, env: dict[str, str] | None = None
) -> tuple[int, set[str], str]:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(args)],
        cwd=cwd,
        env=os.environ | (env or {}),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    last = done.stderr.strip().splitlines()[-1]
    report = json.loads(last)
    return int(report["code"]), {m.split(".")[0] for m in report["modules"]}, done.stderr


@pytest.mark.slow
def test_the_command_line_imports_no_data_or_modelling_library(tmp_path: Path) -> None:
    code, modules, _ = _run(["--help"], tmp_path)
    assert code == 0
    assert not modules & (MODELLING | {"mlflow", "pandas", "scipy"})


@pytest.mark.slow
def test_validate_imports_neither_mlflow_nor_the_modelling_stack(tmp_path: Path) -> None:
    (tmp_path / "cohort.csv").write_text(csv_text(TINY_HEADER, TINY_ROWS))
    code, modules, _ = _run(["validate", "--data", "cohort.csv"], tmp_path)
    assert code == 0
    assert not modules & (MODELLING | {"mlflow", "scipy"})


@pytest.mark.slow
def test_an_unknown_model_is_refused_before_the_modelling_stack_is_imported(
    tmp_path: Path,
) -> None:
    (tmp_path / "cohort.csv").write_text(csv_text(TINY_HEADER, TINY_ROWS))
    store = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    args = ["predict", "--model", "models:/no-such-model/1", "--data", "cohort.csv"]
    code, modules, stderr = _run(args, tmp_path, store)
    assert code == 2  # an input error, not a traceback
    assert "cannot load the model 'models:/no-such-model/1'" in stderr
    assert "mlflow" in modules  # the registry was asked
    assert not modules & MODELLING
    assert not (tmp_path / "predictions.csv").exists()
