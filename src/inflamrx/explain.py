"""SHAP explanations of the one fitted ``Pipeline(features, model)``.

Contributions are computed on the transformed features by the pipeline's own fitted
``features`` step (no second copy of feature code) and reported under its clinical names.
Values are in log-odds with a base value; base + sum must equal the model's margin.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import shap
from scipy.special import expit
from sklearn.pipeline import Pipeline
from xgboost import XGBClassifier

ADDITIVITY_TOLERANCE = 1e-4


class AdditivityError(RuntimeError):
    """base value + sum of contributions differs from the model's margin: the explanation
    would misstate the prediction, so it is refused rather than reported."""


@dataclass(frozen=True)
class Contributions:
    values: pd.DataFrame  # log-odds contribution per patient (rows) and clinical feature
    base_value: float  # log-odds of the average training patient in the model
    margin: np.ndarray  # the model's log-odds per patient (= base + row sum)
    features: pd.DataFrame  # the transformed feature values the model saw

    @property
    def probability(self) -> np.ndarray:
        return np.asarray(expit(self.margin))


def contributions(pipeline: Pipeline, x: pd.DataFrame) -> Contributions:
    """SHAP values for ``x`` (the model's raw input columns): TreeExplainer for XGBoost,
    the exact linear explanation (training-mean background) for penalised logistic."""
    features_step, model = pipeline.named_steps["features"], pipeline.named_steps["model"]
    names = [str(n) for n in features_step.get_feature_names_out()]
    matrix = np.asarray(features_step.transform(x), dtype=float)
    if isinstance(model, XGBClassifier):
        explainer = shap.TreeExplainer(model)
        values = np.asarray(explainer.shap_values(matrix), dtype=float)
        base = float(np.ravel(explainer.expected_value)[0])
        margin = model.predict(matrix, output_margin=True).astype(float)
    else:
        values, base, margin = _linear(model, matrix)
    _check_additivity(values, base, margin)
    index = x.index
    return Contributions(
        values=pd.DataFrame(values, columns=names, index=index),
        base_value=base,
        margin=margin,
        features=pd.DataFrame(matrix, columns=names, index=index),
    )


def _linear(model: Pipeline, matrix: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
    """LinearExplainer on the standardised features. The scaler's training mean makes the
    background mean exactly zero, so each contribution is coefficient x standardised value."""
    standardised = model[:-1].transform(matrix)
    logistic = model[-1]
    coef, intercept = logistic.coef_.ravel(), float(logistic.intercept_[0])
    background = (np.zeros(len(coef)), np.eye(len(coef)))  # (mean, covariance)
    explainer = shap.LinearExplainer((coef, intercept), background)
    values = np.asarray(explainer.shap_values(standardised), dtype=float)
    margin = logistic.decision_function(standardised).astype(float)
    return values, float(np.ravel(explainer.expected_value)[0]), margin


def _check_additivity(values: np.ndarray, base: float, margin: np.ndarray) -> None:
    gap = np.abs(base + values.sum(axis=1) - margin)
    if gap.size and gap.max() > ADDITIVITY_TOLERANCE:
        worst = int(gap.argmax())
        raise AdditivityError(
            f"SHAP additivity fails: base value + contributions differs from the model's "
            f"log-odds by {gap.max():.2e} (row {worst}; tolerance {ADDITIVITY_TOLERANCE:g})"
        )


def probability_points(contrib: Contributions) -> pd.DataFrame:
    """Each contribution in percentage points of predicted probability: the change in
    probability from adding that feature's log-odds to the rest of the patient's margin."""
    margin = contrib.margin[:, None]
    without = expit(margin - contrib.values.to_numpy())
    points = 100.0 * (expit(margin) - without)
    return pd.DataFrame(points, columns=contrib.values.columns, index=contrib.values.index)
