"""Benchmark: `inflamrx validate` and `inflamrx predict` on a big CSV file, beside pandas.

Run: .venv/bin/python benchmarks/bigfile_benchmark.py [--rows 2000000] [--file PATH]
         [--before SRC] [--joined] [--repeat 1]

Each command runs in a fresh process, side by side in one run (they take turns, so all see the
same machine load); for each: wall time and peak memory (the child's ru_maxrss, from wait4):
- ``pandas.read_csv`` of the file (the floor),
- ``inflamrx validate --out accepted.parquet --rejected rejected.csv``,
- ``inflamrx predict --out predictions.csv --rejected rejected.csv`` with an XGBoost model trained
  on 2,000 SYNTHETIC patients (configs/default.yaml, one CV repeat) in a temporary SQLite store.
Aims (issue 14, item 4): peak <= pandas' peak + 4x the file's size; wall <= 3x pandas'.
The file: ``inflamrx simulate`` (20,000 SYNTHETIC patients), its rows repeated up to ``--rows``
with every patient_id made unique (``--file`` takes an existing file instead).
``--before SRC`` (e.g. the ``src`` folder of a checkout of main) runs the inflamrx commands with
that source first on PYTHONPATH too, to print before and after from one run. ``--joined``
also validates the same rows split into two files joined on patient_id (read in memory).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MB = 1024 * 1024


def _measure(command: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float, int]:
    """Wall seconds, peak RSS in MB and exit code of one fresh process."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        command, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode not in (0, 1):
        err = proc.stderr.read().decode(errors="replace")[-600:] if proc.stderr else ""
        print(f"  ! {' '.join(command[:3])}... exited {proc.returncode}: {err}")
    if proc.stderr:
        proc.stderr.close()
    return wall, usage.ru_maxrss / 1024, proc.returncode  # ru_maxrss is in KB on Linux


def _big_file(root: Path, rows: int, env: dict[str, str]) -> Path:
    cli = str(BIN / "inflamrx")
    subprocess.run(
        [cli, "simulate", "--n", "20000", "--seed", "0", "--out", "base.csv"],
        env=env, cwd=root, check=True, capture_output=True,
    )  # fmt: skip
    header, *body = (root / "base.csv").read_text().splitlines(keepends=True)
    out = root / "big.csv"
    with out.open("w") as f:
        f.write(header)
        done, copy = 0, 0
        while done < rows:
            part = body[: rows - done]
            f.writelines(f"{pid}-{copy}," + rest for pid, rest in (b.split(",", 1) for b in part))
            done, copy = done + len(part), copy + 1
    shutil.copy(root / "base.meta.json", root / "big.meta.json")  # labelled SYNTHETIC too
    return out


def _joined_config(root: Path, big: Path) -> Path:
    """The big file split in two (columns), joined back on patient_id by data.join_on (a file
    without quotes: cells are split at commas)."""
    with big.open() as f:
        half = len(f.readline().split(",")) // 2
    with big.open() as src, (root / "a.csv").open("w") as a, (root / "b.csv").open("w") as b:
        for line in src:
            cells = line.rstrip("\n").split(",")
            a.write(",".join(cells[:half]) + "\n")
            b.write(",".join([cells[0], *cells[half:]]) + "\n")
    config = root / "joined.yaml"
    paths = f"[{root / 'a.csv'}, {root / 'b.csv'}]"
    config.write_text(f"data:\n  path: {paths}\n  join_on: patient_id\n")
    return config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--file", type=Path, help="an existing CSV file instead of a generated one")
    parser.add_argument("--before", type=Path, help="another source tree, run side by side")
    parser.add_argument("--joined", action="store_true", help="also two files joined on an id")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        env = os.environ | {
            "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'bench.db'}",
            "PYTHONPATH": str(HERE / "src"),
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "OMP_NUM_THREADS": "1",
        }
        cli = str(BIN / "inflamrx")
        big = args.file.resolve() if args.file else _big_file(root, args.rows, env)
        subprocess.run(
            [cli, "simulate", "--n", "2000", "--seed", "1", "--out", "train.csv"],
            env=env, cwd=root, check=True, capture_output=True,
        )  # fmt: skip
        subprocess.run(
            [cli, "train", "--config", str(HERE / "configs/default.yaml"), "--data", "train.csv",
             "--set", "model.kind=xgboost", "--set", "split.cv_repeats=1",
             "--set", "report.enabled=false", "--set", "tracking.experiment=bigfile-bench"],
            env=env, cwd=root, check=True, capture_output=True,
        )  # fmt: skip
        size = big.stat().st_size / MB
        with big.open() as f:
            n_rows = sum(1 for _ in f) - 1
        py = sys.executable
        commands = {
            "pandas.read_csv": [py, "-c", f"import pandas; pandas.read_csv({str(big)!r})"],
            "validate": [cli, "validate", "--data", str(big), "--out", "accepted.parquet",
                         "--rejected", "rejected.csv"],
            "predict": [cli, "predict", "--model", "models:/inflamrx-response/1", "--data",
                        str(big), "--out", "predictions.csv", "--rejected", "rejected.csv"],
        }  # fmt: skip
        if args.joined:
            config = str(_joined_config(root, big))
            commands["validate, 2 files joined"] = [cli, "validate", "--config", config]
        trees = {"": env}
        if args.before is not None:
            trees[" (before)"] = env | {"PYTHONPATH": str(args.before.resolve())}
        runs: dict[str, list[tuple[float, float, int]]] = {}
        for _ in range(args.repeat):
            for name, command in commands.items():
                for label, tree_env in trees.items():
                    if label and name.startswith("pandas"):
                        continue  # no inflamrx code in it
                    runs.setdefault(name + label, []).append(_measure(command, tree_env, root))
        load = os.getloadavg()[0]
        print(
            f"{n_rows:,} rows, {size:.0f} MB; best of {args.repeat} run(s); load average "
            f"{load:.1f} on {os.cpu_count()} cores"
        )
        best = {name: min(r) for name, r in runs.items()}
        floor_wall, floor_peak, _ = best["pandas.read_csv"]
        print(f"  {'command':34s} {'wall s':>8s} {'peak MB':>8s}  wall/pandas  (peak-pandas)/file")
        for name, (wall, peak, code) in best.items():
            ratio = wall / floor_wall
            extra = (peak - floor_peak) / size
            aims = ""
            if not name.startswith("pandas"):
                met = "met" if ratio <= 3 and extra <= 4 else "NOT met"
                aims = f"{ratio:6.2f}x       {extra:6.2f}x   aims {met} (exit {code})"
            print(f"  {name:34s} {wall:8.1f} {peak:8.0f}  {aims}")
        print("  aims: wall <= 3x pandas.read_csv; peak <= pandas' peak + 4x the file size")


if __name__ == "__main__":
    main()
