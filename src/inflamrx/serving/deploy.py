"""Put a logged model to use: export it to a folder, serve it, point a registry alias at it."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path

import mlflow

from inflamrx.errors import InputError
from inflamrx.tracking.store import tracking_uri

# The variable MLflow's own scoring app reads its model path from (scoring_server's
# _SERVER_MODEL_PATH), spelled out so that importing this module stays light.
MODEL_PATH_ENV = "__pyfunc_model_path__"


def _use_tracking() -> str:
    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def _first_line(err: Exception) -> str:
    lines = str(err).strip().splitlines()
    line = lines[0] if lines else type(err).__name__
    return line if len(line) <= 300 else line[:300] + "..."


def _download(model_uri: str, into: Path, what: str) -> Path:
    """The model behind ``model_uri`` as a local MLflow model folder under ``into``."""
    _use_tracking()
    try:
        local = Path(
            mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(into))
        )
    except Exception as err:  # an unknown URI, a missing run or version
        raise InputError(f"cannot {what} the model {model_uri!r}: {_first_line(err)}") from None
    if not (local / "MLmodel").is_file():
        raise InputError(f"{model_uri!r} is not an MLflow model (no MLmodel file)")
    return local


def export(model_uri: str, out: Path) -> Path:
    """Copy the model behind ``model_uri`` into ``out``: a self-contained MLflow model
    directory (MLmodel, artifacts, code, requirements) that ``mlflow models serve`` serves."""
    if out.exists() and any(out.iterdir()):
        raise InputError(f"{out} already exists and is not empty; choose a new folder")
    with tempfile.TemporaryDirectory() as tmp:
        local = _download(model_uri, Path(tmp), "export")
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.exists():
            out.rmdir()
        shutil.copytree(local, out)
    return out


def resolve_model(model_uri: str, into: Path) -> Path:
    """The one place where ``inflamrx serve`` turns a model URI into the local folder its
    workers load, before any server starts. A copy: serving never writes into the stored
    model. Checks of the model's files belong here, before MLflow imports anything from it."""
    return _download(model_uri, into, "serve")


def check_address(host: str, port: int) -> None:
    """Refuse, in one line, an address the server could not listen on (before the model is
    downloaded and loaded, rather than a traceback from every worker after it)."""
    if not 1 <= port <= 65535:
        raise InputError(f"--port must be between 1 and 65535. Got {port}.")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError):
        raise InputError(f"--host {host!r} is not a name or address of this machine") from None
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind(address)
        except OSError as err:
            raise InputError(
                f"cannot listen on {host}:{port}: {err.strerror or err}; another server may "
                "be using the port: choose another with --port"
            ) from None


def default_workers() -> int:
    """The default of --workers: this machine's cores (those this process may run on)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


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

    if workers < 1:
        raise InputError(f"--workers must be at least 1. Got {workers}.")
    if timeout < 1:
        raise InputError(f"--timeout must be at least 1 second. Got {timeout}.")
    check_address(host, port)
    with tempfile.TemporaryDirectory(prefix="inflamrx-serve-") as tmp:
        local = resolve_model(model_uri, Path(tmp))
        # Read by every worker (uvicorn starts each as a new interpreter).
        os.environ[MODEL_PATH_ENV] = str(local)
        os.environ["MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT"] = str(timeout)
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see ENGINEERING.md: OpenMP
        # A request is a small prediction: threads beyond a worker's share only contend.
        os.environ.setdefault("OMP_NUM_THREADS", str(max(1, default_workers() // workers)))
        announce(f"serving {model_uri} on http://{host}:{port}/invocations ({workers} workers)")
        uvicorn.run(
            "inflamrx.serving.server:create_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            timeout_graceful_shutdown=timeout + 5,
            log_level="info",
        )


def promote(run_id: str, alias: str, name: str | None = None) -> tuple[str, str]:
    """Point ``alias`` at the model version registered from ``run_id``; return (name, version)."""
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
    client.set_registered_model_alias(latest.name, alias, latest.version)
    return latest.name, str(latest.version)
