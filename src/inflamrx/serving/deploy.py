"""Put a logged model to use: export it to a folder, serve it, point a registry alias at it."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import mlflow

from inflamrx.errors import InputError
from inflamrx.serving.address import check_serve_options, default_workers
from inflamrx.serving.integrity import serving_env, verify_model
from inflamrx.tracking.registry import below_minimum
from inflamrx.tracking.store import use_store

# The variable MLflow's own scoring app reads its model path from (scoring_server's
# _SERVER_MODEL_PATH), spelled out so that importing this module stays light.
MODEL_PATH_ENV = "__pyfunc_model_path__"


def export(model_uri: str, out: Path) -> Path:
    """Copy the model behind ``model_uri`` into ``out``: a self-contained MLflow model
    directory (MLmodel, artifacts, code, requirements) that ``mlflow models serve`` serves.
    The files are checked against the model's manifest first, and the manifest goes with them
    (``integrity.MANIFEST_FILE``)."""
    if out.exists() and any(out.iterdir()):
        raise InputError(f"{out} already exists and is not empty; choose a new folder")
    with tempfile.TemporaryDirectory() as tmp:
        local = verify_model(model_uri, Path(tmp))
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.exists():
            out.rmdir()
        shutil.copytree(local, out)
    return out


def resolve_model(model_uri: str, into: Path) -> Path:
    """The one place where ``inflamrx serve`` turns a model URI into the local folder its
    workers load, before any server starts. A copy: serving never writes into the stored
    model. Checks of the model's files belong here, before MLflow imports anything from it."""
    return verify_model(model_uri, into)


def serve(
    model_uri: str,
    host: str,
    port: int,
    workers: int,
    timeout: int,
    announce: Callable[[str], None] = lambda line: None,
) -> None:
    """Serve ``model_uri`` with ``serving.server`` (MLflow's scoring app behind the privacy
    wrapper) in ``workers`` uvicorn processes, until SIGINT/SIGTERM; requests in flight then
    finish (each is bounded by ``timeout`` seconds, MLflow's request timeout)."""
    import uvicorn  # only where a server starts

    check_serve_options(host, port, workers, timeout)
    with tempfile.TemporaryDirectory(prefix="inflamrx-serve-") as tmp:
        local = resolve_model(model_uri, Path(tmp))
        # Pickle off and the verified-copy flag, read by every worker's model load.
        os.environ.update(serving_env(local))
        # Read by every worker (uvicorn starts each as a new interpreter).
        os.environ[MODEL_PATH_ENV] = str(local)
        os.environ["MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT"] = str(timeout)
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see ENGINEERING.md: OpenMP
        # A request is a small prediction: threads beyond a worker's share only contend.
        os.environ.setdefault("OMP_NUM_THREADS", str(max(1, default_workers() // workers)))
        processes = f"{workers} worker" + ("s" if workers > 1 else "")
        announce(f"serving {model_uri} on http://{host}:{port}/invocations ({processes})")
        uvicorn.run(
            "inflamrx.serving.server:create_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            timeout_graceful_shutdown=timeout + 5,
            # uvicorn kills a worker that does not answer its ping in time (default 5 s): on a
            # loaded machine, one still importing or scoring a large batch would be killed.
            timeout_worker_healthcheck=max(30, timeout),
            log_level="info",
        )


def promote(
    run_id: str, alias: str, name: str | None = None, force: bool = False
) -> tuple[str, str, str | None]:
    """Point ``alias`` at the model version registered from ``run_id``; return (name, version,
    why it is below the minimum or None). A version marked below the minimum is refused unless
    ``force``."""
    client = mlflow.MlflowClient(use_store())
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
