"""SHAP explanations of the one fitted ``Pipeline(features, model)``.

Contributions are computed by the model's kind on the transformed features of the pipeline's
own fitted ``features`` step (no second copy of feature code) and reported under its clinical
names. Values are in log-odds with a base value; base + sum must equal the model's margin.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy.special import expit

from inflamrx.modeling.kinds.base import FittedModel

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
    model: FittedModel, x: pd.DataFrame, matrix: np.ndarray | None = None
) -> Contributions:
    """SHAP values for ``x`` (the model's raw input columns) under the feature step's clinical
    names, as the model's kind computes them; base + row sum must equal the model's log-odds.
    ``matrix``: ``x`` already through the feature step, when the caller has it."""
    if matrix is None:
        matrix = model.transform(x)
    shap_values = model.shap_values(matrix)
    _check_additivity(shap_values.values, shap_values.base, shap_values.margin)
    names = model.feature_names
    return Contributions(
        values=pd.DataFrame(shap_values.values, columns=names, index=x.index),
        base_value=shap_values.base,
        margin=shap_values.margin,
        features=pd.DataFrame(matrix, columns=names, index=x.index),
    )


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


# --- cohort-level summaries ----------------------------------------------------------------

INTERACTION_ROWS = 200  # interaction values cost ~n_features SHAP passes: a sample bounds it


def global_importance(contrib: Contributions) -> pd.Series:
    """Mean |SHAP| (log-odds) per clinical feature, largest first."""
    return contrib.values.abs().mean().sort_values(ascending=False)


def interaction_strength(
    model: FittedModel, features: pd.DataFrame, max_rows: int = INTERACTION_ROWS, seed: int = 0
) -> pd.DataFrame | None:
    """Mean |SHAP interaction| (log-odds) of each feature pair on a sample of rows, counting
    both halves (phi_ij + phi_ji) so a pair's number is its whole interaction effect; the
    diagonal is zero. None for kinds without interaction values (a logistic model has no
    interactions by construction). ``features`` is ``Contributions.features`` (the
    transformed matrix the model saw)."""
    if not model.kind.has_interactions or features.empty:
        return None
    sample = features.sample(n=min(len(features), max_rows), random_state=seed)
    phi = model.interaction_values(sample.to_numpy())
    if phi is None:
        return None
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
    import shap  # only where SHAP values are computed

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


@dataclass(frozen=True)
class Explanation:
    """SHAP contributions for a set of patients, with what a report needs beside them."""

    contrib: Contributions
    x: pd.DataFrame  # the model's raw inputs (canonical units) for the same rows
    patient_ids: pd.Series  # pseudonymous ids, same rows; never any other identifier
    interactions: pd.DataFrame | None  # interaction_strength on a sample; None for logistic
    model_label: str  # the model kind's label, for the report

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
            model_label=self.model_label,
        )

    def rows(self, ids: Sequence[str]) -> Explanation:
        """The rows of these patient ids (unique after validation), in that order."""
        return self.take(pd.Index(self.patient_ids.astype(str)).get_indexer(list(ids)))


def explain_rows(
    model: FittedModel,
    x: pd.DataFrame,
    patient_ids: pd.Series,
    interaction_rows: int = INTERACTION_ROWS,
    seed: int = 0,
) -> Explanation:
    """Contributions for every row of ``x`` plus interaction strengths on a sample."""
    if len(x) != len(patient_ids):
        raise ValueError(f"x has {len(x)} rows but patient_ids has {len(patient_ids)}.")
    x = x.reset_index(drop=True)
    contrib = contributions(model, x)
    return Explanation(
        contrib=contrib,
        x=x,
        patient_ids=patient_ids.reset_index(drop=True),
        interactions=interaction_strength(model, contrib.features, interaction_rows, seed),
        model_label=model.label,
    )
