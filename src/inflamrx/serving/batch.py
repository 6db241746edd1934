"""Batch scoring through the same data contract as training."""

from __future__ import annotations

from dataclasses import dataclass, field

import mlflow
import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from inflamrx.config import DataConfig
from inflamrx.data.validate import ValidationResult, validate_cohort
from inflamrx.errors import InputError
from inflamrx.tracking.store import tracking_uri


@dataclass
class PredictResult:
    predictions: pd.DataFrame  # patient_id, response_probability, predicted_response
    validation: ValidationResult
    threshold: float
    warnings: list[str] = field(default_factory=list)


def load_model(model_uri: str) -> tuple[Pipeline, dict[str, object]]:
    """The fitted pipeline behind a model URI, and the metadata logged with it.

    Models are logged as the serving pyfunc (``inflamrx.serving.pyfunc.ResponseModel``); loading it
    checks every artifact against the trusted types, and the fitted pipeline is unwrapped."""
    from inflamrx.serving.pyfunc import ResponseModel

    mlflow.set_tracking_uri(tracking_uri())
    mlflow.set_registry_uri(tracking_uri())
    try:
        info = mlflow.models.get_model_info(model_uri)
        if "sklearn" in info.flavors:  # logged before the serving pyfunc: still readable
            return mlflow.sklearn.load_model(model_uri), dict(info.metadata or {})
        python_model = mlflow.pyfunc.load_model(model_uri).unwrap_python_model()
    except Exception as err:  # an unknown URI, a missing run, a damaged or untrusted artifact
        raise InputError(f"cannot load the model {model_uri!r}: {err}") from None
    if not isinstance(python_model, ResponseModel):
        raise InputError(
            f"{model_uri!r} is not an inflamrx response model "
            f"(it holds {type(python_model).__name__}); log it with `inflamrx train`"
        )
    return python_model.pipeline, dict(info.metadata or {})


def decision_threshold(metadata: dict[str, object]) -> float:
    """The threshold stored with the model (serving.threshold at training time)."""
    return float(metadata.get("decision_threshold", 0.5))  # type: ignore[arg-type]


def score(
    pipeline: Pipeline, metadata: dict[str, object], cohort: pd.DataFrame
) -> tuple[pd.DataFrame, list[str]]:
    listed = metadata.get("input_columns", [])
    columns = [str(c) for c in listed] if isinstance(listed, list) else []
    absent = [c for c in columns if c not in cohort]
    warnings = []
    if absent:
        warnings.append(
            f"columns the model was trained with are absent and treated as missing: {absent}"
        )
    proba = pipeline.predict_proba(cohort.reindex(columns=columns))[:, 1]
    out = pd.DataFrame({"patient_id": cohort["patient_id"].to_numpy()})
    return pd.concat([out, decide(proba, decision_threshold(metadata))], axis=1), warnings


def decide(proba: np.ndarray, threshold: float) -> pd.DataFrame:
    """The reported probability (6 decimals) and the decision at the model's threshold."""
    return pd.DataFrame(
        {"response_probability": np.round(proba, 6), "predicted_response": proba >= threshold}
    )


def predict(model_uri: str, data: DataConfig) -> PredictResult:
    """Validate ``data`` with the cohort contract, then score the accepted rows."""
    pipeline, metadata = load_model(model_uri)
    validated = validate_cohort(data)
    threshold = decision_threshold(metadata)
    if validated.accepted.empty:
        empty = pd.DataFrame(
            {"patient_id": [], "response_probability": [], "predicted_response": []}
        )
        return PredictResult(empty, validated, threshold, ["no row was accepted"])
    predictions, warnings = score(pipeline, metadata, validated.accepted)
    return PredictResult(predictions, validated, threshold, warnings + validated.warnings)
