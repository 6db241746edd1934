"""XGBoost gradient-boosted trees: missing values handled natively, exact TreeSHAP."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from xgboost import XGBClassifier

from inflamrx.config import ParamRange, XGBoostConfig
from inflamrx.modeling.kinds._trees import tree_interactions, tree_shap
from inflamrx.modeling.kinds.base import EarlyStopping, ModelKind, ShapValues

BOOSTER_FILE = "booster.ubj"


class XGBoostKind(ModelKind[XGBoostConfig]):
    name = "xgboost"
    label = "XGBoost (gradient-boosted trees)"
    has_interactions = True
    search_space: ClassVar[dict[str, ParamRange]] = {
        "max_depth": ParamRange(low=2, high=6, integer=True),
        "learning_rate": ParamRange(low=0.01, high=0.2, log=True),
        "n_estimators": ParamRange(low=50, high=600, integer=True, log=True),
        "subsample": ParamRange(low=0.5, high=1.0),
        "colsample_bytree": ParamRange(low=0.4, high=1.0),
        "min_child_weight": ParamRange(low=1, high=30, log=True),
        "reg_lambda": ParamRange(low=0.1, high=50, log=True),
        "reg_alpha": ParamRange(low=1e-3, high=10, log=True),
    }

    # auto's candidate: shallow trees, strong shrinkage (slow learning rate, L2, larger
    # leaves). No monotone constraint: CRP's direction holds on the anti-inflammatory drug but
    # reverses on placebo (Raison 2013), and a cohort may hold either arm.
    small_sample: ClassVar[dict[str, Any]] = {
        "max_depth": 2, "learning_rate": 0.03, "n_estimators": 250, "min_child_weight": 10.0,
        "reg_lambda": 5.0, "subsample": 0.8, "colsample_bytree": 0.8,
    }  # fmt: skip

    def estimator(self, cfg: XGBoostConfig) -> XGBClassifier:
        return XGBClassifier(
            n_estimators=cfg.n_estimators,
            max_depth=cfg.max_depth,
            learning_rate=cfg.learning_rate,
            subsample=cfg.subsample,
            colsample_bytree=cfg.colsample_bytree,
            min_child_weight=cfg.min_child_weight,
            reg_lambda=cfg.reg_lambda,
            reg_alpha=cfg.reg_alpha,
            tree_method="hist",
            eval_metric="logloss",
            random_state=cfg.seed,
            # One thread: on few cores, two processes each busy-waiting with several OpenMP
            # threads run 15-30x slower, and cohorts are small.
            n_jobs=1,
        )

    def fit(
        self, pipeline: Pipeline, x: pd.DataFrame, y: pd.Series, stop: EarlyStopping | None
    ) -> int | None:
        if stop is None:
            pipeline.fit(x, y)
            return None
        inner, valid = train_test_split(
            np.arange(len(y)),
            test_size=stop.validation_fraction,
            stratify=y,
            random_state=stop.seed,
        )
        features, model = pipeline.named_steps["features"], pipeline.named_steps["model"]
        features.fit(x.iloc[inner], y.iloc[inner])
        model.set_params(early_stopping_rounds=stop.rounds)
        model.fit(
            features.transform(x.iloc[inner]),
            y.iloc[inner],
            eval_set=[(features.transform(x.iloc[valid]), y.iloc[valid])],
            verbose=False,
        )
        return int(model.best_iteration) + 1

    def refit_params(self, rounds: int) -> dict[str, Any]:
        return {"n_estimators": rounds}

    def shap_values(self, estimator: XGBClassifier, matrix: np.ndarray) -> ShapValues:
        return tree_shap(
            estimator,
            estimator.get_booster(),
            matrix,
            estimator.predict(matrix, output_margin=True),
        )

    def interaction_values(self, estimator: XGBClassifier, matrix: np.ndarray) -> np.ndarray:
        return tree_interactions(estimator, estimator.get_booster(), matrix)

    def save(self, estimator: XGBClassifier, folder: Path) -> None:
        # XGBoost's own format (sklearn attributes included): no pickle, no skops.
        estimator.save_model(folder / BOOSTER_FILE)

    def load(self, folder: Path, verified: bool = False) -> XGBClassifier:
        model = XGBClassifier()
        model.load_model(folder / BOOSTER_FILE)
        return model


KIND = XGBoostKind()
