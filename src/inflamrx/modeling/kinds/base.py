"""The fitted-model protocol: what train, tune, serve, explain and report ask of a model.

A *kind* of model (one module per kind in :mod:`inflamrx.modeling.kinds`, named as its
``model.kind``) implements :class:`ModelKind`: how its model step is built from its config
class, its default search space, how it fits (early stopping included), how its prediction is
explained (SHAP values, base value and margin in log-odds), how it is saved and loaded without
pickle, and its label. :class:`FittedModel` is the one fitted ``Pipeline(features, model)``
with its kind and input columns; the jobs, the serving pyfunc and the report talk to it alone.

Its prediction is a frame, one column per probability it reports (``response_probability``
for a response model), so a kind may report more than one (a benefit model: one per arm).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np
import pandas as pd
from pydantic import BaseModel
from scipy.special import expit, logit
from sklearn.base import BaseEstimator
from sklearn.pipeline import Pipeline

from inflamrx.config import Config, ParamRange
from inflamrx.modeling.features import build_feature_transformer
from inflamrx.modeling.reused_features import FeatureMemo, ReusedFeatures
from inflamrx.modeling.safe_io import dump_trusted, load_trusted

C = TypeVar("C", bound=BaseModel)
PROBABILITY = "response_probability"
FORMAT = 2  # model.json "format": 1 was release 0.1.0's serving.json layout
MODEL_FILE = "model.json"
FEATURES_FILE = "features.skops"


@dataclass(frozen=True)
class EarlyStopping:
    """Stop adding rounds when an inner validation part of the fitting data stops improving
    (never the fold a fit is scored on)."""

    rounds: int
    validation_fraction: float
    seed: int


@dataclass(frozen=True)
class ShapValues:
    """A kind's explanation of its model step on the transformed matrix (log-odds)."""

    values: np.ndarray  # rows x features
    base: float  # the model's log-odds for the average (background) patient
    margin: np.ndarray  # the model's log-odds per row: base + row sum, checked by the caller


class ModelKind(ABC, Generic[C]):
    """One kind of response model. Stateless: the fitted state lives in the estimator."""

    name: ClassVar[str]  # the config's model.kind
    label: ClassVar[str]  # how reports and run names call it
    search_space: ClassVar[dict[str, ParamRange]]  # default space for `inflamrx tune`
    # True when the kind's SHAP values have pairwise interaction values (trees).
    has_interactions: ClassVar[bool] = False
    # The columns ``predict`` returns (serving's output schema follows them).
    outputs: ClassVar[tuple[str, ...]] = (PROBABILITY,)
    # Settings of the kind as a `model.kind: auto` candidate, for cohorts of clinical-trial
    # size (hundreds to a few thousand patients); explicit configs keep their own defaults.
    small_sample: ClassVar[dict[str, Any]] = {}

    @abstractmethod
    def estimator(self, cfg: C) -> BaseEstimator:
        """The unfitted model step."""

    def fit(
        self, pipeline: Pipeline, x: pd.DataFrame, y: pd.Series, stop: EarlyStopping | None
    ) -> int | None:
        """Fit ``pipeline`` in place; return the rounds early stopping kept (None: the kind
        does not stop early, or ``stop`` is None)."""
        pipeline.fit(x, y)
        return None

    def refit_params(self, rounds: int) -> dict[str, Any]:
        """Parameters that make a refit without early stopping keep ``rounds`` rounds."""
        return {}

    def predict(self, estimator: Any, matrix: np.ndarray) -> pd.DataFrame:
        return pd.DataFrame({PROBABILITY: estimator.predict_proba(matrix)[:, 1]})

    def n_parameters(self, estimator: Any, n_features: int) -> int:
        """Candidate predictor parameters (sample size criteria): one per feature column."""
        return n_features

    @abstractmethod
    def shap_values(self, estimator: Any, matrix: np.ndarray) -> ShapValues:
        """Exact SHAP values of the model step on the transformed ``matrix``."""

    def interaction_values(self, estimator: Any, matrix: np.ndarray) -> np.ndarray | None:
        """SHAP interaction values (rows x features x features), where the kind has them."""
        return None

    def save(self, estimator: Any, folder: Path) -> None:
        """Write the fitted model step into ``folder`` (no pickle)."""
        dump_trusted(estimator, folder / "estimator.skops")

    def load(self, folder: Path, verified: bool = False) -> Any:
        """The model step ``save`` wrote; ``verified``: the files matched the model's SHA-256
        manifest, so types skops leaves untrusted (``safe_io.VERIFIED_ONLY_TYPES``) load."""
        return load_trusted(folder / "estimator.skops", verified)


def kind_of(name: str) -> ModelKind[Any]:
    """The kind implemented by ``inflamrx.modeling.kinds.<name>`` (its ``KIND``). Found by
    name, so adding a kind touches only its own module and its config class."""
    module = import_module(f"inflamrx.modeling.kinds.{name}")
    kind: ModelKind[Any] = module.KIND
    return kind


def build_pipeline(config: Config, memo: FeatureMemo | None = None) -> Pipeline:
    """The one unfitted ``Pipeline(features, model)`` of ``config``; with ``memo``, a feature
    step that reuses fits and transforms of rows seen before (a search's trials)."""
    exclude = sorted(set(config.features.exclude))
    features = build_feature_transformer(config.features.include, exclude)
    if memo is not None:
        features = ReusedFeatures(include=features.include, exclude=features.exclude, memo=memo)
    model = kind_of(config.model.kind).estimator(config.model)
    return Pipeline([("features", features), ("model", model)])


@dataclass
class FittedModel:
    """The fitted ``Pipeline(features, model)``, its kind and the columns it was fitted on."""

    kind: ModelKind[Any]
    pipeline: Pipeline
    input_columns: list[str]
    rounds_kept: int | None = None  # early stopping's choice, when the fit stopped early
    # Logistic recalibration (intercept, slope) of the model's log-odds, estimated on
    # out-of-sample predictions; None: the model's own probabilities.
    recalibration: tuple[float, float] | None = None

    @property
    def features(self) -> Any:
        return self.pipeline.named_steps["features"]

    @property
    def estimator(self) -> Any:
        return self.pipeline.named_steps["model"]

    @property
    def label(self) -> str:
        return self.kind.label

    @property
    def feature_names(self) -> list[str]:
        return [str(n) for n in self.features.get_feature_names_out()]

    @property
    def n_parameters(self) -> int:
        return self.kind.n_parameters(self.estimator, len(self.feature_names))

    def inputs(self, cohort: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
        """The model's input columns of ``cohort`` (absent ones missing), and those absent."""
        absent = [c for c in self.input_columns if c not in cohort]
        return cohort.reindex(columns=self.input_columns), absent

    def transform(self, x: pd.DataFrame) -> np.ndarray:
        return np.asarray(self.features.transform(x), dtype=float)

    def predict(self, x: pd.DataFrame, matrix: np.ndarray | None = None) -> pd.DataFrame:
        """One row per row of ``x``; ``matrix``: ``x`` already through the feature step."""
        out = self.kind.predict(self.estimator, self.transform(x) if matrix is None else matrix)
        if self.recalibration is not None:
            a, b = self.recalibration
            p = np.clip(out[PROBABILITY].to_numpy(dtype=float), 1e-12, 1 - 1e-12)
            out[PROBABILITY] = expit(a + b * logit(p))
        return out

    def probability(self, x: pd.DataFrame) -> np.ndarray:
        """The response probability (the model's headline column) per row of ``x``."""
        return self.predict(x)[PROBABILITY].to_numpy()

    def shap_values(self, matrix: np.ndarray) -> ShapValues:
        found = self.kind.shap_values(self.estimator, matrix)
        if self.recalibration is None:
            return found
        a, b = self.recalibration  # a linear map of the log-odds keeps SHAP's additivity
        return ShapValues(found.values * b, a + b * found.base, a + b * found.margin)

    def interaction_values(self, matrix: np.ndarray) -> np.ndarray | None:
        found = self.kind.interaction_values(self.estimator, matrix)
        if found is None or self.recalibration is None:
            return found
        return found * self.recalibration[1]

    def save(self, folder: Path) -> None:
        """``model.json`` (format, kind, input columns), the feature step and the model step."""
        folder.mkdir(parents=True, exist_ok=True)
        dump_trusted(self.features, folder / FEATURES_FILE)
        self.kind.save(self.estimator, folder)
        about: dict[str, Any] = {
            "format": FORMAT,
            "kind": self.kind.name,
            "input_columns": self.input_columns,
        }
        if self.recalibration is not None:
            a, b = self.recalibration
            about["recalibration"] = {"intercept": a, "slope": b}
        (folder / MODEL_FILE).write_text(json.dumps(about, indent=2))

    @classmethod
    def load(cls, folder: Path, verified: bool = False) -> FittedModel:
        about = json.loads((folder / MODEL_FILE).read_text())
        kind = kind_of(str(about["kind"]))
        features = load_trusted(folder / FEATURES_FILE, verified)
        model = kind.load(folder, verified)
        pipeline = Pipeline([("features", features), ("model", model)])
        recal = about.get("recalibration")  # absent in models saved before it existed
        ab = (float(recal["intercept"]), float(recal["slope"])) if recal else None
        return cls(kind, pipeline, [str(c) for c in about["input_columns"]], recalibration=ab)


def fit_model(
    config: Config,
    x: pd.DataFrame,
    y: pd.Series,
    stop: EarlyStopping | None = None,
    memo: FeatureMemo | None = None,
) -> FittedModel:
    """Build ``config``'s pipeline and fit it on ``(x, y)`` through its kind (``memo``: see
    ``build_pipeline``)."""
    kind = kind_of(config.model.kind)
    pipeline = build_pipeline(config, memo)
    rounds = kind.fit(pipeline, x, y, stop)
    return FittedModel(kind, pipeline, list(x.columns), rounds)
