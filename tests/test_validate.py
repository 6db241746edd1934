"""The cohort contract applied to a file: every bad value is a Problem with row, id, column,
value and rule; rows in = accepted + rejected; markers, units and scales parsed as documented."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import NHANES, TINY_HEADER, TINY_ROWS, csv_text
from inflamrx.config import DataConfig
from inflamrx.data.schema import HAMD17_ITEM_MAX, SCALE_ITEMS, cohort_schema
from inflamrx.data.simulate import simulate_cohort
from inflamrx.data.validate import (
    Problem,
    ValidationResult,
    _to_float,
    validate_cohort,
    validate_frame,
)
from inflamrx.errors import InputError

Writer = Callable[..., Path]
Runner = Callable[..., ValidationResult]
SQRT2 = math.sqrt(2)


def run(path: Path, **data: object) -> ValidationResult:
    return validate_cohort(DataConfig(path=str(path), **data))  # type: ignore[arg-type]


# --- The tiny valid cohort -------------------------------------------------------------------


def test_valid_cohort_is_accepted_with_canonical_dtypes(tiny_csv: Path) -> None:
    result = run(tiny_csv)
    assert (result.rows_in, len(result.accepted), len(result.rejected)) == (3, 3, 0)
    assert result.exit_code == 0
    assert result.problems == []
    acc = result.accepted
    assert acc["patient_id"].tolist() == ["p1", "p2", "p3"]
    assert acc["age"].dtype == "float64"
    assert acc["n_failed_antidepressants"].tolist() == [2.0, 0.0, 3.0]
    assert acc["autoimmune_disease"].dtype == "boolean"
    assert acc["autoimmune_disease"].tolist()[:2] == [False, True]
    assert pd.isna(acc["autoimmune_disease"].iloc[2])
    assert pd.isna(acc["il6_pg_ml"].iloc[1])  # optional and missing: kept missing
    assert acc["crp_mg_l_below_lod"].tolist() == [False, False, False]
    cohort_schema().validate(acc)  # what is accepted fits the contract


# --- One bad value -> one Problem, with row, patient, column, value and rule -----------------

BAD_VALUES = [
    # (column, value as written, fragment of the rule)
    ("crp_mg_l", "-1", "CRP must be a number of 0 mg/L or more (it cannot be negative)"),
    ("madrs_total", "75", "MADRS total must be a number between 0 and 60"),
    ("sex", "X", "sex must be one of F, M"),
    ("sex", "female", "sex must be one of F, M"),  # not guessed
    (
        "il6_pg_ml",
        "high",
        "not a number; IL-6 must be a number of 0 pg/mL or more (it cannot be negative) "
        "(or '<LOD' when below the detection limit)",
    ),
    ("crp_mg_l", "1e400", "not a number; CRP must be a number of 0 mg/L or more"),
    ("crp_mg_l", "<abc", "not a number; CRP must be"),
    ("crp_mg_l", "", "CRP is required and is missing"),
    ("age", "", "age is required and is missing"),
    ("sex", "", "sex is required and is missing"),
    ("age", "17", "age must be a number between 18 and 100 years"),
    ("age", "101", "age must be a number between 18 and 100 years"),
    ("age", "thirty", "not a number; age must be a number between 18 and 100 years"),
    (
        "n_failed_antidepressants",
        "1.5",
        "number of failed antidepressants must be a whole number between 0 and 30",
    ),
    ("n_failed_antidepressants", "31", "must be a whole number between 0 and 30"),
    ("autoimmune_disease", "maybe", "autoimmune disease must be yes/no (true/false, 1/0)"),
    ("smoking", "sometimes", "smoking must be one of never, former, current"),
]


@pytest.mark.parametrize(
    ("column", "value", "rule"), BAD_VALUES, ids=[f"{c}={v!r}" for c, v, _ in BAD_VALUES]
)
def test_bad_value_is_reported_with_row_patient_column_value_and_rule(
    write_tiny: Writer, column: str, value: str, rule: str
) -> None:
    result = run(write_tiny({(3, column): value}))  # patient p2, file line 3
    assert (result.rows_in, len(result.accepted), len(result.rejected)) == (3, 2, 1)
    assert result.exit_code == 1
    assert result.accepted["patient_id"].tolist() == ["p1", "p3"]
    [problem] = result.problems
    assert (problem.row, problem.patient_id, problem.column, problem.value) == (
        3,
        "p2",
        column,
        value,
    )
    assert rule in problem.rule
    shown = "(empty)" if value == "" else repr(value)
    assert str(problem) == f"row 3 (patient p2): {column} = {shown}: {problem.rule}"
    rejected = result.rejected.iloc[0]
    assert rejected["row"] == 3
    assert rejected["patient_id"] == "p2"
    assert rejected["reason"] == f"{column} = {shown}: {problem.rule}"


def test_empty_patient_id(write_tiny: Writer) -> None:
    result = run(write_tiny({(3, "patient_id"): ""}))
    [problem] = result.problems
    assert problem == Problem(
        3, None, "patient_id", "", "patient_id is required and is missing", "required"
    )
    assert str(problem) == "row 3: patient_id = (empty): patient_id is required and is missing"


def test_duplicate_patient_id_rejects_every_copy(write_tiny: Writer) -> None:
    result = run(write_tiny({(4, "patient_id"): "p1"}))
    assert result.accepted["patient_id"].tolist() == ["p2"]
    assert result.rejected["row"].tolist() == [2, 4]
    for problem in result.problems:
        assert problem.patient_id == "p1"
        assert problem.rule == "patient_id must be unique; it appears on rows [2, 4]"
    assert [p.row for p in result.problems] == [2, 4]


def test_several_problems_on_one_row_are_all_reported(write_tiny: Writer) -> None:
    result = run(write_tiny({(2, "age"): "17", (2, "sex"): "X", (2, "crp_mg_l"): "-3"}))
    assert result.rejected["row"].tolist() == [2]
    assert sorted(p.column for p in result.problems) == ["age", "crp_mg_l", "sex"]
    reason = result.rejected["reason"].iloc[0]
    assert reason.count("; ") == 2
    assert "age = '17'" in reason and "sex = 'X'" in reason and "crp_mg_l = '-3'" in reason


def test_wrong_number_of_fields_is_a_rejected_row(tiny_csv: Path) -> None:
    with tiny_csv.open("a") as f:
        f.write("p4,40,F\n\np5,40,F,1,,,,,,extra\n")
    result = run(tiny_csv)
    assert (result.rows_in, len(result.accepted), len(result.rejected)) == (5, 3, 2)
    assert result.rejected["row"].tolist() == [5, 7]
    assert result.rejected["reason"].tolist() == [
        "the line has 3 fields but the header has 9: 'p4,40,F'",
        "the line has 10 fields but the header has 9: 'p5,40,F,1,,,,,,extra'",
    ]
    assert str(result.problems[0]) == "row 5: the line has 3 fields but the header has 9: " + (
        "'p4,40,F'"
    )
    assert result.reason_counts().to_dict() == {"line: wrong number of fields": 2}


def test_reason_counts(write_tiny: Writer) -> None:
    result = run(write_tiny({(2, "crp_mg_l"): "-1", (3, "crp_mg_l"): "-2", (4, "age"): "17"}))
    assert result.reason_counts().to_dict() == {
        "crp_mg_l: must be a number of 0 mg/L or more (it cannot be negative)": 2,
        "age: must be a number between 18 and 100 years": 1,
    }


def test_blank_lines_are_not_rows(write_file: Writer) -> None:
    text = csv_text(TINY_HEADER, TINY_ROWS).replace("\np2", "\n\n,,,, ,\np2")
    result = run(write_file(text))
    assert result.rows_in == 3


def test_all_empty_columns(write_tiny: Writer) -> None:
    # An all-empty category column used to fail the dtype check: exit 2 for the whole file.
    result = run(write_tiny({(line, "smoking"): "" for line in (2, 3, 4)}))
    assert len(result.accepted) == 3
    assert result.accepted["smoking"].isna().all()
    result = run(write_tiny({(line, "sex"): "" for line in (2, 3, 4)}))
    assert result.rejected["row"].tolist() == [2, 3, 4]
    assert {p.rule for p in result.problems} == {"sex is required and is missing"}


def test_category_case_and_spaces_are_normalised(write_tiny: Writer) -> None:
    result = run(write_tiny({(2, "sex"): "f", (3, "sex"): " m ", (4, "smoking"): "Current"}))
    assert result.accepted["sex"].tolist() == ["F", "M", "F"]
    assert result.accepted["smoking"].iloc[2] == "current"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        *[("yes", True), ("Y", True), ("TRUE", True), ("1", True), ("1.0", True)],
        *[("no", False), ("n", False), ("False", False), ("0", False), ("0.0", False)],
    ],
)
def test_booleans(write_tiny: Writer, value: str, expected: bool) -> None:
    result = run(write_tiny({(2, "autoimmune_disease"): value}))
    assert result.problems == []
    assert result.accepted["autoimmune_disease"].tolist()[0] is expected


# --- Refused inputs: InputError (exit 2) with a message that says what to do -----------------


@pytest.mark.parametrize("column", ["name", "dob", "address", "MRN", "phone", "email"])
def test_identifier_columns_refused_unless_dropped(write_tiny: Writer, column: str) -> None:
    path = write_tiny({(3, "crp_mg_l"): "-1"}, extra={column: ["x1", "x2", "x3"]})
    with pytest.raises(InputError, match=rf"direct identifiers: '{column}' \(looks like "):
        run(path)
    result = run(path, drop=[column])
    assert column not in result.accepted.columns
    assert column not in result.ignored_columns
    # The rejected file must not bring the dropped identifier back.
    assert column not in result.rejected.columns
    assert "x2" not in result.rejected.to_string()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"units": {"crp_mg_l": "mg"}},
            "data.units: unknown unit 'mg' for crp_mg_l. Allowed units: mg/dL, mg/L, nmol/L "
            "(converted to mg/L).",
        ),
        ({"units": {"il6_pg_ml": "pg/L"}}, "unknown unit 'pg/L' for il6_pg_ml. Allowed units:"),
        ({"units": {"age": "months"}}, "unknown unit 'months' for age. Allowed units: years"),
        ({"units": {"crp": "mg/dL"}}, "data.units names unknown canonical columns ['crp']"),
        ({"units": {"sex": "kg"}}, "data.units names columns that have no unit: ['sex']"),
        ({"recode": {"gender": {"1": "M"}}}, "data.recode names unknown canonical columns"),
        ({"missing_codes": {"CRP": [-9]}}, "data.missing_codes names unknown canonical columns"),
        ({"columns": {"crp": "crp_mg_l"}}, "data.columns maps unknown canonical names ['crp']"),
        (
            {"columns": {"crp_mg_l": "hsCRP"}},
            "data.columns refers to source columns that are not in the file: ['hsCRP']",
        ),
    ],
    ids=[
        "unknown-crp-unit",
        "unknown-cytokine-unit",
        "unknown-age-unit",
        "units-for-unknown-column",
        "units-for-unitless-column",
        "recode-unknown-column",
        "missing-codes-unknown-column",
        "unknown-mapped-column",
        "mapped-source-column-absent",
    ],
)
def test_config_that_does_not_fit_the_file(
    tiny_csv: Path, data: dict[str, object], message: str
) -> None:
    with pytest.raises(InputError, match=re.escape(message)):
        run(tiny_csv, **data)


def test_required_column_absent(write_file: Writer) -> None:
    path = write_file("patient_id,age,crp_mg_l\np1,30,1\n")
    with pytest.raises(InputError, match=re.escape("required columns are missing: ['sex']")) as e:
        run(path)
    assert "Map them with data.columns" in str(e.value)
    assert "Columns found: ['age', 'crp_mg_l', 'patient_id']" in str(e.value)


def test_header_only(write_file: Writer) -> None:
    with pytest.raises(InputError, match="the input has a header but no data rows"):
        run(write_file("patient_id,age,sex,crp_mg_l\n\n"))


# --- Below the limit of detection ------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "lod"), [("<0.15", 0.15), ("< 0.5", 0.5), ("<=0.3", 0.3), ("<.2", 0.2)]
)
def test_below_lod_is_lod_over_sqrt2_with_a_flag(
    write_tiny: Writer, written: str, lod: float
) -> None:
    result = run(write_tiny({(2, "crp_mg_l"): written, (3, "il6_pg_ml"): written}))
    acc = result.accepted
    assert acc["crp_mg_l"].iloc[0] == pytest.approx(lod / SQRT2)
    assert acc["crp_mg_l_below_lod"].tolist() == [True, False, False]
    assert acc["il6_pg_ml"].iloc[1] == pytest.approx(lod / SQRT2)
    assert acc["il6_pg_ml_below_lod"].tolist() == [False, True, False]


def test_missing_marker_has_no_lod_flag(tiny_csv: Path) -> None:
    flag = run(tiny_csv).accepted["il6_pg_ml_below_lod"].tolist()
    assert flag[0] is False
    assert flag[1] is pd.NA  # IL-6 of p2 is missing: below LOD is unknown


@pytest.mark.parametrize("written", ["<", "<-1", "<0.1 mg", "0.1<"])
def test_malformed_lod_is_not_a_number(write_tiny: Writer, written: str) -> None:
    [problem] = run(write_tiny({(2, "crp_mg_l"): written})).problems
    assert problem.value == written
    assert problem.rule.startswith("not a number; CRP must be")
    assert problem.rule.endswith("(or '<LOD' when below the detection limit)")


def test_lod_only_for_markers_that_may_arrive_below_it(write_tiny: Writer) -> None:
    path = write_tiny(extra={"wbc_10e9_l": ["<0.5", "6", "7"]})
    [problem] = run(path).problems
    assert problem.rule == (
        "not a number; white cell count must be a number of 0 10^9/L or more "
        "(it cannot be negative)"
    )


def test_lod_flag_from_the_source_is_kept(write_file: Writer) -> None:
    # NHANES style: the value is stored (0.11) and a separate column flags it.
    text = (
        "crp_mg_l_below_lod,patient_id,age,sex,crp_mg_l\n1,p1,30,F,0.11\n0,p2,30,F,2\n,p3,30,F,3\n"
    )
    result = run(write_file(text))
    assert result.accepted["crp_mg_l"].tolist() == [0.11, 2.0, 3.0]
    assert result.accepted["crp_mg_l_below_lod"].tolist() == [True, False, False]


def test_bad_lod_flag_is_reported_once(write_file: Writer) -> None:
    # The flag column comes before its marker: it used to be parsed, and reported, twice.
    text = "crp_mg_l_below_lod,patient_id,age,sex,crp_mg_l\nmaybe,p1,30,F,0.11\n"
    [problem] = run(write_file(text)).problems
    assert problem.column == "crp_mg_l_below_lod"
    assert problem.rule == "CRP below detection limit must be yes/no (true/false, 1/0)"


# --- Units -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("unit", "written", "mg_l"),
    [
        ("mg/dL", "0.12", 1.2),
        ("MG/DL", "1", 10.0),
        ("mg/L", "1.2", 1.2),
        ("nmol/L", "9.52", 1.0),
        ("nmol/l", "95.2", 10.0),
    ],
)
def test_crp_units(write_tiny: Writer, unit: str, written: str, mg_l: float) -> None:
    result = run(write_tiny({(2, "crp_mg_l"): written}), units={"crp_mg_l": unit})
    assert result.accepted["crp_mg_l"].iloc[0] == pytest.approx(mg_l)


def test_crp_lod_in_mg_dl_is_converted_too(write_tiny: Writer) -> None:
    result = run(write_tiny({(2, "crp_mg_l"): "<0.02"}), units={"crp_mg_l": "mg/dL"})
    assert result.accepted["crp_mg_l"].iloc[0] == pytest.approx(0.2 / SQRT2)
    assert bool(result.accepted["crp_mg_l_below_lod"].iloc[0])


@pytest.mark.parametrize("unit", ["pg/mL", "ng/L", "ng/l"])
def test_cytokine_pg_ml_equals_ng_l(tiny_csv: Path, unit: str) -> None:
    result = run(tiny_csv, units={"il6_pg_ml": unit})
    assert result.accepted["il6_pg_ml"].tolist()[::2] == [0.9, 2.1]


def test_range_is_checked_after_conversion_and_quotes_the_source(write_tiny: Writer) -> None:
    result = run(write_tiny({(2, "crp_mg_l"): "-0.1"}), units={"crp_mg_l": "mg/dL"})
    [problem] = result.problems
    assert problem.value == "-0.1"
    assert problem.rule == "CRP must be a number of 0 mg/L or more (it cannot be negative)"


def test_high_crp_is_kept_and_flagged_never_capped(write_tiny: Writer) -> None:
    result = run(write_tiny({(2, "crp_mg_l"): "25"}))
    assert result.accepted["crp_mg_l"].iloc[0] == 25.0
    assert result.warnings == [
        "1 accepted rows with CRP above 10 mg/L: possible acute infection; consider repeating"
    ]


# --- Recode and missing codes ----------------------------------------------------------------


def test_recode_with_yaml_integer_keys(write_tiny: Writer) -> None:
    path = write_tiny({(2, "sex"): "2", (3, "sex"): "1", (4, "autoimmune_disease"): "RA"})
    data = DataConfig.model_validate(
        {
            "path": str(path),
            "recode": {"sex": {1: "M", 2: "F"}, "autoimmune_disease": {"RA": True}},
        }
    )
    result = validate_cohort(data)
    assert result.accepted["sex"].tolist() == ["F", "M", "F"]
    assert bool(result.accepted["autoimmune_disease"].iloc[2]) is True


def test_unrecoded_value_is_still_checked(write_tiny: Writer) -> None:
    path = write_tiny({(2, "sex"): "3"})
    [problem] = run(path, recode={"sex": {"1": "M", "2": "F"}}).problems
    assert (problem.row, problem.value, problem.rule) == (2, "3", "sex must be one of F, M")


def test_missing_codes(write_tiny: Writer) -> None:
    items = {f"phq9_{i}": ["1", "1", "1"] for i in range(1, 10)}
    items["phq9_3"] = ["7", "9", "1"]  # refused / don't know: codes, not scores
    path = write_tiny({(2, "il6_pg_ml"): "NA", (3, "il6_pg_ml"): "."}, extra=items)
    missing = {"phq9_3": [7, 9], "il6_pg_ml": ["NA", "."]}
    result = run(path, missing_codes=missing)
    acc = result.accepted
    assert result.problems == []
    assert acc["phq9_3"].isna().tolist() == [True, True, False]
    assert acc["phq9_total"].tolist()[2] == 9.0
    assert acc["phq9_total"].isna().tolist() == [True, True, False]  # no prorating
    assert acc["il6_pg_ml"].isna().tolist() == [True, True, False]


def test_missing_code_in_a_required_column_rejects_the_row(write_tiny: Writer) -> None:
    [problem] = run(write_tiny({(2, "age"): "-99"}), missing_codes={"age": [-99]}).problems
    assert (problem.column, problem.value) == ("age", "-99")
    assert problem.rule == "age is required and is missing"


# --- Symptom scales --------------------------------------------------------------------------


def items_csv(scale: str, rows: list[dict[int, str]], total: list[str] | None = None) -> str:
    numbers = list(SCALE_ITEMS[scale])
    header = ["patient_id", "age", "sex", "crp_mg_l"] + [f"{scale}_{i}" for i in numbers]
    if total is not None:
        header.append(f"{scale}_total")
    lines = []
    for k, row in enumerate(rows):
        cells = [f"p{k}", "40", "F", "1"] + [row.get(i, "0") for i in numbers]
        lines.append(cells + ([total[k]] if total is not None else []))
    return csv_text(header, lines)


@pytest.mark.parametrize(
    ("scale", "top"), [("madrs", 60), ("phq9", 27), ("gad7", 21), ("bdi2", 63)]
)
def test_items_are_scored_into_totals(run_csv: Runner, scale: str, top: int) -> None:
    maxima = SCALE_ITEMS[scale]
    rows = [{i: "1" for i in maxima}, {i: str(m) for i, m in maxima.items()}, {1: "2"}]
    result = run_csv(items_csv(scale, rows))
    assert result.accepted[f"{scale}_total"].tolist() == [len(maxima), top, 2]


def test_hamd17_item_maxima(run_csv: Runner) -> None:
    assert sum(HAMD17_ITEM_MAX.values()) == 52
    four = [i for i, m in HAMD17_ITEM_MAX.items() if m == 4]
    assert four == [1, 2, 3, 7, 8, 9, 10, 11, 15]
    rows = [{i: str(top)} for i, top in HAMD17_ITEM_MAX.items()]  # each item at its maximum
    rows += [{i: str(top + 1)} for i, top in HAMD17_ITEM_MAX.items()]  # one above it
    rows.append({i: str(top) for i, top in HAMD17_ITEM_MAX.items()})
    result = run_csv(items_csv("hamd17", rows))
    assert result.accepted["hamd17_total"].tolist() == [*HAMD17_ITEM_MAX.values(), 52]
    assert result.rejected["row"].tolist() == list(range(19, 36))
    for problem, (i, top) in zip(result.problems, HAMD17_ITEM_MAX.items(), strict=True):
        assert problem.column == f"hamd17_{i}"
        assert problem.value == str(top + 1)
        assert problem.rule == f"HAM-D17 item {i} must be a whole number between 0 and {top}"


def test_a_total_with_a_missing_item_stays_missing(run_csv: Runner) -> None:
    result = run_csv(items_csv("madrs", [{1: ""}, {1: "", 2: "5"}], total=["", "20"]))
    assert result.problems == []
    assert pd.isna(result.accepted["madrs_total"].iloc[0])  # no prorating
    assert result.accepted["madrs_total"].iloc[1] == 20  # a recorded total is kept


def test_a_scale_with_some_item_columns_absent_is_not_scored(run_csv: Runner) -> None:
    text = "patient_id,age,sex,crp_mg_l,gad7_1,gad7_2\np1,30,F,1,3,3\n"
    assert run_csv(text).accepted["gad7_total"].isna().all()


def test_items_and_total_that_disagree_reject_the_row(run_csv: Runner) -> None:
    rows = [{i: "3" for i in range(1, 11)}, {i: "3" for i in range(1, 11)}]
    result = run_csv(items_csv("madrs", rows, total=["30", "31"]))
    assert result.accepted["madrs_total"].tolist() == [30]
    [problem] = result.problems
    assert (problem.row, problem.patient_id, problem.column, problem.value) == (
        3,
        "p1",
        "madrs_total",
        "31",
    )
    assert problem.rule == (
        "the MADRS items madrs_1..madrs_10 add up to 30: the total must equal the sum of its items"
    )
    assert result.rejected["reason"].iloc[0] == f"madrs_total = '31': {problem.rule}"


# --- Rejected rows ---------------------------------------------------------------------------


def test_rejected_rows_keep_source_values_row_and_reason(write_file: Writer) -> None:
    text = "ID,AGE,sex,crp_mg_l,note\nA1,30,F,-1,x\nA2, 40 ,F,1,y\nA3,17,F,1,z\n"
    result = run(write_file(text), columns={"patient_id": "ID", "age": "AGE"})
    rejected = result.rejected
    assert list(rejected.columns) == ["row", "ID", "AGE", "sex", "crp_mg_l", "note", "reason"]
    assert rejected["row"].tolist() == [2, 4]
    assert rejected["ID"].tolist() == ["A1", "A3"]  # source names and values as written
    assert rejected["crp_mg_l"].tolist() == ["-1", "1"]
    assert rejected["note"].tolist() == ["x", "z"]
    assert rejected["reason"].tolist() == [
        "crp_mg_l = '-1': CRP must be a number of 0 mg/L or more (it cannot be negative)",
        "age = '17': age must be a number between 18 and 100 years",
    ]
    assert result.ignored_columns == ["note"]


def test_source_columns_named_row_or_reason_do_not_clash(write_file: Writer) -> None:
    # A source column called 'row' used to end in a ValueError traceback.
    text = "row,patient_id,age,sex,crp_mg_l,reason\n7,p1,30,F,-1,typo\n8,p2,30,F,1,\n"
    rejected = run(write_file(text)).rejected
    assert list(rejected.columns) == [
        "row",
        "source_row",
        "patient_id",
        "age",
        "sex",
        "crp_mg_l",
        "source_reason",
        "reason",
    ]
    assert rejected[["row", "source_row", "source_reason"]].iloc[0].tolist() == [2, "7", "typo"]
    assert rejected["reason"].iloc[0].startswith("crp_mg_l = '-1'")


# --- Parquet, XPT and joined files -----------------------------------------------------------


def test_parquet_cohort(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "patient_id": [101, 102, 103],
            "age": [30.0, 40.0, 17.0],
            "sex": ["F", "M", "F"],
            "crp_mg_l": [1.5, np.nan, 2.0],
            "autoimmune_disease": [True, False, True],
        }
    )
    path = tmp_path / "cohort.parquet"
    frame.to_parquet(path)
    result = run(path)
    assert result.accepted["patient_id"].tolist() == ["101"]
    assert bool(result.accepted["autoimmune_disease"].iloc[0]) is True
    assert result.rejected["row"].tolist() == [2, 3]  # record numbers
    assert [str(p) for p in result.problems] == [
        "row 2 (patient 102): crp_mg_l = (empty): CRP is required and is missing",
        "row 3 (patient 103): age = '17': age must be a number between 18 and 100 years",
    ]


def test_parquet_and_csv_of_one_cohort_agree(
    tiny_frame: pd.DataFrame, tiny_csv: Path, tmp_path: Path
) -> None:
    path = tmp_path / "tiny.parquet"
    tiny_frame.replace("", None).to_parquet(path)
    from_parquet, from_csv = run(path), run(tiny_csv)
    pd.testing.assert_frame_equal(from_parquet.accepted, from_csv.accepted)
    assert from_parquet.problems == from_csv.problems == []


def test_csv_joined_with_nhanes_xpt(write_file: Writer) -> None:
    # 93705 answered 0 to every item (stored as ~5.4e-79), 93760 scores 19, 95471 refused one.
    first = write_file("SEQN,age,sex,crp_mg_l\n93705,66,F,1\n93760,40,M,2\n95471,50,F,3\n")
    data = DataConfig(
        path=[str(first), str(NHANES / "DPQ_J.xpt")],
        join_on="SEQN",
        columns={"patient_id": "SEQN"} | {f"phq9_{i}": f"DPQ0{i}0" for i in range(1, 10)},
        missing_codes={f"phq9_{i}": [7, 9] for i in range(1, 10)},
    )
    result = validate_cohort(data)
    assert result.problems == []
    acc = result.accepted
    assert acc["phq9_total"].tolist()[:2] == [0.0, 19.0]
    assert pd.isna(acc["phq9_total"].iloc[2])
    assert acc["phq9_4"].tolist()[:2] == [0.0, 3.0]
    assert pd.isna(acc["phq9_4"].iloc[2])  # 7 = refused
    assert "DPQ100" in result.ignored_columns


def test_joined_csv_files(write_file: Writer) -> None:
    a = write_file("pid,age,sex\np1,30,F\np2,40,M\np3,50,F\n", "demo.csv")
    b = write_file("pid,hsCRP\np2,-1\np1,0.8\n", "labs.csv")
    data = DataConfig(
        path=[str(a), str(b)], join_on="pid", columns={"patient_id": "pid", "crp_mg_l": "hsCRP"}
    )
    result = validate_cohort(data)
    assert result.accepted["crp_mg_l"].tolist() == [0.8]
    assert result.rejected["row"].tolist() == [3, 4]
    assert result.rejected["hsCRP"].iloc[0] == "-1"  # joined values come back as written
    assert result.rejected["reason"].tolist() == [
        "crp_mg_l = '-1': CRP must be a number of 0 mg/L or more (it cannot be negative)",
        "crp_mg_l = (empty): CRP is required and is missing",
    ]


TYPED_CASES = [
    ("crp_mg_l", -1.0, "-1", "cannot be negative"),
    ("crp_mg_l", math.inf, "inf", "not a number"),
    ("madrs_total", 75.0, "75", "between 0 and 60"),
    ("age", 7.0, "7", "between 18 and"),
]


@pytest.mark.parametrize(("column", "value", "shown", "rule"), TYPED_CASES)
def test_typed_records_are_checked_as_numbers_with_the_same_rules(
    tiny_frame: pd.DataFrame, column: str, value: float, shown: str, rule: str
) -> None:
    """validate_frame keeps float columns as numbers (a served model's records); the contract
    and its messages are the same as for text."""
    typed = tiny_frame.replace("", None).assign(
        crp_mg_l=[1.2, 4.5, 0.4], madrs_total=[28.0, 31.0, 22.0], age=[34.0, 51.0, 46.0]
    )
    typed.loc[1, column] = value
    result = validate_frame(typed)
    assert len(result.accepted) == 2 and len(result.rejected) == 1
    (problem,) = result.problems
    assert (problem.row, problem.patient_id, problem.column) == (2, "p2", column)
    assert problem.value == shown and rule in problem.rule
    assert result.accepted["crp_mg_l"].tolist() == [1.2, 0.4]


def test_typed_yes_no_records_give_what_the_same_text_gives(tiny_frame: pd.DataFrame) -> None:
    """Boolean columns (a served record's yes/no) skip the text round trip: the accepted rows,
    the below-LOD flags merged into their markers and the problems are those of the text."""
    typed = tiny_frame.replace("", None).assign(
        crp_mg_l=[1.2, -4.5, 0.4],  # row 2 is rejected, whatever its yes/no values
        crp_mg_l_below_lod=[True, False, False],
        il6_pg_ml_below_lod=[False, True, False],
        autoimmune_disease=[False, True, True],
        mood_worse_with_illness=[True, False, True],
    )
    written = typed.astype({c: "str" for c in typed if typed[c].dtype != object})
    fast, slow = validate_frame(typed), validate_frame(written)
    assert (
        typed["autoimmune_disease"].dtype == bool and written["autoimmune_disease"].dtype == "str"
    )
    pd.testing.assert_frame_equal(fast.accepted, slow.accepted)
    assert fast.problems == slow.problems and len(fast.problems) == 1
    assert fast.accepted["crp_mg_l_below_lod"].tolist() == [True, False]
    assert fast.accepted["il6_pg_ml_below_lod"].tolist() == [False, False]


def test_typed_float_codes_are_read_as_text_for_categories(tiny_frame: pd.DataFrame) -> None:
    coded = tiny_frame.replace("", None).assign(sex=[1.0, 2.0, 1.0])
    result = validate_frame(coded, DataConfig(recode={"sex": {"1": "M", "2": "F"}}))
    assert result.accepted["sex"].tolist() == ["M", "F", "M"]


def _bad_typed_cohort() -> pd.DataFrame:
    """A simulated cohort in canonical dtypes (yes/no columns ``boolean``) with broken rows:
    an out-of-range CRP, a repeated id, a missing flag and a plain ``bool`` column."""
    cohort = validate_frame(simulate_cohort(300, seed=3).cohort).accepted
    cohort.loc[5, "crp_mg_l"] = -1.0
    cohort.loc[7, "patient_id"] = cohort.loc[8, "patient_id"]
    cohort.loc[9, "il6_pg_ml_below_lod"] = pd.NA
    cohort.loc[11, "autoimmune_disease"] = pd.NA
    mood = cohort["mood_worse_with_illness"].fillna(False).astype(bool)
    return cohort.assign(mood_worse_with_illness=mood)


@pytest.mark.parametrize("missing_codes", [{}, {"autoimmune_disease": [0, "False"]}])
def test_typed_yes_no_columns_give_what_their_text_gives(
    missing_codes: dict[str, list[object]],
) -> None:
    """validate_frame reads bool/boolean columns without a round trip through text: accepted
    rows, problems (row, id, value, rule) and rejected rows are those of the same table sent as
    text ('True'/'False'/empty), as a CSV gives it."""
    typed = _bad_typed_cohort()
    assert typed["mood_worse_with_illness"].dtype == bool
    as_text = typed.astype({c: "str" for c in typed if pd.api.types.is_bool_dtype(typed[c])})
    as_text = as_text.where(typed.notna(), None)
    data = DataConfig(missing_codes=missing_codes)
    fast, slow = validate_frame(typed, data), validate_frame(as_text, data)
    pd.testing.assert_frame_equal(fast.accepted, slow.accepted)
    assert [str(p) for p in fast.problems] == [str(p) for p in slow.problems]
    assert len(fast.problems) >= 3
    pd.testing.assert_frame_equal(fast.rejected.astype("str"), slow.rejected.astype("str"))


# --- numbers read from text --------------------------------------------------------------------

_ODD_NUMBERS = [
    "1", "+1", "-2", ".5", "5.", "1e5", "1E-3", "-.5e2", "00012", "0.1", "1.0000000000000000001",
    "123456789012345678901234", "1e400", "1e-400", "-1e-400", "-0", "-0.0", "1_000", "0x10",
    "inf", "-Infinity", "nan", "Nan", "1d", "1,5", "\u0661\u0662", "  3", ".", "+", "e5", "1e",
    "--1", "True", "high", "<0.15", None,
]  # fmt: skip


@pytest.mark.parametrize("seed", range(5))
def test_numbers_read_from_text_as_pandas_reads_them(seed: int) -> None:
    """The fast reader of numeric text gives pandas' float, bit for bit, in any mixture."""
    rng = np.random.default_rng(seed)
    floats, digits = rng.lognormal(0, 3, 300), rng.integers(0, 9, 300)
    decimals = [f"{v:.{d}f}" for v, d in zip(floats, digits, strict=True)]
    integers = [str(i) for i in rng.integers(-50, 50, 50)]
    arrow_reads = ["inf", "-Infinity", "nan", "Nan", "1e400", "1e-400", "-1e-400", "+1", "5."]
    pools = ([*decimals, *integers, *_ODD_NUMBERS], [*decimals, *arrow_reads], decimals)
    for pool in (*pools, [*integers, "-0"], integers):
        values = list(rng.choice(np.array(pool, dtype=object), 400))
        text = pd.Series(values, dtype="str")
        expected = pd.to_numeric(text, errors="coerce").astype("float64").to_numpy()
        got = _to_float(text)
        assert np.array_equal(got, expected, equal_nan=True)
        assert np.array_equal(np.signbit(got), np.signbit(expected))
