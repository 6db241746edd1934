"""Worker processes. With one worker the search runs in the tune process; with K > 1, K
``python -m inflamrx.jobs.tune.workers`` subprocesses search while the tune process reports
progress, each with one XGBoost/OpenMP/BLAS thread (several multi-threaded processes on a few
cores busy-wait each other into a 15-30x slowdown). A worker costs ~10 s of imports and cohort
validation before its first trial; it pays off for studies of minutes, not seconds. Nested
outer folds are dealt round-robin to the tune process and K - 1 subprocesses.

Two kinds of study run here (``TARGETS``): the single-arm response study and the two-arm
benefit study (``benefit``); a worker process finds its kind by name in its task.
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
from inflamrx.jobs.tune.benefit import (
    load_benefit_cohort,
    n_outer_benefit,
    nested_benefit_fold,
    pool_benefit,
    search_benefit,
)
from inflamrx.jobs.tune.nested import (
    NestedEstimate,
    NestedFold,
    nested_fold,
    outer_splits,
    pool_nested,
)
from inflamrx.jobs.tune.search import TrialCounts, count_trials, search_here
from inflamrx.jobs.tune.storage import open_storage
from inflamrx.modeling.splits import prepare

# One thread per worker process (see the module docstring).
SINGLE_THREAD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@dataclass(frozen=True)
class Target:
    """What a study's trials fit and score, as a worker process needs it. ``cohort`` is the
    target's own prepared cohort (``PreparedCohort``, ``BenefitCohort``), with a ``digest``."""

    load: Callable[[Config], Any]  # validate and prepare the cohort (in a worker process)
    search: Callable[..., None]  # one worker's share of the search: ``search.search_here``
    n_outer: Callable[[Any, Config], int]  # outer folds of the nested estimate
    nested_fold: Callable[[Any, Config, int, int], NestedFold]  # cohort, config, fold, trials
    pool: Callable[[list[NestedFold], Any, Config], NestedEstimate]


TARGETS = {
    "response": Target(
        load=lambda config: prepare(validate_cohort(config.data), config),
        search=search_here,
        n_outer=lambda data, config: len(outer_splits(data, config)),
        nested_fold=nested_fold,
        pool=pool_nested,
    ),
    "benefit": Target(
        load=load_benefit_cohort,
        search=search_benefit,
        n_outer=n_outer_benefit,
        nested_fold=nested_benefit_fold,
        pool=pool_benefit,
    ),
}


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
    target = TARGETS[task["target"]]
    data = target.load(config)
    if data.digest != task["digest"]:
        raise RuntimeError("the cohort changed since the tune job started (data digest differs)")
    if task["mode"] == "nested":
        return {"folds": [target.nested_fold(data, config, k, task["n_trials"]).__dict__
                          for k in task["folds"]]}  # fmt: skip
    storage = open_storage(task["storage"], config.tuning.heartbeat_s)
    study = optuna.load_study(study_name=task["study"], storage=storage)
    parent = task["parent_pid"]

    def orphaned(study: Study, _trial: FrozenTrial) -> None:
        # The tune process was killed: finish this trial, start no other.
        if os.getppid() != parent:
            study.stop()

    target.search(
        study, data, config, task["n_trials"], task["deadline"], task["n_existing"],
        task["worker"], datetime.fromisoformat(task["since"]), [orphaned],
    )  # fmt: skip
    return {}


def _search(
    study: Study,
    url: str,
    data: Any,
    config: Config,
    n_trials: int,
    deadline: float | None,
    workers: int,
    since: datetime,
    seen: Callable[[TrialCounts], None],
    target: str = "response",
) -> None:
    """One worker: in this process (a SIGKILL of the tune stops everything at once). More:
    that many subprocesses on the same study, this process only reporting progress.
    ``data``: the target's cohort; ``since``: when the tune job started."""
    n_existing = len(study.get_trials(deepcopy=False))
    search = TARGETS[target].search
    if workers == 1:
        search(study, data, config, n_trials, deadline, n_existing, 0, since, on_counts=seen)
        return
    task = {"mode": "search", "target": target, "config": config.model_dump(mode="json"),
            "digest": data.digest, "storage": url, "study": study.study_name,
            "n_trials": n_trials, "deadline": deadline, "n_existing": n_existing,
            "parent_pid": os.getpid(), "since": since.isoformat()}  # fmt: skip
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


def _nested(
    data: Any, config: Config, n_trials: int, workers: int, target: str = "response"
) -> NestedEstimate:
    """Outer folds dealt round-robin: worker 0's share here, the others' in subprocesses."""
    kind = TARGETS[target]
    n_outer = kind.n_outer(data, config)
    shares = [list(range(w, n_outer, workers)) for w in range(min(workers, n_outer))]
    task = {"mode": "nested", "target": target, "config": config.model_dump(mode="json"),
            "digest": data.digest, "n_trials": n_trials}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        others = [_start_worker(task | {"folds": share}, Path(tmp), f"nested{w}")
                  for w, share in enumerate(shares[1:], start=1)]  # fmt: skip
        try:
            folds = [kind.nested_fold(data, config, k, n_trials) for k in shares[0]]
            for w in others:
                folds += [NestedFold(**f) for f in json.loads(_finish(w).splitlines()[-1])["folds"]]
        finally:
            _stop_all(others)
    return kind.pool(folds, data, config)


if __name__ == "__main__":  # a worker process: task JSON on stdin, result JSON on stdout
    print(json.dumps(worker_main(json.loads(sys.stdin.read()))))
