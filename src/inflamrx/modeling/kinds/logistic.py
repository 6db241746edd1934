"""Penalised logistic regression: median imputation, optional smooth terms (restricted cubic
splines, ``MarkerSplines``: also the interaction benefit model's log CRP term) for the log
inflammatory markers, standardisation, L2/L1/elastic net."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from inflamrx.config import LogisticConfig, ParamRange
from inflamrx.modeling.kinds.base import EarlyStopping, ModelKind, ShapValues

# Markers whose effect on response need not be linear in the log (the infliximab trial's arms
# crossed near CRP 5 mg/L): these get smooth terms when `spline_knots` > 0.
SPLINED = ("CRP (mg/L, log)", "IL-6 (pg/mL, log)", "TNF-alpha (pg/mL, log)")


class MarkerSplines(TransformerMixin, BaseEstimator):
    """Add restricted cubic spline terms (Harrell's ``rcs``: cubic between the knots, linear
    beyond the outer ones; knots at Harrell's quantiles) for the ``columns`` of a matrix.

    Each column in ``columns`` is followed by its ``n_knots - 2`` nonlinear terms; ``source_``
    maps each output column to its input column, so a linear explanation can be summed back
    onto the features. Plain numpy (not sklearn's SplineTransformer, which holds scipy objects
    that the skops trust policy refuses to load)."""

    def __init__(self, n_knots: int = 4, columns: tuple[int, ...] = ()) -> None:
        self.n_knots = n_knots
        self.columns = columns

    def fit(self, X: npt.ArrayLike, y: object = None) -> MarkerSplines:
        matrix = np.asarray(X, dtype=float)
        at = RCS_QUANTILES.get(self.n_knots, np.linspace(0.05, 0.95, self.n_knots))
        self.spline_columns_ = [int(c) for c in self.columns]
        knots = [np.unique(np.quantile(matrix[:, c], at)) for c in self.spline_columns_]
        self.knots_ = [k if len(k) >= 3 else np.empty(0) for k in knots]  # too few distinct
        source: list[int] = []
        for j in range(matrix.shape[1]):
            source += [j] * (1 + self._n_terms(j))
        self.n_features_in_ = matrix.shape[1]
        self.source_ = np.asarray(source, dtype=np.int64)
        return self

    def _n_terms(self, j: int) -> int:
        if j not in self.spline_columns_:
            return 0
        return max(len(self.knots_[self.spline_columns_.index(j)]) - 2, 0)

    def transform(self, X: npt.ArrayLike) -> np.ndarray:
        matrix = np.asarray(X, dtype=float)
        parts = []
        for j in range(matrix.shape[1]):
            parts.append(matrix[:, [j]])
            if self._n_terms(j):
                parts.append(rcs_terms(matrix[:, j], self.knots_[self.spline_columns_.index(j)]))
        return np.hstack(parts)


# Harrell's knot quantiles (Regression Modeling Strategies, 2nd ed., table 2.3).
RCS_QUANTILES = {
    3: np.array([0.1, 0.5, 0.9]),
    4: np.array([0.05, 0.35, 0.65, 0.95]),
    5: np.array([0.05, 0.275, 0.5, 0.725, 0.95]),
}


def rcs_terms(x: np.ndarray, knots: np.ndarray) -> np.ndarray:
    """The nonlinear terms of a restricted cubic spline (linear beyond the outer knots),
    scaled by the squared knot range as in Harrell's ``rcspline.eval``."""
    t = knots
    k = len(t)

    def cube(v: np.ndarray) -> np.ndarray:
        return np.maximum(v, 0.0) ** 3

    scale = (t[-1] - t[0]) ** 2
    span = t[-1] - t[-2]
    terms = [
        (
            cube(x - t[j])
            - cube(x - t[-2]) * (t[-1] - t[j]) / span
            + cube(x - t[-1]) * (t[-2] - t[j]) / span
        )
        / scale
        for j in range(k - 2)
    ]
    return np.column_stack(terms)


class LogisticKind(ModelKind[LogisticConfig]):
    name = "logistic"
    label = "penalised logistic regression"
    search_space: ClassVar[dict[str, ParamRange]] = {
        "C": ParamRange(low=1e-3, high=10, log=True),
        "penalty": ParamRange(choices=["l2", "l1", "elasticnet"]),
        "l1_ratio": ParamRange(low=0.05, high=0.95),
    }

    # auto's candidate: smooth marker terms and a lasso penalty. At 1,500 patients an L2
    # model of ~50 parameters over-fits (validated slope ~0.7 at C = 1); the lasso at C = 0.05
    # keeps ~15-20 of them and gains about 0.01 AUROC on 10,000 new patients with a slope near
    # 1 (accuracy_benchmark.py); recalibration corrects what is left.
    small_sample: ClassVar[dict[str, Any]] = {"spline_knots": 4, "penalty": "l1", "C": 0.05}

    def estimator(self, cfg: LogisticConfig) -> Pipeline:
        solver = "lbfgs" if cfg.penalty == "l2" else "saga"
        l1_ratio = {"elasticnet": cfg.l1_ratio, "l1": 1.0, "l2": 0.0}[cfg.penalty]
        splines = [("splines", MarkerSplines(cfg.spline_knots))] if cfg.spline_knots else []
        return Pipeline(
            [
                # Median imputation: missing-value indicators are already features.
                ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
                *splines,
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

    def fit(
        self, pipeline: Pipeline, x: pd.DataFrame, y: pd.Series, stop: EarlyStopping | None
    ) -> int | None:
        model = pipeline.named_steps["model"]
        if "splines" in model.named_steps:  # which columns are the markers, by name
            names = list(pipeline.named_steps["features"].fit(x, y).get_feature_names_out())
            columns = tuple(i for i, n in enumerate(names) if n in SPLINED)
            model.named_steps["splines"].set_params(columns=columns)
        pipeline.fit(x, y)
        return None

    def n_parameters(self, estimator: Pipeline, n_features: int) -> int:
        splines = estimator.named_steps.get("splines")
        return len(splines.source_) if splines is not None else n_features

    def shap_values(self, estimator: Pipeline, matrix: np.ndarray) -> ShapValues:
        """The exact linear explanation on the standardised features. The scaler's training
        mean makes the background mean exactly zero, so each contribution is coefficient x
        standardised value; a marker's spline columns add up to its contribution."""
        import shap  # only where SHAP values are computed

        standardised = estimator[:-1].transform(matrix)
        logistic = estimator[-1]
        coef, intercept = logistic.coef_.ravel(), float(logistic.intercept_[0])
        background = (np.zeros(len(coef)), np.eye(len(coef)))  # (mean, covariance)
        explainer = shap.LinearExplainer((coef, intercept), background)
        values = np.asarray(explainer.shap_values(standardised), dtype=float)
        if "splines" in estimator.named_steps:
            source = estimator.named_steps["splines"].source_
            values = values @ (source[:, None] == np.arange(matrix.shape[1])[None, :])
        return ShapValues(
            values=values,
            base=float(np.ravel(explainer.expected_value)[0]),
            margin=logistic.decision_function(standardised).astype(float),
        )


KIND = LogisticKind()
