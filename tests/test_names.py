"""Near-miss column names: a source column such as `il6` is not read as `il6_pg_ml`; validation
lists it with the canonical name it resembles (exit 1), and ``closest_canonical`` tells the
serving layer which canonical name an unknown request column most likely meant."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import NHANES, flat
from inflamrx.cli import app
from inflamrx.config import DataConfig
from inflamrx.data.schema import COLUMNS
from inflamrx.data.validate import validate_cohort
from inflamrx.errors import InputError

Writer = Callable[..., Path]

NEAR_MISSES = [
    ("il6", "il6_pg_ml"),
    ("IL-6", "il6_pg_ml"),
    ("IL6 (ng/L)", "il6_pg_ml"),
    ("crp", "crp_mg_l"),
    ("CRP (mg/dL)", "crp_mg_l"),
    ("hsCRP", "crp_mg_l"),
    ("CRP_mg_L", "crp_mg_l"),
    ("crp_below_lod", "crp_mg_l_below_lod"),
    ("madrs", "madrs_total"),
    ("MADRS total", "madrs_total"),
    ("madrs_totl", "madrs_total"),
    ("madrs_bl", "madrs_total"),
    ("HAMD", "hamd17_total"),
    ("PHQ-9", "phq9_total"),
    ("TNF", "tnf_alpha_pg_ml"),
    ("TNFa", "tnf_alpha_pg_ml"),
    ("IL-1beta", "il1b_pg_ml"),
    ("WBC", "wbc_10e9_l"),
    ("neutrophil_count", "neutrophils_10e9_l"),
    ("Lymphocytes", "lymphocytes_10e9_l"),
    ("Age", "age"),
    ("age_years", "age"),
    ("BMI (kg/m2)", "bmi"),
    ("Sex", "sex"),
    ("gender", "sex"),
    ("patientID", "patient_id"),
    ("Smoking", "smoking"),
]
UNLIKE = ["hobby", "note", "il8_pg_ml", "il10_pg_ml", "id", "site_id", "visit", "DPQ100", "x"]


@pytest.mark.parametrize(("name", "canonical"), NEAR_MISSES)
def test_near_misses_name_their_canonical_column(name: str, canonical: str) -> None:
    from inflamrx.data.names import closest_canonical

    assert closest_canonical(name) == canonical


@pytest.mark.parametrize("name", UNLIKE)
def test_names_that_resemble_nothing(name: str) -> None:
    from inflamrx.data.names import closest_canonical

    assert closest_canonical(name) is None


def test_every_canonical_name_is_its_own_closest() -> None:
    from inflamrx.data.names import closest_canonical

    assert {c: closest_canonical(c) for c in COLUMNS} == {c: c for c in COLUMNS}


def test_no_nhanes_column_is_a_near_miss() -> None:
    """The real survey files have dozens of unmapped columns: none resembles a canonical one."""
    from inflamrx.data.names import closest_canonical

    columns = set()
    for path in NHANES.glob("*.xpt"):
        with pd.read_sas(path, format="xport", chunksize=1) as reader:
            columns |= set(reader.get_chunk(1).columns)
    assert len(columns) > 80
    assert {c: closest_canonical(c) for c in columns if closest_canonical(c)} == {}


def test_a_near_miss_is_reported_and_makes_exit_1(write_tiny: Writer) -> None:
    path = write_tiny(extra={"TNF": ["1", "2", "3"], "hobby": ["a", "b", "c"]})
    result = validate_cohort(DataConfig(path=str(path)))
    assert (len(result.accepted), len(result.rejected)) == (3, 0)  # rows as before
    assert result.near_misses == {"TNF": "tnf_alpha_pg_ml"}
    assert result.ignored_columns == ["hobby"]
    assert result.exit_code == 1
    assert result.warnings == [
        "source column 'TNF' looks like tnf_alpha_pg_ml: map it with data.columns: "
        "{tnf_alpha_pg_ml: TNF}, rename it, or list it under data.drop; until then it is not read"
    ]


def test_a_near_miss_of_a_column_already_read_is_only_ignored(write_tiny: Writer) -> None:
    # il6_pg_ml is in the file: 'IL6 (ng/mL)' beside it is an extra column, not a lost one.
    path = write_tiny(extra={"IL6 (ng/mL)": ["1", "2", "3"]})
    result = validate_cohort(DataConfig(path=str(path)))
    assert result.near_misses == {}
    assert result.ignored_columns == ["IL6 (ng/mL)"]
    assert result.exit_code == 0


def test_a_dropped_near_miss_is_not_reported(write_tiny: Writer) -> None:
    path = write_tiny(extra={"bmi_kg_m2": ["20", "21", "22"]})
    assert validate_cohort(DataConfig(path=str(path))).near_misses == {"bmi_kg_m2": "bmi"}
    dropped = validate_cohort(DataConfig(path=str(path), drop=["bmi_kg_m2"]))
    assert (dropped.near_misses, dropped.exit_code) == ({}, 0)


def test_a_missing_required_column_names_its_near_miss(write_file: Writer) -> None:
    path = write_file("patient_id,age,sex,CRP\np1,30,F,1\n")
    with pytest.raises(
        InputError, match=re.escape("required columns are missing: ['crp_mg_l']")
    ) as e:
        validate_cohort(DataConfig(path=str(path)))
    assert "'CRP' looks like crp_mg_l: map it with data.columns: {crp_mg_l: CRP}" in str(e.value)


def test_the_cli_shows_near_misses_and_exits_1(write_tiny: Writer) -> None:
    path = write_tiny(extra={"madrs": ["20", "21", "22"], "tnf": ["1", "2", "3"]})
    done = CliRunner().invoke(app, ["validate", "--data", str(path)])
    assert done.exit_code == 1
    text = flat(done.stdout)
    assert "rows in 3: accepted 3, rejected 0" in text
    assert "warning: source column 'tnf' looks like tnf_alpha_pg_ml: map it with" in text
    # madrs_total is in the tiny file: 'madrs' beside it is only ignored.
    assert "ignored source columns (not in the contract): ['madrs']" in text
