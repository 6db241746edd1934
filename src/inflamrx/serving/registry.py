"""Log the fitted pipeline to MLflow as the serving pyfunc and register it.

The model format (no pickle: XGBoost UBJ, skops with the trust policy below, models from code)
lives in ``inflamrx.serving.pyfunc``; this module holds what training decides about it."""

from __future__ import annotations

from collections.abc import Iterable
from importlib.metadata import version
from pathlib import Path

import pandas as pd
import skops.io
from sklearn.pipeline import Pipeline

from inflamrx.config import Config
from inflamrx.data.outcomes import describe

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


class UntrustedTypesError(TypeError):
    """An object or artifact holds types outside ``TRUSTED_PREFIXES``."""


def allowed_types(untrusted: Iterable[str], what: str) -> list[str]:
    """The types skops reports as untrusted, when all fall under ``TRUSTED_PREFIXES``."""
    found = sorted(untrusted)
    refused = [t for t in found if not t.startswith(TRUSTED_PREFIXES)]
    if refused:
        raise UntrustedTypesError(
            f"{what} holds types that are not trusted for loading: {refused}. Trusted are "
            f"types under {', '.join(TRUSTED_PREFIXES)}; loading others could run their code."
        )
    return found


def dump_trusted(obj: object, path: Path) -> None:
    """Save ``obj`` with skops, refusing to write what ``allowed_types`` would not load back
    (serialised once: the bytes checked are the bytes written)."""
    data = skops.io.dumps(obj)
    allowed_types(skops.io.get_untrusted_types(data=data), type(obj).__name__)
    path.write_bytes(data)


def pip_requirements() -> list[str]:
    # Explicit pins: inferring requirements costs seconds per model and can miss some.
    return [f"{name}=={version(name)}" for name in PACKAGES]


def log_pipeline(
    fitted: Pipeline, x_train: pd.DataFrame, config: Config, synthetic: bool
) -> tuple[str, str | None]:
    """Log the fitted pipeline as the ``model`` pyfunc of the active run; return (URI, version)."""
    # serving imports this module (the trust policy): imported here to avoid a cycle.
    from inflamrx.serving.pyfunc import ServingSettings, log_model

    settings = ServingSettings(
        threshold=config.serving.threshold,
        top_factors=config.serving.top_factors,
        input_columns=list(x_train.columns),
        model_kind=config.model.kind,
    )
    info = log_model(
        fitted,
        settings,
        metadata={
            "decision_threshold": config.serving.threshold,
            "top_factors": config.serving.top_factors,
            "outcome": describe(config.outcome),
            "synthetic_training_data": synthetic,
            "input_columns": list(x_train.columns),
        },
        pip_requirements=pip_requirements(),
        registered_model_name=config.registry.name if config.registry.enabled else None,
    )
    registered = info.registered_model_version
    return info.model_uri, (str(registered) if registered is not None else None)
