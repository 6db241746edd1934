"""Two-arm benefit models as a kind of the fitted-model protocol (``model.json`` kind "benefit").

The model step is a learner of ``inflamrx.modeling.benefit.learners``, fitted with each
patient's arm (``fit_benefit``); the arm is never a prediction input. ``predict`` returns three
columns (``outputs``): each arm's probability of response and their difference; ``shap_values``
explains the predicted benefit on the learner's scale (``scale_of``). Saved without pickle:
XGBoost parts in XGBoost's own UBJ format, the rest through skops with the trust policy.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline
from xgboost import XGBClassifier, XGBRegressor

from inflamrx.config import Config, ParamRange
from inflamrx.errors import InputError
from inflamrx.modeling.benefit.learners import (
    LEARNERS,
    BenefitLearner,
    InteractionBenefit,
    RiskBenefit,
)
from inflamrx.modeling.features import FEATURE_BLOCKS, build_feature_transformer
from inflamrx.modeling.kinds.base import EarlyStopping, FittedModel, ModelKind, ShapValues
from inflamrx.modeling.safe_io import dump_trusted, load_trusted

TREATED = "response_probability_treated"
CONTROL = "response_probability_control"
BENEFIT = "predicted_benefit"
PARTS_FILE = "benefit.json"
SPLINE_MODIFIER = "crp_mg_l"  # the prespecified modifier modelled with a spline (log CRP)
_XGB = {"XGBClassifier": XGBClassifier, "XGBRegressor": XGBRegressor}


class BenefitKind(ModelKind[Config]):
    name = "benefit"
    label = "two-arm benefit model"
    search_space: ClassVar[dict[str, ParamRange]] = {}
    outputs: ClassVar[tuple[str, ...]] = (TREATED, CONTROL, BENEFIT)

    def estimator(self, cfg: Config) -> BenefitLearner:
        return build_learner(_treatment(cfg).learner, cfg)

    def fit(
        self, pipeline: Pipeline, x: pd.DataFrame, y: pd.Series, stop: EarlyStopping | None
    ) -> int | None:
        raise TypeError("a benefit model is fitted with each patient's arm: use fit_benefit")

    def predict(self, estimator: BenefitLearner, matrix: np.ndarray) -> pd.DataFrame:
        p1, p0 = estimator.predict_arms(matrix)
        return pd.DataFrame({TREATED: p1, CONTROL: p0, BENEFIT: p1 - p0})

    def shap_values(self, estimator: BenefitLearner, matrix: np.ndarray) -> ShapValues:
        return estimator.explain(matrix)

    def save(self, estimator: BenefitLearner, folder: Path) -> None:
        xgb = {
            k: type(m).__name__ for k, m in estimator.models_.items() if type(m).__name__ in _XGB
        }
        for key in xgb:
            estimator.models_[key].save_model(folder / f"benefit_{key}.ubj")
        shell = copy.copy(estimator)  # the rest through skops, XGBoost parts left out
        shell.models_ = {k: (None if k in xgb else m) for k, m in estimator.models_.items()}
        dump_trusted(shell, folder / "estimator.skops")
        (folder / PARTS_FILE).write_text(json.dumps({"xgboost_parts": xgb}, indent=2))

    def load(self, folder: Path, verified: bool = False) -> BenefitLearner:
        estimator: BenefitLearner = load_trusted(folder / "estimator.skops", verified)
        if isinstance(estimator, InteractionBenefit) and hasattr(estimator, "spline_knots_"):
            # Its coefficients belong to a B-spline CRP basis this release no longer computes.
            raise InputError(
                "this interaction benefit model was saved by a development build whose CRP "
                "term was a B-spline; its coefficients do not fit the restricted cubic spline "
                "used now. Retrain it with `inflamrx train` on its data and config"
            )
        parts = json.loads((folder / PARTS_FILE).read_text())["xgboost_parts"]
        for key, class_name in parts.items():
            part = _XGB[class_name]()
            part.load_model(folder / f"benefit_{key}.ubj")
            estimator.models_[key] = part
        return estimator


KIND = BenefitKind()


def scale_of(model: FittedModel) -> str:
    """The scale the model's benefit explanation is additive on."""
    return str(model.estimator.scale)


def _treatment(config: Config) -> Any:
    if config.treatment is None:
        raise InputError("a benefit model needs the config's treatment section")
    return config.treatment


def modifier_features(columns: list[str]) -> dict[str, str]:
    """Canonical modifier column -> its clinical feature (the first output of its block)."""
    out = {}
    for column in columns:
        block = next((b for b in FEATURE_BLOCKS if b.inputs == (column,)), None)
        if block is None:
            raise InputError(
                f"treatment.modifiers: {column!r} is not a canonical column with its own "
                "feature (for example crp_mg_l, il6_pg_ml, bmi)"
            )
        out[column] = block.outputs[0]
    return out


def build_learner(learner: str, config: Config) -> BenefitLearner:
    """The unfitted learner ``learner`` (a key of ``LEARNERS``) as ``config`` sets it."""
    treatment = _treatment(config)
    seed = config.model.seed
    if learner == "interaction":
        features = modifier_features(treatment.modifiers)
        return InteractionBenefit(
            modifiers=tuple(features.values()),
            spline=features.get(SPLINE_MODIFIER),
            C=treatment.interaction_C,
            seed=seed,
        )
    if learner == "risk":
        return RiskBenefit(C=treatment.interaction_C, seed=seed)
    params = config.model.model_dump(exclude={"kind"})
    cls: Any = LEARNERS[learner]
    if learner in ("x_learner", "dr_learner"):  # cross-fitted outcome models
        return cls(base=config.model.kind, params=params, folds=treatment.crossfit_folds, seed=seed)
    return cls(base=config.model.kind, params=params)


def fit_benefit(
    config: Config, learner: str, x: pd.DataFrame, y: pd.Series, treated: np.ndarray
) -> FittedModel:
    """Fit the features step and ``learner`` on ``(x, y)`` with each patient's arm
    (``treated``: 1 treated, 0 control); the arm is not one of ``x``'s columns."""
    exclude = sorted(set(config.features.exclude))
    features = build_feature_transformer(config.features.include, exclude)
    matrix = np.asarray(features.fit(x, y).transform(x), dtype=float)
    names = [str(n) for n in features.get_feature_names_out()]
    model = build_learner(learner, config)
    model.fit(matrix, y.to_numpy(), treated, feature_names=names)
    return FittedModel(KIND, Pipeline([("features", features), ("model", model)]), list(x.columns))
