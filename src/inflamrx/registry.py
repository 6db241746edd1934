"""Log the fitted pipeline to MLflow (skops, explicit trusted types) and register it."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import mlflow
import pandas as pd
import skops.io
from mlflow.models import infer_signature
from sklearn.pipeline import Pipeline

import inflamrx
from inflamrx.config import Config
from inflamrx.outcomes import describe

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
# Types a saved pipeline may contain; anything else is refused rather than trusted.
TRUSTED_PREFIXES = ("inflamrx.", "sklearn.", "xgboost.", "numpy.", "builtins.", "collections.")
PACKAGES = ("scikit-learn", "xgboost-cpu", "pandas", "numpy", "scipy", "skops", "mlflow", "shap", "pandera", "pydantic", "pyyaml", "pyarrow")  # fmt: skip


def illustrative_example(columns: pd.DataFrame) -> pd.DataFrame:
    """One invented patient with the model's input columns and dtypes."""
    row = {c: [ILLUSTRATIVE_PATIENT.get(c, float("nan"))] for c in columns.columns}
    items = {c: [1.0] for c in columns.columns if c[-1].isdigit()}  # scale items: 1 point each
    return pd.DataFrame(row | items).astype(columns.dtypes.to_dict())


def trusted_types(pipeline: Pipeline) -> list[str]:
    untrusted = skops.io.get_untrusted_types(data=skops.io.dumps(pipeline))
    refused = [t for t in untrusted if not t.startswith(TRUSTED_PREFIXES)]
    if refused:
        raise TypeError(f"the pipeline holds types that are not trusted for loading: {refused}")
    return sorted(untrusted)


def pip_requirements() -> list[str]:
    # Explicit pins: inferring requirements costs seconds per model and can miss some.
    return [f"{name}=={version(name)}" for name in PACKAGES]


def log_pipeline(
    fitted: Pipeline, x_train: pd.DataFrame, config: Config, synthetic: bool
) -> tuple[str, str | None]:
    """Log the fitted pipeline as ``model`` in the active run; return (model URI, version)."""
    example = illustrative_example(x_train.head(1))
    signature = infer_signature(example, fitted.predict_proba(example)[:, 1])
    info = mlflow.sklearn.log_model(
        fitted,
        name="model",
        signature=signature,
        input_example=example,
        serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_SKOPS,
        skops_trusted_types=trusted_types(fitted),
        pyfunc_predict_fn="predict_proba",
        pip_requirements=pip_requirements(),
        code_paths=[str(Path(inflamrx.__file__).parent)],
        metadata={
            "decision_threshold": config.serving.threshold,
            "outcome": describe(config.outcome),
            "synthetic_training_data": synthetic,
            "input_columns": list(x_train.columns),
        },
        registered_model_name=config.registry.name if config.registry.enabled else None,
    )
    registered = info.registered_model_version
    return info.model_uri, (str(registered) if registered is not None else None)
