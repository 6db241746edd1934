"""Serve the one fitted ``Pipeline(features, model)`` as an MLflow pyfunc.

A raw baseline record (the canonical columns of cohort-schema.md, outcome columns left out)
goes in; the same data contract as training (``validate_frame``), the same fitted feature step
and model, and the same SHAP explanation come out as ``response_probability``,
``predicted_response`` (at the threshold stored with the model), ``top_factors`` and
``warnings``. Choices worth knowing:

- Nothing is unpickled. The model is logged as *models from code* (a cloudpickled PythonModel
  would be a pickle), the XGBoost booster is stored in its own UBJ format, and the
  scikit-learn parts go through skops with the exact-type trust policy of ``modeling.safe_io``.
  The SHA-256 manifest of the logged files is recorded (``serving.integrity``) and checked
  before ``predict``, ``explain``, ``serve`` and ``export`` import anything from the model.
- The model declares no MLflow input schema: the data contract is the input check. MLflow's
  schema enforcement would drop unknown columns before ``predict`` sees them (a misspelled
  ``il6`` for ``il6_pg_ml`` answered 200 without IL-6) and refuses an ``int64`` column from
  ``pd.read_csv`` for a double input. The column documentation stays with the model: the
  typed view of the contract (``input_schema``) in the model metadata, and the input example.
  Every numeric dtype pandas produces (int64, Int64, float32, bool for yes/no) reaches the
  contract, which parses it; a column outside the contract is refused, naming the closest
  canonical one.
- The scoring server turns an ``MlflowException`` raised by ``predict`` into an HTTP status by
  its error code (BAD_REQUEST: 400), but prefixes the message with the whole input frame
  (``Failed to predict data '<DataFrame repr>'``); any other exception becomes a 400 *with a
  stack trace*. So every bad input is raised here as BAD_REQUEST whose message names row,
  column and rule, never an id or free text, and carries the same text in the field
  ``SAFE_FIELD``, which ``inflamrx serve`` (``serving.server``) answers instead of MLflow's
  message. An unexpected error is re-raised as INTERNAL_ERROR (500) without its trace.
- MLflow's server has no request size limit (uvicorn has none either), so a served ``predict``
  refuses batches above ``MAX_ROWS`` records, and any text cell above ``MAX_TEXT`` characters
  (``inflamrx serve`` also refuses a body above its byte limit before parsing it).
"""

from __future__ import annotations

import gc
import logging
import os
import tempfile
from collections.abc import Mapping
from importlib.metadata import version
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.protos.databricks_pb2 import BAD_REQUEST, INTERNAL_ERROR
from mlflow.pyfunc import PythonModel, PythonModelContext
from mlflow.types import ColSpec, DataType, ParamSchema, ParamSpec, Schema
from mlflow.types.schema import AnyType, Array, Object, Property

from inflamrx.data.ingest import identifier_in_value
from inflamrx.data.names import closest_canonical
from inflamrx.data.schema import COLUMNS, Kind, Role
from inflamrx.data.validate import UNUSUAL, Problem, validate_frame
from inflamrx.errors import InputError
from inflamrx.modeling.explanations import contributions
from inflamrx.modeling.factors import patient_factors
from inflamrx.modeling.kinds.base import PROBABILITY, FittedModel
from inflamrx.serving.artifacts import (
    MODEL_ARTIFACT,
    ServingSettings,
    load_artifacts,
    save_artifacts,
)
from inflamrx.serving.benefit import benefit_frame, benefit_output_schema
from inflamrx.serving.integrity import VERIFIED_KEY, is_verified, no_bytecode, record_manifest

_log = logging.getLogger(__name__)
PACKAGE_FOLDER = Path(__file__).resolve().parents[1]  # travels with the model (code_paths)
# An invented, typical patient: the input example must never be a real patient's row.
ILLUSTRATIVE_PATIENT: dict[str, object] = {
    "age": 46.0, "sex": "F", "bmi": 29.5, "smoking": "never",
    "n_failed_antidepressants": 2.0, "episode_duration_months": 18.0,
    "autoimmune_disease": False, "family_history_autoimmune": False,
    "mood_worse_with_illness": True,
    "crp_mg_l": 4.2, "crp_mg_l_below_lod": False, "il6_pg_ml": 2.1, "il6_pg_ml_below_lod": False,
    "tnf_alpha_pg_ml": 1.4, "tnf_alpha_pg_ml_below_lod": False, "il1b_pg_ml": 0.6,
    "il1b_pg_ml_below_lod": False, "wbc_10e9_l": 7.1, "neutrophils_10e9_l": 4.3,
    "lymphocytes_10e9_l": 2.0, "madrs_total": 31.0, "hamd17_total": 23.0, "phq9_total": 18.0,
    "gad7_total": 12.0, "bdi2_total": 30.0, "shaps_total": 6.0, "facit_fatigue": 22.0,
    "eq5d_vas": 45.0,
}  # fmt: skip
PACKAGES = ("scikit-learn", "xgboost-cpu", "pandas", "numpy", "scipy", "skops", "mlflow", "shap", "pandera", "pydantic", "pyyaml", "pyarrow")  # fmt: skip

MAX_ROWS = 10_000  # records per request: larger batches belong to `inflamrx predict`
MAX_TEXT = 200  # characters in one text cell: no canonical value comes near it
MAX_TOP_FACTORS = 20  # the bound of serving.top_factors in the config
MODEL_CODE = "inflamrx_model.py"
INPUTS_METADATA = "input_columns"  # the typed column table, for people and clients to read
# The file logged as the model's code: MLflow runs it to get the model, instead of unpickling.
_MODEL_CODE_TEXT = (
    '"""inflamrx response model (models from code: no pickle)."""\n\n'
    "import mlflow\n\n"
    "from inflamrx.serving.pyfunc import ResponseModel\n\n"
    "mlflow.models.set_model(ResponseModel())\n"
)
_TYPES: dict[Kind, DataType | AnyType] = {
    Kind.NUMBER: DataType.double,
    Kind.INTEGER: DataType.double,  # counts and items may be missing: NaN needs a float
    # Yes/no columns are "any": MLflow casts a boolean column with astype(bool), which turns a
    # null into False and a key left out of a record into True, without a word (checked with
    # scoring_server.infer_and_parse_data in MLflow 3.17). Untyped, true/false/null/"yes"/1
    # reach the contract, which parses them and names a bad value with its rule. (The schema
    # is documentation now, see the module docstring; MLflow would check "any" value by value.)
    Kind.BOOLEAN: AnyType(),
    Kind.CATEGORY: DataType.string,
    Kind.STRING: DataType.string,
}


# --- the pyfunc -------------------------------------------------------------------------------


SAFE_FIELD = "inflamrx_message"  # the message again, without MLflow's echo of the input


def _bad_request(message: str) -> MlflowException:
    return MlflowException(message, error_code=BAD_REQUEST, **{SAFE_FIELD: message})


def _bounded(value: str, kind: Kind, allowed: tuple[str, ...]) -> bool:
    """Whether a refused value may be quoted back: a number of bounded length, or one of the
    column's categories. Anything else may be an identifier or free text."""
    if kind in (Kind.NUMBER, Kind.INTEGER):
        try:
            return len(value) <= 24 and bool(np.isfinite(float(value)))
        except ValueError:
            return False
    return kind is Kind.CATEGORY and value in allowed


def _served_reason(problem: Problem) -> str:
    """``row N: column = value: rule``, the value only when ``_bounded``, never a patient id."""
    spec = COLUMNS.get(problem.column)
    quotes_nothing = problem.withheld or not problem.column  # reason() leaves the value out
    safe = spec is not None and _bounded(problem.value, spec.kind, spec.allowed)
    if quotes_nothing or safe:
        return f"row {problem.row}: {problem.reason()}"
    return f"row {problem.row}: {problem.column}: {problem.rule} (the value is not shown)"


def _contract_message(problems: list[Problem], n_rows: int) -> str:
    rows = sorted({p.row for p in problems})
    lines = [_served_reason(p) for p in problems[:20]]
    more = f"\n... and {len(problems) - 20} more" if len(problems) > 20 else ""
    return (
        f"{len(rows)} of {n_rows} records break the data contract; nothing was scored "
        "(rows are numbered from 1 in the order sent):\n" + "\n".join(lines) + more
    )


def _check_columns(frame: pd.DataFrame) -> None:
    """Refuse a column outside the contract: dropping it would score without it (a misspelled
    ``il6`` would leave IL-6 out while the sender believes it was used)."""
    unknown = [str(c).strip() for c in frame.columns if str(c).strip() not in COLUMNS]
    if not unknown:
        return
    lines = []
    for name in unknown[:20]:
        if len(name) > 60 or identifier_in_value(name):
            lines.append("a column whose name looks like patient information (name not shown)")
            continue
        near = closest_canonical(name)
        hint = f"did you mean {near}?" if near else "the model's input example lists the columns"
        lines.append(f"column {name!r} is not a column of the data contract: {hint}")
    more = f"\n... and {len(unknown) - 20} more" if len(unknown) > 20 else ""
    raise _bad_request(
        f"{len(unknown)} column(s) not in the data contract; nothing was scored:\n"
        + "\n".join(lines)
        + more
    )


def _check_size(frame: pd.DataFrame) -> None:
    if len(frame) == 0:
        raise _bad_request("the request holds no patient record")
    # Limits on what a client sends: MLflow's scoring server marks its process with this flag;
    # in-process batch scoring (trusted callers, 100,000s of rows) skips them.
    if os.environ.get("_MLFLOW_IS_IN_SERVING_ENVIRONMENT", "").lower() != "true":
        return
    if len(frame) > MAX_ROWS:
        raise _bad_request(
            f"the request holds {len(frame)} records; at most {MAX_ROWS} are scored per request "
            "(send smaller batches, or score a file with `inflamrx predict`)"
        )
    text = [
        c
        for c, dtype in frame.dtypes.items()
        if dtype.kind in "OUT" or isinstance(dtype, pd.StringDtype)
    ]
    if not text:
        return
    # All text columns as one block: a pandas operation per column costs more than the check.
    cells = frame[text].to_numpy(dtype=object)
    lengths = np.array(
        [[len(v) if isinstance(v, str) else 0 for v in row] for row in cells.tolist()]
    ).reshape(cells.shape)
    for j in np.flatnonzero(lengths.max(axis=0) > MAX_TEXT):
        worst = lengths[:, j]
        raise _bad_request(
            f"row {int(worst.argmax()) + 1}: {text[j]} holds {int(worst.max())} "
            f"characters; no value of the cohort contract is longer than {MAX_TEXT}"
        )


def _top_factors(params: Mapping[str, Any] | None, default: int) -> int:
    top = (params or {}).get("top_factors", default)
    if (
        isinstance(top, bool)
        or not isinstance(top, int | np.integer)
        or not 0 <= top <= MAX_TOP_FACTORS
    ):
        raise _bad_request(
            f"params.top_factors must be a whole number between 0 and {MAX_TOP_FACTORS} "
            f"(0 turns explanations off). Got {top!r}."
        )
    return int(top)


def row_warnings(accepted: pd.DataFrame) -> list[list[str]]:
    """Per accepted row, the valid-but-unusual values the contract flags (CRP > 10 mg/L...)."""
    out: list[list[str]] = [[] for _ in range(len(accepted))]
    for column, (limit, what) in UNUSUAL.items():
        if column in accepted:
            values = accepted[column].to_numpy(dtype=float, na_value=np.nan)
            for pos in np.flatnonzero(values > limit):  # NaN compares False: never flagged
                out[pos].append(f"{column} = {values[pos]:g}: {what}")
    return out


class ResponseModel(PythonModel):
    """Raw clinical records in; probability, decision, top SHAP reasons and warnings out."""

    model: FittedModel
    settings: ServingSettings

    def load_context(self, context: PythonModelContext) -> None:
        verified = is_verified(context.model_config, context.artifacts)
        self.model, self.settings = load_artifacts(context.artifacts, verified)
        # Everything loaded so far (libraries, the model) lives as long as the process: keep
        # it out of the cyclic garbage collector, whose full passes over it cost more than
        # the scoring itself once a batch builds 100,000 rows of factors (measured 20x).
        gc.freeze()

    def predict(
        self,
        context: PythonModelContext,
        model_input: pd.DataFrame,
        params: dict[str, Any] | None = None,
    ) -> pd.DataFrame:
        try:
            return self.score(model_input, _top_factors(params, self.settings.top_factors))
        except MlflowException:
            raise
        except InputError as err:  # the contract refuses the table as a whole
            raise _bad_request(str(err)) from None
        except Exception:
            # A bug, not bad input: log the trace here, answer 500 without it.
            _log.exception("unexpected error while scoring")
            raise MlflowException(
                "internal error while scoring; the server log has the details",
                error_code=INTERNAL_ERROR,
            ) from None

    def score(self, records: pd.DataFrame, top: int) -> pd.DataFrame:
        """Validate with the cohort contract, then predict and explain every record."""
        if not isinstance(records, pd.DataFrame):
            raise _bad_request("send a table of patient records (dataframe_split/records)")
        _check_columns(records)
        _check_size(records)
        frame = records
        if "patient_id" not in frame:
            # The contract keys rows by patient_id; a service may leave it out.
            frame = frame.assign(patient_id=[f"record-{i}" for i in range(1, len(frame) + 1)])
        validated = validate_frame(frame)
        if validated.problems:
            raise _bad_request(_contract_message(validated.problems, len(frame)))
        accepted = validated.accepted
        x, _absent = self.model.inputs(accepted)  # optional columns may be absent
        # The feature step runs once for both the probability and its explanation.
        matrix = self.model.transform(x)
        if self.model.kind.outputs != (PROBABILITY,):  # a two-arm benefit model
            harm = self.settings.harm_threshold or 0.0
            frame = benefit_frame(self.model, x, matrix, harm, top)
            return frame.assign(warnings=row_warnings(accepted))
        proba = self.model.predict(x, matrix)[PROBABILITY].to_numpy()
        factors: list[list[dict[str, object]]] = [[] for _ in range(len(accepted))]
        if top:
            factors = patient_factors(contributions(self.model, x, matrix), x, top)
        return decide(proba, self.settings.threshold).assign(
            top_factors=factors, warnings=row_warnings(accepted)
        )


def decide(proba: np.ndarray, threshold: float) -> pd.DataFrame:
    """The reported probability (6 decimals) and the decision at the model's threshold."""
    return pd.DataFrame({PROBABILITY: np.round(proba, 6), "predicted_response": proba >= threshold})


# --- signature and example --------------------------------------------------------------------


def input_schema() -> Schema:
    """The canonical raw columns (outcome and follow-up left out) as an MLflow schema; only age,
    sex and CRP are required. patient_id is optional for a service: rows are answered in the
    order sent. Documentation in the model metadata (``INPUTS_METADATA``), not enforced by
    MLflow: the data contract checks the input (see the module docstring)."""
    return Schema(
        [
            ColSpec(
                _TYPES[spec.kind], spec.name, required=spec.required and spec.name != "patient_id"
            )
            for spec in COLUMNS.values()
            if spec.role is not Role.OUTCOME
        ]
    )


def output_schema(outputs: tuple[str, ...] = (PROBABILITY,)) -> Schema:
    """The columns a model of a kind with these ``outputs`` returns."""
    if outputs != (PROBABILITY,):
        return benefit_output_schema()
    factor = Object(
        [
            Property("feature", DataType.string),
            Property("value", DataType.string),
            Property("direction", DataType.string),
            Property("log_odds", DataType.double),
            Property("points", DataType.double),
            Property("text", DataType.string),
        ]
    )
    return Schema(
        [
            ColSpec(DataType.double, "response_probability"),
            ColSpec(DataType.boolean, "predicted_response"),
            ColSpec(Array(factor), "top_factors"),
            ColSpec(Array(DataType.string), "warnings"),
        ]
    )


def signature(top_factors: int, outputs: tuple[str, ...] = (PROBABILITY,)) -> ModelSignature:
    """The logged signature: the kind's outputs and the params; no inputs (the data contract
    is the input check, see the module docstring)."""
    params = ParamSchema([ParamSpec("top_factors", DataType.long, top_factors)])
    return ModelSignature(inputs=None, outputs=output_schema(outputs), params=params)


def input_example() -> pd.DataFrame:
    """One invented patient (ILLUSTRATIVE_PATIENT), never a real patient's row."""
    row = {"patient_id": "ILLUSTRATIVE-1"} | {
        k: v for k, v in ILLUSTRATIVE_PATIENT.items() if k in COLUMNS
    }
    return pd.DataFrame([row])


def pip_requirements() -> list[str]:
    # Explicit pins: inferring requirements costs seconds per model and can miss some.
    return [f"{name}=={version(name)}" for name in PACKAGES]


def log_model(
    model: FittedModel,
    settings: ServingSettings,
    metadata: dict[str, Any],
    registered_model_name: str | None,
) -> mlflow.models.model.ModelInfo:
    """Log ``model`` as the ``model`` pyfunc of the active run (and register it)."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        artifacts = save_artifacts(model, settings, folder / MODEL_ARTIFACT)
        code = folder / MODEL_CODE
        code.write_text(_MODEL_CODE_TEXT)
        # MLflow loads the saved model to check the input example before uploading it: with
        # bytecode writing on, a __pycache__ of the model code would be logged as a model file.
        with no_bytecode():
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=str(code),
                artifacts=artifacts,
                # The package travels with the model, so a served copy imports this very code.
                code_paths=[str(PACKAGE_FOLDER)],
                signature=signature(settings.top_factors, model.kind.outputs),
                input_example=input_example(),
                pip_requirements=pip_requirements(),
                metadata=metadata | {INPUTS_METADATA: input_schema().to_dict()},
                # A key a loader may override: only keys logged here reach load_context.
                model_config={VERIFIED_KEY: ""},
                registered_model_name=registered_model_name,
            )
    version = info.registered_model_version
    registered = (
        (registered_model_name, str(version)) if registered_model_name and version else None
    )
    record_manifest(info.model_uri, info.model_id, registered)
    return info
