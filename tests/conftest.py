"""Shared fixtures: tiny canonical cohorts and writers that put them on disk under tmp_path."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import requests

from inflamrx.config import DataConfig
from inflamrx.data.validate import ValidationResult, validate_cohort

REPO = Path(__file__).resolve().parents[1]
NHANES = REPO / "data" / "nhanes-2017-2018"

# Three valid patients; the header is line 1, so p1 is on line 2, p2 on line 3, p3 on line 4.
TINY_HEADER = (
    "patient_id",
    "age",
    "sex",
    "crp_mg_l",
    "il6_pg_ml",
    "smoking",
    "n_failed_antidepressants",
    "autoimmune_disease",
    "madrs_total",
)
TINY_ROWS = (
    ("p1", "34", "F", "1.2", "0.9", "never", "2", "no", "28"),
    ("p2", "51", "M", "4.5", "", "former", "0", "yes", "31"),
    ("p3", "46", "F", "0.4", "2.1", "current", "3", "", "22"),
)


def csv_text(header: tuple[str, ...] | list[str], rows: Any, newline: str = "\n") -> str:
    """Comma-joined lines (no quoting: the tests choose cells without commas or quotes)."""
    lines = [",".join(header), *(",".join(str(c) for c in row) for row in rows)]
    return newline.join(lines) + newline


def flat(text: str) -> str:
    """Rich wraps long lines at word boundaries; compare messages with whitespace collapsed."""
    return re.sub(r"\s+", " ", text)


@pytest.fixture
def tiny_frame() -> pd.DataFrame:
    """The tiny cohort as text, exactly as a site would type it."""
    return pd.DataFrame(list(TINY_ROWS), columns=list(TINY_HEADER), dtype="str")


@pytest.fixture
def write_file(tmp_path: Path) -> Callable[..., Path]:
    """write_file(text_or_bytes, name='cohort.csv') -> the path, under tmp_path."""

    def write(content: str | bytes, name: str = "cohort.csv") -> Path:
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8", newline="")
        return path

    return write


@pytest.fixture
def tiny_csv(write_file: Callable[..., Path]) -> Path:
    return write_file(csv_text(TINY_HEADER, TINY_ROWS))


@pytest.fixture
def write_tiny(write_file: Callable[..., Path]) -> Callable[..., Path]:
    """write_tiny(changes={(line, column): value}, extra={column: [values]}) -> a CSV path.

    Starts from the three valid TINY_ROWS; ``line`` is the file line (p1 = 2, p2 = 3, p3 = 4).
    """

    def write(
        changes: dict[tuple[int, str], str] | None = None,
        extra: dict[str, list[str]] | None = None,
        name: str = "cohort.csv",
    ) -> Path:
        header = list(TINY_HEADER) + list(extra or {})
        rows = []
        for i, row in enumerate(TINY_ROWS):
            cells = dict(zip(TINY_HEADER, row, strict=True))
            cells |= {col: values[i] for col, values in (extra or {}).items()}
            for (line, col), value in (changes or {}).items():
                if line == i + 2:
                    cells[col] = value
            rows.append([cells[c] for c in header])
        return write_file(csv_text(header, rows), name)

    return write


@pytest.fixture
def run_csv(write_file: Callable[..., Path]) -> Callable[..., ValidationResult]:
    """run_csv(text, **data_config) -> ValidationResult of that CSV text."""

    def run(text: str, name: str = "cohort.csv", **data: Any) -> ValidationResult:
        return validate_cohort(DataConfig(path=str(write_file(text, name)), **data))

    return run


def _service(variable: str, what: str) -> str:
    """The address of a real service that .ci/services started; skipped locally without it,
    a failure in CI (INFLAMRX_REQUIRE_SERVICES=1) so a missing service is never silent."""
    value = os.environ.get(variable)
    if value:
        return value
    message = f'{what} is not available: run `eval "$(.ci/services)"` first ({variable} unset)'
    if os.environ.get("INFLAMRX_REQUIRE_SERVICES"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def postgres_url() -> str:
    return _service("INFLAMRX_TEST_POSTGRES_URL", "PostgreSQL")


@pytest.fixture(scope="session")
def chromium() -> str:
    return _service("INFLAMRX_TEST_CHROMIUM", "Chromium")


def chromium_flags(chromium: str, tmp_path: Path) -> list[str]:
    """Headless Chromium, offline, with its own profile folder."""
    return [
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
    ]  # fmt: skip


def rendered_dom(chromium: str, page: str, tmp_path: Path, timeout: int = 180) -> str:
    """The DOM Chromium renders for the HTML ``page``, from a test copy with a tiny script that
    writes each image's decoded width into it as ``data-width`` (reports ship no script)."""
    script = (
        "<script>window.addEventListener('load',()=>{for(const i of document.images)"
        "{i.setAttribute('data-width',i.naturalWidth)}})</script>"
    )
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", script + "</body>"))
    done = subprocess.run(
        [*chromium_flags(chromium, tmp_path), "--virtual-time-budget=5000", "--dump-dom",
         probe.as_uri()],
        capture_output=True, text=True, timeout=timeout, check=True,
    )  # fmt: skip
    return done.stdout


def synthetic_workspace(factory: pytest.TempPathFactory, name: str, n: int, seed: int) -> Path:
    """A new folder holding a SYNTHETIC cohort of ``n`` patients as synthetic.csv."""
    from inflamrx.data.simulate import simulate_cohort, write_cohort

    root = factory.mktemp(name)
    write_cohort(simulate_cohort(n, seed=seed), root / "synthetic.csv")
    return root


def quick_training(root: Path, experiment: str) -> dict[str, Any]:
    """Config overrides that train on ``root``'s cohort quickly (60 trees, one CV repeat,
    200 bootstrap resamples, one held-out test set)."""
    return {
        "data.path": str(root / "synthetic.csv"),
        "split.strategy": "holdout",
        "data.synthetic": True,
        "evaluation.n_bootstrap": 200,
        "split.cv_repeats": 1,
        "split.cv_folds": 3,
        "model.n_estimators": 60,
        "tracking.experiment": experiment,
    }


@contextmanager
def tracking_in(root: Path) -> Iterator[str]:
    """MLflow tracking in SQLite under ``root`` (also the working directory); yields the URI."""
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        mp.chdir(root)
        yield uri


# --- real `mlflow models serve` processes --------------------------------------------------

BIN = str(Path(sys.executable).parent)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_env() -> dict[str, str]:
    # The venv's bin first: `mlflow models serve` execs `uvicorn` from PATH.
    return os.environ | {"PATH": BIN + os.pathsep + os.environ.get("PATH", "")}


def start_server(command: list[str], port: int, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start a server in its own process group; wait until /ping answers."""
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            command, env=server_env(), stdout=sink, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 240  # a loaded 2-core machine: workers start slowly
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if requests.get(url + "/ping", timeout=1).status_code == 200:
                return proc, url
        except requests.ConnectionError:
            pass
        time.sleep(0.5)
    stop_server(proc)
    raise AssertionError(f"server did not answer /ping in 240 s:\n{log.read_text()[-3000:]}")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    """End the server and the uvicorn child MLflow started (the whole process group)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@contextmanager
def mlflow_served(folder: Path, log: Path) -> Iterator[str]:
    """An exported model folder served by plain `mlflow models serve`, started as a user
    starts it; yields the /invocations URL and stops the server after."""
    port = free_port()
    command = [
        str(Path(BIN) / "mlflow"), "models", "serve", "-m", str(folder),
        "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port),
    ]  # fmt: skip
    proc, url = start_server(command, port, log)
    try:
        yield url + "/invocations"
    finally:
        stop_server(proc)
