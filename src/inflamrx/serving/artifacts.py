"""The served model's files: the fitted model (``FittedModel.save``) and the serving settings.

Layout since format 2: one MLflow artifact ``model`` (a folder with ``model.json``, the skops
feature step, the kind's model files and ``serving.json``). Release 0.1.0 logged four artifacts
(``features``, ``booster`` or ``estimator``, and ``settings``, whose serving.json also held the
input columns and the kind); such models are still read (``_load_format_1``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sklearn.pipeline import Pipeline

from inflamrx.modeling.kinds.base import FittedModel, kind_of
from inflamrx.modeling.safe_io import load_trusted

SETTINGS_FILE = "serving.json"
MODEL_ARTIFACT = "model"


@dataclass(frozen=True)
class ServingSettings:
    """What serving decides beyond the fitted model (``serving.*`` at training time)."""

    threshold: float  # the decision threshold for predicted_response
    top_factors: int  # default number of SHAP reasons per patient


def save_artifacts(model: FittedModel, settings: ServingSettings, folder: Path) -> dict[str, str]:
    """Write the fitted model and the settings into ``folder``; return MLflow's artifacts."""
    model.save(folder)
    (folder / SETTINGS_FILE).write_text(json.dumps(asdict(settings), indent=2))
    return {MODEL_ARTIFACT: str(folder)}


def load_artifacts(
    artifacts: Mapping[str, str], verified: bool = False
) -> tuple[FittedModel, ServingSettings]:
    """The fitted model and settings from the files ``save_artifacts`` (or 0.1.0) wrote;
    ``verified``: they matched the model's SHA-256 manifest (see ``safe_io``)."""
    if MODEL_ARTIFACT not in artifacts:
        return _load_format_1(artifacts, verified)
    folder = Path(artifacts[MODEL_ARTIFACT])
    settings = ServingSettings(**json.loads((folder / SETTINGS_FILE).read_text()))
    return FittedModel.load(folder, verified), settings


def _load_format_1(
    artifacts: Mapping[str, str], verified: bool
) -> tuple[FittedModel, ServingSettings]:
    saved: dict[str, Any] = json.loads(Path(artifacts["settings"]).read_text())
    kind = kind_of(str(saved["model_kind"]))
    model_files = Path(artifacts["booster" if "booster" in artifacts else "estimator"]).parent
    pipeline = Pipeline(
        [
            ("features", load_trusted(artifacts["features"], verified)),
            ("model", kind.load(model_files, verified)),
        ]
    )
    fitted = FittedModel(kind, pipeline, [str(c) for c in saved["input_columns"]])
    return fitted, ServingSettings(float(saved["threshold"]), int(saved["top_factors"]))
