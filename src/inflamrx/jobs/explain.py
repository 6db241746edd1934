"""The explain job: load a logged model, validate new rows exactly as ``predict`` does, explain
them with SHAP and write the researcher's report. When the model comes from a run, the report
is logged to a new run of its own (nested under, and tagged with, the training run), never
into the training run's artifacts."""

from __future__ import annotations

import io
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd

from inflamrx.config import Config
from inflamrx.data.outcomes import label_of_description
from inflamrx.data.validate import ValidationResult
from inflamrx.errors import InputError
from inflamrx.jobs.train import EVALUATION_ARTIFACTS, METRICS_TABLE_FILE, log_report
from inflamrx.modeling.explanations import Explanation, explain_rows
from inflamrx.modeling.kinds.base import PROBABILITY
from inflamrx.modeling.splits import data_digest
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


def explain(
    model_uri: str, data: CohortInput, patients: Sequence[str] = (), seed: int = 0
) -> ExplainResult:
    """Load the model, validate ``data`` (a DataFrame, a path or a DataConfig) exactly as
    ``predict`` does and explain the accepted rows. Unknown ``patients`` ids are an InputError
    (the CLI exits 2)."""
    loaded = load_model(model_uri)
    if loaded.model.kind.outputs != (PROBABILITY,):
        # A benefit model's SHAP values explain a difference between arms, which this report
        # (one probability, its waterfalls and dependence plots) would mislabel.
        raise InputError(
            f"{model_uri!r} is a benefit model: `inflamrx explain` explains response models only. "
            "Its benefit factors are in `inflamrx predict` and served answers (top_factors), and "
            "its benefit report (waterfalls included) is in the training run under benefit/"
        )
    validated = validate_input(data)
    accepted = validated.accepted
    if accepted.empty:
        raise InputError("no row of the cohort was accepted; see `inflamrx validate` for why")
    ids = accepted["patient_id"].astype(str)
    _check_patients(list(patients), set(ids), validated)
    x, _absent = loaded.model.inputs(accepted)  # as batch scoring: absent columns missing
    explanation = explain_rows(loaded.model, x, ids, seed=seed)
    synthetic = bool(loaded.metadata.get("synthetic_training_data", False)) or validated.synthetic
    return ExplainResult(
        explanation, list(patients), validated, loaded.metadata, loaded.run_id, synthetic
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


def training_validation(run_id: str | None) -> ModelValidation:
    """The metrics table and curves the training run logged under ``evaluation/``. Files are
    fetched one by one: only what the report shows, and no folder-download progress bar."""
    if run_id is None:
        return NO_VALIDATION
    found: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in (METRICS_TABLE_FILE, *EVALUATION_IMAGES):
            try:
                path = mlflow.artifacts.download_artifacts(
                    run_id=run_id, artifact_path=f"{EVALUATION_ARTIFACTS}/{name}", dst_path=tmp
                )
            except Exception:  # not logged (e.g. a model logged by hand): the report says so
                continue
            found[name] = Path(path).read_bytes()
    csv = found.pop(METRICS_TABLE_FILE, None)
    table = None if csv is None else pd.read_csv(io.BytesIO(csv), keep_default_na=False)
    # Runs before the validation modes held out a test set: the default method says so.
    method = mlflow.get_run(run_id).data.tags.get("validation_method")
    return ModelValidation(table, found, *([method] if method else []))


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
    context = ReportContext(
        model_uri=model_uri,
        outcome=str(outcome) if outcome else "not recorded with the model",
        synthetic=result.synthetic,
        validation=training_validation(result.run_id),
        cohort=result.validation.accepted,
        n_rejected=len(result.validation.rejected),
        population="accepted rows of the data given to `inflamrx explain`",
        outcome_label=str(label) if label else label_of_description(str(outcome or "")),
    )
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
