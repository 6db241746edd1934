"""Tune hyperparameters with Optuna without fooling anyone about how good the model is.

The stage, in order:

1. **Search** (training part only): TPE proposes parameters from the config's search space;
   each trial cross-validates the one pipeline fold by fold, reporting the running AUROC so a
   pruner stops hopeless trials. XGBoost stops early on an inner validation part of each
   fitting fold, never on the fold it is scored on.
2. **Honest estimate**: the best trial's score is optimistic (it won a contest on those very
   folds), so the whole procedure is re-run inside nested cross-validation: each outer fold
   runs its own in-memory study and scores its winner on the outer fold.
3. **Refit** the best configuration on all training data, then ``training.evaluate_and_log``
   evaluates it once on the held-out test set and logs and registers it, as ``train`` does.

Processes and storage. The study lives in an Optuna RDB storage (SQLite beside the MLflow
store, or PostgreSQL shared by many machines) and is created here, once, before any worker
starts: two processes creating one SQLite study at the same moment fail. With one worker the
search runs in this process; with K > 1, K ``python -m inflamrx.jobs.tune`` subprocesses search
while this one reports progress, each with one XGBoost/OpenMP/BLAS thread (several
multi-threaded processes on a few cores busy-wait each other into a 15-30x slowdown). A worker
costs ~10 s of imports and cohort validation before its first trial; it pays off for studies
of minutes, not seconds. Nested outer folds are dealt round-robin to this process and K - 1
subprocesses.

Budget and resume. ``n_trials`` counts every trial the study holds in states COMPLETE,
PRUNED, FAIL *and* RUNNING. A RUNNING trial is either in flight in another worker or was left
by a killed process; the RDB heartbeat turns the latter into FAIL, so each trial is counted
exactly once and none is re-run. Restarting a killed tune with the same ``--study`` therefore
continues where it stopped. Several workers checking the budget within the same few
milliseconds can overshoot it by at most ``workers - 1`` trials (the check and the creation
of a trial are not one transaction); one worker is exact.

Tracking. One parent MLflow run per tune job. After the search the parent logs one child run
per finished trial of the study (params, fold scores, state, duration, error), so trials from
other machines and from earlier, killed jobs appear too, and workers never write to MLflow
concurrently. Optuna's deprecated ``MLflowCallback`` is not used.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
from optuna.study import Study
from optuna.trial import FrozenTrial, Trial, TrialState
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GroupKFold, StratifiedKFold, train_test_split
from sklearn.pipeline import Pipeline

from inflamrx.config import Config, ModelConfig, ParamRange
from inflamrx.errors import InputError
from inflamrx.jobs.train import PreparedCohort, TrainResult, prepare
from inflamrx.modeling.metrics import Estimate, bootstrap_metric_ci
from inflamrx.modeling.model import build_pipeline

Progress = Callable[[str], None]
Splits = list[tuple[np.ndarray, np.ndarray]]

# Counted against the budget: RUNNING ones are in flight or will be failed by the heartbeat.
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
STORAGE_SCHEMES = ("sqlite", "postgresql", "postgresql+psycopg2")
# One thread per worker process (see the module docstring).
SINGLE_THREAD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
# Fingerprint-neutral tuning keys: they change how long or how honestly we search, not what
# one trial computes, so a study may be resumed with other values.
_NEUTRAL_TUNING_KEYS = ("n_trials", "timeout_s", "nested_folds", "nested_trials", "heartbeat_s")


# --------------------------------------------------------------------------- options and checks


@dataclass(frozen=True)
class TuneOptions:
    """What the command line adds to the config: budget, where the study lives, how many
    local worker processes. ``None`` means the config's value or the default."""

    trials: int | None = None
    timeout_s: float | None = None
    storage: str | None = None
    study: str | None = None
    workers: int = 1
    # Add this machine's trials to a shared study and stop: the nested estimate, refit and
    # registration are left to the job that started the study, so they run once.
    search_only: bool = False


def _check_positive(value: float | None, name: str) -> None:
    if value is not None and not value >= 1:
        raise InputError(f"{name} must be at least 1; got {value!r}")


def _check_timeout(value: float | None) -> None:
    if value is not None and not value > 0:
        raise InputError(f"--timeout must be a positive number of seconds; got {value!r}")


def _check_study_name(name: str | None) -> None:
    if name is not None and not (0 < len(name.strip()) <= 512):
        raise InputError(f"--study must be a name of 1 to 512 characters; got {name!r}")


def redact(url: str) -> str:
    """The storage URL without its password, safe to print and to log."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url.split("@")[-1]


def _check_storage(url: str | None) -> None:
    if url is None:
        return
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme not in STORAGE_SCHEMES:
        raise InputError(
            "--storage must be a sqlite:///path/to/optuna.db or postgresql://user@host/db URL; "
            f"got {redact(url)!r} (scheme {scheme or 'missing'!r} is not supported)"
        )


def check_options(options: TuneOptions) -> None:
    """Refuse unusable options with a message that names the option (exit 2 in the CLI)."""
    _check_positive(options.trials, "--trials")
    _check_positive(options.workers, "--workers")
    _check_timeout(options.timeout_s)
    _check_study_name(options.study)
    _check_storage(options.storage)


def default_storage() -> str:
    """SQLite beside the MLflow store: in the folder of ``MLFLOW_TRACKING_URI`` when that is a
    SQLite URI (tests keep everything in their tmp dir), else ``mlruns/optuna.db``."""
    from inflamrx.tracking.store import DEFAULT_STORE, store_folder

    folder = store_folder() or DEFAULT_STORE
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(folder / 'optuna.db').resolve()}"


def open_storage(url: str, heartbeat_s: int) -> optuna.storages.RDBStorage:
    """The RDB storage with a heartbeat: a trial whose process stops beating for three
    intervals (SIGKILL, power loss) is marked FAIL before the next trial starts."""
    from sqlalchemy.exc import SQLAlchemyError

    if url.startswith("postgresql://"):
        # SQLAlchemy 2.1 maps plain postgresql:// to psycopg 3; the pinned driver is psycopg2.
        url = "postgresql+psycopg2://" + url.removeprefix("postgresql://")
    engine: dict[str, Any] = (
        {"connect_args": {"timeout": 60}}  # several writers: wait for SQLite's lock, not fail
        if url.startswith("sqlite")
        else {"pool_pre_ping": True}
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            storage = optuna.storages.RDBStorage(
                url,
                engine_kwargs=engine,
                heartbeat_interval=heartbeat_s,
                grace_period=3 * heartbeat_s,
            )
    except (SQLAlchemyError, ImportError, ValueError) as exc:
        raise InputError(f"cannot open the study storage {redact(url)}: {exc}") from None
    if url.startswith("sqlite"):
        _write_ahead_log(storage.engine)
    return storage


def _write_ahead_log(engine: Any) -> None:
    """SQLite in WAL mode with normal sync: readers (progress, other workers) do not block the
    writer, and a commit does not wait for fsync; a crash can lose the last commits but never
    corrupts the file. Cuts the per-trial storage cost by about a third."""
    from sqlalchemy import event

    def pragmas(connection: Any, _record: Any) -> None:
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    event.listen(engine, "connect", pragmas)
    engine.dispose()  # connections opened while creating the tables get the pragmas too


# --------------------------------------------------------------------------- one trial


def suggest(trial: Trial, space: dict[str, ParamRange]) -> dict[str, Any]:
    """Draw one value per parameter of the search space."""
    params: dict[str, Any] = {}
    # l1_ratio last: it only exists for the elastic net (a conditional parameter).
    for name in sorted(space, key=lambda n: n == "l1_ratio"):
        r = space[name]
        if name == "l1_ratio" and params.get("penalty", "elasticnet") != "elasticnet":
            continue
        if r.choices is not None:
            params[name] = trial.suggest_categorical(name, r.choices)
            continue
        assert r.low is not None and r.high is not None  # ParamRange guarantees it
        if r.integer:
            params[name] = trial.suggest_int(name, int(r.low), int(r.high), log=r.log)
        else:
            params[name] = trial.suggest_float(name, r.low, r.high, log=r.log)
    return params


def with_params(config: Config, params: dict[str, Any]) -> Config:
    """The config with model parameters replaced, validated like a config file would be."""
    model = ModelConfig.model_validate(config.model.model_dump() | params)
    return config.model_copy(update={"model": model})


def search_space(config: Config) -> dict[str, ParamRange]:
    t = config.tuning
    return t.xgboost_space if config.model.kind == "xgboost" else t.logistic_space


def fold_splits(y: pd.Series, groups: pd.Series | None, n_folds: int, seed: int) -> Splits:
    """Folds with both outcome classes on each side (stratified, or grouped by site)."""
    positions = np.arange(len(y))
    if groups is not None:
        n = min(n_folds, int(groups.nunique()))
        if n < 2:
            raise InputError("tuning needs at least 2 groups (split.group_by) in the training part")
        raw = GroupKFold(n_splits=n).split(positions, y, groups)
    else:
        n = min(n_folds, int(y.value_counts().min()) if y.nunique() == 2 else 0)
        if n < 2:
            raise InputError("tuning needs at least 2 patients of each outcome class to fold")
        raw = StratifiedKFold(n_splits=n, shuffle=True, random_state=seed).split(positions, y)
    kept = [(f, s) for f, s in raw if y.iloc[s].nunique() == 2 and y.iloc[f].nunique() == 2]
    if not kept:
        raise InputError("no cross-validation fold has both outcome classes; tuning impossible")
    return kept


def fit_pipeline(config: Config, x: pd.DataFrame, y: pd.Series) -> tuple[Pipeline, int | None]:
    """Fit the one pipeline on ``(x, y)``; for XGBoost also return the trees kept.

    XGBoost stops early on an inner validation part of ``(x, y)`` (tuning.validation_fraction)
    so the caller's scoring fold never chooses the number of trees it is then scored with.
    """
    pipeline = build_pipeline(config)
    if config.model.kind != "xgboost":
        return pipeline.fit(x, y), None
    t = config.tuning
    inner, valid = train_test_split(
        np.arange(len(y)), test_size=t.validation_fraction, stratify=y, random_state=t.seed
    )
    features, model = pipeline.named_steps["features"], pipeline.named_steps["model"]
    features.fit(x.iloc[inner], y.iloc[inner])
    model.set_params(early_stopping_rounds=t.early_stopping_rounds)
    model.fit(
        features.transform(x.iloc[inner]),
        y.iloc[inner],
        eval_set=[(features.transform(x.iloc[valid]), y.iloc[valid])],
        verbose=False,
    )
    return pipeline, int(model.best_iteration) + 1


def score_fold(
    config: Config, x: pd.DataFrame, y: pd.Series, fit_idx: np.ndarray, score_idx: np.ndarray
) -> tuple[float, int | None]:
    """AUROC on one scoring fold of a pipeline fitted on the other folds; trees kept."""
    fitted, trees = fit_pipeline(config, x.iloc[fit_idx], y.iloc[fit_idx])
    p = fitted.predict_proba(x.iloc[score_idx])[:, 1]
    return float(roc_auc_score(y.iloc[score_idx], p)), trees


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:1000]


@dataclass(frozen=True)
class Objective:
    """Cross-validated AUROC of one trial's parameters on fixed folds (the same folds for
    every trial, so the pruner compares like with like)."""

    config: Config
    x: pd.DataFrame
    y: pd.Series
    splits: Splits
    worker: str = ""  # host:pid, to see which process ran a trial of a shared study

    def __call__(self, trial: Trial) -> float:
        scores: list[float] = []
        trees: list[int] = []
        if self.worker:
            trial.set_user_attr("worker", self.worker)
        try:
            cfg = with_params(self.config, suggest(trial, search_space(self.config)))
            for step, (fit_idx, score_idx) in enumerate(self.splits):
                # Module-level lookup on purpose: tests replace score_fold to make trials fail.
                score, kept = score_fold(cfg, self.x, self.y, fit_idx, score_idx)
                scores.append(score)
                trees += [kept] if kept is not None else []
                trial.report(float(np.mean(scores)), step)
                # Stopping after the last fold would save nothing: the trial then completes.
                if step < len(self.splits) - 1 and trial.should_prune():
                    _record(trial, scores, trees)
                    raise optuna.TrialPruned(
                        f"running AUROC {np.mean(scores):.3f} after {step + 1} folds"
                    )
        except optuna.TrialPruned:
            raise
        except Exception as exc:
            # The study goes on (catch=Exception); the reason stays with the failed trial.
            trial.set_user_attr("error", _error_text(exc))
            raise
        _record(trial, scores, trees)
        return float(np.mean(scores))


def _record(trial: Trial, scores: list[float], trees: list[int]) -> None:
    trial.set_user_attr("fold_auroc", [round(s, 6) for s in scores])
    trial.set_user_attr("folds_fitted", len(scores))
    if trees:
        # The final refit uses this many trees: the mean early-stopping point across folds.
        trial.set_user_attr("n_estimators_early_stopped", round(float(np.mean(trees))))


def final_config(config: Config, trial: FrozenTrial) -> Config:
    """The config a trial stands for, ready to refit without early stopping: its parameters,
    and for XGBoost the mean number of trees early stopping kept across its folds (refitting
    on all the data with the trial's cap instead would overfit past the stopping point)."""
    params = dict(trial.params)
    trees = trial.user_attrs.get("n_estimators_early_stopped")
    if config.model.kind == "xgboost" and trees:
        params["n_estimators"] = int(trees)
    return with_params(config, params)


# --------------------------------------------------------------------------- the search


def make_sampler(seed: int, n_existing: int = 0, worker: int = 0) -> optuna.samplers.TPESampler:
    """Seeded TPE. A fresh study with one worker uses the seed itself (reproducible); each
    extra worker and each resume gets its own stream, else they would redraw the very same
    start-up parameters as the first trials."""
    if n_existing or worker:
        seed = int(np.random.SeedSequence([seed, n_existing, worker]).generate_state(1)[0])
    return optuna.samplers.TPESampler(seed=seed)


def make_pruner(config: Config, n_folds: int) -> optuna.pruners.BasePruner:
    kind = config.tuning.pruner
    if kind == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0)
    if kind == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=n_folds)
    return optuna.pruners.NopPruner()


def fingerprint(config: Config, digest: str) -> str:
    """What one trial computes: data, outcome, features, fixed model parameters, folds, space.
    A study made for another fingerprint is refused rather than silently mixed."""
    tree = config.model_dump(mode="json")
    tuning = {k: v for k, v in tree["tuning"].items() if k not in _NEUTRAL_TUNING_KEYS}
    keep = {k: tree[k] for k in ("outcome", "features", "model", "split")} | {"tuning": tuning}
    text = json.dumps(keep | {"data": digest}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def default_study_name(config: Config, digest: str) -> str:
    return f"{config.tracking.experiment}-{config.model.kind}-{fingerprint(config, digest)[:8]}"


def create_study(storage: optuna.storages.BaseStorage, name: str, fp: str, config: Config) -> Study:
    """Create the study once (or load it); refuse one made for another configuration."""
    study = optuna.create_study(
        storage=storage, study_name=name, direction="maximize", load_if_exists=True
    )
    found = study.user_attrs.get("fingerprint")
    if found is None:
        study.set_user_attr("fingerprint", fp)
        study.set_user_attr("model_kind", config.model.kind)
    elif found != fp:
        raise InputError(
            f"study {name!r} was made for another configuration or cohort (fingerprint {found}, "
            f"this job {fp}); give another --study, or the config and data it was made with"
        )
    return study


@dataclass(frozen=True)
class TrialCounts:
    """The study's state, for the progress bar."""

    complete: int
    pruned: int
    failed: int
    running: int
    budget: int
    best: float | None

    @property
    def done(self) -> int:
        return self.complete + self.pruned + self.failed


def count_trials(trials: Sequence[FrozenTrial], budget: int) -> TrialCounts:
    states = [t.state for t in trials]
    values = [t.value for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    return TrialCounts(
        complete=states.count(TrialState.COMPLETE),
        pruned=states.count(TrialState.PRUNED),
        failed=states.count(TrialState.FAIL),
        running=states.count(TrialState.RUNNING),
        budget=budget,
        best=max(values) if values else None,
    )


def run_search(
    study: Study,
    objective: Objective,
    n_trials: int,
    deadline: float | None,
    callbacks: Iterable[Callable[[Study, FrozenTrial], None]] = (),
    on_counts: Callable[[TrialCounts], None] | None = None,
) -> None:
    """Run trials in this process until the study holds ``n_trials`` counted trials or the
    deadline (seconds since the epoch) passes."""

    def budget(s: Study, _trial: FrozenTrial) -> None:
        # MaxTrialsCallback(states=COUNTED), sharing its one read of the study with progress.
        counts = count_trials(s.get_trials(deepcopy=False), n_trials)
        if counts.done + counts.running >= n_trials:
            s.stop()
        if on_counts is not None:
            on_counts(counts)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # trials a killed process left RUNNING
    remaining = n_trials - len(study.get_trials(deepcopy=False, states=COUNTED))
    timeout = None if deadline is None else deadline - time.time()
    if remaining <= 0 or (timeout is not None and timeout <= 0):
        return
    study.optimize(
        objective,
        n_trials=remaining,
        timeout=timeout,
        catch=(Exception,),
        callbacks=[budget, *callbacks],
    )


def settle(study: Study, since: datetime, heartbeat_s: int) -> None:
    """Wait (at most one grace period) until trials left RUNNING by a process killed before
    this job started are failed by the heartbeat, so the study's record is final."""
    deadline = time.time() + 4 * heartbeat_s
    while time.time() < deadline:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if not any(t.datetime_start is not None and t.datetime_start < since for t in running):
            return
        time.sleep(min(1.0, heartbeat_s))


# --------------------------------------------------------------------------- nested estimate


@dataclass
class NestedFold:
    fold: int
    auroc: float
    params: dict[str, Any]
    score_idx: list[int]
    p: list[float]


@dataclass
class NestedEstimate:
    """Out-of-fold AUROC of the whole tuning procedure (search included)."""

    folds: list[NestedFold]
    pooled: Estimate  # AUROC of the pooled out-of-fold predictions with its bootstrap CI

    @property
    def fold_auroc(self) -> list[float]:
        return [f.auroc for f in self.folds]

    def summary(self) -> dict[str, Any]:
        return {
            "nested_auroc": self.pooled.estimate,
            "nested_auroc_ci": [self.pooled.ci_low, self.pooled.ci_high],
            "nested_auroc_folds": self.fold_auroc,
            "nested_auroc_fold_mean": float(np.mean(self.fold_auroc)),
            "nested_auroc_fold_sd": float(np.std(self.fold_auroc)),
        }


def outer_splits(data: PreparedCohort, config: Config) -> Splits:
    return fold_splits(
        data.y_train, data.groups_train, config.tuning.nested_folds, config.split.seed
    )


def nested_fold(data: PreparedCohort, config: Config, fold: int, n_trials: int) -> NestedFold:
    """One outer fold: a fresh in-memory study on the outer-training part, its winner refitted
    there and scored on the outer fold, which the study never saw."""
    x, y, groups = data.x_train, data.y_train, data.groups_train
    fit_idx, score_idx = outer_splits(data, config)[fold]
    inner_groups = groups.iloc[fit_idx] if groups is not None else None
    inner = fold_splits(y.iloc[fit_idx], inner_groups, config.tuning.cv_folds, config.split.seed)
    study = optuna.create_study(
        direction="maximize",
        sampler=make_sampler(config.tuning.seed, worker=fold + 1),
        pruner=make_pruner(config, len(inner)),
    )
    study.optimize(
        Objective(config, x.iloc[fit_idx], y.iloc[fit_idx], inner),
        n_trials=n_trials,
        catch=(Exception,),
    )
    try:
        best = study.best_trial
    except ValueError:
        raise RuntimeError(f"no trial of nested fold {fold} completed") from None
    fitted = build_pipeline(final_config(config, best)).fit(x.iloc[fit_idx], y.iloc[fit_idx])
    p = fitted.predict_proba(x.iloc[score_idx])[:, 1]
    return NestedFold(
        fold=fold,
        auroc=float(roc_auc_score(y.iloc[score_idx], p)),
        params=dict(best.params),
        score_idx=[int(i) for i in score_idx],
        p=[float(v) for v in p],
    )


def pool_nested(folds: list[NestedFold], data: PreparedCohort, config: Config) -> NestedEstimate:
    idx = np.concatenate([f.score_idx for f in folds])
    p = np.concatenate([f.p for f in folds])
    boot = bootstrap_metric_ci(
        data.y_train.to_numpy()[idx],
        p,
        n_boot=config.evaluation.n_bootstrap,
        seed=config.evaluation.seed,
    )
    return NestedEstimate(folds=sorted(folds, key=lambda f: f.fold), pooled=boot.auroc)


# --------------------------------------------------------------------------- worker processes


@dataclass
class _Worker:
    process: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path


def _start_worker(task: dict[str, Any], folder: Path, name: str) -> _Worker:
    out, err = folder / f"{name}.out", folder / f"{name}.err"
    with out.open("wb") as o, err.open("wb") as e:
        process = subprocess.Popen(
            [sys.executable, "-m", "inflamrx.jobs.tune"],
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
    from inflamrx.data.validate import validate_cohort

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
        task["worker"], [orphaned],
    )  # fmt: skip
    return {}


def task_splits(data: PreparedCohort, config: Config) -> Splits:
    return fold_splits(data.y_train, data.groups_train, config.tuning.cv_folds, config.split.seed)


# --------------------------------------------------------------------------- the job


@dataclass
class TuneResult:
    study: str
    storage: str  # password redacted
    counts: TrialCounts
    best_trial: int
    best_params: dict[str, Any]
    best_cv_auroc: float
    n_estimators_refit: int | None
    nested: NestedEstimate | None  # None with search_only
    fold_fits: int  # cross-validation fits the study's finished trials ran
    fold_fits_possible: int  # ... and would have run without pruning
    train: TrainResult | None  # the refitted, evaluated, registered model; None with search_only
    seconds: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def fold_fits_saved(self) -> float:
        return 1 - self.fold_fits / self.fold_fits_possible if self.fold_fits_possible else 0.0

    def summary(self) -> dict[str, Any]:
        """The JSON the CLI prints with --json."""
        trained = self.train.summary() if self.train is not None else {}
        return (
            trained
            | {
                "study": self.study,
                "storage": self.storage,
                "n_trials": self.counts.done,
                "n_complete": self.counts.complete,
                "n_pruned": self.counts.pruned,
                "n_failed": self.counts.failed,
                "best_trial": self.best_trial,
                "best_params": self.best_params,
                "best_cv_auroc": self.best_cv_auroc,
                "n_estimators_refit": self.n_estimators_refit,
                "fold_fits_saved_by_pruning": self.fold_fits_saved,
                "seconds": self.seconds,
            }
            | (self.nested.summary() if self.nested is not None else {})
            | {"warnings": trained.get("warnings", []) + self.warnings}
        )


def tune(
    config: Config,
    options: TuneOptions | None = None,
    progress: Progress | None = None,
    on_trials: Callable[[TrialCounts], None] | None = None,
) -> TuneResult:
    """Search, estimate honestly with nested CV, refit the best, evaluate once, log, register."""
    from inflamrx.data.validate import validate_cohort
    from inflamrx.jobs.train import check_feature_request

    options = options or TuneOptions()
    check_options(options)
    say = progress or (lambda _msg: None)
    seen = on_trials or (lambda _counts: None)
    n_trials = options.trials or config.tuning.n_trials
    timeout = options.timeout_s or config.tuning.timeout_s
    started, clock = datetime.now(), time.perf_counter()
    seconds: dict[str, float] = {}

    check_feature_request(config)
    say("validating the cohort")
    validated = validate_cohort(config.data)
    data = prepare(validated, config)
    splits = task_splits(data, config)
    fp = fingerprint(config, data.digest)
    url = options.storage or default_storage()
    name = options.study or default_study_name(config, data.digest)
    say(f"study {name!r} in {redact(url)}")
    storage = open_storage(url, config.tuning.heartbeat_s)
    # Created here, once, before any worker starts.
    study = create_study(storage, name, fp, config)
    seconds["prepare"] = time.perf_counter() - clock

    clock = time.perf_counter()
    deadline = time.time() + timeout if timeout else None
    say(f"searching: {n_trials} trials, {options.workers} worker(s), {len(splits)} folds each")
    _search(study, url, data, config, n_trials, deadline, options.workers, seen)
    settle(study, started, config.tuning.heartbeat_s)
    trials = study.get_trials(deepcopy=False)
    counts = count_trials(trials, n_trials)
    seen(counts)
    if counts.complete == 0:
        errors = {t.user_attrs.get("error") for t in trials if t.state == TrialState.FAIL}
        raise InputError(
            f"no trial of study {name!r} completed ({counts.failed} failed, {counts.pruned} "
            f"pruned); errors: {sorted(e for e in errors if e)[:3]}"
        )
    best = study.best_trial
    seconds["search"] = time.perf_counter() - clock
    fits = sum(int(t.user_attrs.get("folds_fitted", 0)) for t in trials if t.state in FINISHED)
    possible = len(splits) * sum(
        t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials
    )
    searched = TuneResult(
        study=name,
        storage=redact(url),
        counts=counts,
        best_trial=best.number,
        best_params=dict(best.params),
        best_cv_auroc=float(best.value or float("nan")),
        n_estimators_refit=None,
        nested=None,
        fold_fits=fits,
        fold_fits_possible=possible,
        train=None,
        seconds=seconds,
        warnings=[f"{counts.failed} trials failed; see the FAILED trials"] if counts.failed else [],
    )
    if options.search_only:
        return searched

    clock = time.perf_counter()
    nested_trials = config.tuning.nested_trials or n_trials
    say(f"nested estimate: {config.tuning.nested_folds} outer folds x {nested_trials} trials")
    nested = _nested(data, config, nested_trials, options.workers)
    seconds["nested"] = time.perf_counter() - clock

    clock = time.perf_counter()
    best_config = final_config(config, best)
    result = _log_job(study, url, best, best_config, nested, validated, data, say)
    seconds["refit_evaluate_log"] = time.perf_counter() - clock

    refit_trees = best_config.model.n_estimators if config.model.kind == "xgboost" else None
    return dataclasses.replace(
        searched, n_estimators_refit=refit_trees, nested=nested, train=result
    )


def search_here(
    study: Study,
    data: PreparedCohort,
    config: Config,
    n_trials: int,
    deadline: float | None,
    n_existing: int,
    worker: int,
    callbacks: Iterable[Callable[[Study, FrozenTrial], None]] = (),
    on_counts: Callable[[TrialCounts], None] | None = None,
) -> None:
    """One worker's share of the search, in the calling process, with its own sampler."""
    splits = task_splits(data, config)
    local = optuna.load_study(
        study_name=study.study_name,
        storage=study._storage,
        sampler=make_sampler(config.tuning.seed, n_existing, worker),
        pruner=make_pruner(config, len(splits)),
    )
    here = f"{socket.gethostname()}:{os.getpid()}"
    objective = Objective(config, data.x_train, data.y_train, splits, worker=here)
    run_search(local, objective, n_trials, deadline, callbacks, on_counts)


def _search(
    study: Study,
    url: str,
    data: PreparedCohort,
    config: Config,
    n_trials: int,
    deadline: float | None,
    workers: int,
    seen: Callable[[TrialCounts], None],
) -> None:
    """One worker: in this process (a SIGKILL of the tune stops everything at once). More:
    that many subprocesses on the same study, this process only reporting progress."""
    n_existing = len(study.get_trials(deepcopy=False))

    if workers == 1:
        search_here(study, data, config, n_trials, deadline, n_existing, 0, on_counts=seen)
        return
    task = {"mode": "search", "config": config.model_dump(mode="json"), "digest": data.digest,
            "storage": url, "study": study.study_name, "n_trials": n_trials,
            "deadline": deadline, "n_existing": n_existing, "parent_pid": os.getpid()}  # fmt: skip
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


def _log_job(
    study: Study,
    url: str,
    best: FrozenTrial,
    best_config: Config,
    nested: NestedEstimate,
    validated: Any,
    data: PreparedCohort,
    say: Progress,
) -> TrainResult:
    """The parent run: inputs, child runs per trial, tuning figures and the honest estimate,
    then the refit evaluated once and registered through ``evaluate_and_log``."""
    import mlflow

    from inflamrx.jobs.train import evaluate_and_log, log_job_inputs
    from inflamrx.tracking.store import tracked_run, use_experiment

    experiment_id = use_experiment(best_config.tracking.experiment)
    with tracked_run(experiment_id, run_name=f"tune-{best_config.model.kind}") as run:
        run_id = run.info.run_id
        log_job_inputs(data, best_config, job="tune")
        mlflow.set_tags(
            {"optuna_study": study.study_name, "optuna_storage": redact(url),
             "best_trial": str(best.number)}
        )  # fmt: skip
        say("logging one child run per trial")
        trials = study.get_trials(deepcopy=False)
        log_trial_runs(mlflow.MlflowClient(), experiment_id, run_id, study.study_name, trials)
        counts = count_trials(trials, len(trials))
        metrics = {
            "best_cv_auroc": float(best.value or float("nan")),
            "nested_auroc": nested.pooled.estimate,
            "nested_auroc_ci_low": nested.pooled.ci_low,
            "nested_auroc_ci_high": nested.pooled.ci_high,
            "nested_auroc_fold_mean": float(np.mean(nested.fold_auroc)),
            "nested_auroc_fold_sd": float(np.std(nested.fold_auroc)),
            "trials_complete": float(counts.complete),
            "trials_pruned": float(counts.pruned),
            "trials_failed": float(counts.failed),
        }
        mlflow.log_metrics({k: v for k, v in metrics.items() if np.isfinite(v)})
        for f in nested.folds:
            mlflow.log_metric("nested_fold_auroc", f.auroc, step=f.fold)
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            label = "SYNTHETIC cohort" if best_config.data.is_synthetic else None
            save_tuning_plots(study, trials, folder, label)
            (folder / "best_params.json").write_text(json.dumps(best.params, indent=2))
            folds = [
                {"fold": f.fold, "auroc": f.auroc, "best_params": f.params} for f in nested.folds
            ]
            (folder / "nested.json").write_text(json.dumps(folds, indent=2))
            trial_table(trials).to_csv(folder / "trials.csv", index=False)
            mlflow.log_artifacts(str(folder), artifact_path="tuning")
        say("refitting the best configuration on all training data")
        fitted = build_pipeline(best_config).fit(data.x_train, data.y_train)
        cv_scores = [float(s) for s in best.user_attrs.get("fold_auroc", [])]
        return evaluate_and_log(run_id, fitted, data, validated, best_config, cv_scores, say)


# --------------------------------------------------------------------------- tracking helpers


def _ms(moment: datetime | None) -> int | None:
    return int(moment.timestamp() * 1000) if moment is not None else None


_RUN_STATUS = {
    TrialState.COMPLETE: "FINISHED",
    TrialState.PRUNED: "KILLED",
    TrialState.FAIL: "FAILED",
}
_NO_HEARTBEAT = "no heartbeat: the process running this trial stopped (killed?) before it ended"


def log_trial_runs(
    client: Any, experiment_id: str, parent_id: str, study: str, trials: Sequence[FrozenTrial]
) -> None:
    """One nested MLflow run per finished trial: params, fold scores, state, duration, error."""
    from mlflow.entities import Metric, Param, RunTag

    for t in trials:
        if t.state not in _RUN_STATUS:
            continue  # still running on another machine: logged by the job that sees it end
        start = _ms(t.datetime_start) or int(time.time() * 1000)
        tags = {"mlflow.parentRunId": parent_id, "optuna_study": study,
                "optuna_trial": str(t.number), "optuna_state": t.state.name}  # fmt: skip
        if t.state == TrialState.FAIL:
            tags["error"] = str(t.user_attrs.get("error", _NO_HEARTBEAT))
        run = client.create_run(
            experiment_id, start_time=start, tags=tags, run_name=f"trial-{t.number}"
        )
        metrics = [Metric("cv_auroc_running", float(v), start, int(step))
                   for step, v in t.intermediate_values.items()]  # fmt: skip
        metrics += [Metric("fold_auroc", float(v), start, i)
                    for i, v in enumerate(t.user_attrs.get("fold_auroc", []))]  # fmt: skip
        extra = {"cv_auroc": t.value, "folds_fitted": t.user_attrs.get("folds_fitted"),
                 "n_estimators_early_stopped": t.user_attrs.get("n_estimators_early_stopped"),
                 "duration_s": t.duration.total_seconds() if t.duration else None}  # fmt: skip
        metrics += [Metric(k, float(v), start, 0) for k, v in extra.items() if v is not None]
        client.log_batch(
            run.info.run_id,
            metrics=metrics,
            params=[Param(k, str(v)) for k, v in t.params.items()],
            tags=[RunTag("trial_number", str(t.number))],
            synchronous=True,
        )
        client.set_terminated(run.info.run_id, _RUN_STATUS[t.state], _ms(t.datetime_complete))


def trial_table(trials: Sequence[FrozenTrial]) -> pd.DataFrame:
    """Trial number, state, value, duration, folds, error and parameters (no patient data)."""
    rows = []
    for t in trials:
        rows.append(
            {"trial": t.number, "state": t.state.name, "cv_auroc": t.value,
             "duration_s": t.duration.total_seconds() if t.duration else None,
             "folds_fitted": t.user_attrs.get("folds_fitted"),
             "error": t.user_attrs.get("error")}
            | {f"param.{k}": v for k, v in t.params.items()}
        )  # fmt: skip
    return pd.DataFrame(rows)


def save_tuning_plots(
    study: Study, trials: Sequence[FrozenTrial], folder: Path, label: str | None
) -> list[Path]:
    """Optimisation history and parameter importance (PNG, matplotlib, no pyplot state)."""
    from inflamrx.reporting.figures import (
        new_axes,
    )  # matplotlib only when plotting (workers never do)

    def axes(title: str) -> tuple[Any, Any]:
        return new_axes(title, label, size=(6.0, 4.5))

    written = []
    done = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    pruned = [t for t in trials if t.state == TrialState.PRUNED and t.intermediate_values]
    fig, ax = axes("Optimisation history (cross-validated AUROC, training part)")
    ax.scatter([t.number for t in done], [t.value for t in done], s=14, label="complete")
    if pruned:
        last = [t.intermediate_values[max(t.intermediate_values)] for t in pruned]
        ax.scatter([t.number for t in pruned], last, s=14, marker="x", c="grey",
                   label="pruned (running AUROC when stopped)")  # fmt: skip
    if done:
        order = sorted(done, key=lambda t: t.number)
        ax.step([t.number for t in order], np.maximum.accumulate([float(t.value or 0) for t in order]),
                where="post", c="C3", label="best so far")  # fmt: skip
    ax.set_xlabel("trial")
    ax.set_ylabel("AUROC")
    ax.legend(loc="lower right", fontsize=8)
    written.append(folder / "optimisation_history.png")
    fig.savefig(written[-1], dpi=110)

    try:
        importance = optuna.importance.get_param_importances(study)
    except (ValueError, RuntimeError, ZeroDivisionError):
        importance = {}  # too few complete trials to say
    if importance:
        fig, ax = axes("Parameter importance (PED-ANOVA)")
        names = list(importance)[::-1]
        ax.barh(names, [importance[n] for n in names])
        ax.set_xlabel("importance (share)")
        written.append(folder / "param_importance.png")
        fig.savefig(written[-1], dpi=110)
    return written


if __name__ == "__main__":  # a worker process: task JSON on stdin, result JSON on stdout
    print(json.dumps(worker_main(json.loads(sys.stdin.read()))))
