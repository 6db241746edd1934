"""Clinical features from a canonical cohort: one float matrix with clinical column names.

``ClinicalFeatures`` is the first step of the one ``Pipeline(features, model)`` that is trained,
logged, explained and served, so its output names are what SHAP plots and clinicians read.
Features come in named groups (``FEATURE_GROUPS``): markers, treatment_history, symptoms,
demographics, history. Choices worth knowing:

- Logs use ``log(max(x, LOG_FLOOR))``. Values below the limit of detection arrive as LOD/sqrt(2)
  (hs-CRP about 0.11 mg/L), so the floor of 0.001 only keeps a recorded 0 finite.
- CRP bands are those of ``inflamrx.data.crp`` (AHA/CDC): < 1 mg/L is the reference,
  ``1 <= CRP <= 3``, ``3 < CRP <= 10``; ``CRP > 10`` (possible acute infection) is a flag.
  CRP itself is never capped.
- The neutrophil/lymphocyte ratio is missing when the lymphocyte count is 0 or missing.
- The inflammation-linked symptom score averages four domains (fatigue, anhedonia, sleep,
  appetite; Frank et al. 2021, Milaneschi et al. 2021). Each available total or item is scaled
  to 0-1 (higher = more symptom), averaged within its domain, then the domains present are
  averaged, so one scale with three sleep items does not outweigh fatigue. Psychomotor items are
  left out (PHQ-9 item 8 mixes slowing with restlessness).
- Values stay NaN where missing (XGBoost handles it; a linear model needs an imputer after
  this step). Inputs missing in the training data get a ``<feature> missing`` indicator.
- Identity, follow-up and outcome columns are never read, even when present in X.

A plain array (or a DataFrame without any cohort column) is treated as generic numeric columns,
passed through under their names (``x0``, ``x1``, ... for arrays) with the same missing-value
indicators: this keeps scikit-learn's common estimator checks meaningful.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, NamedTuple, TypeAlias, TypeGuard

import numpy as np
import numpy.typing as npt
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import _check_feature_names_in, check_is_fitted, validate_data

from inflamrx.config import OutcomeConfig
from inflamrx.data.crp import crp_band
from inflamrx.data.outcomes import describe, never_features
from inflamrx.data.scales import item_columns
from inflamrx.data.schema import COLUMNS, IDENTITY_COLUMNS, OUTCOME_COLUMNS, SCALE_ITEMS
from inflamrx.errors import InputError

__all__ = [
    "FEATURE_GROUPS",
    "LOG_FLOOR",
    "ClinicalFeatures",
    "build_feature_transformer",
    "forbidden_feature_columns",
    "resolve_selection",
]

LOG_FLOOR = 1e-3  # below every assay's detection limit in these units (mg/L, pg/mL)
FACIT_MAX = 52.0
TRD_MIN_FAILED = 2

Array = npt.NDArray[np.float64]
# A cohort frame, or a mapping of its columns (transform reads a few columns of X this way).
Columns: TypeAlias = pd.DataFrame | Mapping[str, pd.Series]


class FeatureBlock(NamedTuple):
    """Features computed together from the same inputs, with one missing-value indicator."""

    key: str
    group: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    kind: str  # how `_compute` derives the outputs
    missing_label: str = ""  # indicator name; default "<first output> missing"
    needs_all: bool = True  # False: built from whichever of its inputs are present


def _one(group: str, column: str, label: str, kind: str = "number") -> FeatureBlock:
    return FeatureBlock(column, group, (column,), (label,), kind)


def _item(domain: str, scale: str, number: int) -> tuple[str, str, float, bool]:
    return (domain, f"{scale}_{number}", float(SCALE_ITEMS[scale][number]), False)


# (domain, column, maximum, reversed): each term becomes value / maximum, higher = more symptom.
_SCORE_TERMS: tuple[tuple[str, str, float, bool], ...] = (
    ("fatigue", "facit_fatigue", FACIT_MAX, True),  # FACIT-F: higher = LESS fatigue
    _item("fatigue", "hamd17", 13),  # general somatic: heaviness, loss of energy
    _item("fatigue", "madrs", 7),  # lassitude
    _item("fatigue", "phq9", 4),  # tired, little energy
    _item("fatigue", "bdi2", 15),  # loss of energy
    _item("fatigue", "bdi2", 20),  # tiredness or fatigue
    ("anhedonia", "shaps_total", 14.0, False),
    _item("anhedonia", "hamd17", 7),  # work and activities (loss of interest)
    _item("anhedonia", "madrs", 8),  # inability to feel
    _item("anhedonia", "phq9", 1),  # little interest or pleasure
    _item("anhedonia", "bdi2", 4),  # loss of pleasure
    _item("anhedonia", "bdi2", 12),  # loss of interest
    _item("sleep", "hamd17", 4),  # insomnia: early, middle, late
    _item("sleep", "hamd17", 5),
    _item("sleep", "hamd17", 6),
    _item("sleep", "madrs", 4),
    _item("sleep", "phq9", 3),
    _item("sleep", "bdi2", 16),  # change in sleep, either direction
    _item("appetite", "hamd17", 12),  # somatic gastrointestinal (appetite)
    _item("appetite", "hamd17", 16),  # weight loss
    _item("appetite", "madrs", 5),
    _item("appetite", "phq9", 5),
    _item("appetite", "bdi2", 18),  # change in appetite, either direction
)

SYMPTOM_SCORE = "Inflammation-linked symptom score"

FEATURE_BLOCKS: tuple[FeatureBlock, ...] = (
    FeatureBlock(
        "crp_mg_l",
        "markers",
        ("crp_mg_l",),
        # Flags of crp_band's bands "1-3", "3-10", "> 10". Names fixed: saved models use them.
        (
            "CRP (mg/L, log)",
            "CRP 1-3 mg/L",
            "CRP 3-10 mg/L",
            "CRP > 10 mg/L (possible acute infection)",
        ),
        "crp",
    ),
    _one("markers", "il6_pg_ml", "IL-6 (pg/mL, log)", "log"),
    _one("markers", "tnf_alpha_pg_ml", "TNF-alpha (pg/mL, log)", "log"),
    _one("markers", "il1b_pg_ml", "IL-1beta (pg/mL, log)", "log"),
    _one("markers", "crp_mg_l_below_lod", "CRP below detection limit", "bool"),
    _one("markers", "il6_pg_ml_below_lod", "IL-6 below detection limit", "bool"),
    _one("markers", "tnf_alpha_pg_ml_below_lod", "TNF-alpha below detection limit", "bool"),
    _one("markers", "il1b_pg_ml_below_lod", "IL-1beta below detection limit", "bool"),
    FeatureBlock(
        "nlr",
        "markers",
        ("neutrophils_10e9_l", "lymphocytes_10e9_l"),
        ("Neutrophil/lymphocyte ratio",),
        "ratio",
    ),
    _one("markers", "wbc_10e9_l", "WBC (10^9/L)"),
    FeatureBlock(
        "n_failed_antidepressants",
        "treatment_history",
        ("n_failed_antidepressants",),
        ("TRD (>= 2 failed antidepressants)", "Failed antidepressants (n)"),
        "trd",
        missing_label="Failed antidepressants (n) missing",
    ),
    _one("treatment_history", "episode_duration_months", "Episode duration (months)"),
    _one("symptoms", "madrs_total", "MADRS total"),
    _one("symptoms", "hamd17_total", "HAM-D17 total"),
    _one("symptoms", "phq9_total", "PHQ-9 total"),
    _one("symptoms", "gad7_total", "GAD-7 total"),
    _one("symptoms", "bdi2_total", "BDI-II total"),
    _one("symptoms", "shaps_total", "SHAPS anhedonia"),
    _one("symptoms", "facit_fatigue", "Fatigue (FACIT-F, reversed: higher = more)", "facit"),
    _one("symptoms", "eq5d_vas", "EQ-5D VAS"),
    FeatureBlock(
        "symptom_score",
        "symptoms",
        tuple(c for c in COLUMNS if c in {term[1] for term in _SCORE_TERMS}),
        (SYMPTOM_SCORE,),
        "score",
        needs_all=False,
    ),
    _one("demographics", "age", "Age (years)"),
    _one("demographics", "sex", "Female sex", "female"),
    _one("demographics", "bmi", "BMI (kg/m2)"),
    FeatureBlock(
        "smoking",
        "demographics",
        ("smoking",),
        ("Current smoker", "Former smoker"),  # never smoked is the reference
        "smoking",
        missing_label="Smoking status missing",
    ),
    _one("history", "autoimmune_disease", "Autoimmune disease", "bool"),
    _one("history", "family_history_autoimmune", "Family history of autoimmune disease", "bool"),
    _one("history", "mood_worse_with_illness", "Mood worse with physical illness", "bool"),
)
_BLOCK = MappingProxyType({b.key: b for b in FEATURE_BLOCKS})
_GROUPS = ("markers", "treatment_history", "symptoms", "demographics", "history")

FEATURE_GROUPS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        g: tuple(dict.fromkeys(c for b in FEATURE_BLOCKS if b.group == g for c in b.inputs))
        for g in _GROUPS
    }
)
"""Feature group -> the canonical cohort columns its features are built from."""

_INPUTS: tuple[str, ...] = tuple(c for cols in FEATURE_GROUPS.values() for c in cols)
# `phq9_items` and friends: a scale's items, e.g. to exclude them when PHQ-9 is the outcome.
_ITEM_SETS = MappingProxyType({f"{s}_items": tuple(item_columns(s)) for s in SCALE_ITEMS})


def forbidden_feature_columns() -> frozenset[str]:
    """Identity, follow-up and outcome columns: never a feature, never read."""
    return OUTCOME_COLUMNS | IDENTITY_COLUMNS


def _forbidden_message(name: str) -> str:
    if name.endswith("_followup"):
        what = "follow-up (outcome) data"
    elif name in OUTCOME_COLUMNS:
        what = "outcome data"
    else:
        what = "identity/design data (who, where, which arm or drug)"
    return f"{name!r} is {what} and can never be a feature; remove it from 'include'."


def _check_names(value: object, param: str) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ValueError(
            f"The '{param}' parameter must be a list of feature groups or column names, or "
            f"None. Got {value!r} instead."
        )
    bad = [v for v in value if not isinstance(v, str)]
    if bad:
        raise ValueError(f"The '{param}' parameter must hold names (text). Got {bad!r}.")
    return list(value)


def _expand(name: str, param: str) -> set[str]:
    """The canonical columns one include/exclude name stands for."""
    if param == "include" and name in forbidden_feature_columns():
        raise ValueError(_forbidden_message(name))
    if name in FEATURE_GROUPS:
        return set(FEATURE_GROUPS[name])
    if name in _ITEM_SETS:
        columns = set(_ITEM_SETS[name])
    elif name in COLUMNS:
        columns = {name}
    else:
        raise ValueError(
            f"Unknown name {name!r} in '{param}'. Allowed: a feature group "
            f"({', '.join(_GROUPS)}), an item set ({', '.join(_ITEM_SETS)}) or a feature input "
            f"column ({', '.join(_INPUTS)})."
        )
    # Excluding a column no feature reads is harmless; including one is a mistake.
    if param == "include" and not columns & set(_INPUTS):
        raise ValueError(
            f"{name!r} in 'include' is a cohort column, but no feature is built from it. "
            f"Feature input columns: {', '.join(_INPUTS)}."
        )
    return columns


def resolve_selection(
    include: Sequence[str] | None = None, exclude: Sequence[str] | None = None
) -> tuple[str, ...]:
    """The canonical columns that features may be built from, in canonical order.

    ``include``: feature groups, item sets (``phq9_items``) or columns; None = all groups.
    ``exclude``: the same, or any cohort column (outcome columns too: they are never read).
    Raises ValueError for an unknown name or an outcome/identity column in ``include``.
    """
    inc = _check_names(include, "include")
    exc = _check_names(exclude, "exclude")
    chosen = set(_INPUTS) if inc is None else set().union(*(_expand(n, "include") for n in inc))
    for name in exc or []:
        chosen -= _expand(name, "exclude")
    return tuple(c for c in _INPUTS if c in chosen)


# --- computing features from a (sub)frame of canonical columns -------------------------------


def _numbers(frame: Columns, column: str) -> Array:
    series = frame[column]
    if series.dtype == np.float64:
        return series.to_numpy()  # the validated cohort's numbers: nothing to convert
    try:
        values = pd.to_numeric(series)
    except (TypeError, ValueError) as err:
        raise ValueError(f"Column {column!r} must be numeric: {err}.") from None
    return np.asarray(values.to_numpy(dtype=float, na_value=np.nan), dtype=np.float64)


def _concentrations(frame: Columns, column: str) -> Array:
    values = _numbers(frame, column)
    if (values < 0).any():
        raise ValueError(f"Column {column!r} has negative values; a concentration is >= 0.")
    return values


def _booleans(frame: Columns, column: str) -> Array:
    try:
        values = frame[column]
        if not isinstance(values.dtype, pd.BooleanDtype):  # (the validated cohort's already is)
            values = values.astype("boolean")
    except (TypeError, ValueError):
        raise ValueError(
            f"Column {column!r} must be yes/no (True/False or 1/0, blank if unknown)."
        ) from None
    return np.asarray(values.to_numpy(dtype=float, na_value=np.nan), dtype=np.float64)


def _is_category(frame: Columns, column: str, *values: str) -> list[Array]:
    """One 1/0 indicator per value (missing where the category is), the column checked once."""
    series = frame[column]
    allowed = COLUMNS[column].allowed
    missing = series.isna().to_numpy()
    # numpy comparisons on the values present: no pandas operation per category value
    present = series.to_numpy(dtype=object)[~missing]
    unknown = sorted({str(v) for v in set(present.tolist())} - set(allowed))
    if unknown:
        raise ValueError(
            f"Column {column!r} must be one of {list(allowed)} (or blank). Got {unknown[:5]}."
        )
    hits = []
    for value in values:
        hit = np.full(len(missing), np.nan)
        hit[~missing] = present == value
        hits.append(hit)
    return hits


def _flag(condition: npt.NDArray[np.bool_], source: Array) -> Array:
    """1.0/0.0, NaN where the source value is missing."""
    return np.where(np.isnan(source), np.nan, condition.astype(np.float64))


def _log(values: Array) -> Array:
    return np.asarray(np.log(np.maximum(values, LOG_FLOOR)), dtype=np.float64)


def _row_nanmean(matrix: Array) -> Array:
    # np.nanmean warns on all-missing rows; a missing mean is an expected outcome here.
    counts = (~np.isnan(matrix)).sum(axis=1)
    sums = np.nansum(matrix, axis=1)
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def _symptom_score(frame: Columns) -> Array:
    domains: dict[str, list[Array]] = {}
    for domain, column, top, reverse in _SCORE_TERMS:
        if column in frame:
            scaled = _numbers(frame, column) / top
            domains.setdefault(domain, []).append(1.0 - scaled if reverse else scaled)
    per_domain = [_row_nanmean(np.column_stack(terms)) for terms in domains.values()]
    return _row_nanmean(np.column_stack(per_domain))


def _compute(block: FeatureBlock, frame: Columns) -> list[Array]:
    """The block's output columns, in the order of ``block.outputs``."""
    first = block.inputs[0]
    if block.kind == "number":
        return [_numbers(frame, first)]
    if block.kind == "log":
        return [_log(_concentrations(frame, first))]
    if block.kind == "bool":
        return [_booleans(frame, first)]
    if block.kind == "crp":
        crp = _concentrations(frame, first)
        codes = crp_band(crp).codes
        return [_log(crp), *(_flag(codes == band, crp) for band in (1, 2, 3))]
    if block.kind == "ratio":
        neutrophils = _concentrations(frame, block.inputs[0])
        lymphocytes = _concentrations(frame, block.inputs[1])
        ratio = np.full_like(neutrophils, np.nan)
        np.divide(neutrophils, lymphocytes, out=ratio, where=lymphocytes > 0)
        return [ratio]
    if block.kind == "trd":
        failed = _numbers(frame, first)
        return [_flag(failed >= TRD_MIN_FAILED, failed), failed]
    if block.kind == "facit":
        return [FACIT_MAX - _numbers(frame, first)]
    if block.kind == "female":
        return _is_category(frame, first, "F")
    if block.kind == "smoking":
        return _is_category(frame, first, "current", "former")
    if block.kind == "score":
        return [_symptom_score(frame)]
    raise AssertionError(f"unknown block kind {block.kind!r}")  # a bug in FEATURE_BLOCKS


def missing_label(block: FeatureBlock) -> str:
    return block.missing_label or f"{block.outputs[0]} missing"


def _is_cohort(X: object) -> TypeGuard[pd.DataFrame]:
    return isinstance(X, pd.DataFrame) and any(
        isinstance(c, str) and c in COLUMNS for c in X.columns
    )


class ClinicalFeatures(TransformerMixin, BaseEstimator):
    """Canonical cohort -> float matrix of clinical features with clinical names.

    Parameters
    ----------
    include : list of str or None
        Feature groups (``FEATURE_GROUPS``), item sets (``phq9_items``) or canonical columns to
        build features from. None: all groups.
    exclude : list of str or None
        The same, removed from the selection (applied after ``include``).

    Fitted attributes
    -----------------
    input_kind_ : "cohort" or "numeric" (a plain array or a frame without cohort columns).
    feature_names_in_ : cohort mode: the canonical columns read (transform requires them;
        other columns of X are ignored). Numeric mode: as scikit-learn sets it.
    n_features_in_ : number of input columns read.
    absent_columns_ : selected input columns that X lacked at fit (their features are skipped).
    blocks_ : units computed, in output order (cohort: block keys; numeric: input names).
    missing_indicators_ : the subset of ``blocks_`` that had missing values at fit and so
        gets a ``<feature> missing`` indicator.
    feature_groups_ : group -> output feature names; indicators under "missing_indicators".
    """

    def __init__(
        self, *, include: Sequence[str] | None = None, exclude: Sequence[str] | None = None
    ) -> None:
        self.include = include
        self.exclude = exclude

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True  # missingness is information here
        return tags

    def fit(self, X: pd.DataFrame | npt.ArrayLike, y: object = None) -> ClinicalFeatures:
        selected = resolve_selection(self.include, self.exclude)
        if _is_cohort(X):
            self._fit_cohort(X, selected)
        else:
            if self.include is not None or self.exclude:
                raise ValueError(
                    "'include'/'exclude' select cohort columns, but X has none of the cohort's "
                    "column names (see cohort-schema.md). Pass the canonical cohort DataFrame."
                )
            self._fit_numeric(X)
        return self

    def _fit_cohort(self, X: pd.DataFrame, selected: tuple[str, ...]) -> None:
        if len(X) == 0:
            raise ValueError("X has 0 rows; fit needs at least one patient.")
        present = set(X.columns)
        blocks: list[str] = []
        read: dict[str, None] = {}  # ordered set
        for block in FEATURE_BLOCKS:
            usable = [c for c in block.inputs if c in selected and c in present]
            if usable and (len(usable) == len(block.inputs) or not block.needs_all):
                blocks.append(block.key)
                read.update(dict.fromkeys(usable))
        if not blocks:
            raise ValueError(
                f"No feature can be built: X has none of the selected input columns "
                f"{list(selected)}. X has {list(X.columns)}."
            )
        frame = X.loc[:, list(read)]
        self.input_kind_ = "cohort"
        self.feature_names_in_ = np.asarray(list(read), dtype=object)
        self.n_features_in_ = len(read)
        self.absent_columns_ = [c for c in selected if c not in present]
        self.blocks_ = blocks
        self.missing_indicators_ = [
            key for key in blocks if np.isnan(_compute(_BLOCK[key], frame)[0]).any()
        ]
        groups = {
            g: [o for k in blocks if _BLOCK[k].group == g for o in _BLOCK[k].outputs]
            for g in _GROUPS
        }
        self.feature_groups_ = {g: names for g, names in groups.items() if names}
        self.feature_groups_["missing_indicators"] = [
            missing_label(_BLOCK[k]) for k in self.missing_indicators_
        ]

    def _fit_numeric(self, X: npt.ArrayLike) -> None:
        values = validate_data(self, X, ensure_all_finite="allow-nan", dtype=np.float64)
        names = [str(n) for n in _check_feature_names_in(self, None)]
        self.input_kind_ = "numeric"
        self.absent_columns_ = []
        self.blocks_ = names
        self.missing_indicators_ = [
            n for n, nan in zip(names, np.isnan(values).any(axis=0), strict=True) if nan
        ]
        self.feature_groups_ = {
            "numeric": names,
            "missing_indicators": [f"{n} missing" for n in self.missing_indicators_],
        }

    def transform(self, X: pd.DataFrame | npt.ArrayLike) -> Array:
        check_is_fitted(self)
        if self.input_kind_ == "numeric":
            values = validate_data(
                self, X, reset=False, ensure_all_finite="allow-nan", dtype=np.float64
            )
            flagged = [self.blocks_.index(n) for n in self.missing_indicators_]
            return np.hstack([values, np.isnan(values[:, flagged]).astype(np.float64)])
        if not isinstance(X, pd.DataFrame):
            raise ValueError(
                "This transformer was fitted on a cohort DataFrame; transform needs a DataFrame "
                f"with the columns {list(self.feature_names_in_)}. Got {type(X).__name__}."
            )
        missing = [c for c in self.feature_names_in_ if c not in X.columns]
        if missing:
            raise ValueError(f"Columns passed to fit() and transform() differ: missing {missing}")
        # Read only the fitted columns: outcome and identity columns in X are never touched.
        # A mapping of them, not a frame: selecting a sub-frame costs more than a single
        # record's features.
        frame = {str(c): X[c] for c in self.feature_names_in_}
        values = {key: _compute(_BLOCK[key], frame) for key in self.blocks_}
        columns = [column for key in self.blocks_ for column in values[key]]
        columns += [np.isnan(values[key][0]).astype(np.float64) for key in self.missing_indicators_]
        return np.column_stack(columns).astype(np.float64, copy=False)

    def get_feature_names_out(
        self, input_features: npt.ArrayLike | None = None
    ) -> npt.NDArray[np.object_]:
        check_is_fitted(self)
        names = [str(n) for n in _check_feature_names_in(self, input_features)]
        if self.input_kind_ == "numeric":
            position = {n: i for i, n in enumerate(self.blocks_)}
            out = names + [f"{names[position[n]]} missing" for n in self.missing_indicators_]
        else:
            out = [o for key in self.blocks_ for o in _BLOCK[key].outputs]
            out += [missing_label(_BLOCK[key]) for key in self.missing_indicators_]
        return np.asarray(out, dtype=object)


def build_feature_transformer(
    include: Sequence[str] | None = None, exclude: Sequence[str] | None = None
) -> ClinicalFeatures:
    """The unfitted feature step of the model pipeline (copies the lists it is given)."""
    return ClinicalFeatures(
        include=None if include is None else list(include),
        exclude=None if exclude is None else list(exclude),
    )


def model_input_columns(columns: list[str], outcome: OutcomeConfig) -> list[str]:
    """The canonical columns a model reads: everything but identity and outcome data."""
    banned = never_features(outcome) | IDENTITY_COLUMNS
    return [c for c in columns if c not in banned]


def check_feature_request(include: list[str] | None, outcome: OutcomeConfig) -> None:
    """Refuse ``features.include`` asking for the outcome's own data."""
    asked = sorted(set(include or []) & never_features(outcome))
    if asked:
        raise InputError(
            f"features.include asks for {asked}, which are outcome or follow-up data for "
            f"'{describe(outcome)}'; they can never be features"
        )
