"""The benefit study (``inflamrx tune`` with a treatment section): what its trials compute, its
fingerprint and default name, and its nested folds. The study itself runs on the single-arm
machinery: the same storage, heartbeats and retries of killed trials (``storage``), search loop
and budget (``search.search_with``), worker processes (``workers``) and MLflow child runs.

A trial draws a learner among those the data support (decided once, on all patients) and its
parameters: the penalty of the interaction and risk models, the tree kind's search space
(``tuning.space`` or the kind's default) for the meta-learners; its score is the C-for-benefit
of its cross-fitted predictions (never AUROC, which rewards prognosis). The winner's score won on
these folds, so it is optimistic: the nested estimate re-runs the search inside outer folds.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import optuna
from optuna.study import Study
from optuna.trial import FrozenTrial, Trial

from inflamrx.config import Config, ParamRange
from inflamrx.data.arms import requirement
from inflamrx.data.validate import ValidationResult, validate_cohort
from inflamrx.jobs.tune.nested import NestedEstimate, NestedFold
from inflamrx.jobs.tune.search import (
    TrialCounts,
    error_text,
    make_sampler,
    search_space,
    search_with,
    suggest,
    with_params,
    worker_label,
)
from inflamrx.jobs.tune.storage import space_dump
from inflamrx.modeling.benefit.cohort import (
    TwoArmCohort,
    crossfit,
    folds_for,
    holdout_split,
    prepare_two_arm,
    supported_learners,
)
from inflamrx.modeling.benefit.learners import TREE_KINDS
from inflamrx.modeling.benefit.validation import c_for_benefit
from inflamrx.modeling.kinds.benefit import BENEFIT, fit_benefit

LINEAR = ("interaction", "risk")
PENALTY = {"interaction_C": ParamRange(low=1e-3, high=10, log=True)}
TRIAL_BOOTSTRAP = 10  # a trial needs the point estimate only
# Inner budget of each outer fold when tuning.nested_trials is not set: each inner trial
# cross-fits a learner, so the honest estimate costs nested_folds x this many cross-fits.
NESTED_TRIALS = 10
METRIC = "c_for_benefit"


@dataclass(frozen=True)
class BenefitCohort:
    """The two-arm cohort and the learners its study searches (the same in every worker)."""

    data: TwoArmCohort
    learners: tuple[str, ...]
    notes: tuple[str, ...]  # why other learners are left out

    @property
    def digest(self) -> str:
        return self.data.digest


def benefit_cohort(validated: ValidationResult, config: Config) -> BenefitCohort:
    """The patients the search may see: all of them, or with ``treatment.validation:
    holdout`` the training part only (the held-out ones wait for the one validation)."""
    assert config.treatment is not None
    data = prepare_two_arm(validated, config)
    learners, notes = supported_learners(config, data)
    if config.treatment.validation == "holdout":
        data = data.subset(holdout_split(data, config)[0])
    return BenefitCohort(data, tuple(learners), tuple(notes))


def load_benefit_cohort(config: Config) -> BenefitCohort:
    """What a worker process reads: the cohort validated as the job validated it."""
    assert config.treatment is not None
    validated = validate_cohort(config.data, require=requirement(config.treatment))
    return benefit_cohort(validated, config)


def trial_config(config: Config, params: dict[str, Any]) -> Config:
    """``config`` with a trial's learner and parameters (validated like a config file)."""
    assert config.treatment is not None
    params = dict(params)
    treatment: dict[str, Any] = {"learner": params.pop("learner")}
    if "interaction_C" in params:
        treatment["interaction_C"] = params.pop("interaction_C")
    updated = config.treatment.model_validate(config.treatment.model_dump() | treatment)
    return with_params(config.model_copy(update={"treatment": updated}), params)


def benefit_score(config: Config, data: TwoArmCohort, benefit: np.ndarray) -> float:
    """The C-for-benefit point estimate; chance (0.5) where no pair can be matched."""
    estimate = c_for_benefit(
        data.y.to_numpy(),
        data.treated.astype(bool),
        benefit,
        seed=config.evaluation.seed,
        n_boot=TRIAL_BOOTSTRAP,
    ).estimate
    return float(estimate) if np.isfinite(estimate) else 0.5


@dataclass(frozen=True)
class BenefitObjective:
    """Cross-fitted C-for-benefit of one trial's learner and parameters."""

    config: Config
    data: TwoArmCohort
    learners: tuple[str, ...]
    worker: str = ""  # host:pid

    def __call__(self, trial: Trial) -> float:
        if self.worker:
            trial.set_user_attr("worker", self.worker)
        try:
            learner = trial.suggest_categorical("learner", list(self.learners))
            space = PENALTY if learner in LINEAR else search_space(self.config)
            cfg = trial_config(self.config, {"learner": learner} | suggest(trial, space))
            predicted = crossfit(cfg, learner, self.data)
            return benefit_score(self.config, self.data, predicted[BENEFIT].to_numpy())
        except Exception as exc:
            trial.set_user_attr("error", error_text(exc))  # the study goes on
            raise


def search_benefit(
    study: Study,
    cohort: BenefitCohort,
    config: Config,
    n_trials: int,
    deadline: float | None,
    n_existing: int,
    worker: int,
    since: datetime,
    callbacks: Iterable[Callable[[Study, FrozenTrial], None]] = (),
    on_counts: Callable[[TrialCounts], None] | None = None,
) -> None:
    """One worker's share of the benefit search (``search.search_here``'s counterpart). No
    pruning: a trial's score is computed once from all its out-of-fold predictions pooled,
    so there is no running score fold by fold to stop on."""
    objective = BenefitObjective(config, cohort.data, cohort.learners, worker_label())
    search_with(study, objective, optuna.pruners.NopPruner(), n_trials, deadline, n_existing,
                worker, since, callbacks, on_counts)  # fmt: skip


def fingerprint_benefit(config: Config, digest: str) -> str:
    """What one benefit trial computes (data, outcome, features, arms and learners, model
    kind and fixed parameters, folds, space); marked ``benefit`` so no single-arm study
    (fingerprinted by ``storage.fingerprint``) ever shares it."""
    tree = config.model_dump(mode="json")
    trees = config.model.kind in TREE_KINDS  # else only the linear learners are searched
    tuning = {"seed": config.tuning.seed, "penalty_space": space_dump(PENALTY),
              "space": space_dump(search_space(config)) if trees else None}  # fmt: skip
    treatment = {k: v for k, v in tree["treatment"].items() if k != "harm_threshold"}
    keep = {k: tree[k] for k in ("outcome", "features", "model")} | {
        "target": "benefit", "treatment": treatment, "tuning": tuning,
        "split_seed": config.split.seed, "evaluation_seed": config.evaluation.seed,
    }  # fmt: skip
    text = json.dumps(keep | {"data": digest}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def benefit_study_name(config: Config, digest: str) -> str:
    """``<experiment>-benefit-<fingerprint>``: single-arm names put a model kind where this has
    ``benefit`` (never a kind), so the two never collide and single-arm names are unchanged."""
    return f"{config.tracking.experiment}-benefit-{fingerprint_benefit(config, digest)[:8]}"


def outer_folds(cohort: BenefitCohort, config: Config) -> list[tuple[np.ndarray, np.ndarray]]:
    """Outer folds of the nested estimate, stratified on arm x outcome like cross-fitting."""
    return folds_for(cohort.data, config.tuning.nested_folds, config.split.seed)


def n_outer_benefit(cohort: BenefitCohort, config: Config) -> int:
    return len(outer_folds(cohort, config))


def nested_benefit_fold(
    cohort: BenefitCohort, config: Config, fold: int, n_trials: int
) -> NestedFold:
    """One outer fold: a fresh in-memory benefit study on the other folds' patients (same
    learners and space), its winner refitted there and its predicted benefit for the outer
    fold's patients, whom the search never saw."""
    data = cohort.data
    fit_idx, score_idx = outer_folds(cohort, config)[fold]
    inner = data.subset(fit_idx)
    study = optuna.create_study(
        direction="maximize", sampler=make_sampler(config.tuning.seed, worker=fold + 1)
    )
    study.optimize(
        BenefitObjective(config, inner, cohort.learners), n_trials=n_trials, catch=(Exception,)
    )
    try:
        best = study.best_trial
    except ValueError:
        raise RuntimeError(f"no trial of nested fold {fold} completed") from None
    chosen = trial_config(config, dict(best.params))
    fitted = fit_benefit(chosen, best.params["learner"], inner.x, inner.y, inner.treated)
    benefit = fitted.predict(data.x.iloc[score_idx])[BENEFIT].to_numpy()
    return NestedFold(
        fold=fold,
        score=benefit_score(config, data.subset(score_idx), benefit),
        params=dict(best.params),
        score_idx=[int(i) for i in score_idx],
        p=[float(v) for v in benefit],
    )


def pool_benefit(folds: list[NestedFold], cohort: BenefitCohort, config: Config) -> NestedEstimate:
    """C-for-benefit of the pooled out-of-fold predicted benefit, with its bootstrap CI."""
    idx = np.concatenate([f.score_idx for f in folds])
    pooled = c_for_benefit(
        cohort.data.y.to_numpy()[idx],
        cohort.data.treated.astype(bool)[idx],
        np.concatenate([f.p for f in folds]),
        seed=config.evaluation.seed,
        n_boot=config.evaluation.n_bootstrap,
    )
    return NestedEstimate(sorted(folds, key=lambda f: f.fold), pooled, metric=METRIC)


def nested_budget(config: Config, n_trials: int) -> int:
    """Trials of each outer fold's inner search: ``tuning.nested_trials``, else the job's
    budget up to ``NESTED_TRIALS``."""
    return config.tuning.nested_trials or min(n_trials, NESTED_TRIALS)
