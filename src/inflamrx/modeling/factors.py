"""Per-patient factors in clinical words: each SHAP contribution with the raw value it stands
for, in its unit ("CRP 7.2 mg/L: +11 points"), as data the report and the server both use."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from inflamrx.data.schema import COLUMNS
from inflamrx.modeling.explanations import Contributions, probability_points
from inflamrx.modeling.features import FEATURE_BLOCKS, missing_label


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


def _raw_texts(values: pd.Series, column: str) -> list[str]:
    """``_raw_text`` of each value; canonical dtypes without a per-value type test."""
    if pd.api.types.is_float_dtype(values):
        spec = COLUMNS.get(column)
        unit = f" {spec.unit}" if spec is not None and spec.unit else ""
        return ["missing" if v != v else _number(v) + unit for v in values.tolist()]
    if pd.api.types.is_bool_dtype(values):
        yes = values.to_numpy(dtype=bool, na_value=False)
        return np.where(values.isna(), "missing", np.where(yes, "yes", "no")).tolist()
    return [_raw_text(v, column) for v in values.astype(object).to_numpy()]


def _points_text(points: float) -> str:
    return f"{points:+.0f}" if abs(points) >= 9.5 else f"{points:+.1f}"


def _label(column: str) -> str:
    text = COLUMNS[column].label if column in COLUMNS else column
    return text[:1].upper() + text[1:]


def patient_factors(
    contrib: Contributions, x: pd.DataFrame, top: int, with_subject: bool = False
) -> list[list[dict[str, object]]]:
    """Per row of ``x``, the ``top`` features with the largest |contribution|, largest first.

    Each factor: ``feature`` (clinical name), ``value`` (the raw input in its unit, e.g.
    "7.2 mg/L", "missing"; the transformed value for ratios and scores; "missing"/"present"
    for missing-value indicators), ``direction`` ("raises"/"lowers" the predicted
    probability), ``log_odds``, ``points`` (signed probability percentage points) and
    ``text`` (e.g. "CRP 7.2 mg/L: +11 points"); with ``with_subject`` also ``subject`` (the
    text before the points, e.g. "CRP 7.2 mg/L", for a figure's labels). ``x`` holds the rows
    ``contrib`` explains.
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
    # Flat Python lists from here (row after row, k each): building 100,000 x k dicts is the
    # remaining cost, so one comprehension builds them all and rows are slices of it.
    subject = subjects.ravel().tolist()
    point = points.ravel().tolist()
    texts = [f"{s}: {_points_text(p)} points" for s, p in zip(subject, point, strict=True)]
    factors = [
        {"feature": f, "value": v, "direction": d, "log_odds": lo, "points": p, "text": t}
        for f, v, d, lo, p, t in zip(
            np.asarray(names, dtype=object)[order].ravel().tolist(),
            shown.ravel().tolist(),
            np.where(log_odds > 0, "raises", "lowers").ravel().tolist(),
            log_odds.ravel().tolist(),
            point,
            texts,
            strict=True,
        )
    ]
    if with_subject:
        for factor, text in zip(factors, subject, strict=True):
            factor["subject"] = text
    return [factors[start : start + k] for start in range(0, len(factors), k)]


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
            text = _raw_texts(x[source.column].iloc[rows], source.column)
            lead = _label(source.column)
            subject = [f"{lead} {t}" if source.restates else f"{name} ({t})" for t in text]
        else:  # ratios, scores, generic numeric columns: the value the model saw
            text = ["missing" if np.isnan(v) else _number(v) for v in transformed[rows, column]]
            subject = [f"{name} ({t})" for t in text]
        shown[hit] = text
        subjects[hit] = subject
    return subjects, shown
