"""Batch scoring through the same data contract as training."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeAlias

import mlflow
import pandas as pd

from inflamrx.config import DataConfig
from inflamrx.data.csvfile import CHUNK_ROWS
from inflamrx.data.results import ValidationResult, ValidationSummary
from inflamrx.data.stream import TableWriter, ValidatedFiles, write_stream
from inflamrx.data.validate import (
    validate_cohort,
    validate_frame,
)
from inflamrx.errors import InputError
from inflamrx.modeling.kinds.base import PROBABILITY, FittedModel
from inflamrx.serving.artifacts import ServingSettings
from inflamrx.serving.benefit import RECOMMEND, RECOMMENDATION, benefit_frame
from inflamrx.serving.integrity import pickles_refused, verified_config, verify_model
from inflamrx.serving.pyfunc import ResponseModel, decide
from inflamrx.tracking.store import use_store

# What the Python API scores: a table in memory, a file, or a full data config (mapping, units).
CohortInput: TypeAlias = DataConfig | pd.DataFrame | str | os.PathLike[str]


def validate_input(data: CohortInput) -> ValidationResult:
    """The data contract on ``data``, whichever form it comes in."""
    if isinstance(data, pd.DataFrame):
        return validate_frame(data)
    if isinstance(data, str | os.PathLike):
        return validate_cohort(DataConfig(path=os.fspath(data)))
    if isinstance(data, DataConfig):
        return validate_cohort(data)
    raise InputError(
        f"data must be a pandas DataFrame, a file path or a DataConfig; got {type(data).__name__}"
    )


@dataclass
class PredictResult:
    predictions: pd.DataFrame  # patient_id, response_probability, predicted_response
    validation: ValidationResult
    threshold: float
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class LoadedModel:
    """A logged inflamrx model: the fitted model, its serving settings, MLflow's metadata."""

    model: FittedModel
    settings: ServingSettings
    metadata: dict[str, object]
    run_id: str | None  # the run that logged it; None for a local folder


def load_model(model_uri: str) -> LoadedModel:
    """The model behind a model URI. Its files are copied and checked against the SHA-256
    manifest recorded when it was logged (``integrity.verify_model``) before MLflow imports any
    of it; the copy is loaded as the serving pyfunc (``ResponseModel``) with MLflow's pickle
    deserialisation off, and every skops artifact is checked against the trusted types."""
    use_store()
    with tempfile.TemporaryDirectory() as tmp:
        folder = str(verify_model(model_uri, Path(tmp)))
        try:
            with pickles_refused():
                info = mlflow.models.Model.load(folder)
                pyfunc = mlflow.pyfunc.load_model(
                    folder, model_config=verified_config(Path(folder))
                )
            python_model = pyfunc.unwrap_python_model()
        except Exception as err:  # a damaged or untrusted artifact
            raise InputError(f"cannot load the model {model_uri!r}: {err}") from None
    if not isinstance(python_model, ResponseModel):
        raise InputError(
            f"{model_uri!r} is not an inflamrx response model "
            f"(it holds {type(python_model).__name__}); log it with `inflamrx train`"
        )
    return LoadedModel(
        python_model.model, python_model.settings, dict(info.metadata or {}), info.run_id or None
    )


def score(loaded: LoadedModel, cohort: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    x, absent = loaded.model.inputs(cohort)
    warnings = []
    if absent:
        warnings.append(
            f"columns the model was trained with are absent and treated as missing: {absent}"
        )
    out = pd.DataFrame({"patient_id": cohort["patient_id"].to_numpy()})
    if loaded.model.kind.outputs != (PROBABILITY,):  # a two-arm benefit model
        harm = loaded.settings.harm_threshold or 0.0
        matrix = loaded.model.transform(x)
        scored = benefit_frame(loaded.model, x, matrix, harm, loaded.settings.top_factors)
        # A CSV cell holds the factors' texts; the served model returns them as records.
        scored["top_factors"] = [
            "; ".join(str(f["text"]) for f in row) for row in scored["top_factors"]
        ]
        return pd.concat([out, scored], axis=1), warnings
    proba = loaded.model.predict(x)[PROBABILITY].to_numpy()
    return pd.concat([out, decide(proba, loaded.settings.threshold)], axis=1), warnings


def _decision(loaded: LoadedModel) -> tuple[float, list[str]]:
    """The threshold the model decides at, and its output columns beside patient_id."""
    if loaded.model.kind.outputs != (PROBABILITY,):  # a benefit model decides on benefit
        columns = [*loaded.model.kind.outputs, RECOMMEND, RECOMMENDATION, "top_factors"]
        return loaded.settings.harm_threshold or 0.0, columns
    return loaded.settings.threshold, [PROBABILITY, "predicted_response"]


def _no_prediction(columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame({c: [] for c in ["patient_id", *columns]})


def predict(model_uri: str, data: CohortInput) -> PredictResult:
    """Validate ``data`` (a DataFrame, a path or a DataConfig) with the cohort contract, then
    score the accepted rows."""
    loaded = load_model(model_uri)
    validated = validate_input(data)
    threshold, columns = _decision(loaded)
    if validated.accepted.empty:
        return PredictResult(_no_prediction(columns), validated, threshold, ["no row was accepted"])
    predictions, warnings = score(loaded, validated.accepted)
    return PredictResult(predictions, validated, threshold, warnings + validated.warnings)


@dataclass
class PredictedFile:
    """``predict_file``'s outcome: the predictions and rejected rows are in their files."""

    n_scored: int
    validation: ValidationSummary
    threshold: float
    warnings: list[str]


class _PredictionFiles:
    """Scores each checked chunk and appends the predictions (and rejected rows) to files."""

    def __init__(self, loaded: LoadedModel, out: Path, rejected: Path | None) -> None:
        self.loaded = loaded
        self.files = ValidatedFiles(None, rejected)
        self.predictions = TableWriter(out)
        self.n_scored = 0
        self.warnings: list[str] = []

    def start(self) -> None:
        self.files.start()
        self.predictions.start()
        self.n_scored, self.warnings = 0, []

    def write(self, chunk: ValidationResult) -> None:
        self.files.write(chunk)
        if chunk.accepted.empty:
            return
        predictions, warnings = score(self.loaded, chunk.accepted)
        self.predictions.write(predictions)
        self.n_scored += len(predictions)
        self.warnings += [w for w in warnings if w not in self.warnings]

    def finish(self) -> None:
        if not self.n_scored:  # the header alone, as the in-memory path writes it
            self.predictions.write(_no_prediction(_decision(self.loaded)[1]))
        self.files.finish()
        self.predictions.finish()

    def discard(self) -> None:
        self.files.discard()
        self.predictions.discard()


def predict_file(
    model_uri: str,
    data: DataConfig,
    out: Path,
    rejected: Path | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> PredictedFile:
    """``predict`` on a CSV file too big to hold (``data.stream``): chunk by chunk, the
    predictions written to ``out`` (CSV) as they come, rejected rows to ``rejected``."""
    loaded = load_model(model_uri)
    sink = _PredictionFiles(loaded, out, rejected)
    validation = write_stream(data, sink, chunk_rows)
    threshold, _ = _decision(loaded)
    warnings = sink.warnings + validation.warnings if sink.n_scored else ["no row was accepted"]
    return PredictedFile(sink.n_scored, validation, threshold, warnings)
