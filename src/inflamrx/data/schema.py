"""The canonical cohort contract (``shared/cohort-schema.md``), written down once.

Every other module asks this one for column names, units, ranges and roles. Two checkers are
generated from the same specs, so the contract cannot drift: ``contract_failures`` (numpy, what
``validate`` runs: pandera's per-column overhead was most of a served record's time) and the
pandera schema ``cohort_schema`` (for anyone checking a canonical table; a differential test
holds the two to the same failures).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import pandas as pd

if TYPE_CHECKING:  # pandera costs about a second to import: only where it is used
    import pandera.pandas as pa


class Kind(StrEnum):
    STRING = "string"
    NUMBER = "number"
    INTEGER = "integer"
    CATEGORY = "category"
    BOOLEAN = "boolean"


class Role(StrEnum):
    IDENTITY = "identity"  # who / where: never a feature
    BASELINE = "baseline"  # known before treatment: may be a feature
    OUTCOME = "outcome"  # follow-up and outcome: never a feature


@dataclass(frozen=True)
class ColumnSpec:
    name: str
    kind: Kind
    label: str  # clinical wording used in messages
    unit: str = ""
    minimum: float | None = None
    maximum: float | None = None
    allowed: tuple[str, ...] = ()
    required: bool = False
    role: Role = Role.BASELINE
    lod: bool = False  # may arrive as "<0.15" (below the limit of detection)


def _n(
    name: str, label: str, unit: str, lo: float | None, hi: float | None, **kw: object
) -> ColumnSpec:
    return ColumnSpec(name, Kind.NUMBER, label, unit, lo, hi, **kw)  # type: ignore[arg-type]


# Scale items: (prefix, number of items, per-item maximum by item number, label).
HAMD17_ITEM_MAX = {i: (4 if i in (1, 2, 3, 7, 8, 9, 10, 11, 15) else 2) for i in range(1, 18)}
SCALE_ITEMS: dict[str, dict[int, int]] = {
    "madrs": dict.fromkeys(range(1, 11), 6),
    "hamd17": HAMD17_ITEM_MAX,
    "phq9": dict.fromkeys(range(1, 10), 3),
    "gad7": dict.fromkeys(range(1, 8), 3),
    "bdi2": dict.fromkeys(range(1, 22), 3),
}
SCALE_LABELS = {
    "madrs": "MADRS",
    "hamd17": "HAM-D17",
    "phq9": "PHQ-9",
    "gad7": "GAD-7",
    "bdi2": "BDI-II",
}
SCALE_TOTALS = {s: ("hamd17_total" if s == "hamd17" else f"{s}_total") for s in SCALE_ITEMS}

# Units a site may state in data.units -> factor to the canonical unit (matched ignoring case).
_CYTOKINE = {"pg/mL": 1.0, "ng/L": 1.0, "ng/mL": 1000.0}
_COUNT = {
    "10^9/L": 1.0, "10e9/L": 1.0, "x10^9/L": 1.0, "1000 cells/uL": 1.0, "10^3/uL": 1.0,
    "cells/uL": 0.001,
}  # fmt: skip
UNIT_FACTORS: dict[str, dict[str, float]] = {
    "mg/L": {"mg/L": 1.0, "mg/dL": 10.0, "nmol/L": 1 / 9.52},  # CRP: 1 mg/L = 9.52 nmol/L
    "pg/mL": _CYTOKINE,
    "10^9/L": _COUNT,
}

MARKERS = (
    _n("crp_mg_l", "CRP", "mg/L", 0, None, required=True, lod=True),
    _n("il6_pg_ml", "IL-6", "pg/mL", 0, None, lod=True),
    _n("tnf_alpha_pg_ml", "TNF-alpha", "pg/mL", 0, None, lod=True),
    _n("il1b_pg_ml", "IL-1beta", "pg/mL", 0, None, lod=True),
    _n("wbc_10e9_l", "white cell count", "10^9/L", 0, None),
    _n("neutrophils_10e9_l", "neutrophil count", "10^9/L", 0, None),
    _n("lymphocytes_10e9_l", "lymphocyte count", "10^9/L", 0, None),
)

_SPECS: tuple[ColumnSpec, ...] = (
    ColumnSpec("patient_id", Kind.STRING, "patient_id", required=True, role=Role.IDENTITY),
    ColumnSpec("site", Kind.STRING, "site", role=Role.IDENTITY),
    ColumnSpec("arm", Kind.CATEGORY, "arm", allowed=("drug", "placebo"), role=Role.IDENTITY),
    ColumnSpec("drug", Kind.STRING, "drug", role=Role.IDENTITY),
    _n("age", "age", "years", 18, 100, required=True),
    ColumnSpec("sex", Kind.CATEGORY, "sex", allowed=("F", "M"), required=True),
    _n("bmi", "BMI", "kg/m2", 12, 80),
    ColumnSpec("smoking", Kind.CATEGORY, "smoking", allowed=("never", "former", "current")),
    ColumnSpec(
        "n_failed_antidepressants", Kind.INTEGER, "number of failed antidepressants", "", 0, 30
    ),
    _n("episode_duration_months", "episode duration", "months", 0, 600),
    ColumnSpec("autoimmune_disease", Kind.BOOLEAN, "autoimmune disease"),
    ColumnSpec("family_history_autoimmune", Kind.BOOLEAN, "family history of autoimmune disease"),
    ColumnSpec("mood_worse_with_illness", Kind.BOOLEAN, "mood worse with physical illness"),
    *MARKERS,
    *(
        ColumnSpec(f"{m.name}_below_lod", Kind.BOOLEAN, f"{m.label} below detection limit")
        for m in MARKERS
        if m.lod
    ),
    _n("madrs_total", "MADRS total", "", 0, 60),
    _n("hamd17_total", "HAM-D17 total", "", 0, 52),
    _n("phq9_total", "PHQ-9 total", "", 0, 27),
    _n("gad7_total", "GAD-7 total", "", 0, 21),
    _n("bdi2_total", "BDI-II total", "", 0, 63),
    _n("shaps_total", "SHAPS anhedonia total", "", 0, 14),
    _n("facit_fatigue", "FACIT-Fatigue score", "", 0, 52),
    _n("eq5d_vas", "EQ-5D VAS", "", 0, 100),
    *(
        ColumnSpec(f"{scale}_{i}", Kind.INTEGER, f"{SCALE_LABELS[scale]} item {i}", "", 0, top)
        for scale, items in SCALE_ITEMS.items()
        for i, top in items.items()
    ),
    _n("madrs_followup", "MADRS at follow-up", "", 0, 60, role=Role.OUTCOME),
    _n("hamd17_followup", "HAM-D17 at follow-up", "", 0, 52, role=Role.OUTCOME),
    _n("phq9_followup", "PHQ-9 at follow-up", "", 0, 27, role=Role.OUTCOME),
    ColumnSpec("response", Kind.BOOLEAN, "response", role=Role.OUTCOME),
)

COLUMNS: dict[str, ColumnSpec] = {spec.name: spec for spec in _SPECS}
REQUIRED: tuple[str, ...] = tuple(s.name for s in _SPECS if s.required)
OUTCOME_COLUMNS: frozenset[str] = frozenset(s.name for s in _SPECS if s.role is Role.OUTCOME)
IDENTITY_COLUMNS: frozenset[str] = frozenset(s.name for s in _SPECS if s.role is Role.IDENTITY)


def rule_text(spec: ColumnSpec) -> str:
    """The rule for one column in a clinician's words, e.g. 'must be between 0 and 60'."""
    unit = f" {spec.unit}" if spec.unit else ""
    if spec.kind is Kind.CATEGORY:
        return "must be one of " + ", ".join(spec.allowed)
    if spec.kind is Kind.BOOLEAN:
        return "must be yes/no (true/false, 1/0)"
    if spec.kind is Kind.STRING:
        return "must be a non-empty text"
    whole = "a whole number" if spec.kind is Kind.INTEGER else "a number"
    if spec.minimum is not None and spec.maximum is not None:
        return f"must be {whole} between {spec.minimum:g} and {spec.maximum:g}{unit}"
    if spec.minimum == 0:
        return f"must be {whole} of 0{unit} or more (it cannot be negative)"
    return f"must be {whole}{unit}"


class Failure(NamedTuple):
    """One cell that breaks the contract: row position, column, check broken, the value."""

    pos: int
    column: str
    check: str  # "not_nullable", "field_uniqueness", or the range/category/... rule
    value: object


def _broken(
    spec: ColumnSpec, column: pd.Series, na: np.ndarray
) -> Iterator[tuple[str, np.ndarray]]:
    """(check, mask of failing rows) of each rule of ``spec``, in ``_pandera_column``'s order.
    Missing values break no rule but ``not_nullable`` (pandera's checks ignore them too)."""
    if spec.kind in (Kind.NUMBER, Kind.INTEGER):
        values = column.to_numpy()  # float64: the dtype was checked before
        with np.errstate(invalid="ignore"):
            if spec.minimum is not None and spec.maximum is not None:
                yield "in_range", ~na & ~((values >= spec.minimum) & (values <= spec.maximum))
            elif spec.minimum is not None:
                yield "greater_than_or_equal_to", ~na & ~(values >= spec.minimum)
            if spec.kind is Kind.INTEGER:
                yield "whole_number", ~na & (values != np.round(values))
    if spec.allowed:
        yield "isin", ~na & ~column.isin(spec.allowed).to_numpy(dtype=bool)
    if spec.kind is Kind.STRING:
        yield "non_empty", ~na & (column.str.strip() == "").to_numpy(dtype=bool, na_value=False)


_NUMERIC_DTYPE = np.dtype("float64")
_BOOLEAN_DTYPE = pd.BooleanDtype()


def contract_failures(frame: pd.DataFrame) -> list[Failure]:
    """Every cell of a parsed frame (canonical dtypes) that breaks the contract, in the order
    pandera reports them: column by column, then nullable, unique, the rules. A required
    column that is absent is one Failure at position -1."""
    failures: list[Failure] = []
    present = set(frame.columns)  # one set, not an Index look-up per spec of the table
    for spec in _SPECS:
        if spec.name not in present:
            if spec.required:
                failures.append(Failure(-1, spec.name, "column_in_dataframe", None))
            continue
        column = frame[spec.name]
        if spec.kind is Kind.BOOLEAN and not spec.required:
            # Yes/no columns have no rule but their dtype: no per-cell work (a served record
            # holds seven of them).
            if column.dtype != _BOOLEAN_DTYPE:
                failures.append(Failure(-1, spec.name, "dtype", str(column.dtype)))
            continue
        numeric = spec.kind in (Kind.NUMBER, Kind.INTEGER) and column.dtype == _NUMERIC_DTYPE
        na = np.isnan(column.to_numpy()) if numeric else column.isna().to_numpy()
        if spec.required:
            failures += [
                Failure(int(i), spec.name, "not_nullable", column.iloc[i])
                for i in np.flatnonzero(na)
            ]
        if spec.name == "patient_id":
            repeated = column.duplicated(keep=False).to_numpy() & ~na  # as pandera: ids only
            failures += [
                Failure(int(i), spec.name, "field_uniqueness", column.iloc[i])
                for i in np.flatnonzero(repeated)
            ]
        expected = _NUMERIC_DTYPE if spec.kind in (Kind.NUMBER, Kind.INTEGER) else None
        if spec.kind is Kind.BOOLEAN:
            expected = _BOOLEAN_DTYPE
        if expected is not None and column.dtype != expected:  # parsing gives these dtypes
            failures.append(Failure(-1, spec.name, "dtype", str(column.dtype)))
            continue
        for check, mask in _broken(spec, column, na):
            failures += [
                Failure(int(i), spec.name, check, column.iloc[i]) for i in np.flatnonzero(mask)
            ]
    return failures


def pandera_failures(frame: pd.DataFrame) -> list[Failure]:
    """``contract_failures`` as the pandera schema finds them (the reference implementation)."""
    import pandera.pandas as pa

    try:
        cohort_schema().validate(frame, lazy=True)
    except pa.errors.SchemaErrors as err:
        return [
            Failure(
                -1 if pd.isna(case.index) else int(case.index),
                str(case.column),
                str(case.check),
                case.failure_case,
            )
            for case in err.failure_cases.itertuples(index=False)
        ]
    return []


def _pandera_column(spec: ColumnSpec) -> pa.Column:
    import pandera.pandas as pa

    checks: list[pa.Check] = []
    if spec.minimum is not None and spec.maximum is not None:
        checks.append(pa.Check.in_range(spec.minimum, spec.maximum))
    elif spec.minimum is not None:
        checks.append(pa.Check.ge(spec.minimum))
    if spec.allowed:
        checks.append(pa.Check.isin(list(spec.allowed)))
    if spec.kind is Kind.INTEGER:
        checks.append(pa.Check(lambda s: s == s.round(), element_wise=False, name="whole_number"))
    if spec.kind is Kind.STRING:
        checks.append(pa.Check(lambda s: s.str.strip() != "", name="non_empty"))
    dtype = {
        Kind.NUMBER: "float64",
        Kind.INTEGER: "float64",  # stored as float so that missing stays NaN
        Kind.BOOLEAN: "boolean",
        Kind.CATEGORY: "str",
        Kind.STRING: "str",
    }[spec.kind]
    return pa.Column(
        dtype,
        checks=checks,
        nullable=not spec.required,
        required=spec.required,
        unique=spec.name == "patient_id",
    )


@cache
def cohort_schema() -> pa.DataFrameSchema:
    """The pandera schema of a canonical cohort table (extra columns are allowed)."""
    import pandera.pandas as pa

    return pa.DataFrameSchema(
        {spec.name: _pandera_column(spec) for spec in _SPECS}, strict=False, name="cohort"
    )


def contract_rows() -> list[dict[str, object]]:
    """Every canonical column as plain data (what `inflamrx schema` prints): name, label, kind,
    unit, range or allowed values, whether required, role, and the rule in words."""
    return [
        {
            "name": s.name,
            "label": s.label,
            "kind": str(s.kind),
            "unit": s.unit,
            "minimum": s.minimum,
            "maximum": s.maximum,
            "allowed": list(s.allowed),
            "required": s.required,
            "role": str(s.role),
            "below_detection_limit_allowed": s.lod,
            "rule": rule_text(s),
        }
        for s in _SPECS
    ]
