"""The search: TPE proposes parameters from the model kind's search space (with ``model.kind:
auto``, first the kind among ``model.candidates``, then that kind's parameters); each trial
cross-validates the one pipeline fold by fold on the training part, reporting the running AUROC
so a pruner stops hopeless trials. Kinds that stop early do so on an inner validation part of
each fitting fold, never on the fold it is scored on.

Budget and resume. ``n_trials`` counts the study's trials in states COMPLETE, PRUNED, FAIL and
RUNNING, except a FAIL that the heartbeat queued again (a killed trial, see ``storage``): a
trial that raised counts, a killed one is run again under a new number with the same
parameters, and its retry counts instead. A RUNNING trial is in flight in another worker or was
left by a killed process, which the heartbeat fails and queues again after the grace period; a
job waits (at most seven heartbeats) for those an earlier job left, so it ends with the study
complete. Restarting a killed tune with the same ``--study`` therefore continues where it
stopped. Several workers checking the budget within the same few milliseconds can overshoot it
by at most ``workers - 1`` trials (the check and the creation of a trial are not one
transaction); one worker is exact.
"""

from __future__ import annotations

import os
import socket
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import numpy as np
import optuna
import pandas as pd
from optuna.study import Study
from optuna.trial import FrozenTrial, Trial, TrialState
from sklearn.metrics import roc_auc_score

from inflamrx.config import AutoConfig, Config, ParamRange
from inflamrx.modeling.choice import candidate_config
from inflamrx.modeling.kinds.base import EarlyStopping, fit_model, kind_of
from inflamrx.modeling.metrics import calibration_intercept_slope
from inflamrx.modeling.reused_features import FeatureMemo
from inflamrx.modeling.splits import PreparedCohort, Splits, cv_folds

# Counted against the budget (less the killed ones that were queued again): RUNNING ones are
# in flight or will be failed by the heartbeat. WAITING ones (queued retries) count once run.
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


def trial_config(trial: Trial, config: Config) -> Config:
    """The config one trial stands for. With ``model.kind: auto`` the kind is the trial's first
    parameter (``kind``, among ``model.candidates``, each with its small-sample settings) and
    that kind's parameters are drawn after it (define-by-run: a trial holds only its own
    kind's parameters), so the kinds compete on the same folds and score."""
    if isinstance(config.model, AutoConfig):
        kind = trial.suggest_categorical("kind", list(config.model.candidates))
        config = candidate_config(config, str(kind))
    return with_params(config, suggest(trial, search_space(config)))


def search_space(config: Config) -> dict[str, ParamRange]:
    """The configured space for the model's kind, or the kind's own default."""
    kind = config.model.kind
    return config.tuning.space_for(kind) or kind_of(kind).search_space


def fold_splits(y: pd.Series, groups: pd.Series | None, n_folds: int, seed: int) -> Splits:
    """The folds every trial is scored on (the same for every trial, so the pruner compares
    like with like); an InputError when the data cannot be folded."""
    return cv_folds(y, groups, n_folds, seed).required()


def score_fold(
    config: Config,
    x: pd.DataFrame,
    y: pd.Series,
    fit_idx: np.ndarray,
    score_idx: np.ndarray,
    memo: FeatureMemo | None = None,
) -> tuple[float, int | None]:
    """The calibration-guarded AUROC on one scoring fold of a model fitted on the other folds
    (see ``guarded_auroc``), and the rounds its early stopping kept (on an inner validation
    part of the fitting folds, never the scoring fold, so the fold never chooses the number of
    rounds it is then scored with). ``memo``: the search's feature step, computed once per
    fold for all trials."""
    t = config.tuning
    stop = EarlyStopping(t.early_stopping_rounds, t.validation_fraction, t.seed)
    fitted = fit_model(config, x.iloc[fit_idx], y.iloc[fit_idx], stop, memo)
    p = fitted.probability(x.iloc[score_idx])
    guard = config.tuning.calibration_guard
    return guarded_auroc(y.iloc[score_idx].to_numpy(), p, guard), fitted.rounds_kept


# AUROC lost per unit of |ln(calibration slope)| (``tuning.calibration_guard``, default 0.3):
# a slope of 1.39 (predictions far too flat) costs 0.099, 1.1 costs 0.029. 0.1 let the winners'
# slopes on new patients spread over 0.85-1.17 (SYNTHETIC seeds 3-7, 1,500 patients, 30
# trials); 0.3 kept them within 0.89-1.06 at the same mean AUROC
# (benchmarks/tune_calibration_benchmark.py).


def guarded_auroc(y: np.ndarray, p: np.ndarray, guard: float) -> float:
    """Tuning's score: AUROC - guard x |ln(calibration slope)| on the fold."""
    auroc = float(roc_auc_score(y, p))
    if guard == 0:  # a study started by release 0.1.0: AUROC alone, as it was scored then
        return auroc
    _, slope = calibration_intercept_slope(y, p)
    if not np.isfinite(slope) or slope <= 0:
        return auroc - guard * 3.0  # no usable calibration: as bad as slope e^3
    return auroc - guard * abs(float(np.log(slope)))


def error_text(exc: BaseException) -> str:
    """What a failed trial keeps of its exception (user attribute ``error``)."""
    return f"{type(exc).__name__}: {exc}"[:1000]


class TrialObjective(Protocol):
    """One trial's score (the response AUROC here, the benefit study's C-for-benefit in
    ``jobs.tune.benefit``), run by the same search loop, storage and workers."""

    @property
    def config(self) -> Config: ...

    def __call__(self, trial: Trial) -> float: ...


def worker_label() -> str:
    """host:pid, to see which process ran a trial of a shared study."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class Objective:
    """Cross-validated AUROC of one trial's parameters on fixed folds (the same folds for
    every trial, so the pruner compares like with like)."""

    config: Config
    x: pd.DataFrame
    y: pd.Series
    splits: Splits
    worker: str = ""  # host:pid, to see which process ran a trial of a shared study
    # The feature step's fits and transforms of x, shared by this search's trials.
    memo: FeatureMemo = field(default_factory=FeatureMemo, repr=False, compare=False)

    def __call__(self, trial: Trial) -> float:
        scores: list[float] = []
        trees: list[int] = []
        if self.worker:
            trial.set_user_attr("worker", self.worker)
        try:
            cfg = trial_config(trial, self.config)
            for step, (fit_idx, score_idx) in enumerate(self.splits):
                # Module-level lookup on purpose: tests replace score_fold to make trials fail.
                score, kept = score_fold(cfg, self.x, self.y, fit_idx, score_idx, self.memo)
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
            trial.set_user_attr("error", error_text(exc))
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
    """The config a trial stands for, ready to refit without early stopping: its kind (an
    auto search's trials name it), its parameters, and, for kinds that stop early, the mean
    number of rounds early stopping kept across its folds (refitting on all the data with the
    trial's cap instead would overfit past the stopping point)."""
    params = dict(trial.params)
    kind = params.pop("kind", None)
    if kind is not None and isinstance(config.model, AutoConfig):
        config = candidate_config(config, str(kind))
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


def retried(trials: Sequence[FrozenTrial]) -> set[int]:
    """Numbers of the trials that were killed and queued again under a new number."""
    return {n for t in trials for n in t.system_attrs.get("retry_history", ())}


def counted(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """The trials counted against the budget (see the module docstring)."""
    again = retried(trials)
    return [t for t in trials if t.state in COUNTED and t.number not in again]


@dataclass(frozen=True)
class TrialCounts:
    """The study's state, for the progress bar. ``failed`` leaves out killed trials that were
    queued again; ``retried`` counts those."""

    complete: int
    pruned: int
    failed: int
    running: int
    budget: int
    best: float | None
    retried: int = 0

    @property
    def done(self) -> int:
        return self.complete + self.pruned + self.failed


def count_trials(trials: Sequence[FrozenTrial], budget: int) -> TrialCounts:
    again = retried(trials)
    states = [t.state for t in trials if t.number not in again]
    values = [t.value for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    return TrialCounts(
        complete=states.count(TrialState.COMPLETE),
        pruned=states.count(TrialState.PRUNED),
        failed=states.count(TrialState.FAIL),
        running=states.count(TrialState.RUNNING),
        budget=budget,
        best=max(values) if values else None,
        retried=len(again),
    )


@dataclass
class _Budget:
    """After each trial: report progress and stop once the budget is counted (one read of the
    study per trial; Optuna's MaxTrialsCallback cannot leave killed-and-retried trials out)."""

    n_trials: int
    on_counts: Callable[[TrialCounts], None] | None

    def __call__(self, study: Study, _trial: FrozenTrial) -> None:
        trials = study.get_trials(deepcopy=False)
        if self.on_counts is not None:
            self.on_counts(count_trials(trials, self.n_trials))
        if len(counted(trials)) >= self.n_trials:
            study.stop()


def _fail_stale(study: Study) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # failed and queued again (see storage)


def run_search(
    study: Study,
    objective: TrialObjective,
    n_trials: int,
    deadline: float | None,
    since: datetime,
    callbacks: Iterable[Callable[[Study, FrozenTrial], None]] = (),
    on_counts: Callable[[TrialCounts], None] | None = None,
) -> None:
    """Run trials in this process until the study counts ``n_trials`` trials or the deadline
    (seconds since the epoch) passes. Trials left RUNNING by a process killed before ``since``
    (this job's start) are waited for, at most seven heartbeats past the budget: the heartbeat
    fails and queues them again, and they are run here."""
    heartbeat = objective.config.tuning.heartbeat_s
    budget = _Budget(n_trials, on_counts)
    ran_at: tuple[int, int] | None = None  # (retried, waiting) when the last search started
    wait_until: float | None = None
    while deadline is None or time.time() < deadline:
        _fail_stale(study)
        trials = study.get_trials(deepcopy=False)
        todo = n_trials - len(counted(trials))
        now = (len(retried(trials)), sum(t.state == TrialState.WAITING for t in trials))
        if todo > 0 and now != ran_at:  # else nothing new to run: stopped by a callback
            ran_at = now
            study.optimize(
                objective,
                n_trials=todo,
                timeout=None if deadline is None else deadline - time.time(),
                catch=(Exception,),
                callbacks=[budget, *callbacks],
            )
            continue
        left = [t for t in trials if t.state == TrialState.RUNNING and t.datetime_start
                and t.datetime_start < since]  # fmt: skip
        wait_until = wait_until or time.time() + 7 * heartbeat  # > 6 beats: see storage
        if not left or time.time() > wait_until:
            return  # what is left RUNNING now is alive (another machine's)
        time.sleep(min(1.0, heartbeat))


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
    since: datetime,
    callbacks: Iterable[Callable[[Study, FrozenTrial], None]] = (),
    on_counts: Callable[[TrialCounts], None] | None = None,
) -> None:
    """One worker's share of the search, in the calling process, with its own sampler;
    ``since`` is when the tune job started."""
    splits = task_splits(data, config)
    objective = Objective(config, data.x_train, data.y_train, splits, worker=worker_label())
    pruner = make_pruner(config, len(splits))
    search_with(study, objective, pruner, n_trials, deadline, n_existing, worker, since,
                callbacks, on_counts)  # fmt: skip


def search_with(
    study: Study,
    objective: TrialObjective,
    pruner: optuna.pruners.BasePruner,
    n_trials: int,
    deadline: float | None,
    n_existing: int,
    worker: int,
    since: datetime,
    callbacks: Iterable[Callable[[Study, FrozenTrial], None]] = (),
    on_counts: Callable[[TrialCounts], None] | None = None,
) -> None:
    """Run ``objective`` on the stored study from this process, with this worker's sampler."""
    local = optuna.load_study(
        study_name=study.study_name,
        storage=study._storage,
        sampler=make_sampler(objective.config.tuning.seed, n_existing, worker),
        pruner=pruner,
    )
    run_search(local, objective, n_trials, deadline, since, callbacks, on_counts)
