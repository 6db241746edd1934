"""Missing markers: NA, N/A, NaN, null and empty are missing values by default (pandas'
default na_values, minus the ordinary word 'None'), in CSV text and in typed frames; a required
column written as one of them is reported as missing, not as 'not a number'."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from inflamrx.config import DataConfig
from inflamrx.data.validate import ValidationResult, validate_cohort, validate_frame

Writer = Callable[..., Path]
MARKERS = ["NA", "N/A", "n/a", "NaN", "nan", "null", "NULL", "#N/A", "<NA>", "-nan", ""]


def run(path: Path, **data: object) -> ValidationResult:
    return validate_cohort(DataConfig(path=str(path), **data))  # type: ignore[arg-type]


def test_the_markers_are_pandas_defaults_without_ordinary_words() -> None:
    from pandas._libs.parsers import STR_NA_VALUES  # the list read_csv documents

    from inflamrx.data.validate import MISSING_MARKERS

    assert frozenset(STR_NA_VALUES) - {"None"} == MISSING_MARKERS
    assert not {"None", "none", "no", "missing", "-", "."} & MISSING_MARKERS


@pytest.mark.parametrize("marker", MARKERS)
def test_marker_in_an_optional_column_of_a_csv_is_missing(write_tiny: Writer, marker: str) -> None:
    path = write_tiny(
        {(2, "il6_pg_ml"): marker, (3, "smoking"): marker, (4, "autoimmune_disease"): marker},
        extra={"bmi": [marker, "24.1", "31"], "site": ["s1", marker, "s2"]},
    )
    result = run(path)
    assert result.problems == []
    acc = result.accepted
    assert len(acc) == 3
    assert acc["bmi"].isna().tolist() == [True, False, False]
    assert acc["il6_pg_ml"].isna().tolist() == [True, True, False]
    assert acc["smoking"].isna().tolist() == [False, True, False]
    assert acc["autoimmune_disease"].isna().tolist() == [False, False, True]
    assert acc["site"].isna().tolist() == [False, True, False]


@pytest.mark.parametrize("marker", ["NA", "N/A", "NaN", "null"])
def test_marker_in_a_typed_frame_is_missing(tiny_frame: pd.DataFrame, marker: str) -> None:
    frame = tiny_frame.assign(bmi=[marker, 24.1, None], crp_mg_l=[1.2, 4.5, 0.4])
    result = validate_frame(frame)
    assert result.problems == []
    assert result.accepted["bmi"].isna().tolist() == [True, False, True]


@pytest.mark.parametrize(("column", "label"), [("age", "age"), ("sex", "sex"), ("crp_mg_l", "CRP")])
@pytest.mark.parametrize("marker", ["NA", "null", "NaN"])
def test_marker_in_a_required_column_is_missing_required(
    write_tiny: Writer, column: str, label: str, marker: str
) -> None:
    result = run(write_tiny({(3, column): marker}))
    assert (len(result.accepted), len(result.rejected)) == (2, 1)
    [problem] = result.problems
    assert (problem.row, problem.column, problem.value) == (3, column, marker)
    assert problem.rule == f"{label} is required and is missing"
    assert str(problem) == f"row 3 (patient p2): {column} = '{marker}': {problem.rule}"


@pytest.mark.parametrize("word", ["None", "unknown", "missing"])
def test_ordinary_words_are_not_missing(write_tiny: Writer, word: str) -> None:
    [problem] = run(write_tiny({(2, "il6_pg_ml"): word})).problems
    assert (problem.column, problem.value, problem.check) == ("il6_pg_ml", word, "not a number")


def test_site_missing_codes_still_add_to_the_markers(write_tiny: Writer) -> None:
    path = write_tiny({(2, "il6_pg_ml"): "NA", (3, "il6_pg_ml"): "-9"})
    result = run(path, missing_codes={"il6_pg_ml": [-9]})
    assert result.problems == []
    assert result.accepted["il6_pg_ml"].isna().tolist() == [True, True, False]
