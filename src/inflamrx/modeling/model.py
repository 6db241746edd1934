"""Build the one unfitted ``Pipeline(features, model)`` that is trained, logged and served."""

from __future__ import annotations

from sklearn.base import ClassifierMixin
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from xgboost import XGBClassifier

from inflamrx.config import Config, ModelConfig
from inflamrx.data.outcomes import never_features
from inflamrx.modeling.features import build_feature_transformer


def build_estimator(cfg: ModelConfig) -> ClassifierMixin:
    """The model step. XGBoost gets one thread: on few cores, two processes
    each busy-waiting with several OpenMP threads run 15-30x slower, and cohorts are small."""
    if cfg.kind == "xgboost":
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
            n_jobs=1,  # one thread: see build_estimator doc
        )
    solver = "lbfgs" if cfg.penalty == "l2" else "saga"
    return Pipeline(
        [
            # Median imputation: missing-value indicators are already features.
            ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
            ("scale", StandardScaler()),
            (
                "logistic",
                LogisticRegression(
                    C=cfg.C,
                    l1_ratio=cfg.l1_ratio
                    if cfg.penalty == "elasticnet"
                    else (1.0 if cfg.penalty == "l1" else 0.0),
                    solver=solver,
                    max_iter=5000,
                    random_state=cfg.seed,
                ),
            ),
        ]
    )


def build_pipeline(config: Config) -> Pipeline:
    exclude = sorted(set(config.features.exclude))
    features = build_feature_transformer(config.features.include, exclude)
    return Pipeline([("features", features), ("model", build_estimator(config.model))])


def model_input_columns(columns: list[str], config: Config) -> list[str]:
    """The canonical columns a model reads: everything but identity and outcome data."""
    from inflamrx.data.schema import IDENTITY_COLUMNS

    banned = never_features(config.outcome) | IDENTITY_COLUMNS
    return [c for c in columns if c not in banned]
