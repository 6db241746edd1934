"""The explain job: load a logged model, validate new rows exactly as ``predict`` does, explain
them with SHAP and write the researcher's report. When the model comes from a run, the report
is logged to a new run of its own (nested under, and tagged with, the training run), never
into the training run's artifacts.

A two-arm benefit model gets the benefit report (``reporting.benefit_explain``): SHAP of the
predicted benefit on the scale its served top_factors use, with the benefit validation its
training run logged under ``benefit/``."""

from __future__ import annotations

import io
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import mlflow
import pandas as pd

from inflamrx.config import Config
from inflamrx.data.outcomes import label_of_description
from inflamrx.data.validate import ValidationResult
from inflamrx.errors import InputError
from inflamrx.jobs.benefit import ARTIFACTS as BENEFIT_ARTIFACTS
from inflamrx.jobs.train import EVALUATION_ARTIFACTS, METRICS_TABLE_FILE, log_report
from inflamrx.modeling.explanations import Explanation, explain_rows
from inflamrx.modeling.kinds.base import PROBABILITY
from inflamrx.modeling.kinds.benefit import scale_of
from inflamrx.modeling.splits import data_digest
from inflamrx.reporting.benefit_explain import (
    VALIDATION_IMAGES,
    validation_table,
    write_benefit_report,
)
from inflamrx.reporting.html import (
    EVALUATION_IMAGES,
    NO_VALIDATION,
    ModelValidation,
    ReportContext,
    ReportFiles,
    without_ids,
    write_report,
)
from inflamrx.serving.batch import CohortInput, load_model, validate_input
from inflamrx.tracking.store import standard_tags, tracked_run

EXPLAINS_RUN_TAG = "explains_run"  # on an explain run: the training run whose model it explains


@dataclass(frozen=True)
class ExplainResult:
    explanation: Explanation  # every accepted row
    patients: list[str]  # the ids asked for with --patient (empty: none asked)
    validation: ValidationResult
    metadata: dict[str, object]
    run_id: str | None  # the model's training run, when the URI resolves to one
    synthetic: bool  # the model was trained on, or the data are, synthetic
    # A benefit model's predictions (both arms, the benefit) for every accepted row, the
    # scale its explanation is on and its harm threshold; None for a response model.
    benefit: pd.DataFrame | None = None
    scale: str | None = None
    harm_threshold: float = 0.0


def explain(
    model_uri: str, data: CohortInput, patients: Sequence[str] = (), seed: int = 0
) -> ExplainResult:
    """Load the model, validate ``data`` (a DataFrame, a path or a DataConfig) exactly as
    ``predict`` does and explain the accepted rows. Unknown ``patients`` ids are an InputError
    (the CLI exits 2)."""
    loaded = load_model(model_uri)
    validated = validate_input(data)
    accepted = validated.accepted
    if accepted.empty:
        raise InputError("no row of the cohort was accepted; see `inflamrx validate` for why")
    ids = accepted["patient_id"].astype(str)
    _check_patients(list(patients), set(ids), validated)
    x, _absent = loaded.model.inputs(accepted)  # as batch scoring: absent columns missing
    explanation = explain_rows(loaded.model, x, ids, seed=seed)
    synthetic = bool(loaded.metadata.get("synthetic_training_data", False)) or validated.synthetic
    result = ExplainResult(
        explanation, list(patients), validated, loaded.metadata, loaded.run_id, synthetic
    )
    if loaded.model.kind.outputs == (PROBABILITY,):
        return result
    # A benefit model: its explanation is of the benefit, on the learner's scale.
    benefit = loaded.model.predict(x).reset_index(drop=True)
    harm = loaded.settings.harm_threshold or 0.0
    labelled = replace(explanation, model_label=str(loaded.model.estimator.label))
    return replace(
        result,
        explanation=labelled,
        benefit=benefit,
        scale=scale_of(loaded.model),
        harm_threshold=harm,
    )


def _check_patients(asked: list[str], known: set[str], validated: ValidationResult) -> None:
    unknown = [p for p in asked if p not in known]
    if not unknown:
        return
    rejected = validated.rejected
    was_rejected = set(rejected["patient_id"].astype(str)) if "patient_id" in rejected else set()
    why = [f"{p} (its row was rejected by validation)" if p in was_rejected else p for p in unknown]
    raise InputError(
        f"--patient: {len(unknown)} id(s) not among the accepted rows of the data: "
        f"{', '.join(why[:10])}"
    )


def _run_files(run_id: str, folder: str, names: Sequence[str]) -> dict[str, bytes]:
    """The run's artifacts ``folder/name`` that exist, fetched one by one: only what the
    report shows, and no folder-download progress bar."""
    found: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            try:
                path = mlflow.artifacts.download_artifacts(
                    run_id=run_id, artifact_path=f"{folder}/{name}", dst_path=tmp
                )
            except Exception:  # not logged (e.g. a model logged by hand): the report says so
                continue
            found[name] = Path(path).read_bytes()
    return found


def training_validation(run_id: str | None) -> ModelValidation:
    """The metrics table and curves the training run logged under ``evaluation/``."""
    if run_id is None:
        return NO_VALIDATION
    found = _run_files(run_id, EVALUATION_ARTIFACTS, [METRICS_TABLE_FILE, *EVALUATION_IMAGES])
    csv = found.pop(METRICS_TABLE_FILE, None)
    table = None if csv is None else pd.read_csv(io.BytesIO(csv), keep_default_na=False)
    # Runs before the validation modes held out a test set: the default method says so.
    method = mlflow.get_run(run_id).data.tags.get("validation_method")
    return ModelValidation(table, found, *([method] if method else []))


def benefit_training_validation(run_id: str | None) -> ModelValidation:
    """The benefit metrics and figures a two-arm training run logged (``jobs.benefit``)."""
    if run_id is None:
        return NO_VALIDATION
    run = mlflow.get_run(run_id)
    images = _run_files(run_id, BENEFIT_ARTIFACTS, list(VALIDATION_IMAGES))
    table = validation_table(run.data.metrics)
    method = run.data.tags.get("benefit_validation", "not recorded with the run")
    return ModelValidation(table, images, f"{method}; 95% CIs: bootstrap over its patients")


def explain_report(
    result: ExplainResult,
    model_uri: str,
    config: Config,
    out: Path,
    run_name: str | None = None,
) -> tuple[ReportFiles, str | None]:
    """Write the report of an ``inflamrx explain`` job under ``out`` and, when the model URI
    resolves to a run, log it to a new explain run. Returns the files and that run's id."""
    outcome = result.metadata.get("outcome")
    label = result.metadata.get("outcome_label")
    benefit = result.benefit is not None
    context = ReportContext(
        model_uri=model_uri,
        outcome=str(outcome) if outcome else "not recorded with the model",
        synthetic=result.synthetic,
        validation=(benefit_training_validation if benefit else training_validation)(result.run_id),
        cohort=result.validation.accepted,
        n_rejected=len(result.validation.rejected),
        population="accepted rows of the data given to `inflamrx explain`",
        outcome_label=str(label) if label else label_of_description(str(outcome or "")),
    )
    if result.benefit is not None and result.scale is not None:
        files = write_benefit_report(
            result.explanation, result.benefit, result.scale, result.harm_threshold,
            context, config.report, out, result.patients,
        )  # fmt: skip
    else:
        files = write_report(result.explanation, context, config.report, out, result.patients)
    if result.run_id is None:
        return files, None
    return files, log_explain_run(files, result, model_uri, config, run_name)


def log_explain_run(
    files: ReportFiles,
    result: ExplainResult,
    model_uri: str,
    config: Config,
    run_name: str | None,
) -> str:
    """A new run, in the training run's experiment and nested under it, holding the report;
    the SHAP table goes without patient ids unless ``report.include_patient_ids``."""
    training = mlflow.get_run(str(result.run_id))
    n = len(result.explanation.patient_ids)
    name = run_name or config.tracking.run_name or f"explain | {training.info.run_name} | n={n}"
    with tracked_run(training.info.experiment_id, name) as run:
        mlflow.set_tags(
            standard_tags(data_digest(result.validation.accepted), result.synthetic)
            | {
                "job": "explain",
                EXPLAINS_RUN_TAG: str(result.run_id),
                "mlflow.parentRunId": str(result.run_id),  # shown under it in `mlflow ui`
                "model_uri": model_uri,
            }
        )
        rejected = float(len(result.validation.rejected))
        mlflow.log_metrics({"n_explained": float(n), "n_rejected": rejected})
        with tempfile.TemporaryDirectory() as tmp:
            logged = files
            if not config.report.include_patient_ids:
                table = Path(tmp) / files.table.name
                without_ids(pd.read_parquet(files.table)).to_parquet(table, index=False)
                logged = ReportFiles(files.report, table, files.figures)
            log_report(logged, run.info.run_id)
        return str(run.info.run_id)
