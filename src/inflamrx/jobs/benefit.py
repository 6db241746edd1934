"""Train a two-arm benefit model: who improves *because of* the drug, not who improves anyway.

``train`` with a ``treatment`` section comes here. Steps: validate (each row needs its arm),
check the arms, choose the learners the data support, validate each out of sample, choose the
default by the rule below, fit it on all patients, and log one MLflow run (metrics with CIs,
the per-learner comparison, a plot, the registered model).

Validation is cross-fitted on all patients by default (``treatment.validation: crossfit``);
``holdout`` keeps ``split.test_size`` aside, validates there once and fits on the rest.

Default model (``treatment.learner: auto``), the rule (also written to the run as the tag
``benefit_selection_rule``): ``SELECTION_RULE``.

Small trials: with fewer than ``treatment.min_per_arm_for_learners`` patients in the smaller
arm, only the interaction model (prespecified modifiers, penalised) is fitted; the run and the
registered version are marked ``benefit_trust: limited`` with the reason, and every figure
keeps its confidence interval.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd

from inflamrx.config import Config, flatten
from inflamrx.data.arms import requirement
from inflamrx.data.outcomes import describe
from inflamrx.data.validate import ValidationResult, validate_cohort
from inflamrx.errors import InputError
from inflamrx.modeling.benefit.cohort import (
    TwoArmCohort,
    crossfit,
    holdout_split,
    prepare_two_arm,
    supported_learners,
)
from inflamrx.modeling.benefit.learners import LEARNERS, SIMPLEST_FIRST
from inflamrx.modeling.benefit.validation import validate_benefit
from inflamrx.modeling.explanations import explain_rows
from inflamrx.modeling.features import check_feature_request
from inflamrx.modeling.kinds.base import FittedModel
from inflamrx.modeling.kinds.benefit import BENEFIT, CONTROL, TREATED, fit_benefit, scale_of
from inflamrx.reporting.benefit import (
    BENEFIT_PLOT_FILES,
    BenefitWaterfalls,
    benefit_figures,
    benefit_section,
    scale_words,
)
from inflamrx.serving.artifacts import ServingSettings
from inflamrx.serving.pyfunc import log_model
from inflamrx.tracking.store import log_files, standard_tags, tracked_run, use_experiment

Progress = Callable[[str], None]
MARGIN = 0.01  # C-for-benefit a more complex learner must add over a simpler one
SELECTION_RULE = (
    "the learner with the highest cross-fitted C-for-benefit among those the data support; "
    f"a learner replaces a simpler one (order: {', '.join(SIMPLEST_FIRST)}) only when its "
    f"C-for-benefit is higher by at least {MARGIN}"
)
SELECTION_BOOTSTRAP = 100  # resamples when comparing candidates (the chosen one gets the full CI)
ARTIFACTS = "benefit"
TRUST_TAG = "benefit_trust"
REPORT_FILE = "report.html"


@dataclass
class BenefitTrainResult:
    run_id: str
    model_uri: str
    registered_version: str | None
    outcome: str
    synthetic: bool
    learner: str
    learner_label: str
    explanation_scale: str
    validation: str  # how the figures were obtained, in words
    metrics: dict[str, float]
    candidates: dict[str, float]  # learner -> cross-fitted C-for-benefit
    n_treated: int
    n_control: int
    n_rejected: int
    n_without_outcome: int
    trust: str  # "ok" or "limited"
    warnings: list[str] = field(default_factory=list)
    report_uri: str | None = None  # the benefit report page of the run (report.enabled)

    def summary(self) -> dict[str, Any]:
        """The JSON the CLI prints with --json."""
        m = self.metrics
        return {
            "run_id": self.run_id,
            "model_uri": self.model_uri,
            "registered_version": self.registered_version,
            "outcome": self.outcome,
            "synthetic": self.synthetic,
            "benefit_learner": self.learner,
            "benefit_learner_label": self.learner_label,
            "benefit_explanation_scale": self.explanation_scale,
            "selection_rule": SELECTION_RULE,
            "validation": self.validation,
            "c_for_benefit": m.get("c_for_benefit"),
            "c_for_benefit_ci": [m.get("c_for_benefit_ci_low"), m.get("c_for_benefit_ci_high")],
            "candidates_c_for_benefit": self.candidates,
            "n_treated": self.n_treated,
            "n_control": self.n_control,
            "n_rejected": self.n_rejected,
            "n_without_outcome": self.n_without_outcome,
            "trust": self.trust,
            "metrics": m,
            "warnings": self.warnings,
            "report_uri": self.report_uri,
        }


def choose(c_for_benefit: dict[str, float]) -> str:
    """``SELECTION_RULE`` on the candidates' cross-fitted C-for-benefit (NaN never wins)."""
    ordered = [name for name in SIMPLEST_FIRST if name in c_for_benefit]
    best = ordered[0]
    for name in ordered[1:]:
        score, current = c_for_benefit[name], c_for_benefit[best]
        if np.isfinite(score) and (not np.isfinite(current) or score >= current + MARGIN):
            best = name
    return best


def validate_predictions(
    data: TwoArmCohort, predictions: pd.DataFrame, config: Config, n_boot: int
) -> Any:
    """The one call site of the benefit validation (``modeling.benefit.validation``)."""
    assert config.treatment is not None
    return validate_benefit(
        data.y.to_numpy(),
        data.treated.astype(bool),
        predictions[BENEFIT].to_numpy(),
        predictions[TREATED].to_numpy(),
        predictions[CONTROL].to_numpy(),
        crp=data.crp,
        harm_threshold=config.treatment.harm_threshold,
        seed=config.evaluation.seed,
        n_boot=n_boot,
    )


def train_benefit(config: Config, progress: Progress | None = None) -> BenefitTrainResult:
    """Validate, choose, fit, log and register a two-arm benefit model."""
    say = progress or (lambda _msg: None)
    if config.treatment is None:
        raise InputError("a benefit model needs the config's treatment section")
    check_feature_request(config.features.include, config.outcome)
    say("validating the cohort (each row needs its arm)")
    validated = validate_cohort(config.data, require=requirement(config.treatment))
    return train_benefit_on(validated, config, say)


def train_benefit_on(
    validated: ValidationResult, config: Config, say: Progress
) -> BenefitTrainResult:
    experiment_id = use_experiment(config.tracking.experiment)
    with tracked_run(experiment_id, run_name="train-benefit") as run:
        return fit_and_log_benefit(run.info.run_id, validated, config, say, job="train-benefit")


def fit_and_log_benefit(
    run_id: str, validated: ValidationResult, config: Config, say: Progress, job: str
) -> BenefitTrainResult:
    """Choose, fit, validate, log and register in the active run ``run_id`` (``train``'s own
    run, or the parent run of a benefit tune job)."""
    assert config.treatment is not None
    data = prepare_two_arm(validated, config)
    learners, notes = supported_learners(config, data)
    limited = data.arms.smaller < config.treatment.min_per_arm_for_learners
    mlflow.set_tags(
        standard_tags(data.digest, data.synthetic)
        | {"job": job, "outcome": describe(config.outcome)}
        | {"benefit_selection_rule": SELECTION_RULE}
    )
    mlflow.log_params(flatten(config))
    fit_part, score_part, how = _validation_design(data, config)
    candidates: dict[str, float] = {}
    predictions: dict[str, pd.DataFrame] = {}
    for name in learners:
        say(f"cross-fitting the {LEARNERS[name].label} on {len(fit_part.y)} patients")
        predictions[name] = crossfit(config, name, fit_part)
        if len(learners) > 1:
            quick = validate_predictions(fit_part, predictions[name], config, SELECTION_BOOTSTRAP)
            candidates[name] = float(quick.as_metrics().get("c_for_benefit", np.nan))
    chosen = choose(candidates) if candidates else learners[0]
    say(f"fitting the {LEARNERS[chosen].label}")
    fitted = fit_benefit(config, chosen, fit_part.x, fit_part.y, fit_part.treated)
    if score_part is fit_part:
        scored = predictions[chosen]
    else:
        scored = fitted.predict(score_part.x).reset_index(drop=True)
    say(f"validating the benefit on {len(score_part.y)} patients ({how})")
    validation = validate_predictions(score_part, scored, config, config.evaluation.n_bootstrap)
    metrics = validation.as_metrics()
    warnings = [*data.arms.warnings, *notes, *_limited(limited, data)]
    warnings += [str(m) for m in validation.messages]
    warnings += validated.warnings
    _log_run(metrics, candidates, chosen, how, data, validated, limited)
    summary = {
        "chosen": chosen,
        "selection_rule": SELECTION_RULE,
        "validation": how,
        "candidates_c_for_benefit": candidates,
        "rows_in": validated.rows_in,
        "rejected": len(validated.rejected),
        "rejection_reasons": {str(k): int(v) for k, v in validated.reason_counts().items()},
        "synthetic": data.synthetic,
    }  # counts and summaries only: no patient identifier leaves the process
    mlflow.log_dict(summary, f"{ARTIFACTS}/benefit_summary.json")
    report_uri = None
    if config.report.enabled:
        say("writing the benefit report")
        report_uri = _log_report(validation, fitted, scored, score_part, run_id)
    say("logging and registering the model")
    model_uri, version = _log_and_register(fitted, config, data, chosen, limited, warnings)
    return BenefitTrainResult(
        run_id=run_id,
        model_uri=model_uri,
        registered_version=version,
        outcome=describe(config.outcome),
        synthetic=data.synthetic,
        learner=chosen,
        learner_label=LEARNERS[chosen].label,
        explanation_scale=scale_of(fitted),
        validation=how,
        metrics=metrics,
        candidates=candidates,
        n_treated=data.arms.n_treated,
        n_control=data.arms.n_control,
        n_rejected=len(validated.rejected),
        n_without_outcome=data.n_without_outcome,
        trust="limited" if limited else "ok",
        warnings=list(dict.fromkeys(warnings)),
        report_uri=report_uri,
    )


def _validation_design(
    data: TwoArmCohort, config: Config
) -> tuple[TwoArmCohort, TwoArmCohort, str]:
    """(patients the model is fitted on, patients it is validated on, in words)."""
    assert config.treatment is not None
    if config.treatment.validation == "crossfit":
        return data, data, f"cross-fitted on all {len(data.y)} patients"
    train_idx, test_idx = holdout_split(data, config)
    return (
        data.subset(train_idx),
        data.subset(test_idx),
        f"held out: fitted on {len(train_idx)}, validated once on {len(test_idx)} patients",
    )


def _limited(limited: bool, data: TwoArmCohort) -> list[str]:
    """The mark a small trial's model carries (the validation's own messages say what its
    intervals do and do not show: small arms, chance-level C-for-benefit, CRP alone)."""
    if not limited:
        return []
    return [
        f"registered but marked {TRUST_TAG}=limited: {len(data.y)} patients are too few "
        "for a confident benefit model; use it to plan a larger trial, not for decisions"
    ]


def _log_run(
    metrics: dict[str, float],
    candidates: dict[str, float],
    chosen: str,
    how: str,
    data: TwoArmCohort,
    validated: ValidationResult,
    limited: bool,
) -> None:
    mlflow.set_tags(
        {
            "benefit_learner": chosen,
            "benefit_validation": how,
            TRUST_TAG: "limited" if limited else "ok",
        }
    )
    counts = {
        "n_rejected": float(len(validated.rejected)),
        "n_without_outcome": float(data.n_without_outcome),
        "n_patients": float(len(data.y)),
    }
    extra = {f"candidate_{name}_c_for_benefit": value for name, value in candidates.items()}
    logged = metrics | counts | extra
    mlflow.log_metrics({k: v for k, v in logged.items() if np.isfinite(v)})


def _log_report(
    validation: Any,
    fitted: FittedModel,
    scored: pd.DataFrame,
    scored_on: TwoArmCohort,
    run_id: str,
) -> str:
    """The benefit figures and report page under ``benefit/``; returns the page's URI."""
    label = "SYNTHETIC cohort" if scored_on.synthetic else None
    patients = scored_on.cohort.reindex(columns=["patient_id", "crp_mg_l", "il6_pg_ml"])
    patients = patients.assign(**{BENEFIT: scored[BENEFIT].to_numpy()})
    # Waterfalls explain the final model (fitted on every patient) for the validated patients.
    explanation = explain_rows(fitted, scored_on.x, scored_on.cohort["patient_id"].astype(str))
    scale = scale_words(scale_of(fitted))
    section = benefit_section(
        validation, patients, label=label, waterfalls=BenefitWaterfalls(explanation, scale)
    )
    banner = f"<p><strong>{label}</strong></p>" if label else ""
    page = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        "<title>inflamrx benefit report</title></head><body>"
        f"<h1>Who benefits from the drug rather than placebo</h1>{banner}{section}</body></html>"
    )
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / REPORT_FILE).write_text(page, encoding="utf-8")
        for key, figure in benefit_figures(validation, patients, label).items():
            figure.savefig(folder / BENEFIT_PLOT_FILES.get(key, f"{key}.png"), dpi=110)
        log_files(run_id, sorted(folder.iterdir()), ARTIFACTS)
    return str(mlflow.get_artifact_uri(f"{ARTIFACTS}/{REPORT_FILE}"))


def _log_and_register(
    fitted: Any,
    config: Config,
    data: TwoArmCohort,
    chosen: str,
    limited: bool,
    warnings: list[str],
) -> tuple[str, str | None]:
    assert config.treatment is not None
    info = log_model(
        fitted,
        ServingSettings(
            threshold=config.serving.threshold,
            top_factors=config.serving.top_factors,
            harm_threshold=config.treatment.harm_threshold,
        ),
        metadata={
            "outcome": describe(config.outcome),
            "model_kind": fitted.kind.name,
            "benefit_learner": chosen,
            "benefit_explanation_scale": scale_of(fitted),
            "synthetic_training_data": data.synthetic,
        },
        registered_model_name=config.registry.name if config.registry.enabled else None,
    )
    registered = info.registered_model_version
    version = str(registered) if registered is not None else None
    if version is not None and config.registry.enabled:
        client = mlflow.MlflowClient()
        name = config.registry.name
        client.set_model_version_tag(name, version, TRUST_TAG, "limited" if limited else "ok")
        client.set_model_version_tag(name, version, "benefit_learner", chosen)
        if limited:
            why = ("small trial", "cannot", "does not exclude 0.5", "not estimable")
            reasons = "; ".join(w for w in warnings if any(k in w.lower() for k in why))
            client.update_model_version(
                name,
                version,
                description=(
                    f"LIMITED TRUST: two-arm benefit model ({chosen}) from "
                    f"{len(data.y)} patients ({data.arms.n_treated} treated, "
                    f"{data.arms.n_control} control). {reasons}"
                )[:5000],
            )
    return info.model_uri, version
