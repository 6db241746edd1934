"""Benchmark: the served response model against a trivial pyfunc, and batch throughput.

Run: .venv/bin/python benchmarks/serve_benchmark.py [--requests 300] [--rows 100000]
     .venv/bin/python benchmarks/serve_benchmark.py --only concurrency [--clients 8]
     .venv/bin/python benchmarks/serve_benchmark.py --only batch [--before ../main/src]
     .venv/bin/python benchmarks/serve_benchmark.py --only latency [--before ../main/src]

1. Single-record latency (p50 / p99, sequential requests from one client, taking turns
   between all the servers measured, which run at once) of the response
   model served by `mlflow models serve`, with and without SHAP factors, against a trivial
   pyfunc with a *typed* signature of the same input columns (yes/no columns boolean, not
   "any"), served the same way: MLflow's enforcement of typed columns is in the floor, whatever
   the response model declares (issue 14; aim: p50 <= 1.5x factors off, <= 2x with three).
   A two-arm benefit model (configs/two-arm.yaml on a simulated two-arm trial) is served the
   same way: a benefit record against a response record, with and without factors (issue 12;
   aim: p50 <= 2x). With ``--before SRC`` (another checkout's ``src``), copies of both
   exported models whose ``code/inflamrx`` (the package a served model imports) is replaced by
   SRC/inflamrx are measured in the same run, so before and after are compared side by side.
2. Concurrency: --clients clients sending single records at once (half with factors) to
   `inflamrx serve --workers 1` and `--workers N` (N: the machine's cores): throughput, p50,
   p99 and errors.
3. Batch scoring of --rows rows in-process (issue 14), three figures:
   - factors off: the pyfunc's predict (validation, features, model) against raw XGBoost
     ``predict_proba`` on the already transformed matrix (aim: at least 1/3 of raw);
   - SHAP: the explanation step (``contributions``, from the transformed matrix) against raw
     XGBoost ``pred_contribs`` on the same matrix (aim: at most 1.5x);
   - the factor formatting (``patient_factors``, 3 per row) in seconds, beside it;
   and the whole predict with 3 factors. ``--before SRC`` (a checkout's ``src`` folder, e.g. of
   main) measures that code too, in alternating processes on the same model and rows, prints
   both side by side and says whether both gave the same probabilities and factor texts.
   Run: .venv/bin/python benchmarks/serve_benchmark.py --only batch --before ../main/src

The response model is trained with configs/default.yaml and ``model.kind: xgboost`` (``auto``
may choose a logistic model; the batch aims are about XGBoost) on a SYNTHETIC cohort; tracking
goes to a temporary SQLite store. Servers listen on 127.0.0.1: the latency ones all at once,
the concurrency ones one at a time. ``--before`` code must load this checkout's saved models.
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
import pandas as pd
import requests
import xgboost
from mlflow.types.schema import AnyType

import inflamrx
from inflamrx.config import load_config
from inflamrx.data.schema import OUTCOME_COLUMNS
from inflamrx.data.simulate import simulate_cohort, write_cohort
from inflamrx.data.validate import validate_frame
from inflamrx.jobs.benefit import train_benefit
from inflamrx.jobs.train import train
from inflamrx.modeling.explanations import contributions
from inflamrx.modeling.factors import patient_factors
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
        "--before", type=Path, default=None, help="another checkout's src folder to compare"
    )
    parser.add_argument("--rounds", type=int, default=1, help="batch processes per version")
    parser.add_argument("--batch-worker", nargs=3, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.batch_worker:
        _batch_worker(*args.batch_worker)
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'bench.db'}"
        write_cohort(simulate_cohort(2000, seed=0), root / "synthetic.csv")
        config = load_config(
            "configs/default.yaml",
            # Cross-validation and bootstrap do not change the served model: kept short.
            {"data.path": str(root / "synthetic.csv"), "report.enabled": False,
             "split.cv_repeats": 1, "evaluation.n_bootstrap": 100,
             "tracking.experiment": "serve-bench", "model.kind": "xgboost"},
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
                    _with_code(served, args.before / "inflamrx", root / "model-before"),
                    _with_code(benefit, args.before / "inflamrx", root / "benefit-before"),
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
        cohort.to_parquet(root / "cohort.parquet")
        _batch(served, root, args.before, args.rounds)


# --- 3. batch: one process per code version, the same model and rows -------------------------

BATCH_FIGURES = (
    # key, label, format
    ("raw_proba", "raw XGBoost predict_proba (s)", "{:.3f}"),
    ("off", "pyfunc predict, factors off (s)", "{:.3f}"),
    ("off_ratio", "  raw / pyfunc (aim >= 0.333)", "{:.3f}"),
    ("raw_contribs", "raw XGBoost pred_contribs (s)", "{:.3f}"),
    ("shap", "SHAP step, contributions() (s)", "{:.3f}"),
    ("shap_ratio", "  SHAP / pred_contribs (aim <= 1.5)", "{:.3f}"),
    ("formatting", "factor formatting, 3 per row (s)", "{:.3f}"),
    ("on", "pyfunc predict, 3 factors (s)", "{:.3f}"),
)


def _batch(served: Path, root: Path, before: Path | None, rounds: int) -> None:
    """Run ``_batch_worker`` for this code (and ``before``'s) in alternating processes."""
    versions = {"after": None} if before is None else {"before": before, "after": None}
    order = list(versions)
    runs: dict[str, list[dict[str, float]]] = {v: [] for v in versions}
    for r in range(rounds):  # ABBA...: drift of the machine's load hits both alike
        for name in order if r % 2 == 0 else order[::-1]:
            out = root / f"batch-{name}-{r}"
            env = dict(os.environ)
            if versions[name]:
                src = str(Path(versions[name]).resolve())  # type: ignore[arg-type]
                env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
            command = [sys.executable, __file__, "--batch-worker", str(served), str(root), str(out)]
            subprocess.run(command, env=env, check=True)
            runs[name].append(json.loads(out.with_suffix(".json").read_text()))
    for run in (run for found in runs.values() for run in found):
        run["off_ratio"] = run["raw_proba"] / run["off"]  # within one process
        run["shap_ratio"] = run["shap"] / run["raw_contribs"]

    def cell(version: str, key: str, fmt: str) -> str:
        if key.endswith("_ratio"):  # each process's own ratio
            return "/".join(fmt.format(run[key]) for run in runs[version])
        return fmt.format(min(run[key] for run in runs[version]))  # seconds: the best run

    n = int(runs["after"][0]["rows"])
    print(
        f"batch scoring at {n} rows in-process, XGBoost model (seconds: best of {rounds} "
        "process(es) per version; ratios: each process's own; the machine may be loaded)"
    )
    print(f"  {'':38s}" + "".join(f"{v:>14s}" for v in versions))
    for key, label, fmt in BATCH_FIGURES:
        print(f"  {label:38s}" + "".join(f"{cell(v, key, fmt):>14s}" for v in versions))
    if before is not None:
        a, b = (pd.read_parquet(root / f"batch-{v}-0.parquet") for v in ("before", "after"))
        same = a.equals(b)
        print(
            f"  same probabilities, decisions and factor texts as before: {'yes' if same else 'NO'}"
        )


def _timed(fn: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    answer = fn()
    return time.perf_counter() - start, answer


def _batch_worker(model_dir: str, root: str, out: str) -> None:
    """Measure the batch figures of the code this process imports; write them (JSON) and the
    answers with factors (Parquet, for the comparison of versions)."""
    print(f"  (measuring inflamrx from {Path(inflamrx.__file__).parents[1]})", file=sys.stderr)
    model = mlflow.pyfunc.load_model(model_dir)
    fitted = model.unwrap_python_model().model
    booster = fitted.pipeline.named_steps["model"]
    cohort = pd.read_parquet(Path(root) / "cohort.parquet")
    x, _ = fitted.inputs(cohort)
    matrix = fitted.transform(x)
    model.predict(cohort.head(200), params={"top_factors": 3})  # warm-up: imports, explainer
    figures = {"rows": float(len(cohort))}
    figures["raw_proba"] = _best(lambda: booster.predict_proba(matrix))
    figures["off"] = _best(lambda: model.predict(cohort, params={"top_factors": 0}), repeat=2)
    # The raw call includes its DMatrix: XGBoost's native SHAP takes no numpy array.
    figures["raw_contribs"], _ = _timed(
        lambda: booster.get_booster().predict(xgboost.DMatrix(matrix), pred_contribs=True)
    )
    figures["shap"], contrib = _timed(lambda: contributions(fitted, x, matrix))
    figures["formatting"] = _best(lambda: patient_factors(contrib, x, 3), repeat=2)
    figures["on"], answer = _timed(lambda: model.predict(cohort, params={"top_factors": 3}))
    answer["top_factors"] = [
        "; ".join(str(f["text"]) for f in row) for row in answer["top_factors"]
    ]
    answer["warnings"] = ["; ".join(row) for row in answer["warnings"]]
    answer.to_parquet(Path(out).with_suffix(".parquet"))
    Path(out).with_suffix(".json").write_text(json.dumps(figures))


if __name__ == "__main__":
    main()
