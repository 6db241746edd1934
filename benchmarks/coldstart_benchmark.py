"""Benchmark: cold start of the command line, each command in a fresh process.

Run: .venv/bin/python benchmarks/coldstart_benchmark.py [--repeat 3] [--before SRC]

Side by side in one run (the commands take turns, so all see the same machine load), median
wall time of:
- ``python -c "import mlflow, xgboost"`` (the floor of any command that scores),
- the registry look-up alone (``mlflow.models.Model.load`` of a URI that does not exist),
- ``inflamrx predict`` of a model URI that does not exist (aim: about the look-up's time),
- ``inflamrx predict`` on 300 rows of a logged model,
- ``inflamrx validate`` on the same 300 rows, against ``python -c "import pandas"``.
With ``--before SRC`` (for example the ``src`` folder of a checkout of main) the inflamrx
commands also run with that source first on PYTHONPATH, to print before and after.

The model is trained with configs/default.yaml on a SYNTHETIC cohort, tracked in a
temporary SQLite store.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _wall(command: list[str], env: dict[str, str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(command, env=env, cwd=cwd, capture_output=True, check=False, timeout=600)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--before", type=Path, help="another source tree, run side by side")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        env = os.environ | {
            "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'bench.db'}",
            "PYTHONPATH": str(HERE / "src"),
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        cli = str(BIN / "inflamrx")
        subprocess.run(
            [cli, "simulate", "--n", "2000", "--seed", "0", "--out", "synthetic.csv"],
            env=env, cwd=root, check=True, capture_output=True,
        )  # fmt: skip
        lines = (root / "synthetic.csv").read_text().splitlines(keepends=True)
        (root / "s300.csv").write_text("".join(lines[:301]))
        subprocess.run(
            [cli, "train", "--config", str(HERE / "configs/default.yaml"), "--data",
             "synthetic.csv", "--set", "split.cv_repeats=1", "--set", "report.enabled=false",
             "--set", "tracking.experiment=coldstart-bench"],
            env=env, cwd=root, check=True, capture_output=True,
        )  # fmt: skip
        lookup = (
            "import mlflow\nfrom mlflow.models import Model\n"
            "try:\n    Model.load('models:/no-such-model/1')\nexcept Exception:\n    pass\n"
        )
        py = sys.executable
        commands = {
            "import mlflow, xgboost": [py, "-c", "import mlflow, xgboost"],
            "import pandas": [py, "-c", "import pandas"],
            "registry look-up alone": [py, "-c", lookup],
            "predict, unknown model": [
                cli, "predict", "--model", "models:/no-such-model/1", "--data", "s300.csv"
            ],
            "predict, 300 rows": [
                cli, "predict", "--model", "models:/inflamrx-response/1", "--data", "s300.csv"
            ],
            "validate, 300 rows": [cli, "validate", "--data", "s300.csv"],
        }  # fmt: skip
        trees = {"": env}
        if args.before is not None:
            trees[" (before)"] = env | {"PYTHONPATH": str(args.before.resolve())}
        runs: dict[str, list[float]] = {}
        for _ in range(args.repeat):
            for name, command in commands.items():
                for label, tree_env in trees.items():
                    if label and name.startswith(("import", "registry")):
                        continue  # no inflamrx code in these
                    runs.setdefault(name + label, []).append(_wall(command, tree_env, root))
        load = os.getloadavg()[0]
        print(f"cold start, median of {args.repeat} runs (s); load average {load:.1f} on "
              f"{os.cpu_count()} cores")  # fmt: skip
        med = {name: statistics.median(times) for name, times in runs.items()}
        floors = {
            "predict": "import mlflow, xgboost",
            "validate": "import pandas",
        }
        for name, value in med.items():
            floor = "registry look-up alone" if "unknown" in name else None
            floor = floor or next((f for k, f in floors.items() if name.startswith(k)), None)
            ratio = f"{value / med[floor]:5.2f}x {floor}" if floor else ""
            print(f"  {name:34s} {value:7.2f}  {ratio}")


if __name__ == "__main__":
    main()
