"""SHAP explanations of the one fitted ``Pipeline(features, model)``.

Contributions are computed on the transformed features by the pipeline's own fitted
``features`` step (no second copy of feature code) and reported under its clinical names.
Values are in log-odds with a base value; base + sum must equal the model's margin.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import mlflow
import numpy as np
import numpy.typing as npt
import pandas as pd
import shap
from scipy.special import expit
from sklearn.pipeline import Pipeline
from xgboost import XGBClassifier

from inflamrx.config import DataConfig
from inflamrx.data.schema import COLUMNS
from inflamrx.data.validate import ValidationResult, validate_cohort
from inflamrx.errors import InputError
from inflamrx.modeling.features import FEATURE_BLOCKS, missing_label

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


def contributions(
    pipeline: Pipeline, x: pd.DataFrame, matrix: np.ndarray | None = None
) -> Contributions:
    """SHAP values for ``x`` (the model's raw input columns): TreeExplainer for XGBoost,
    the exact linear explanation (training-mean background) for penalised logistic.
    ``matrix``: ``x`` already through the pipeline's feature step, when the caller has it."""
    features_step, model = pipeline.named_steps["features"], pipeline.named_steps["model"]
    names = [str(n) for n in features_step.get_feature_names_out()]
    if matrix is None:
        matrix = np.asarray(features_step.transform(x), dtype=float)
    if isinstance(model, XGBClassifier):
        explainer = tree_explainer(model)
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


# Building a TreeExplainer parses every tree (about 30 ms for 300 trees, 15x the SHAP values
# of one patient): a served model builds it once. Weak keys: a model that is gone frees its
# explainer; a refitted model has a new booster, so a stale explainer is never reused.
_TREE_EXPLAINERS: weakref.WeakKeyDictionary[XGBClassifier, tuple[object, shap.TreeExplainer]] = (
    weakref.WeakKeyDictionary()
)


def tree_explainer(model: XGBClassifier) -> shap.TreeExplainer:
    booster = model.get_booster()
    cached = _TREE_EXPLAINERS.get(model)
    if cached is None or cached[0] is not booster:
        cached = (booster, shap.TreeExplainer(model))
        _TREE_EXPLAINERS[model] = cached
    return cached[1]


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


# --- per-patient factors in clinical words ------------------------------------------------


@dataclass(frozen=True)
class FeatureSource:
    """How a clinical feature's value is shown to a reader."""

    column: str | None  # the one canonical input it is computed from; None: several or none
    restates: bool  # the feature *is* its input (CRP, age...): text leads with the input label
    indicator: bool = False  # a "<feature> missing" indicator: shown as missing/present
    log_scale: bool = False  # the model sees log(input): plot the input on a log axis


def feature_sources(names: list[str]) -> list[FeatureSource]:
    """Each feature's source, read from ClinicalFeatures' own block table (one definition of
    which inputs a feature is built from, so this cannot drift from the feature code)."""
    by_output: dict[str, FeatureSource] = {}
    for block in FEATURE_BLOCKS:
        single = block.inputs[0] if len(block.inputs) == 1 else None
        for i, output in enumerate(block.outputs):
            restates = single is not None and (
                block.kind in _RESTATING_KINDS or (block.kind == "crp" and i == 0)
            )
            log_scale = restates and block.kind in {"log", "crp"}
            by_output[output] = FeatureSource(single, restates, log_scale=log_scale)
        by_output[missing_label(block)] = FeatureSource(None, False, indicator=True)
    known = set(names)
    out = []
    for name in names:
        source = by_output.get(name)
        if source is None:  # numeric mode (x0, x1, ...): indicators are "<name> missing"
            base = name.removesuffix(" missing")
            source = FeatureSource(None, False, indicator=base != name and base in known)
        out.append(source)
    return out


_RESTATING_KINDS = frozenset({"number", "log", "facit"})


def _number(value: float) -> str:
    # Three significant figures reads well for markers (0.11, 7.2) without 1.23e+03 for counts.
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"


def _raw_text(value: object, column: str) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return "missing"
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, int | float | np.integer | np.floating):
        spec = COLUMNS.get(column)
        unit = f" {spec.unit}" if spec is not None and spec.unit else ""
        return _number(float(value)) + unit
    return str(value)


def _points_text(points: float) -> str:
    return f"{points:+.0f}" if abs(points) >= 9.5 else f"{points:+.1f}"


def _label(column: str) -> str:
    text = COLUMNS[column].label if column in COLUMNS else column
    return text[:1].upper() + text[1:]


def patient_factors(
    contrib: Contributions, x: pd.DataFrame, top: int
) -> list[list[dict[str, object]]]:
    """Per row of ``x``, the ``top`` features with the largest |contribution|, largest first.

    Each factor: ``feature`` (clinical name), ``value`` (the raw input in its unit, e.g.
    "7.2 mg/L", "missing"; the transformed value for ratios and scores; "missing"/"present"
    for missing-value indicators), ``direction`` ("raises"/"lowers" the predicted
    probability), ``log_odds``, ``points`` (signed probability percentage points) and
    ``text`` (e.g. "CRP 7.2 mg/L: +11 points"). ``x`` holds the rows ``contrib`` explains.
    """
    if top < 0:
        raise ValueError(f"The 'top' parameter must be >= 0. Got {top!r}.")
    if len(x) != len(contrib.values):
        raise ValueError(
            f"x has {len(x)} rows but the contributions explain {len(contrib.values)}; pass the "
            "rows that were explained."
        )
    names = [str(c) for c in contrib.values.columns]
    n_rows, k = len(x), min(top, len(names))
    if k == 0 or n_rows == 0:
        return [[] for _ in range(n_rows)]
    values = contrib.values.to_numpy()
    magnitude = np.abs(values)
    # argpartition, then sort only the k chosen: no full sort of every row's features.
    if k < len(names):
        order = np.argpartition(-magnitude, k - 1, axis=1)[:, :k]
    else:
        order = np.tile(np.arange(len(names)), (n_rows, 1))
    rows = np.arange(n_rows)[:, None]
    order = np.take_along_axis(order, np.argsort(-magnitude[rows, order], axis=1), axis=1)
    log_odds = values[rows, order]
    points = probability_points(contrib).to_numpy()[rows, order]
    subjects, shown = _value_texts(contrib, x, names, order)
    # Plain Python lists from here: building 100,000 x k dicts is the remaining cost.
    feature = np.asarray(names, dtype=object)[order].tolist()
    direction = np.where(log_odds > 0, "raises", "lowers").tolist()
    texts = [
        [f"{s}: {_points_text(p)} points" for s, p in zip(srow, prow, strict=True)]
        for srow, prow in zip(subjects.tolist(), points.tolist(), strict=True)
    ]
    return [
        [
            {"feature": f, "value": v, "direction": d, "log_odds": lo, "points": p, "text": t}
            for f, v, d, lo, p, t in zip(*cells, strict=True)
        ]
        for cells in zip(
            feature,
            shown.tolist(),
            direction,
            log_odds.tolist(),
            points.tolist(),
            texts,
            strict=True,
        )
    ]


def _value_texts(
    contrib: Contributions, x: pd.DataFrame, names: list[str], order: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(subject, value) text arrays shaped like ``order``, formatted only for the cells chosen:
    formatting is the slow part at 100,000 rows."""
    sources = feature_sources(names)
    transformed = contrib.features.to_numpy()
    subjects = np.empty(order.shape, dtype=object)
    shown = np.empty(order.shape, dtype=object)
    for column in np.unique(order):
        hit = order == column  # a feature appears at most once per row, so rows are unique
        rows = np.flatnonzero(hit.any(axis=1))
        name, source = names[column], sources[column]
        if source.indicator:
            text = np.where(transformed[rows, column] > 0.5, "missing", "present").tolist()
            subject = [f"{name.removesuffix(' missing')} {t}" for t in text]
        elif source.column is not None and source.column in x.columns:
            raw = x[source.column].iloc[rows].astype(object).to_numpy()
            text = [_raw_text(v, source.column) for v in raw]
            lead = _label(source.column)
            subject = [f"{lead} {t}" if source.restates else f"{name} ({t})" for t in text]
        else:  # ratios, scores, generic numeric columns: the value the model saw
            text = ["missing" if np.isnan(v) else _number(v) for v in transformed[rows, column]]
            subject = [f"{name} ({t})" for t in text]
        shown[hit] = text
        subjects[hit] = subject
    return subjects, shown


# --- cohort-level summaries ----------------------------------------------------------------

INTERACTION_ROWS = 200  # interaction values cost ~n_features SHAP passes: a sample bounds it


def global_importance(contrib: Contributions) -> pd.Series:
    """Mean |SHAP| (log-odds) per clinical feature, largest first."""
    return contrib.values.abs().mean().sort_values(ascending=False)


def interaction_strength(
    pipeline: Pipeline, features: pd.DataFrame, max_rows: int = INTERACTION_ROWS, seed: int = 0
) -> pd.DataFrame | None:
    """Mean |SHAP interaction| (log-odds) of each feature pair on a sample of rows, counting
    both halves (phi_ij + phi_ji) so a pair's number is its whole interaction effect; the
    diagonal is zero. None for the logistic model, which has no interactions by construction.
    ``features`` is ``Contributions.features`` (the transformed matrix the model saw)."""
    model = pipeline.named_steps["model"]
    if not isinstance(model, XGBClassifier) or features.empty:
        return None
    sample = features.sample(n=min(len(features), max_rows), random_state=seed)
    phi = np.asarray(tree_explainer(model).shap_interaction_values(sample.to_numpy()))
    strength = 2.0 * np.abs(phi).mean(axis=0)
    np.fill_diagonal(strength, 0.0)
    return pd.DataFrame(strength, index=features.columns, columns=features.columns)


def top_interactions(strength: pd.DataFrame, n: int = 10) -> pd.DataFrame:
    """The ``n`` strongest pairs: feature, with, mean_abs_interaction (each pair once)."""
    upper = np.triu(strength.to_numpy(), k=1)
    rows, cols = np.unravel_index(np.argsort(-upper, axis=None)[:n], upper.shape)
    names = list(strength.columns)
    return pd.DataFrame(
        {
            "feature": [names[i] for i in rows],
            "with": [names[j] for j in cols],
            "mean_abs_interaction": upper[rows, cols],
        }
    ).query("mean_abs_interaction > 0")


def strongest_partner(
    contrib: Contributions, feature: str, strength: pd.DataFrame | None = None
) -> str | None:
    """The feature that interacts most with ``feature``: from SHAP interaction values when
    given, otherwise shap's binned-correlation heuristic (``approximate_interactions``)."""
    names = list(contrib.values.columns)
    if len(names) < 2:
        return None
    if strength is not None:
        row = strength.loc[feature]
        return str(row.idxmax()) if row.max() > 0 else None
    # shap shuffles with the global RNG above 10,000 rows; stay below so results are stable.
    rows = contrib.values.index[:10_000]
    order = shap.utils.approximate_interactions(
        names.index(feature),
        contrib.values.loc[rows].to_numpy(),
        contrib.features.loc[rows].to_numpy(),
    )
    partner = next(int(i) for i in order if names[int(i)] != feature)
    return names[partner]


def shap_table(contrib: Contributions, patient_ids: pd.Series) -> pd.DataFrame:
    """One row per patient: pseudonymous ``patient_id``, probability, log-odds, base value and
    each feature's contribution (log-odds) under its clinical name. No other identifier."""
    head = pd.DataFrame(
        {
            "patient_id": patient_ids.astype(str).to_numpy(),
            "probability": contrib.probability,
            "log_odds": contrib.margin,
            "base_value": contrib.base_value,
        }
    )
    return pd.concat([head, contrib.values.reset_index(drop=True)], axis=1)


# --- the explain job -------------------------------------------------------------------------


@dataclass(frozen=True)
class Explanation:
    """SHAP contributions for a set of patients, with what a report needs beside them."""

    contrib: Contributions
    x: pd.DataFrame  # the model's raw inputs (canonical units) for the same rows
    patient_ids: pd.Series  # pseudonymous ids, same rows; never any other identifier
    interactions: pd.DataFrame | None  # interaction_strength on a sample; None for logistic

    def take(self, positions: npt.ArrayLike) -> Explanation:
        """The same explanation for the rows at ``positions`` (in that order)."""
        at = np.asarray(positions, dtype=int)
        c = self.contrib
        sub = Contributions(
            values=c.values.iloc[at].reset_index(drop=True),
            base_value=c.base_value,
            margin=c.margin[at],
            features=c.features.iloc[at].reset_index(drop=True),
        )
        return Explanation(
            contrib=sub,
            x=self.x.iloc[at].reset_index(drop=True),
            patient_ids=self.patient_ids.iloc[at].reset_index(drop=True),
            interactions=self.interactions,
        )

    def rows(self, ids: Sequence[str]) -> Explanation:
        """The rows of these patient ids (unique after validation), in that order."""
        return self.take(pd.Index(self.patient_ids.astype(str)).get_indexer(list(ids)))


def explain_rows(
    pipeline: Pipeline,
    x: pd.DataFrame,
    patient_ids: pd.Series,
    interaction_rows: int = INTERACTION_ROWS,
    seed: int = 0,
) -> Explanation:
    """Contributions for every row of ``x`` plus interaction strengths on a sample."""
    if len(x) != len(patient_ids):
        raise ValueError(f"x has {len(x)} rows but patient_ids has {len(patient_ids)}.")
    x = x.reset_index(drop=True)
    contrib = contributions(pipeline, x)
    return Explanation(
        contrib=contrib,
        x=x,
        patient_ids=patient_ids.reset_index(drop=True),
        interactions=interaction_strength(pipeline, contrib.features, interaction_rows, seed),
    )


@dataclass(frozen=True)
class ExplainResult:
    explanation: Explanation  # every accepted row
    patients: list[str]  # the ids asked for with --patient (empty: none asked)
    validation: ValidationResult
    metadata: dict[str, object]
    run_id: str | None  # the model's training run, when the URI resolves to one
    synthetic: bool  # the model was trained on, or the data are, synthetic


def explain(
    model_uri: str, data: DataConfig, patients: Sequence[str] = (), seed: int = 0
) -> ExplainResult:
    """Load the model, validate ``data`` exactly as ``predict`` does and explain the accepted
    rows. Unknown ``patients`` ids are an InputError (the CLI exits 2)."""
    # Imported here: prediction (serving) imports this module for per-patient top factors.
    from inflamrx.serving.batch import load_model

    pipeline, metadata = load_model(model_uri)
    if not isinstance(pipeline, Pipeline) or "features" not in pipeline.named_steps:
        raise InputError(f"{model_uri!r} is not an inflamrx Pipeline(features, model)")
    validated = validate_cohort(data)
    accepted = validated.accepted
    if accepted.empty:
        raise InputError("no row of the cohort was accepted; see `inflamrx validate` for why")
    ids = accepted["patient_id"].astype(str)
    _check_patients(list(patients), set(ids), validated)
    listed = metadata.get("input_columns", [])
    columns = [str(c) for c in listed] if isinstance(listed, list) else []
    # As prediction.score: the model's own input columns, absent ones missing.
    x = accepted.reindex(columns=columns) if columns else accepted
    explanation = explain_rows(pipeline, x, ids, seed=seed)
    synthetic = bool(metadata.get("synthetic_training_data", False)) or data.is_synthetic
    return ExplainResult(
        explanation, list(patients), validated, metadata, _run_of(model_uri), synthetic
    )


def _check_patients(asked: list[str], known: set[str], validated: ValidationResult) -> None:
    unknown = [p for p in asked if p not in known]
    if not unknown:
        return
    rejected = validated.rejected
    was_rejected = set(rejected["patient_id"].astype(str)) if "patient_id" in rejected else set()
    why = [f"{p} (its row was rejected by validation)" if p in was_rejected else p for p in unknown]
    raise InputError(
        f"--patient: {len(unknown)} id(s) not among the accepted rows of the data: "
        f"{', '.join(why[:10])}"
    )


def _run_of(model_uri: str) -> str | None:
    """The MLflow run that logged the model, or None (a local path, a model without a run)."""
    try:
        return mlflow.models.get_model_info(model_uri).run_id or None
    except Exception:  # the model loaded, so a missing run only means: nothing to log to
        return None
