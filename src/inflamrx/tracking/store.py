"""MLflow plumbing: where runs go, what every run is tagged with, and failed-run handling."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path

import mlflow

DEFAULT_STORE = Path("mlruns")


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` when set, otherwise SQLite at ``mlruns/mlflow.db`` (cwd)."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    DEFAULT_STORE.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(DEFAULT_STORE / 'mlflow.db').resolve()}"


def store_folder() -> Path | None:
    """The folder of a SQLite tracking store (where its artifacts and the Optuna studies go
    beside it); None for any other store."""
    uri = tracking_uri()
    return Path(uri.removeprefix("sqlite:///")).parent if uri.startswith("sqlite:///") else None


def use_store() -> str:
    """Point MLflow at the project's store; return its URI. The model registry follows it
    (MLflow's default; MLFLOW_REGISTRY_URI still overrides): a registry URI set globally here
    would stay behind and make a later client of another store read this one's registry."""
    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    return uri


def use_experiment(name: str) -> str:
    """Point MLflow at the store and the named experiment; return its id."""
    use_store()
    found = mlflow.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    folder = store_folder()
    # Artifacts beside the database, not in MLflow's default folder under the cwd.
    location = (folder / "artifacts").resolve().as_uri() if folder is not None else None
    return str(mlflow.create_experiment(name, artifact_location=location))


def git_commit() -> str:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return done.stdout.strip() or "unknown"


def standard_tags(data_digest: str, synthetic: bool) -> dict[str, str]:
    return {
        "git_commit": git_commit(),
        "inflamrx_version": version("inflamrx"),
        "data_digest": data_digest,
        "synthetic_data": str(synthetic).lower(),
    }


@contextmanager
def tracked_run(
    experiment_id: str, run_name: str, tags: dict[str, str] | None = None
) -> Iterator[mlflow.ActiveRun]:
    """A run (with ``tags`` from its creation) that ends FAILED, with the error as a tag, when
    the job raises."""
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags) as run:
        try:
            yield run
        except BaseException as exc:
            mlflow.set_tag("error", f"{type(exc).__name__}: {exc}"[:5000])
            mlflow.end_run(status="FAILED")
            raise


def log_files(run_id: str, files: list[Path], artifact_path: str) -> None:
    """Log each file under ``artifact_path`` of the run."""
    client = mlflow.MlflowClient()
    for file in files:
        client.log_artifact(run_id, str(file), artifact_path)
