"""The numpy contract checker (``schema.contract_failures``, what ``validate`` runs) against the
pandera schema built from the same column table (``schema.cohort_schema``), over many generated
records: both must find the same failing cells, and ``validate`` must accept the same rows and
give the same reasons whichever of the two it runs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import inflamrx.data.validate as validate_module
from inflamrx.data.schema import (
    COLUMNS,
    ColumnSpec,
    Kind,
    Role,
    contract_failures,
    pandera_failures,
)
from inflamrx.data.validate import ValidationResult, validate_frame

PROPERTY = settings(
    deadline=None,
    database=None,  # no .hypothesis/ folder in the project
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
# A spread of every kind of column; items and totals of one scale so sums are checked too.
CHOSEN = [
    "site", "arm", "age", "sex", "bmi", "smoking", "n_failed_antidepressants",
    "autoimmune_disease", "crp_mg_l", "crp_mg_l_below_lod", "il6_pg_ml", "wbc_10e9_l",
    *(f"phq9_{i}" for i in range(1, 10)), "phq9_total", "madrs_total", "eq5d_vas",
]  # fmt: skip


def _cell(spec: ColumnSpec) -> st.SearchStrategy[Any]:
    """A cell as a site may write it: valid, on a bound, out of range, junk, or missing."""
    missing = st.sampled_from(["", "NA", None])
    if spec.kind in (Kind.NUMBER, Kind.INTEGER):
        lo = spec.minimum if spec.minimum is not None else -5.0
        hi = spec.maximum if spec.maximum is not None else lo + 50
        numbers = st.one_of(
            st.integers(int(lo), int(hi)).map(float),
            st.sampled_from([lo, hi, lo - 1, hi + 1, lo - 0.5, hi + 0.5, -1.0, 1e9]),
            st.floats(lo - 10, hi + 10, allow_nan=False).map(lambda v: round(v, 2)),
        )
        return st.one_of(numbers, numbers.map(lambda v: f"{v:g}"), st.just("abc"), missing)
    if spec.kind is Kind.BOOLEAN:
        return st.one_of(st.sampled_from(["yes", "no", "1", "0", "TRUE", "maybe"]), missing)
    if spec.kind is Kind.CATEGORY:
        return st.one_of(
            st.sampled_from([*spec.allowed, *(a.upper() for a in spec.allowed), "other"]), missing
        )
    return st.one_of(st.sampled_from(["A", "B", "  ", "site-2"]), missing)


@st.composite
def records(draw: st.DrawFn) -> pd.DataFrame:
    n = draw(st.integers(1, 8))
    columns = ["patient_id", *draw(st.lists(st.sampled_from(CHOSEN), unique=True, max_size=12))]
    for required in ("age", "sex", "crp_mg_l"):
        if required not in columns:
            columns.append(required)
    ids = st.one_of(st.sampled_from(["P1", "P2", "P3", "P4", "P5", "P6"]), st.just(""))
    rows = [
        {c: draw(ids) if c == "patient_id" else draw(_cell(COLUMNS[c])) for c in columns}
        for _ in range(n)
    ]
    frame = pd.DataFrame(rows, columns=columns)
    if draw(st.booleans()):  # a served record: numbers arrive typed, as floats
        for c in columns:
            if COLUMNS[c].kind in (Kind.NUMBER, Kind.INTEGER):
                frame[c] = pd.to_numeric(frame[c], errors="coerce").astype("float64")
    return frame.astype({c: "str" for c in frame if frame[c].dtype == object})


def _normal(failures: list[Any]) -> list[tuple[int, str, str, str]]:
    # pandera names a check with its arguments ("in_range(0, 60)"): compare the names only.
    return [(f.pos, f.column, f.check.split("(")[0], _plain(f.value)) for f in failures]


def _plain(value: object) -> str:
    return repr(value.item() if isinstance(value, np.generic) else value)


def _same(fast: ValidationResult, slow: ValidationResult) -> None:
    pd.testing.assert_frame_equal(fast.accepted, slow.accepted)
    pd.testing.assert_frame_equal(fast.rejected, slow.rejected)
    assert [str(p) for p in fast.problems] == [str(p) for p in slow.problems]


@settings(PROPERTY, max_examples=80)
@given(frame=records())
def test_validate_gives_the_same_rows_and_reasons_with_either_checker(
    frame: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast = validate_frame(frame)
    with monkeypatch.context() as m:
        m.setattr(validate_module, "contract_failures", pandera_failures)
        slow = validate_frame(frame)
    _same(fast, slow)
    assert fast.rows_in == len(frame)


def _parsed_frame(draw: st.DrawFn) -> pd.DataFrame:
    n = draw(st.integers(1, 12))
    out: dict[str, Any] = {}
    for spec in COLUMNS.values():
        if spec.role is Role.OUTCOME or (not spec.required and draw(st.integers(0, 3)) == 0):
            continue
        if spec.kind in (Kind.NUMBER, Kind.INTEGER):
            lo = spec.minimum if spec.minimum is not None else -5.0
            hi = spec.maximum if spec.maximum is not None else lo + 50
            pool = [lo, hi, lo - 1, hi + 1, (lo + hi) / 2 + 0.5, lo + 1, np.nan]
            values = [draw(st.sampled_from(pool)) for _ in range(n)]
            out[spec.name] = np.array(values, dtype=np.float64)
        elif spec.kind is Kind.BOOLEAN:
            values = [draw(st.sampled_from([True, False, None])) for _ in range(n)]
            out[spec.name] = pd.array(values, dtype="boolean")
        else:
            pool = [*spec.allowed, "other", "", " ", "P1", "P2", None]
            out[spec.name] = pd.array([draw(st.sampled_from(pool)) for _ in range(n)], dtype="str")
    return pd.DataFrame(out)


@settings(PROPERTY, max_examples=60)
@given(data=st.data())
def test_contract_failures_are_pandera_failures(data: st.DataObject) -> None:
    """On parsed frames with every column kind, bounds and missing values: the same cells."""
    frame = _parsed_frame(data.draw)
    assert _normal(contract_failures(frame)) == _normal(pandera_failures(frame))


def test_a_required_column_absent_is_one_failure_in_both() -> None:
    frame = pd.DataFrame({"patient_id": pd.array(["P1"], dtype="str"), "age": [40.0]})
    fast = [(f.pos, f.check, f.column) for f in contract_failures(frame)]
    # pandera names the schema as the column and the absent column as the value
    slow = [(f.pos, f.check, f.value) for f in pandera_failures(frame)]
    assert (
        fast
        == slow
        == [(-1, "column_in_dataframe", "sex"), (-1, "column_in_dataframe", "crp_mg_l")]
    )
