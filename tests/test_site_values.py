"""`site` must be a site code: a value that looks like patient information (an e-mail, a
date of birth, a phone or record number, an identifier label) rejects its row with a rule
that never quotes the value, in messages or in the rejected file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from inflamrx.cli import app
from inflamrx.config import DataConfig
from inflamrx.data.validate import validate_cohort, validate_frame

Writer = Callable[..., Path]

PATIENT_INFORMATION = [
    ("jane.doe@example.org", "an e-mail address"),
    ("John Smith 1984-03-12", "a date"),
    ("Smith, John (12/03/1984)", "a date"),
    ("J Smith 3.4.61", "a date"),
    ("+44 20 7946 0958", "a phone or record number"),
    ("(555) 123-4567", "a phone or record number"),
    ("943 476 5919", "a phone or record number"),
    ("A1234567", "a phone or record number"),
    ("MRN 4521", "an identifier label (mrn)"),
    ("Ann Lee, DOB unknown", "an identifier label (dob)"),
    ("ssn 078-05", "an identifier label (ssn)"),
]
SITE_CODES = [
    "site-A", "Site 03", "UK001", "NL-AMC", "KCL", "NHS Lothian", "Harley Street Clinic",
    "Mobile unit 2", "Bristol", "101", "Site 03 2019", "v1.2", "Centre 12345", "St Mary's",
]  # fmt: skip


@pytest.mark.parametrize(("value", "looks_like"), PATIENT_INFORMATION)
def test_patient_information_in_a_value_is_recognised(value: str, looks_like: str) -> None:
    from inflamrx.data.ingest import identifier_in_value

    assert identifier_in_value(value) == looks_like


@pytest.mark.parametrize("value", SITE_CODES)
def test_site_codes_are_not_patient_information(value: str) -> None:
    from inflamrx.data.ingest import identifier_in_value

    assert identifier_in_value(value) is None


@pytest.mark.parametrize(("value", "looks_like"), PATIENT_INFORMATION[:5])
def test_the_row_is_rejected_and_the_value_never_shown(
    write_tiny: Writer, value: str, looks_like: str
) -> None:
    sites = ["London", value.replace(",", " "), "site-B"]  # the tiny CSV is unquoted
    result = validate_cohort(DataConfig(path=str(write_tiny(extra={"site": sites}))))
    assert (len(result.accepted), len(result.rejected)) == (2, 1)
    [problem] = result.problems
    rule = (
        f"site must be a site code, not patient information (it looks like {looks_like}); "
        "the value is not shown"
    )
    assert (problem.row, problem.column, problem.value, problem.rule) == (3, "site", "", rule)
    assert str(problem) == f"row 3 (patient p2): site: {rule}"
    assert result.rejected["reason"].tolist() == [f"site: {rule}"]
    assert result.rejected["site"].tolist() == ["(not shown)"]
    written = result.rejected.to_csv() + "".join(str(p) for p in result.problems)
    assert sites[1] not in written
    assert result.accepted["site"].tolist() == ["London", "site-B"]


def test_a_mapped_site_column_is_withheld_in_the_rejected_file(write_tiny: Writer) -> None:
    path = write_tiny(extra={"centre": ["a", "jane@example.org", "b"]})
    result = validate_cohort(DataConfig(path=str(path), columns={"site": "centre"}))
    assert result.rejected["centre"].tolist() == ["(not shown)"]


def test_typed_records_too(tiny_frame: pd.DataFrame) -> None:
    frame = tiny_frame.assign(site=["s1", "s2", "+1 (555) 123-4567"])
    [problem] = validate_frame(frame).problems
    assert (problem.row, problem.column, problem.value) == (3, "site", "")
    assert "555" not in str(problem)


def test_the_cli_never_prints_the_value(write_tiny: Writer, tmp_path: Path) -> None:
    path = write_tiny(extra={"site": ["s1", "jane.doe@example.org", "s2"]})
    rejected = tmp_path / "rejected.csv"
    done = CliRunner().invoke(app, ["validate", "--data", str(path), "--rejected", str(rejected)])
    assert done.exit_code == 1
    assert "row 3 (patient p2): site: site must be a site code" in done.stderr
    assert "jane" not in done.output + rejected.read_text()
