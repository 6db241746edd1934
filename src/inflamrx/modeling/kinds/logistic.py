"""Penalised logistic regression: median imputation, standardisation, L2/L1/elastic net."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from inflamrx.config import LogisticConfig, ParamRange
from inflamrx.modeling.kinds.base import ModelKind, ShapValues


class LogisticKind(ModelKind[LogisticConfig]):
    name = "logistic"
    label = "penalised logistic regression"
    search_space: ClassVar[dict[str, ParamRange]] = {
        "C": ParamRange(low=1e-3, high=10, log=True),
        "penalty": ParamRange(choices=["l2", "l1", "elasticnet"]),
        "l1_ratio": ParamRange(low=0.05, high=0.95),
    }

    def estimator(self, cfg: LogisticConfig) -> Pipeline:
        solver = "lbfgs" if cfg.penalty == "l2" else "saga"
        l1_ratio = {"elasticnet": cfg.l1_ratio, "l1": 1.0, "l2": 0.0}[cfg.penalty]
        return Pipeline(
            [
                # Median imputation: missing-value indicators are already features.
                ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
                ("scale", StandardScaler()),
                (
                    "logistic",
                    LogisticRegression(
                        C=cfg.C,
                        l1_ratio=l1_ratio,
                        solver=solver,
                        max_iter=5000,
                        random_state=cfg.seed,
                    ),
                ),
            ]
        )

    def shap_values(self, estimator: Pipeline, matrix: np.ndarray) -> ShapValues:
        """The exact linear explanation on the standardised features. The scaler's training
        mean makes the background mean exactly zero, so each contribution is coefficient x
        standardised value."""
        import shap  # only where SHAP values are computed

        standardised = estimator[:-1].transform(matrix)
        logistic = estimator[-1]
        coef, intercept = logistic.coef_.ravel(), float(logistic.intercept_[0])
        background = (np.zeros(len(coef)), np.eye(len(coef)))  # (mean, covariance)
        explainer = shap.LinearExplainer((coef, intercept), background)
        return ShapValues(
            values=np.asarray(explainer.shap_values(standardised), dtype=float),
            base=float(np.ravel(explainer.expected_value)[0]),
            margin=logistic.decision_function(standardised).astype(float),
        )


KIND = LogisticKind()
