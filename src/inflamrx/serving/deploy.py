"""Put a logged model to use: export it to a folder, serve it, point a registry alias at it."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import mlflow

from inflamrx.errors import InputError
from inflamrx.serving.integrity import serving_env, verify_model
from inflamrx.tracking.registry import below_minimum
from inflamrx.tracking.store import tracking_uri


def _use_tracking() -> str:
    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def export(model_uri: str, out: Path) -> Path:
    """Copy the model behind ``model_uri`` into ``out``: a self-contained MLflow model
    directory (MLmodel, artifacts, code, requirements) that ``mlflow models serve`` serves.
    The files are checked against the model's manifest first, and the manifest goes with them
    (``integrity.MANIFEST_FILE``)."""
    if out.exists() and any(out.iterdir()):
        raise InputError(f"{out} already exists and is not empty; choose a new folder")
    _use_tracking()
    with tempfile.TemporaryDirectory() as tmp:
        local = verify_model(model_uri, Path(tmp))
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.exists():
            out.rmdir()
        shutil.copytree(local, out)
    return out


def serve_command(model_uri: str, host: str, port: int) -> tuple[list[str], dict[str, str]]:
    """The ``mlflow models serve`` command line and environment for ``model_uri``.

    The server runs on a verified copy of the model (``integrity.verify_model``) in a new
    temporary folder, never on the stored model: nothing is written into it, and a file
    changed after the check is not the one served. MLflow execs ``uvicorn`` from PATH, so this
    interpreter's bin directory goes first."""
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env["MLFLOW_TRACKING_URI"] = _use_tracking()
    # The copy outlives this process (it execs the server); it is small (the model's files).
    folder = verify_model(model_uri, Path(tempfile.mkdtemp(prefix="inflamrx-serve-")))
    env |= serving_env(folder)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see ENGINEERING.md: OpenMP busy-waiting
    command = [
        sys.executable, "-m", "mlflow", "models", "serve", "-m", str(folder),
        "--env-manager", "local", "-h", host, "-p", str(port),
    ]  # fmt: skip
    return command, env


def promote(
    run_id: str, alias: str, name: str | None = None, force: bool = False
) -> tuple[str, str, str | None]:
    """Point ``alias`` at the model version registered from ``run_id``; return (name, version,
    why it is below the minimum or None). A version marked below the minimum is refused unless
    ``force``."""
    client = mlflow.MlflowClient(_use_tracking())
    query = f"run_id = '{run_id}'"
    try:
        found = client.search_model_versions(query)
    except Exception as err:
        raise InputError(f"cannot search the model registry: {err}") from None
    versions = [v for v in found if name is None or v.name == name]
    if not versions:
        named = f" under {name!r}" if name else ""
        raise InputError(
            f"no model version registered{named} comes from run {run_id}; train with "
            "registry.enabled: true, or check the run id"
        )
    if len({v.name for v in versions}) > 1:
        names = sorted({v.name for v in versions})
        raise InputError(f"run {run_id} registered several models {names}; choose one with --name")
    latest = max(versions, key=lambda v: int(v.version))
    marked = below_minimum(latest)
    if marked and not force:
        raise InputError(
            f"{latest.name} version {latest.version} is below the minimum for use ({marked}); "
            f"not promoted to @{alias}. Add --force to promote it anyway."
        )
    client.set_registered_model_alias(latest.name, alias, latest.version)
    return latest.name, str(latest.version), marked
