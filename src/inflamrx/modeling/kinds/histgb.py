"""scikit-learn's histogram gradient boosting: missing values handled natively (no imputation),
exact TreeSHAP, saved through skops."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.pipeline import Pipeline

from inflamrx.config import HistGBConfig, ParamRange
from inflamrx.modeling.kinds._trees import tree_interactions, tree_shap
from inflamrx.modeling.kinds.base import EarlyStopping, ModelKind, ShapValues


class HistGBKind(ModelKind[HistGBConfig]):
    name = "histgb"
    label = "histogram gradient boosting (scikit-learn)"
    has_interactions = True
    search_space: ClassVar[dict[str, ParamRange]] = {
        "max_iter": ParamRange(low=50, high=600, integer=True, log=True),
        "learning_rate": ParamRange(low=0.01, high=0.2, log=True),
        "max_depth": ParamRange(low=2, high=6, integer=True),
        "max_leaf_nodes": ParamRange(low=4, high=31, integer=True),
        "min_samples_leaf": ParamRange(low=5, high=80, integer=True, log=True),
        "l2_regularization": ParamRange(low=1e-3, high=50, log=True),
    }

    # auto's candidate: shallow trees, strong shrinkage; no monotone constraint (see xgboost).
    small_sample: ClassVar[dict[str, Any]] = {
        "max_depth": 2, "learning_rate": 0.05, "max_iter": 150, "min_samples_leaf": 40,
        "l2_regularization": 5.0,
    }  # fmt: skip

    def estimator(self, cfg: HistGBConfig) -> HistGradientBoostingClassifier:
        return HistGradientBoostingClassifier(
            max_iter=cfg.max_iter,
            learning_rate=cfg.learning_rate,
            max_depth=cfg.max_depth,
            max_leaf_nodes=cfg.max_leaf_nodes,
            min_samples_leaf=cfg.min_samples_leaf,
            l2_regularization=cfg.l2_regularization,
            # "auto" would switch early stopping on above 10,000 rows: a fit's rounds are
            # decided by the config (or by `inflamrx tune`), never by the cohort's size.
            early_stopping=False,
            random_state=cfg.seed,
        )

    def fit(
        self, pipeline: Pipeline, x: pd.DataFrame, y: pd.Series, stop: EarlyStopping | None
    ) -> int | None:
        if stop is None:
            pipeline.fit(x, y)
            return None
        # sklearn's own early stopping holds out a stratified inner validation part of the
        # fitting data (never the fold the fit is scored on).
        pipeline.named_steps["model"].set_params(
            early_stopping=True,
            validation_fraction=stop.validation_fraction,
            n_iter_no_change=stop.rounds,
            scoring="loss",
        )
        pipeline.fit(x, y)
        return int(pipeline.named_steps["model"].n_iter_)

    def refit_params(self, rounds: int) -> dict[str, Any]:
        return {"max_iter": rounds}

    def shap_values(
        self, estimator: HistGradientBoostingClassifier, matrix: np.ndarray
    ) -> ShapValues:
        return tree_shap(
            estimator, estimator._predictors, matrix, estimator.decision_function(matrix)
        )

    def interaction_values(
        self, estimator: HistGradientBoostingClassifier, matrix: np.ndarray
    ) -> np.ndarray:
        return tree_interactions(estimator, estimator._predictors, matrix)


KIND = HistGBKind()
