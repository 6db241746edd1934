"""Tune hyperparameters with Optuna without fooling anyone about how good the model is.

The stage, in order: **search** the training part (``search``), in this process or in worker
processes (``workers``), over a study stored in SQLite or PostgreSQL (``storage``); the
**honest estimate** of the whole procedure by nested cross-validation (``nested``); then
**refit** the best configuration on all training data, and ``train.evaluate_and_log``
evaluates it once on the held-out test set and logs and registers it, as ``train`` does.

Tracking. One parent MLflow run per tune job. After the search the parent logs one child run
per finished trial of the study (params, fold scores, state, duration, error), so trials from
other machines and from earlier, killed jobs appear too, and workers never write to MLflow
concurrently. Optuna's deprecated ``MLflowCallback`` is not used. Runs a killed job left
RUNNING are ended (KILLED) by the next job of the study, each trial is logged once across jobs,
and a study that a finished job already logged and registered as it stands is not refitted or
registered again (see ``tracking.studies``).
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
from optuna.trial import FrozenTrial, TrialState

from inflamrx.config import AutoConfig, Config, for_tuning
from inflamrx.data.validate import validate_cohort
from inflamrx.errors import InputError
from inflamrx.jobs.train import (
    Progress,
    TrainResult,
    evaluate_and_log,
    job_run_name,
    log_job_inputs,
)
from inflamrx.jobs.tune.nested import NestedEstimate
from inflamrx.jobs.tune.search import (
    FINISHED,
    ROUNDS_ATTR,
    TrialCounts,
    count_trials,
    final_config,
    retried,
    task_splits,
)
from inflamrx.jobs.tune.storage import (
    TuneOptions,
    check_options,
    create_study,
    default_storage,
    fingerprint,
    open_storage,
    redact,
    scored_as_started,
    study_to_run,
)
from inflamrx.jobs.tune.workers import _nested, _search
from inflamrx.modeling.assessment import assess
from inflamrx.modeling.features import check_feature_request
from inflamrx.modeling.kinds.base import FittedModel
from inflamrx.modeling.splits import PreparedCohort, prepare
from inflamrx.modeling.validation import recalibration, recalibration_note, resample
from inflamrx.reporting.figures import save_tuning_plots
from inflamrx.tracking.store import tracked_run, use_experiment
from inflamrx.tracking.studies import (
    end_killed_runs,
    finished_job,
    log_trial_runs,
    trial_table,
)


@dataclass
class TuneResult:
    study: str
    storage: str  # password redacted
    counts: TrialCounts
    best_trial: int
    best_params: dict[str, Any]
    best_cv_auroc: float
    n_estimators_refit: int | None  # rounds the refit keeps (kinds that stop early)
    nested: NestedEstimate | None  # None with search_only
    fold_fits: int  # cross-validation fits the study's finished trials ran
    fold_fits_possible: int  # ... and would have run without pruning
    train: TrainResult | None  # the refitted, evaluated, registered model; None with search_only
    seconds: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    # Run id, model URI, version and AUROCs of the earlier job that finished this very study
    # (nothing was refitted or registered again); None otherwise.
    earlier: dict[str, Any] | None = None
    model_kind: str = ""  # the best trial's kind (model.kind auto: the kind the search chose)
    # model.kind auto: each candidate kind's best trial score (None: no trial completed)
    best_cv_auroc_by_kind: dict[str, float | None] | None = None

    @property
    def fold_fits_saved(self) -> float:
        return 1 - self.fold_fits / self.fold_fits_possible if self.fold_fits_possible else 0.0

    def summary(self) -> dict[str, Any]:
        """The JSON the CLI prints with --json."""
        trained = self.train.summary() if self.train is not None else (self.earlier or {})
        by_kind = (
            {"best_cv_auroc_by_kind": self.best_cv_auroc_by_kind}
            if self.best_cv_auroc_by_kind is not None
            else {}
        )
        return (
            trained
            | {
                "study": self.study,
                "storage": self.storage,
                "n_trials": self.counts.done,
                "n_complete": self.counts.complete,
                "n_pruned": self.counts.pruned,
                "n_failed": self.counts.failed,
                "n_killed_and_retried": self.counts.retried,
                "best_trial": self.best_trial,
                "best_params": self.best_params,
                "best_cv_auroc": self.best_cv_auroc,
                "n_estimators_refit": self.n_estimators_refit,
                "model_kind": self.model_kind,
                "fold_fits_saved_by_pruning": self.fold_fits_saved,
                "seconds": self.seconds,
            }
            | (self.nested.summary() if self.nested is not None else {})
            | by_kind
            | {"warnings": trained.get("warnings", []) + self.warnings}
        )


def tune(
    config: Config,
    options: TuneOptions | None = None,
    progress: Progress | None = None,
    on_trials: Callable[[TrialCounts], None] | None = None,
) -> TuneResult:
    """Search, estimate honestly with nested CV, refit the best, evaluate once, log, register."""
    options = options or TuneOptions()
    check_options(options)
    config = for_tuning(config)
    say = progress or (lambda _msg: None)
    seen = on_trials or (lambda _counts: None)
    n_trials = options.trials or config.tuning.n_trials
    timeout = options.timeout_s or config.tuning.timeout_s
    started, clock = datetime.now(), time.perf_counter()
    seconds: dict[str, float] = {}

    check_feature_request(config.features.include, config.outcome)
    say("validating the cohort")
    validated = validate_cohort(config.data)
    data = prepare(validated, config)
    splits = task_splits(data, config)
    url = options.storage or default_storage()
    storage = open_storage(url, config.tuning.heartbeat_s)
    config, name, old_note = study_to_run(storage, config, data.digest, options.study)
    if old_note:
        say(old_note)
    say(f"study {name!r} in {redact(url)}")
    # Created here, once, before any worker starts.
    study = create_study(storage, name, fingerprint(config, data.digest), config)
    config, scored_note = scored_as_started(study, config)
    seconds["prepare"] = time.perf_counter() - clock

    clock = time.perf_counter()
    deadline = time.time() + timeout if timeout else None
    say(f"searching: {n_trials} trials, {options.workers} worker(s), {len(splits)} folds each")
    _search(study, url, data, config, n_trials, deadline, options.workers, started, seen)
    trials, counts, best = completed_search(study, n_trials, seen)
    seconds["search"] = time.perf_counter() - clock
    failed_note = f"{counts.failed} trials failed; see the FAILED trials" if counts.failed else None
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
        warnings=[w for w in (old_note, failed_note, scored_note) if w],
        model_kind=final_config(config, best).model.kind,
        best_cv_auroc_by_kind=best_by_kind(config, trials),
    )
    if options.search_only:
        return searched
    earlier = finished_before(config, name, trials, started, ("test_auroc", "nested_auroc"))
    if earlier is not None:
        say(f"study {name!r} was already logged and registered by run {earlier['run_id']}")
        return dataclasses.replace(searched, earlier=earlier)

    clock = time.perf_counter()
    nested_trials = config.tuning.nested_trials or n_trials
    say(f"nested estimate: {config.tuning.nested_folds} outer folds x {nested_trials} trials")
    nested = _nested(data, config, nested_trials, options.workers)
    seconds["nested"] = time.perf_counter() - clock

    clock = time.perf_counter()
    best_config = final_config(config, best)
    result = _log_job(
        study, url, best, best_config, nested, validated, data, say, searched.best_cv_auroc_by_kind
    )
    seconds["refit_evaluate_log"] = time.perf_counter() - clock

    rounds = best.user_attrs.get(ROUNDS_ATTR)
    refit_rounds = int(rounds) if rounds else None
    return dataclasses.replace(
        searched, n_estimators_refit=refit_rounds, nested=nested, train=result
    )


def _log_job(
    study: Study,
    url: str,
    best: FrozenTrial,
    best_config: Config,
    nested: NestedEstimate,
    validated: Any,
    data: PreparedCohort,
    say: Progress,
    by_kind: dict[str, float | None] | None,
) -> TrainResult:
    """The parent run: inputs, child runs per trial, tuning figures and the honest estimate,
    then the refit evaluated once and registered through ``evaluate_and_log``."""
    experiment_id = use_experiment(best_config.tracking.experiment)
    client = mlflow.MlflowClient()
    trials = study.get_trials(deepcopy=False)
    # Tagged at creation: a job killed at any later moment leaves a run the next one finds.
    with tracked_run(
        experiment_id,
        run_name=job_run_name("tune", best_config, data),
        tags=study_tags(study, url, best, trials),
    ) as run:
        run_id = run.info.run_id
        log_job_inputs(data, best_config, job="tune")
        say("logging one child run per trial")
        log_trial_runs(client, experiment_id, run_id, study.study_name, trials, retried(trials))
        counts = count_trials(trials, len(trials))
        metrics = {
            "best_cv_auroc": float(best.value or float("nan")),
            "nested_auroc": nested.pooled.estimate,
            "nested_auroc_ci_low": nested.pooled.ci_low,
            "nested_auroc_ci_high": nested.pooled.ci_high,
            "nested_auroc_fold_mean": float(np.mean(nested.fold_scores)),
            "nested_auroc_fold_sd": float(np.std(nested.fold_scores)),
            "trials_complete": float(counts.complete),
            "trials_pruned": float(counts.pruned),
            "trials_failed": float(counts.failed),
        }
        if by_kind is not None:  # a search across kinds: which won, and each kind's best
            mlflow.set_tags({"model_kind_chosen": best_config.model.kind,
                             "model_choice_rule": CHOICE_RULE})  # fmt: skip
            metrics |= {f"candidate_{k}_best_cv_auroc": v for k, v in by_kind.items() if v}
        mlflow.log_metrics({k: v for k, v in metrics.items() if np.isfinite(v)})
        for f in nested.folds:
            mlflow.log_metric("nested_fold_auroc", f.score, step=f.fold)
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            label = "SYNTHETIC cohort" if data.synthetic else None
            save_tuning_plots(study, trials, folder, label)
            (folder / "best_params.json").write_text(json.dumps(best.params, indent=2))
            folds = [
                {"fold": f.fold, "auroc": f.score, "best_params": f.params} for f in nested.folds
            ]
            (folder / "nested.json").write_text(json.dumps(folds, indent=2))
            trial_table(trials).to_csv(folder / "trials.csv", index=False)
            mlflow.log_artifacts(str(folder), artifact_path="tuning")
        say("refitting the best configuration; its calibration checked by cross-validation")
        refit = calibrated_refit(best_config, data)
        if np.isfinite(refit.cv_slope):
            mlflow.log_metric("tuned_cv_calibration_slope", refit.cv_slope)
        if refit.fitted.recalibration is not None:
            a, b = refit.fitted.recalibration
            mlflow.log_metrics({"recalibration_intercept": a, "recalibration_slope": b})
        say(f"evaluating once on {len(data.test_idx)} held-out patients")
        assessment = assess(refit.fitted, data, best_config)
        if refit.note is not None:
            notes = (*assessment.evaluation.notes, refit.note)
            assessment = dataclasses.replace(
                assessment, evaluation=dataclasses.replace(assessment.evaluation, notes=notes)
            )
        cv_scores = [float(s) for s in best.user_attrs.get("fold_auroc", [])]
        result = evaluate_and_log(
            run_id, refit.fitted, data, validated, best_config, cv_scores, say, assessment
        )
        # What a re-run of the finished study reports instead of registering a duplicate.
        mlflow.set_tags(
            {"model_uri": result.model_uri, "registered_version": result.registered_version or ""}
        )
        return result


CHOICE_RULE = "the kind of the search's best trial (calibration-guarded CV AUROC, same folds)"


def best_by_kind(config: Config, trials: list[FrozenTrial]) -> dict[str, float | None] | None:
    """With ``model.kind: auto``: each candidate's best completed trial score; else None."""
    if not isinstance(config.model, AutoConfig):
        return None
    done = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    return {
        kind: max((float(t.value or 0) for t in done if t.params.get("kind") == kind), default=None)
        for kind in config.model.candidates
    }


@dataclass(frozen=True)
class CalibratedRefit:
    fitted: FittedModel  # on all training data, recalibrated when ``note`` says so
    cv_slope: float  # calibration slope of the configuration in cross-validation
    note: str | None


def calibrated_refit(config: Config, data: PreparedCohort) -> CalibratedRefit:
    """The tuned configuration refitted on all training data and recalibrated (uniform
    shrinkage of its log-odds, ``validation.recalibration``) when its own calibration slope in
    repeated cross-validation of the training data (the same configuration refitted fold by
    fold) is outside ``SLOPE_BAND``. Not from the nested-CV predictions: there each outer fold
    has its own winner with other parameters (recalibrating from them moved a held-out slope
    of 1.53 to 2.06). The search chose the configuration on these patients, so the check can
    miss a slope that is off; the held-out test set shows the result."""
    cv = config.model_copy(update={"split": config.split.model_copy(update={"resample": "cv"})})
    found = resample(cv, data.x_train, data.y_train)
    slope = found.corrected["calibration_slope"]
    if not np.isfinite(slope):
        note = (
            "The calibration slope of the tuned configuration could not be estimated by "
            "cross-validation (predictions too extreme to fit): it is not recalibrated; see "
            "the test-set slope."
        )
        return CalibratedRefit(found.fitted, slope, note)
    ab = recalibration(slope, data.y_train.to_numpy(), found.p_apparent)
    if ab is None:
        return CalibratedRefit(found.fitted, slope, None)
    where = f"the tuned configuration in {found.n_resamples} x {config.split.cv_folds}-fold CV"
    note = recalibration_note(ab, where) + " The test-set figures are after recalibration."
    return CalibratedRefit(dataclasses.replace(found.fitted, recalibration=ab), slope, note)


def completed_search(
    study: Study, n_trials: int, seen: Callable[[TrialCounts], None]
) -> tuple[list[FrozenTrial], TrialCounts, FrozenTrial]:
    """The study's trials, their counts and its best trial, once the search is over; an
    InputError, with the first errors, when no trial completed."""
    trials = study.get_trials(deepcopy=False)
    counts = count_trials(trials, n_trials)
    seen(counts)
    if counts.complete == 0:
        errors = {t.user_attrs.get("error") for t in trials if t.state == TrialState.FAIL}
        raise InputError(
            f"no trial of study {study.study_name!r} completed ({counts.failed} failed, "
            f"{counts.pruned} pruned); errors: {sorted(e for e in errors if e)[:3]}"
        )
    return trials, counts, study.best_trial


def study_tags(
    study: Study, url: str, best: FrozenTrial, trials: list[FrozenTrial]
) -> dict[str, str]:
    """The tags a job's parent run is created with (``tracking.studies`` finds it by them)."""
    finished = sum(t.state in FINISHED for t in trials)
    return {"optuna_study": study.study_name, "optuna_storage": redact(url),
            "best_trial": str(best.number), "optuna_finished_trials": str(finished)}  # fmt: skip


def finished_before(
    config: Config,
    study: str,
    trials: list[FrozenTrial],
    started: datetime,
    keys: tuple[str, ...],
) -> dict[str, Any] | None:
    """What the earlier job that finished this study as it stands logged (its metrics named
    in ``keys``), if there is one; runs a killed job left RUNNING are ended first."""
    experiment_id = use_experiment(config.tracking.experiment)
    client = mlflow.MlflowClient()
    end_killed_runs(client, experiment_id, study, before=started)
    run = finished_job(client, experiment_id, study, trials)
    if run is None:
        return None
    metrics, tags = run.data.metrics, run.data.tags
    return {
        "run_id": run.info.run_id,
        "model_uri": tags.get("model_uri"),
        "registered_version": tags.get("registered_version") or None,
        "already_logged": True,
    } | {k: metrics[k] for k in keys if k in metrics}
