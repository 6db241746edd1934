"""Worker processes. With one worker the search runs in the tune process; with K > 1, K
``python -m inflamrx.jobs.tune.workers`` subprocesses search while the tune process reports
progress, each with one XGBoost/OpenMP/BLAS thread (several multi-threaded processes on a few
cores busy-wait each other into a 15-30x slowdown). A worker costs ~10 s of imports and cohort
validation before its first trial; it pays off for studies of minutes, not seconds. Nested
outer folds are dealt round-robin to the tune process and K - 1 subprocesses.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
from optuna.study import Study
from optuna.trial import FrozenTrial

from inflamrx.config import Config
from inflamrx.data.validate import validate_cohort
from inflamrx.jobs.tune.nested import (
    NestedEstimate,
    NestedFold,
    nested_fold,
    outer_splits,
    pool_nested,
)
from inflamrx.jobs.tune.search import TrialCounts, count_trials, search_here
from inflamrx.jobs.tune.storage import open_storage
from inflamrx.modeling.splits import PreparedCohort, prepare

# One thread per worker process (see the module docstring).
SINGLE_THREAD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@dataclass
class _Worker:
    process: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path


def _start_worker(task: dict[str, Any], folder: Path, name: str) -> _Worker:
    out, err = folder / f"{name}.out", folder / f"{name}.err"
    with out.open("wb") as o, err.open("wb") as e:
        process = subprocess.Popen(
            [sys.executable, "-m", "inflamrx.jobs.tune.workers"],
            stdin=subprocess.PIPE,
            stdout=o,
            stderr=e,
            env=os.environ | SINGLE_THREAD_ENV,
        )
    assert process.stdin is not None
    # The task (storage URL included) goes through a pipe: never on a command line or disk.
    process.stdin.write(json.dumps(task).encode())
    process.stdin.close()
    return _Worker(process, out, err)


def _finish(worker: _Worker) -> str:
    code = worker.process.wait()
    if code != 0:
        tail = worker.stderr.read_text(errors="replace").strip().splitlines()[-15:]
        raise RuntimeError(f"a tuning worker exited with code {code}:\n" + "\n".join(tail))
    return worker.stdout.read_text()


def _stop_all(workers: Iterable[_Worker]) -> None:
    for w in workers:
        if w.process.poll() is None:
            w.process.terminate()
    for w in workers:
        try:
            w.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            w.process.kill()


def worker_main(task: dict[str, Any]) -> dict[str, Any]:
    """Entry point of one worker process (``python -m inflamrx.jobs.tune``, task JSON on stdin)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    config = Config.model_validate(task["config"])
    data = prepare(validate_cohort(config.data), config)
    if data.digest != task["digest"]:
        raise RuntimeError("the cohort changed since the tune job started (data digest differs)")
    if task["mode"] == "nested":
        return {"folds": [nested_fold(data, config, k, task["n_trials"]).__dict__
                          for k in task["folds"]]}  # fmt: skip
    storage = open_storage(task["storage"], config.tuning.heartbeat_s)
    study = optuna.load_study(study_name=task["study"], storage=storage)
    parent = task["parent_pid"]

    def orphaned(study: Study, _trial: FrozenTrial) -> None:
        # The tune process was killed: finish this trial, start no other.
        if os.getppid() != parent:
            study.stop()

    search_here(
        study, data, config, task["n_trials"], task["deadline"], task["n_existing"],
        task["worker"], datetime.fromisoformat(task["since"]), [orphaned],
    )  # fmt: skip
    return {}


def _search(
    study: Study,
    url: str,
    data: PreparedCohort,
    config: Config,
    n_trials: int,
    deadline: float | None,
    workers: int,
    since: datetime,
    seen: Callable[[TrialCounts], None],
) -> None:
    """One worker: in this process (a SIGKILL of the tune stops everything at once). More:
    that many subprocesses on the same study, this process only reporting progress.
    ``since``: when the tune job started."""
    n_existing = len(study.get_trials(deepcopy=False))

    if workers == 1:
        search_here(study, data, config, n_trials, deadline, n_existing, 0, since, on_counts=seen)
        return
    task = {"mode": "search", "config": config.model_dump(mode="json"), "digest": data.digest,
            "storage": url, "study": study.study_name, "n_trials": n_trials,
            "deadline": deadline, "n_existing": n_existing, "parent_pid": os.getpid(),
            "since": since.isoformat()}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        started = [_start_worker(task | {"worker": w}, Path(tmp), f"w{w}") for w in range(workers)]
        try:
            while any(w.process.poll() is None for w in started):
                seen(count_trials(study.get_trials(deepcopy=False), n_trials))
                time.sleep(1.0)
            for w in started:
                _finish(w)
        finally:
            _stop_all(started)


def _nested(data: PreparedCohort, config: Config, n_trials: int, workers: int) -> NestedEstimate:
    """Outer folds dealt round-robin: worker 0's share here, the others' in subprocesses."""
    n_outer = len(outer_splits(data, config))
    shares = [list(range(w, n_outer, workers)) for w in range(min(workers, n_outer))]
    task = {"mode": "nested", "config": config.model_dump(mode="json"), "digest": data.digest,
            "n_trials": n_trials}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        others = [_start_worker(task | {"folds": share}, Path(tmp), f"nested{w}")
                  for w, share in enumerate(shares[1:], start=1)]  # fmt: skip
        try:
            folds = [nested_fold(data, config, k, n_trials) for k in shares[0]]
            for w in others:
                folds += [NestedFold(**f) for f in json.loads(_finish(w).splitlines()[-1])["folds"]]
        finally:
            _stop_all(others)
    return pool_nested(folds, data, config)


if __name__ == "__main__":  # a worker process: task JSON on stdin, result JSON on stdout
    print(json.dumps(worker_main(json.loads(sys.stdin.read()))))
