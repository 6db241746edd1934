"""What a served or batch-scored benefit model returns per patient.

Both arms' probabilities of response, the predicted benefit (their difference), a
recommendation at the harm threshold stored with the model, always with its caveat, and the
top factors of the predicted benefit: exact SHAP values of the benefit on the learner's scale
(``log odds ratio``: the difference of the two arms' log-odds explanations; ``risk
difference``: TreeSHAP of the effect model), each factor saying which.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from mlflow.types import ColSpec, DataType, Schema
from mlflow.types.schema import Array, Object, Property

from inflamrx.modeling.explanations import contributions
from inflamrx.modeling.factors import patient_factors
from inflamrx.modeling.kinds.base import FittedModel
from inflamrx.modeling.kinds.benefit import BENEFIT, CONTROL, TREATED, scale_of

CAVEAT = "model estimate for shared decisions, not a prescription"
RECOMMEND = "recommend_treatment"
RECOMMENDATION = "recommendation"
_SHORT = {"log odds ratio": "log OR", "risk difference": "risk difference"}


def recommendations(benefit: np.ndarray, harm_threshold: float) -> tuple[np.ndarray, list[str]]:
    """Treat where the predicted benefit exceeds the harm threshold; the words say so, with
    the caveat, on every row."""
    treat = benefit > harm_threshold
    level = f"{100 * harm_threshold:g} percentage points"
    words = [
        (
            f"predicted benefit {100 * b:+.1f} points exceeds the harm threshold ({level}): "
            f"treatment may be worth discussing; {CAVEAT}"
            if yes
            else f"predicted benefit {100 * b:+.1f} points does not exceed the harm threshold "
            f"({level}): treatment not favoured by the model; {CAVEAT}"
        )
        for b, yes in zip(benefit.tolist(), treat.tolist(), strict=True)
    ]
    return treat, words


def benefit_factors(
    model: FittedModel, x: pd.DataFrame, matrix: np.ndarray, top: int
) -> list[list[dict[str, object]]]:
    """Per row, the ``top`` features with the largest share of the predicted benefit."""
    if top == 0:
        return [[] for _ in range(len(x))]
    scale = scale_of(model)
    found = patient_factors(contributions(model, x, matrix), x, top, with_subject=True)
    return [
        [
            {
                "feature": f["feature"],
                "value": f["value"],
                "direction": f"{f['direction']} the benefit",
                "contribution": f["log_odds"],
                "scale": scale,
                "text": f"{f['subject']}: {float(f['log_odds']):+.3f} {_SHORT[scale]}",  # type: ignore[arg-type]
            }
            for f in row
            if float(f["log_odds"]) != 0.0  # type: ignore[arg-type]  # no share: not a factor
        ]
        for row in found
    ]


def benefit_frame(
    model: FittedModel, x: pd.DataFrame, matrix: np.ndarray, harm_threshold: float, top: int
) -> pd.DataFrame:
    """One row per row of ``x``: both arms, the benefit, the recommendation and its factors."""
    predicted = model.predict(x, matrix)
    benefit = predicted[BENEFIT].to_numpy()
    treat, words = recommendations(benefit, harm_threshold)
    return pd.DataFrame(
        {
            TREATED: np.round(predicted[TREATED].to_numpy(), 6),
            CONTROL: np.round(predicted[CONTROL].to_numpy(), 6),
            BENEFIT: np.round(benefit, 6),
            RECOMMEND: treat,
            RECOMMENDATION: words,
            "top_factors": benefit_factors(model, x, matrix, top),
        }
    )


def benefit_output_schema() -> Schema:
    factor = Object(
        [
            Property("feature", DataType.string),
            Property("value", DataType.string),
            Property("direction", DataType.string),
            Property("contribution", DataType.double),
            Property("scale", DataType.string),
            Property("text", DataType.string),
        ]
    )
    return Schema(
        [
            ColSpec(DataType.double, TREATED),
            ColSpec(DataType.double, CONTROL),
            ColSpec(DataType.double, BENEFIT),
            ColSpec(DataType.boolean, RECOMMEND),
            ColSpec(DataType.string, RECOMMENDATION),
            ColSpec(Array(factor), "top_factors"),
            ColSpec(Array(DataType.string), "warnings"),
        ]
    )
