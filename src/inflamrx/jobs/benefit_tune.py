"""`inflamrx tune` with a treatment section: search the benefit learners and their parameters
by cross-fitted C-for-benefit (``jobs.tune.benefit``), estimate the whole procedure honestly by
nested cross-fitting, then fit, validate, log and register the best as `train` does.

It runs like the single-arm tune (``jobs.tune.job``) and on the same machinery: the study lives
in the same storage (SQLite beside the MLflow store, or ``--storage``) under a default name
derived from the config (``<experiment>-benefit-<fingerprint>``), so re-running the command
resumes it; killed trials are failed by the heartbeat and run again; ``--workers`` processes and
``--search-only`` jobs on other machines add trials to it; one parent MLflow run holds a child
run per trial, the nested estimate and the registered model, and a study that a finished job
already logged is not registered again. What differs: no held-out test set (the benefit model is
validated by cross-fitting on all patients, as ``train`` does) and no pruning.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from optuna.study import Study
from optuna.trial import FrozenTrial

from inflamrx.config import Config
from inflamrx.data.arms import requirement
from inflamrx.data.validate import ValidationResult, validate_cohort
from inflamrx.errors import InputError
from inflamrx.jobs.benefit import BenefitTrainResult, fit_and_log_benefit
from inflamrx.jobs.tune.benefit import (
    BenefitCohort,
    benefit_cohort,
    benefit_study_name,
    fingerprint_benefit,
    nested_budget,
    trial_config,
)
from inflamrx.jobs.tune.job import completed_search, finished_before, study_tags
from inflamrx.jobs.tune.nested import NestedEstimate
from inflamrx.jobs.tune.search import TrialCounts, count_trials, retried
from inflamrx.jobs.tune.storage import (
    TuneOptions,
    check_options,
    create_study,
    default_storage,
    open_storage,
    redact,
)
from inflamrx.jobs.tune.workers import _nested, _search
from inflamrx.modeling.features import check_feature_request
from inflamrx.modeling.metrics import with_ci
from inflamrx.reporting.figures import save_tuning_plots
from inflamrx.tracking.store import tracked_run, use_experiment
from inflamrx.tracking.studies import log_trial_runs, trial_table

Progress = Callable[[str], None]
METRIC = "cross-fitted C-for-benefit"
VALUE = "cv_c_for_benefit"  # a trial's value in its MLflow child run and trials.csv


@dataclass
class BenefitTuneResult:
    study: str
    storage: str  # password redacted
    counts: TrialCounts
    best_trial: int
    best_params: dict[str, Any]
    best_cv_c_for_benefit: float  # optimistic: it won on these folds
    learners: list[str]  # the learners the study searched
    nested: NestedEstimate | None  # the honest estimate; None with search_only
    train: BenefitTrainResult | None  # the fitted, logged, registered model; None w/ search_only
    seconds: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    earlier: dict[str, Any] | None = None  # the job that already finished this very study

    def summary(self) -> dict[str, Any]:
        """The JSON the CLI prints with --json."""
        trained = self.train.summary() if self.train is not None else (self.earlier or {})
        c = self.counts
        search = {"metric": METRIC, "best_params": self.best_params,
                  "best_cv_c_for_benefit": self.best_cv_c_for_benefit, "trials": c.done,
                  "learners": self.learners}  # fmt: skip
        study = {"study": self.study, "storage": self.storage, "n_trials": c.done,
                 "n_complete": c.complete, "n_failed": c.failed,
                 "n_killed_and_retried": c.retried, "best_trial": self.best_trial,
                 "best_params": self.best_params,
                 "best_cv_c_for_benefit": self.best_cv_c_for_benefit,
                 "seconds": self.seconds, "tuning": search}  # fmt: skip
        nested = self.nested.summary() if self.nested is not None else {}
        return trained | study | nested | {"warnings": trained.get("warnings", []) + self.warnings}


def tune_benefit(
    config: Config,
    options: TuneOptions | None = None,
    progress: Progress | None = None,
    on_trials: Callable[[TrialCounts], None] | None = None,
) -> BenefitTuneResult:
    """Search on the stored study, estimate by nested cross-fitting, fit the best trial's
    learner on all patients, validate, log and register it."""
    options = options or TuneOptions()
    check_options(options)
    if config.treatment is None:
        raise InputError("benefit tuning needs the config's treatment section")
    say = progress or (lambda _msg: None)
    seen = on_trials or (lambda _counts: None)
    n_trials = options.trials or config.tuning.n_trials
    timeout = options.timeout_s or config.tuning.timeout_s
    started, clock = datetime.now(), time.perf_counter()
    seconds: dict[str, float] = {}

    check_feature_request(config.features.include, config.outcome)
    say("validating the cohort (each row needs its arm)")
    validated = validate_cohort(config.data, require=requirement(config.treatment))
    cohort = benefit_cohort(validated, config)
    url = options.storage or default_storage()
    name = options.study or benefit_study_name(config, cohort.digest)
    say(f"study {name!r} in {redact(url)}")
    storage = open_storage(url, config.tuning.heartbeat_s)
    # Created here, once, before any worker starts.
    study = create_study(storage, name, fingerprint_benefit(config, cohort.digest), config)
    seconds["prepare"] = time.perf_counter() - clock

    clock = time.perf_counter()
    deadline = time.time() + timeout if timeout else None
    say(f"searching: {n_trials} trials over {', '.join(cohort.learners)} by {METRIC}, "
        f"{options.workers} worker(s)")  # fmt: skip
    _search(study, url, cohort, config, n_trials, deadline, options.workers, started, seen,
            target="benefit")  # fmt: skip
    trials, counts, best = completed_search(study, n_trials, seen)
    seconds["search"] = time.perf_counter() - clock
    failed = [f"{counts.failed} trials failed; see the FAILED trials"] if counts.failed else []
    result = BenefitTuneResult(
        study=name,
        storage=redact(url),
        counts=counts,
        best_trial=best.number,
        best_params=dict(best.params),
        best_cv_c_for_benefit=float(best.value if best.value is not None else float("nan")),
        learners=list(cohort.learners),
        nested=None,
        train=None,
        seconds=seconds,
        warnings=[*cohort.notes, *failed],
    )
    if options.search_only:
        return result
    keys = ("c_for_benefit", "nested_c_for_benefit")
    earlier = finished_before(config, name, trials, started, keys)
    if earlier is not None:
        say(f"study {name!r} was already logged and registered by run {earlier['run_id']}")
        return dataclasses.replace(result, earlier=earlier)

    clock = time.perf_counter()
    inner = nested_budget(config, n_trials)
    say(f"nested estimate: {config.tuning.nested_folds} outer folds x {inner} trials")
    nested = _nested(cohort, config, inner, options.workers, target="benefit")
    seconds["nested"] = time.perf_counter() - clock

    clock = time.perf_counter()
    trained = _log_job(study, url, best, config, nested, validated, cohort, say)
    seconds["fit_validate_log"] = time.perf_counter() - clock
    return dataclasses.replace(result, nested=nested, train=trained)


def _log_job(
    study: Study,
    url: str,
    best: FrozenTrial,
    config: Config,
    nested: NestedEstimate,
    validated: ValidationResult,
    cohort: BenefitCohort,
    say: Progress,
) -> BenefitTrainResult:
    """The parent run: a child run per trial, the tuning figures and the honest estimate, then
    the best trial's learner fitted, validated and registered through ``fit_and_log_benefit``."""
    experiment_id = use_experiment(config.tracking.experiment)
    client = mlflow.MlflowClient()
    trials = study.get_trials(deepcopy=False)
    best_value = float(best.value if best.value is not None else float("nan"))
    pooled = nested.pooled
    # Tagged at creation: a job killed at any later moment leaves a run the next one finds.
    with tracked_run(
        experiment_id,
        run_name=config.tracking.run_name or "tune-benefit",
        tags=study_tags(study, url, best, trials),
    ) as run:
        run_id = run.info.run_id
        say("logging one child run per trial")
        log_trial_runs(client, experiment_id, run_id, study.study_name, trials, retried(trials),
                       value_name=VALUE)  # fmt: skip
        counts = count_trials(trials, len(trials))
        metrics = {
            "best_cv_c_for_benefit": best_value,
            "nested_c_for_benefit": pooled.estimate,
            "nested_c_for_benefit_ci_low": pooled.ci_low,
            "nested_c_for_benefit_ci_high": pooled.ci_high,
            "nested_c_for_benefit_fold_mean": float(np.nanmean(nested.fold_scores)),
            "nested_c_for_benefit_fold_sd": float(np.nanstd(nested.fold_scores)),
            "trials_complete": float(counts.complete),
            "trials_failed": float(counts.failed),
        }
        mlflow.log_metrics({k: v for k, v in metrics.items() if np.isfinite(v)})
        for f in nested.folds:
            if np.isfinite(f.score):
                mlflow.log_metric("nested_fold_c_for_benefit", f.score, step=f.fold)
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            label = "SYNTHETIC cohort" if cohort.data.synthetic else None
            save_tuning_plots(study, trials, folder, label, (METRIC, "C-for-benefit"))
            (folder / "best_params.json").write_text(json.dumps(best.params, indent=2))
            folds = [{"fold": f.fold, "c_for_benefit": f.score, "best_params": f.params}
                     for f in nested.folds]  # fmt: skip
            (folder / "nested.json").write_text(json.dumps(folds, indent=2))
            trial_table(trials, VALUE).to_csv(folder / "trials.csv", index=False)
            mlflow.log_artifacts(str(folder), artifact_path="tuning")
        say(f"fitting the best trial's learner on all patients: {best.params}")
        chosen = trial_config(config, dict(best.params))
        trained = fit_and_log_benefit(run_id, validated, chosen, say, job="tune-benefit")
        honest = with_ci(pooled.estimate, pooled.ci_low, pooled.ci_high, level="95% CI")
        trained.warnings[:0] = [
            f"tuned over {len(trials)} trials by {METRIC}: the best trial's {best_value:.3f} "
            "won on these folds and is optimistic, and so is the fitted learner's cross-fitted "
            f"C-for-benefit; the nested estimate of the whole procedure is {honest}",
        ]
        search = {"metric": METRIC, "best_params": best.params, "best_cv_c_for_benefit":
                  best_value, "learners": cohort.learners}  # fmt: skip
        # What a re-run of the finished study reports instead of registering a duplicate.
        tags = {"model_uri": trained.model_uri,
                "registered_version": trained.registered_version or "",
                "benefit_tuning": json.dumps(search, default=str)[:5000]}  # fmt: skip
        mlflow.set_tags(tags)
        return trained
