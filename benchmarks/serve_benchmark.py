"""Benchmark: the served response model against a trivial pyfunc, and batch throughput.

Run: .venv/bin/python benchmarks/serve_benchmark.py [--requests 300] [--rows 100000]
     .venv/bin/python benchmarks/serve_benchmark.py --only concurrency [--clients 8]
     .venv/bin/python benchmarks/serve_benchmark.py --only latency --before ../main/src/inflamrx

1. Single-record latency (p50 / p99, sequential requests from one client, taking turns
   between all the servers measured, which run at once) of the response
   model served by `mlflow models serve`, with and without SHAP factors, against a trivial
   pyfunc with a *typed* signature of the same input columns (yes/no columns boolean, not
   "any"), served the same way: MLflow's enforcement of typed columns is in the floor, whatever
   the response model declares (issue 14; aim: p50 <= 1.5x factors off, <= 2x with three).
   A two-arm benefit model (configs/two-arm.yaml on a simulated two-arm trial) is served the
   same way: a benefit record against a response record, with and without factors (issue 12;
   aim: p50 <= 2x). With ``--before SRC`` (another checkout's ``src/inflamrx``), copies of both
   exported models whose ``code/inflamrx`` (the package a served model imports) is replaced by
   SRC are measured in the same run, so before and after are compared side by side.
2. Concurrency: --clients clients sending single records at once (half with factors) to
   `inflamrx serve --workers 1` and `--workers N` (N: the machine's cores): throughput, p50,
   p99 and errors.
3. Batch throughput at --rows rows through the pyfunc's predict in-process (validation,
   features, model; with and without factors) against raw XGBoost ``predict_proba`` on the
   already transformed matrix (aim: at least 1/3 of raw).

The model is trained with configs/default.yaml on a SYNTHETIC cohort; tracking goes to a
temporary SQLite store. Servers listen on 127.0.0.1: the latency ones all at once, the
concurrency ones one at a time. ``--before`` code must load this checkout's saved models.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import requests
from mlflow.types.schema import AnyType

from inflamrx.config import load_config
from inflamrx.data.schema import OUTCOME_COLUMNS
from inflamrx.data.simulate import simulate_cohort, write_cohort
from inflamrx.data.validate import validate_frame
from inflamrx.jobs.benefit import train_benefit
from inflamrx.jobs.train import train
from inflamrx.serving.deploy import default_workers, export
from inflamrx.serving.pyfunc import input_schema, signature

TRIVIAL = """import mlflow
import pandas as pd


class Trivial(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return pd.DataFrame({"response_probability": [0.5] * len(model_input)})


mlflow.models.set_model(Trivial())
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def _mlflow_serve(model_dirs: list[Path], logs: list[Path]) -> Iterator[list[str]]:
    """`mlflow models serve` on every folder at once; yields their /invocations URLs."""
    bin_dir = os.path.dirname(sys.executable)
    env = os.environ | {"PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
    procs, urls = [], []
    try:
        for model_dir, log in zip(model_dirs, logs, strict=True):
            port = _free_port()
            command = [
                os.path.join(bin_dir, "mlflow"), "models", "serve", "-m", str(model_dir),
                "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port),
            ]  # fmt: skip
            with log.open("wb") as sink:
                procs.append(
                    subprocess.Popen(
                        command, env=env, stdout=sink, stderr=sink, start_new_session=True
                    )
                )
            urls.append(f"http://127.0.0.1:{port}")
        for url in urls:
            for _ in range(960):
                try:
                    if requests.get(url + "/ping", timeout=1).status_code == 200:
                        break
                except requests.ConnectionError:
                    time.sleep(0.5)
        yield [url + "/invocations" for url in urls]
    finally:
        for proc in procs:
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            proc.wait(timeout=30)


@contextmanager
def _inflamrx_serve(model_dir: Path, workers: int, log: Path) -> Iterator[str]:
    """`inflamrx serve --workers N` on ``model_dir``; yields the /invocations URL."""
    port = _free_port()
    bin_dir = os.path.dirname(sys.executable)
    command = [
        os.path.join(bin_dir, "inflamrx"), "serve", "--model", str(model_dir),
        "--port", str(port), "--workers", str(workers),
    ]  # fmt: skip
    with log.open("wb") as sink:
        proc = subprocess.Popen(command, stdout=sink, stderr=sink, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(480):
            try:
                if requests.get(url + "/ping", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                time.sleep(0.5)
        yield url + "/invocations"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)


def _concurrent(url: str, bodies: list[dict[str, Any]], clients: int) -> dict[str, float]:
    """Send ``bodies`` from ``clients`` threads at once; throughput, latencies, errors."""

    def warm(body: dict[str, Any]) -> None:
        requests.post(url, json=body, timeout=300)

    # Concurrent warm-up, so that every worker has imported and compiled (SHAP's first call).
    with ThreadPoolExecutor(max_workers=clients) as pool:
        list(pool.map(warm, bodies[: 4 * clients]))

    def one(body: dict[str, Any]) -> tuple[float, bool]:
        start = time.perf_counter()
        answer = requests.post(url, json=body, timeout=120)
        return 1000 * (time.perf_counter() - start), answer.status_code == 200

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        results = list(pool.map(one, bodies))
    wall = time.perf_counter() - start
    ms = np.asarray([t for t, _ in results])
    return {
        "rps": len(bodies) / wall,
        "p50": float(np.percentile(ms, 50)),
        "p99": float(np.percentile(ms, 99)),
        "errors": float(sum(not ok for _, ok in results)),
    }


def _with_code(model_dir: Path, package: Path, out: Path) -> Path:
    """A copy of ``model_dir`` serving the inflamrx package at ``package`` instead of its own."""
    shutil.copytree(model_dir, out)
    shutil.rmtree(out / "code" / "inflamrx")
    shutil.copytree(
        package, out / "code" / "inflamrx", ignore=shutil.ignore_patterns("__pycache__")
    )
    return out


def _latency_table(
    arms: list[tuple[str, Path, list[dict[str, Any]]]], root: Path
) -> dict[str, float]:
    """Serve every (name, folder, bodies) at once and send the requests in turn, one to each
    arm: on a machine loaded by other work, every arm sees the same load. Print p50/p99 and
    return the p50s."""
    names = [name for name, _, _ in arms]
    logs = [root / f"{name}.log" for name in names]
    times: dict[str, list[float]] = {name: [] for name in names}
    with _mlflow_serve([folder for _, folder, _ in arms], logs) as urls, requests.Session() as s:
        for (_, _, bodies), url in zip(arms, urls, strict=True):
            for body in bodies[:20]:  # warm-up: imports and first-call caches
                s.post(url, json=body).raise_for_status()
        for i in range(len(arms[0][2])):
            for (name, _, bodies), url in zip(arms, urls, strict=True):
                start = time.perf_counter()
                s.post(url, json=bodies[i]).raise_for_status()
                times[name].append(1000 * (time.perf_counter() - start))
    rows = {name: (np.percentile(ms, 50), np.percentile(ms, 99)) for name, ms in times.items()}
    base = rows["trivial pyfunc, typed signature"][0]
    for name, (p50, p99) in rows.items():
        print(f"  {name:36s} p50 {p50:7.2f}  p99 {p99:7.2f}  p50 ratio {p50 / base:5.2f}x")
    return {name: float(p50) for name, (p50, _) in rows.items()}


def _best(fn: object, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--only", choices=["latency", "concurrency", "batch"], default=None)
    parser.add_argument(
        "--before", type=Path, default=None, help="another checkout's src/inflamrx to compare"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'bench.db'}"
        write_cohort(simulate_cohort(2000, seed=0), root / "synthetic.csv")
        config = load_config(
            "configs/default.yaml",
            # Cross-validation and bootstrap do not change the served model: kept short.
            {"data.path": str(root / "synthetic.csv"), "report.enabled": False,
             "split.cv_repeats": 1, "evaluation.n_bootstrap": 100,
             "tracking.experiment": "serve-bench"},
        )  # fmt: skip
        result = train(config)
        served = export(result.model_uri, root / "model")
        write_cohort(simulate_cohort(1500, seed=0, two_arm=True), root / "trial.csv")
        trial = load_config(
            "configs/two-arm.yaml",
            {"data.path": str(root / "trial.csv"), "report.enabled": False,
             "evaluation.n_bootstrap": 100, "tracking.experiment": "serve-bench-benefit"},
        )  # fmt: skip
        benefit = export(train_benefit(trial).model_uri, root / "benefit")
        trivial_code = root / "trivial.py"
        trivial_code.write_text(TRIVIAL)
        typed = mlflow.types.Schema(
            [
                mlflow.types.ColSpec(
                    mlflow.types.DataType.boolean if isinstance(c.type, AnyType) else c.type,
                    c.name,
                    required=c.required,
                )
                for c in input_schema().inputs
            ]
        )
        mlflow.pyfunc.save_model(
            root / "trivial",
            python_model=str(trivial_code),
            # MLflow enforces the same columns, typed (yes/no boolean, not "any")
            signature=mlflow.models.ModelSignature(inputs=typed, params=signature(3).params),
        )

        cohort = validate_frame(simulate_cohort(args.rows, seed=1).cohort).accepted
        cohort = cohort.drop(columns=[c for c in cohort if c in OUTCOME_COLUMNS])
        records = json.loads(cohort.head(args.requests).to_json(orient="records"))
        single: list[dict[str, Any]] = [{"dataframe_records": [r]} for r in records]
        no_factors = [b | {"params": {"top_factors": 0}} for b in single]

        if args.only in (None, "latency"):
            print(f"single-record latency, {args.requests} sequential requests (ms)")
            arms = [("trivial pyfunc, typed signature", root / "trivial", single)]
            versions = [("", served, benefit)]
            if args.before is not None:
                before = (
                    "before: ",
                    _with_code(served, args.before, root / "model-before"),
                    _with_code(benefit, args.before, root / "benefit-before"),
                )
                versions.insert(0, before)
            for tag, response_dir, benefit_dir in versions:
                arms += [
                    (f"{tag}response model, 3 factors", response_dir, single),
                    (f"{tag}response model, factors off", response_dir, no_factors),
                    (f"{tag}benefit model, 3 factors", benefit_dir, single),
                    (f"{tag}benefit model, factors off", benefit_dir, no_factors),
                ]
            p50 = _latency_table(arms, root)
            for tag, _, _ in versions:
                for factors in ("3 factors", "factors off"):
                    ratio = (
                        p50[f"{tag}benefit model, {factors}"]
                        / p50[f"{tag}response model, {factors}"]
                    )
                    print(f"  {tag}benefit / response, {factors}: {ratio:5.2f}x (aim <= 2x)")

        if args.only in (None, "concurrency"):
            mixed = [single[i] if i % 2 else no_factors[i] for i in range(len(single))]
            print(
                f"concurrency: {args.clients} clients, {len(mixed)} single-record requests "
                "(half with 3 factors), `inflamrx serve`"
            )
            measured = {}
            for workers in sorted({1, default_workers()}):
                with _inflamrx_serve(served, workers, root / f"workers-{workers}.log") as url:
                    measured[workers] = _concurrent(url, mixed, args.clients)
            for workers, m in measured.items():
                print(
                    f"  --workers {workers}: {m['rps']:6.1f} requests/s  p50 {m['p50']:7.1f} ms  "
                    f"p99 {m['p99']:7.1f} ms  errors {m['errors']:.0f}  throughput "
                    f"{m['rps'] / measured[1]['rps']:4.2f}x of 1 worker"
                )
        if args.only not in (None, "batch"):
            return

        model = mlflow.pyfunc.load_model(str(served))
        pipeline = model.unwrap_python_model().model.pipeline
        features, booster = pipeline.named_steps["features"], pipeline.named_steps["model"]
        x = cohort.reindex(columns=list(features.feature_names_in_))
        matrix = features.transform(x)
        raw = _best(lambda: booster.predict_proba(matrix))
        off = _best(lambda: model.predict(cohort, params={"top_factors": 0}), repeat=2)
        on = _best(lambda: model.predict(cohort), repeat=1)
        n = len(cohort)
        print(f"batch throughput at {n} rows (rows/s; best of runs)")
        print(f"  raw XGBoost predict_proba on the transformed matrix  {n / raw:12,.0f}")
        print(f"  pyfunc predict, factors off  {n / off:12,.0f}  ({raw / off:.3f} of raw)")
        print(f"  pyfunc predict, 3 factors    {n / on:12,.0f}  ({raw / on:.3f} of raw)")


if __name__ == "__main__":
    main()
