"""Train and validate, everything tracked in MLflow and the fitted model logged, registered and
reported. ``split.strategy`` says how: resample (fit on every patient, validate by repeated CV
or the bootstrap: ``modeling.validation``), holdout or site (one split, cross-validation on the
training part, one test evaluation). ``model.kind: auto`` first compares the candidate kinds
on the same resamples (``modeling.choice``)."""

from __future__ import annotations

import dataclasses
import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import yaml
from mlflow.data.pandas_dataset import from_pandas
from sklearn.metrics import roc_auc_score

from inflamrx.config import Config, flatten
from inflamrx.data.outcomes import OutcomeWords, describe, outcome_label
from inflamrx.data.validate import ValidationResult, validate_cohort
from inflamrx.modeling.assessment import Assessment, assess, assess_resampled
from inflamrx.modeling.choice import RULE, Choice, compare
from inflamrx.modeling.evaluate import Evaluation
from inflamrx.modeling.explanations import explain_rows
from inflamrx.modeling.features import check_feature_request
from inflamrx.modeling.kinds.base import FittedModel, fit_model
from inflamrx.modeling.splits import PreparedCohort, cv_folds, prepare
from inflamrx.modeling.validation import Resampled, recalibrated, resample
from inflamrx.reporting.figures import save_evaluation_plots
from inflamrx.reporting.html import (
    EVALUATION_IMAGES,
    FIGURE_DIR,
    ModelValidation,
    ReportContext,
    ReportFiles,
    write_report,
)
from inflamrx.serving.artifacts import ServingSettings
from inflamrx.serving.pyfunc import log_model
from inflamrx.tracking.registry import VersionCard, annotate_version
from inflamrx.tracking.store import log_files, standard_tags, tracked_run, use_experiment

Progress = Callable[[str], None]
EVALUATION_ARTIFACTS = "evaluation"  # folder of the run's evaluation files (read by explain)
METRICS_TABLE_FILE = "metrics_table.csv"
COMPARISON_FILE = "model_comparison.csv"
REPORT_ARTIFACTS = "explanations"  # folder of the run's SHAP report


@dataclass
class TrainResult:
    run_id: str
    model_uri: str
    registered_version: str | None
    outcome: str
    synthetic: bool
    n_train: int
    n_test: int  # 0 with split.strategy resample: every patient is fitted on
    n_rejected: int
    n_without_outcome: int
    cv_auroc: list[float]
    evaluation: Evaluation
    table: pd.DataFrame  # metric, model, CRP > 3 rule, CRP alone (point and 95% CI)
    test_patient_ids: list[str]  # in memory only (benchmarks); never logged
    warnings: list[str] = field(default_factory=list)
    report_uri: str | None = None  # the SHAP report logged to the run (report.enabled)
    validation: str = "holdout"  # holdout, site, resample-bootstrap or resample-cv
    validation_method: str = ""  # how the figures were obtained, one sentence
    model_kind: str = ""  # the kind fitted (auto: the one chosen)
    comparison: pd.DataFrame | None = None  # auto: one row per candidate kind
    sample_size: str = ""  # Riley et al.'s criteria, one paragraph

    @property
    def has_test_set(self) -> bool:
        return not self.validation.startswith("resample")

    @property
    def auroc(self) -> float:
        return float(self.evaluation.metrics.auroc.estimate)

    @property
    def auroc_ci(self) -> tuple[float, float]:
        auroc = self.evaluation.metrics.auroc
        return (float(auroc.ci_low), float(auroc.ci_high))

    # Release 0.1.0's names, from the days of one held-out test set.
    test_auroc = auroc
    test_auroc_ci = auroc_ci

    def metrics(self) -> dict[str, float]:
        """Neutral metric names across validation modes; holdout and site also keep the
        ``test_`` names of earlier releases."""
        neutral = self.evaluation.to_mlflow_metrics(prefix="")
        return neutral | (self.evaluation.to_mlflow_metrics() if self.has_test_set else {})

    def summary(self) -> dict[str, Any]:
        """The JSON the CLI prints with --json."""
        m = self.evaluation.metrics
        out: dict[str, Any] = {
            "run_id": self.run_id,
            "model_uri": self.model_uri,
            "registered_version": self.registered_version,
            "outcome": self.outcome,
            "synthetic": self.synthetic,
            "validation": self.validation,
            "validation_method": self.validation_method,
            "model_kind": self.model_kind,
        }
        for name, _, est in m.headline():
            out[name] = est.estimate
            out[f"{name}_ci"] = [est.ci_low, est.ci_high]
        if self.has_test_set:
            out |= {"test_auroc": self.auroc, "test_auroc_ci": list(self.auroc_ci)}
            out |= {"n_test": self.n_test}
        if self.cv_auroc:
            out |= {
                "cv_auroc_mean": float(np.mean(self.cv_auroc)),
                "cv_auroc_sd": float(np.std(self.cv_auroc)),
            }
        return out | {
            "n_train": self.n_train,
            "n_rejected": self.n_rejected,
            "n_without_outcome": self.n_without_outcome,
            "model_comparison": (
                self.comparison.to_dict("records") if self.comparison is not None else None
            ),
            "sample_size": self.sample_size,
            "metrics": self.metrics(),
            "warnings": self.warnings,
            "report_uri": self.report_uri,
        }


def cross_validate(config: Config, data: PreparedCohort) -> tuple[list[float], list[str]]:
    """Repeated stratified (or grouped) CV AUROC on the training part only, and warnings for
    folds that could not be scored."""
    s = config.split
    folds = cv_folds(data.y_train, data.groups_train, s.cv_folds, s.seed, repeats=s.cv_repeats)
    x, y = data.x_train, data.y_train
    scores = []
    for fit_idx, score_idx in folds.splits:
        fitted = fit_model(config, x.iloc[fit_idx], y.iloc[fit_idx])
        p = fitted.probability(x.iloc[score_idx])
        scores.append(float(roc_auc_score(y.iloc[score_idx], p)))
    warnings = []
    if folds.impossible:
        warnings.append(f"no cross-validation: {folds.impossible}")
    elif folds.skipped:
        warnings.append(
            f"cross-validation: {folds.skipped} fold(s) with a single outcome class on one "
            "side were left out"
        )
    return scores, warnings


def train(config: Config, progress: Progress | None = None) -> TrainResult:
    """Validate, split, cross-validate, fit, evaluate once on the test set, log and register."""
    say = progress or (lambda _msg: None)
    check_feature_request(config.features.include, config.outcome)
    say("validating the cohort")
    validated = validate_cohort(config.data)
    return train_on(validated, config, say)


def log_job_inputs(data: PreparedCohort, config: Config, job: str) -> None:
    """Tags, flattened config and dataset lineage (digest and schema, no rows) of the active run."""
    mlflow.set_tags(
        standard_tags(data.digest, data.synthetic)
        | {"job": job, "outcome": describe(config.outcome)}
    )
    mlflow.log_params(flatten(config))
    dataset = from_pandas(
        data.x.assign(outcome=data.y),
        source=",".join(config.data.paths),
        targets="outcome",
        name="cohort",
        digest=data.digest,
    )
    mlflow.log_input(dataset, context="training")


def job_run_name(job: str, config: Config, data: PreparedCohort) -> str:
    """``tracking.run_name`` (``--run-name``), or one that tells runs apart in ``mlflow ui``:
    job, model kind, outcome, data file and patients, e.g.
    ``train xgboost | PHQ-9 total >= 10 | nhanes | n=4753``."""
    if config.tracking.run_name:
        return config.tracking.run_name
    source = Path(config.data.paths[0]).stem or "data"
    synthetic = " (SYNTHETIC)" if data.synthetic else ""
    return (
        f"{job} {config.model.kind} | {outcome_label(config.outcome)} | {source}{synthetic} "
        f"| n={len(data.y)}"
    )


def train_on(validated: ValidationResult, config: Config, say: Progress) -> TrainResult:
    data = prepare(validated, config)
    experiment_id = use_experiment(config.tracking.experiment)
    with tracked_run(experiment_id, run_name=job_run_name("train", config, data)) as run:
        log_job_inputs(data, config, job="train")
        choice = None
        if config.model.kind == "auto":
            choice = choose_kind(config, data, say)
            config = choice.config
        if config.split.strategy == "resample":
            found = choice.chosen if choice else validate_by_resampling(config, data, say)
            found, recalibration = recalibrated(found, data.y.to_numpy())
            if found.fitted.recalibration is not None:
                a, b = found.fitted.recalibration
                mlflow.log_metrics({"recalibration_intercept": a, "recalibration_slope": b})
            assessment = assess_resampled(found, data, config, recalibration)
            result = evaluate_and_log(
                run.info.run_id, found.fitted, data, validated, config, [], say, assessment
            )
        else:
            say(f"cross-validating on {len(data.train_idx)} training patients")
            cv_scores, cv_warnings = cross_validate(config, data)
            say("fitting the final pipeline")
            fitted = fit_model(config, data.x_train, data.y_train)
            result = evaluate_and_log(
                run.info.run_id, fitted, data, validated, config, cv_scores, say
            )
            result.warnings[:0] = cv_warnings
        if choice is not None:
            log_comparison(choice)
            result.comparison = choice.table
        return result


def choose_kind(config: Config, data: PreparedCohort, say: Progress) -> Choice:
    """``model.kind: auto``: every candidate validated on the same resamples of the patients
    it may be fitted on (holdout, site: the training part only)."""
    kinds = ", ".join(getattr(config.model, "candidates", []))
    resampled = config.model_copy(
        update={"split": config.split.model_copy(update={"strategy": "resample"})}
    )
    say(f"comparing {kinds} on the same {_resamples(config)}")
    e = config.evaluation
    choice = compare(resampled, data.x_train, data.y_train, e.n_bootstrap, e.seed)
    chosen = choice.chosen.kind
    say(f"chose {chosen} ({RULE})")
    return dataclasses.replace(choice, config=_with_split(choice.config, config))


def _with_split(chosen: Config, original: Config) -> Config:
    return chosen.model_copy(update={"split": original.split})


def _resamples(config: Config) -> str:
    s = config.split
    if s.resample == "bootstrap":
        return f"{s.n_resamples} bootstrap resamples"
    return f"{s.cv_repeats} x {s.cv_folds}-fold cross-validation"


def validate_by_resampling(config: Config, data: PreparedCohort, say: Progress) -> Resampled:
    say(f"fitting on all {len(data.y)} patients and validating on {_resamples(config)}")
    return resample(config, data.x, data.y)


def log_comparison(choice: Choice) -> None:
    """The candidates' comparison: a table artifact, the chosen kind as a tag, and each
    candidate's validated AUROC and slope as metrics."""
    mlflow.set_tags({"model_kind_chosen": choice.chosen.kind, "model_choice_rule": RULE})
    metrics = {}
    for row in choice.table.to_dict("records"):
        for key in ("auroc", "calibration_slope"):
            value = float(row[key])
            if np.isfinite(value):
                metrics[f"candidate_{row['kind']}_{key}"] = value
    mlflow.log_metrics(metrics)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / COMPARISON_FILE
        choice.table.to_csv(path, index=False)
        mlflow.log_artifact(str(path), artifact_path=EVALUATION_ARTIFACTS)


def evaluate_and_log(
    run_id: str,
    fitted: FittedModel,
    data: PreparedCohort,
    validated: ValidationResult,
    config: Config,
    cv_scores: list[float],
    say: Progress,
    assessment: Assessment | None = None,
) -> TrainResult:
    """Evaluate the fitted model once on the held-out test set (or take the resampling
    ``assessment``), log the evaluation to the active run, log and register the model, and
    report. Shared by ``train`` and ``tune``."""
    if assessment is None:
        say(f"evaluating once on {len(data.test_idx)} held-out patients")
        assessment = assess(fitted, data, config)
    validation = log_assessment(assessment, data, validated, config, cv_scores)
    say("logging and registering the model")
    model_uri, version = log_and_register(fitted, config, data.synthetic)
    if version is not None:
        annotate_version(config.registry.name, version, version_card(assessment, data, config))
    report_uri = None
    if config.report.enabled:
        say("writing the SHAP report")
        report_uri = report_test_patients(
            run_id, model_uri, fitted, data, validation, config, len(validated.rejected)
        )
    resampled = assessment.validation.startswith("resample")
    return TrainResult(
        run_id=run_id,
        model_uri=model_uri,
        registered_version=version,
        outcome=describe(config.outcome),
        synthetic=data.synthetic,
        n_train=len(data.train_idx),
        n_test=len(data.test_idx),
        n_rejected=len(validated.rejected),
        n_without_outcome=data.n_without_outcome,
        cv_auroc=cv_scores,
        evaluation=assessment.evaluation,
        table=assessment.table,
        test_patient_ids=[] if resampled else _ids(data.test_cohort),
        warnings=[*assessment.warnings, *validated.warnings],
        report_uri=report_uri,
        validation=assessment.validation,
        validation_method=assessment.method,
        model_kind=fitted.kind.name,
        sample_size=assessment.sample_size.text(),
    )


def _ids(cohort: pd.DataFrame) -> list[str]:
    return cohort["patient_id"].astype(str).tolist()


def log_assessment(
    assessment: Assessment,
    data: PreparedCohort,
    validated: ValidationResult,
    config: Config,
    cv_scores: list[float],
) -> ModelValidation:
    """Metrics, plots and tables of the active run; returns what the report shows of them."""
    evaluation = assessment.evaluation
    size = assessment.sample_size
    # Neutral names in every mode; holdout and site keep earlier releases' test_ names too.
    resampled = assessment.validation.startswith("resample")
    aliases = {} if resampled else evaluation.to_mlflow_metrics()
    metrics = evaluation.to_mlflow_metrics(prefix="") | aliases
    metrics |= {
        "n_train": float(len(data.train_idx)),
        "n_rejected": float(len(validated.rejected)),
        "n_without_outcome": float(data.n_without_outcome),
        "events_per_parameter": float(size.epp),
        "sample_size_required": float(size.n_required),
        "sample_size_met": float(size.met),
        "expected_shrinkage": float(size.shrinkage),
    }
    if not resampled:
        metrics["n_test"] = float(len(data.test_idx))
    mlflow.set_tags({"validation": assessment.validation, "validation_method": assessment.method})
    if cv_scores:
        metrics |= {
            "cv_auroc_mean": float(np.mean(cv_scores)),
            "cv_auroc_sd": float(np.std(cv_scores)),
        }
    for name, est in assessment.baselines.items():
        key = f"baseline_{name}"
        metrics |= {key: est.estimate, f"{key}_ci_low": est.ci_low, f"{key}_ci_high": est.ci_high}
    mlflow.log_metrics({k: v for k, v in metrics.items() if np.isfinite(v)})
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        save_evaluation_plots(
            evaluation,
            folder,
            extra_roc={"CRP alone": (assessment.y_test, assessment.crp_test)},
            cohort_label="SYNTHETIC cohort" if data.synthetic else None,
            words=OutcomeWords.of(outcome_label(config.outcome)),
        )
        assessment.table.to_csv(folder / METRICS_TABLE_FILE, index=False)
        evaluation.to_frame().to_csv(folder / "metrics_detail.csv", index=False)
        (folder / "config.yaml").write_text(
            yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
        )
        (folder / "validation.json").write_text(
            json.dumps(_validation_counts(validated, data.n_without_outcome), indent=2)
        )
        (folder / "sample_size.txt").write_text(size.text() + "\n")
        mlflow.log_artifacts(str(folder), artifact_path=EVALUATION_ARTIFACTS)
        images = {n: (folder / n).read_bytes() for n in EVALUATION_IMAGES if (folder / n).is_file()}
    return ModelValidation(assessment.table, images, assessment.method)


def log_and_register(
    fitted: FittedModel, config: Config, synthetic: bool
) -> tuple[str, str | None]:
    """Log the fitted model as the ``model`` pyfunc of the active run; return (URI, version)."""
    info = log_model(
        fitted,
        ServingSettings(threshold=config.serving.threshold, top_factors=config.serving.top_factors),
        metadata={
            "outcome": describe(config.outcome),
            "outcome_label": outcome_label(config.outcome),
            "model_kind": fitted.kind.name,
            "synthetic_training_data": synthetic,
        },
        registered_model_name=config.registry.name if config.registry.enabled else None,
    )
    registered = info.registered_model_version
    return info.model_uri, (str(registered) if registered is not None else None)


def version_card(assessment: Assessment, data: PreparedCohort, config: Config) -> VersionCard:
    """What the registered version says about itself (description, tags, below-minimum mark)."""
    evaluation = assessment.evaluation
    return VersionCard(
        outcome=describe(config.outcome),
        data_digest=data.digest,
        synthetic=data.synthetic,
        auroc=evaluation.metrics.auroc,
        validation=f"{assessment.validation} (n={evaluation.n}, {evaluation.n_events} events)",
        validation_events=evaluation.n_events,
        sample_size=assessment.sample_size,
    )


def report_test_patients(
    run_id: str,
    model_uri: str,
    fitted: FittedModel,
    data: PreparedCohort,
    validation: ModelValidation,
    config: Config,
    n_rejected: int,
) -> str:
    """The SHAP report on the held-out test patients (resample: on every patient, whom the
    model was fitted on), logged to the run; returns its URI."""
    if len(data.test_idx):
        rows, population = data.test_idx, "held-out test patients of the training run"
    else:  # as many patients as a held-out test set would hold: the report takes as long
        n = max(1, round(config.split.test_size * len(data.y)))
        rng = np.random.default_rng(config.report.seed)
        rows = np.sort(rng.choice(len(data.y), size=min(n, len(data.y)), replace=False))
        population = "a random sample of the patients the model was fitted on"
    cohort = data.cohort.iloc[rows].reset_index(drop=True)
    explanation = explain_rows(
        fitted, data.x.iloc[rows], cohort["patient_id"].astype(str), seed=config.report.seed
    )
    context = ReportContext(
        model_uri=model_uri,
        outcome=describe(config.outcome),
        synthetic=data.synthetic,
        validation=validation,
        cohort=cohort,
        n_rejected=n_rejected,
        population=population,
        outcome_label=outcome_label(config.outcome),
    )
    with tempfile.TemporaryDirectory() as tmp:
        with_ids = config.report.include_patient_ids
        files = write_report(explanation, context, config.report, Path(tmp), with_ids=with_ids)
        log_report(files, run_id)
    return str(mlflow.get_artifact_uri(f"{REPORT_ARTIFACTS}/report.html"))


def log_report(files: ReportFiles, run_id: str) -> None:
    """The report, the SHAP table and the figures, under ``explanations/`` of the run."""
    log_files(run_id, [files.report, files.table], REPORT_ARTIFACTS)
    log_files(run_id, files.figures, f"{REPORT_ARTIFACTS}/{FIGURE_DIR}")


def _validation_counts(validated: ValidationResult, without_outcome: int) -> dict[str, Any]:
    # Counts only: no patient identifier leaves the process through the tracking store.
    return {
        "rows_in": validated.rows_in,
        "accepted": len(validated.accepted),
        "rejected": len(validated.rejected),
        "accepted_without_outcome": without_outcome,
        "rejection_reasons": {str(k): int(v) for k, v in validated.reason_counts().items()},
    }
