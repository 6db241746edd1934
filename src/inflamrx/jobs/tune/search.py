"""The search: TPE proposes parameters from the model kind's search space; each trial
cross-validates the one pipeline fold by fold on the training part, reporting the running AUROC
so a pruner stops hopeless trials. Kinds that stop early do so on an inner validation part of
each fitting fold, never on the fold it is scored on.

Budget and resume. ``n_trials`` counts every trial the study holds in states COMPLETE,
PRUNED, FAIL *and* RUNNING. A RUNNING trial is either in flight in another worker or was left
by a killed process; the RDB heartbeat turns the latter into FAIL, so each trial is counted
exactly once and none is re-run. Restarting a killed tune with the same ``--study`` therefore
continues where it stopped. Several workers checking the budget within the same few
milliseconds can overshoot it by at most ``workers - 1`` trials (the check and the creation
of a trial are not one transaction); one worker is exact.
"""

from __future__ import annotations

import os
import socket
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import optuna
import pandas as pd
from optuna.study import MaxTrialsCallback, Study
from optuna.trial import FrozenTrial, Trial, TrialState
from sklearn.metrics import roc_auc_score

from inflamrx.config import Config, ParamRange
from inflamrx.modeling.kinds.base import EarlyStopping, fit_model, kind_of
from inflamrx.modeling.metrics import calibration_intercept_slope
from inflamrx.modeling.splits import PreparedCohort, Splits, cv_folds

# Counted against the budget: RUNNING ones are in flight or will be failed by the heartbeat.
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
ROUNDS_ATTR = "n_estimators_early_stopped"  # trial attribute: rounds kept by early stopping


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
    model = type(config.model).model_validate(config.model.model_dump() | params)
    return config.model_copy(update={"model": model})


def search_space(config: Config) -> dict[str, ParamRange]:
    """The configured space for the model's kind, or the kind's own default."""
    kind = config.model.kind
    return config.tuning.space_for(kind) or kind_of(kind).search_space


def fold_splits(y: pd.Series, groups: pd.Series | None, n_folds: int, seed: int) -> Splits:
    """The folds every trial is scored on (the same for every trial, so the pruner compares
    like with like); an InputError when the data cannot be folded."""
    return cv_folds(y, groups, n_folds, seed).required()


def score_fold(
    config: Config, x: pd.DataFrame, y: pd.Series, fit_idx: np.ndarray, score_idx: np.ndarray
) -> tuple[float, int | None]:
    """The calibration-guarded AUROC on one scoring fold of a model fitted on the other folds
    (see ``guarded_auroc``), and the rounds its early stopping kept (on an inner validation
    part of the fitting folds, never the scoring fold, so the fold never chooses the number of
    rounds it is then scored with)."""
    t = config.tuning
    stop = EarlyStopping(t.early_stopping_rounds, t.validation_fraction, t.seed)
    fitted = fit_model(config, x.iloc[fit_idx], y.iloc[fit_idx], stop)
    p = fitted.probability(x.iloc[score_idx])
    return guarded_auroc(y.iloc[score_idx].to_numpy(), p), fitted.rounds_kept


# AUROC lost per unit of |ln(calibration slope)|: a slope of 1.39 (predictions far too flat)
# costs 0.033, 1.1 costs 0.010; AUROC alone would reward settings that flatten predictions.
CALIBRATION_GUARD = 0.1


def guarded_auroc(y: np.ndarray, p: np.ndarray) -> float:
    """Tuning's score: AUROC - CALIBRATION_GUARD x |ln(calibration slope)| on the fold."""
    auroc = float(roc_auc_score(y, p))
    _, slope = calibration_intercept_slope(y, p)
    if not np.isfinite(slope) or slope <= 0:
        return auroc - CALIBRATION_GUARD * 3.0  # no usable calibration: as bad as slope e^3
    return auroc - CALIBRATION_GUARD * abs(float(np.log(slope)))


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
        # The final refit uses this many rounds: the mean early-stopping point across folds.
        # (The attribute keeps release 0.1.0's name, so studies it started still resume.)
        trial.set_user_attr(ROUNDS_ATTR, round(float(np.mean(trees))))


def final_config(config: Config, trial: FrozenTrial) -> Config:
    """The config a trial stands for, ready to refit without early stopping: its parameters,
    and, for kinds that stop early, the mean number of rounds early stopping kept across its
    folds (refitting on all the data with the trial's cap instead would overfit past the
    stopping point)."""
    params = dict(trial.params)
    rounds = trial.user_attrs.get(ROUNDS_ATTR)
    if rounds:
        params |= kind_of(config.model.kind).refit_params(int(rounds))
    return with_params(config, params)


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

    def progress(s: Study, _trial: FrozenTrial) -> None:
        if on_counts is not None:
            on_counts(count_trials(s.get_trials(deepcopy=False), n_trials))

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
        callbacks=[MaxTrialsCallback(n_trials, states=COUNTED), progress, *callbacks],
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


def task_splits(data: PreparedCohort, config: Config) -> Splits:
    return fold_splits(data.y_train, data.groups_train, config.tuning.cv_folds, config.split.seed)


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
