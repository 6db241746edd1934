"""`inflamrx tune` with a treatment section: choose the benefit learner and its parameters by a
benefit metric, the cross-fitted C-for-benefit (never AUROC, which rewards prognosis), then fit,
validate, log and register the chosen one exactly as `train` does.

Each trial draws a learner among those the data support (``jobs.benefit.supported_learners``)
and its parameters: the penalty of the interaction and risk models, the tree kind's search space
(``tuning.space`` or the kind's default) for the meta-learners. Trials run in one process, in
memory (the single-arm study's storage, resumption and workers are not used here). The winning
trial's C-for-benefit won on these folds, so it is optimistic; the run says so beside it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import mlflow
import numpy as np
import optuna

from inflamrx.config import Config, ParamRange
from inflamrx.data.arms import requirement
from inflamrx.data.validate import validate_cohort
from inflamrx.errors import InputError
from inflamrx.jobs.benefit import BenefitTrainResult, supported_learners, train_benefit_on
from inflamrx.jobs.tune.search import make_sampler, search_space, suggest, with_params
from inflamrx.modeling.benefit.cohort import crossfit, prepare_two_arm
from inflamrx.modeling.benefit.validation import c_for_benefit
from inflamrx.modeling.features import check_feature_request
from inflamrx.modeling.kinds.benefit import BENEFIT

Progress = Callable[[str], None]
LINEAR = ("interaction", "risk")
PENALTY = {"interaction_C": ParamRange(low=1e-3, high=10, log=True)}
TRIAL_BOOTSTRAP = 10  # a trial needs the point estimate only


def trial_config(config: Config, params: dict[str, Any]) -> Config:
    """``config`` with a trial's learner and parameters (validated like a config file)."""
    assert config.treatment is not None
    params = dict(params)
    learner = params.pop("learner")
    treatment: dict[str, Any] = {"learner": learner}
    if "interaction_C" in params:
        treatment["interaction_C"] = params.pop("interaction_C")
    updated = config.treatment.model_validate(config.treatment.model_dump() | treatment)
    return with_params(config.model_copy(update={"treatment": updated}), params)


def tune_benefit(
    config: Config, n_trials: int | None = None, progress: Progress | None = None
) -> tuple[BenefitTrainResult, dict[str, Any]]:
    """Search, then train the best trial's config; returns the training result and the study's
    summary (best params, best cross-fitted C-for-benefit, trials)."""
    say = progress or (lambda _msg: None)
    if config.treatment is None:
        raise InputError("benefit tuning needs the config's treatment section")
    check_feature_request(config.features.include, config.outcome)
    validated = validate_cohort(config.data, require=requirement(config.treatment))
    data = prepare_two_arm(validated, config)
    learners, notes = supported_learners(config, data)

    def objective(trial: optuna.Trial) -> float:
        learner = trial.suggest_categorical("learner", learners)
        space = PENALTY if learner in LINEAR else search_space(config)
        params = {"learner": learner} | suggest(trial, space)
        cfg = trial_config(config, params)
        predicted = crossfit(cfg, learner, data)
        estimate = c_for_benefit(
            data.y.to_numpy(),
            data.treated.astype(bool),
            predicted[BENEFIT].to_numpy(),
            seed=config.evaluation.seed,
            n_boot=TRIAL_BOOTSTRAP,
        ).estimate
        return float(estimate) if np.isfinite(estimate) else 0.5  # no signal: chance

    budget = n_trials or config.tuning.n_trials
    study = optuna.create_study(direction="maximize", sampler=make_sampler(config.tuning.seed))
    say(f"searching {budget} trials over {', '.join(learners)} by cross-fitted C-for-benefit")
    study.optimize(objective, n_trials=budget, timeout=config.tuning.timeout_s)
    best = study.best_trial
    chosen = trial_config(config, dict(best.params))
    best_value = float(best.value) if best.value is not None else float("nan")
    search: dict[str, Any] = {
        "metric": "cross-fitted C-for-benefit",
        "best_params": dict(best.params),
        "best_cv_c_for_benefit": best_value,
        "trials": len(study.trials),
        "learners": learners,
    }
    say(f"training the best trial: {best.params}")
    result = train_benefit_on(validated, chosen, say)
    result.warnings[:0] = [
        *notes,
        f"tuned over {len(study.trials)} trials by cross-fitted C-for-benefit: the best "
        f"trial's {best_value:.3f} won on these folds and is optimistic",
    ]
    client = mlflow.MlflowClient()
    client.set_tag(result.run_id, "job", "tune-benefit")
    client.set_tag(result.run_id, "benefit_tuning", json.dumps(search, default=str)[:5000])
    if np.isfinite(best_value):
        client.log_metric(result.run_id, "tuning_best_cv_c_for_benefit", best_value)
    return result, search
