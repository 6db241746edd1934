"""The cohort-level unit check: a marker whose cohort median sits implausibly far from the
published reference median (CRP in mg/dL under the mg/L name) is refused unless data.units
states the unit; real (NHANES) and synthetic cohorts, and small ones, are never refused."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import NHANES
from inflamrx.cli import app
from inflamrx.config import DataConfig
from inflamrx.data.ingest import _read_one
from inflamrx.data.reference import REFERENCES, MedianSketch, unit_problem
from inflamrx.data.simulate import simulate_cohort, write_cohort
from inflamrx.data.validate import validate_cohort
from inflamrx.errors import InputError


def scaled(n: int, seed: int, column: str, factor: float) -> pd.DataFrame:
    """A SYNTHETIC cohort with one marker multiplied by ``factor`` (as a wrong unit would)."""
    cohort = simulate_cohort(n, seed).cohort
    text = cohort[column].astype("str")
    below = text.str.startswith("<")
    values = pd.to_numeric(text.str.lstrip("<"), errors="coerce") * factor
    written = values.map(lambda v: f"{v:.6g}").where(values.notna())
    cohort[column] = written.where(~below, "<" + written)
    return cohort


def write(cohort: pd.DataFrame, tmp_path: Path) -> Path:
    path = tmp_path / "cohort.csv"
    cohort.to_csv(path, index=False)
    return path


def test_crp_in_mg_dl_is_refused_with_the_likely_unit(tmp_path: Path) -> None:
    path = write(scaled(2000, 0, "crp_mg_l", 0.1), tmp_path)
    with pytest.raises(InputError) as refused:
        validate_cohort(DataConfig(path=str(path)))
    message = str(refused.value)
    found = re.match(r"crp_mg_l: the median of 2000 values is ([0-9.]+) mg/L, (\d+) times", message)
    assert found, message
    written = simulate_cohort(2000, 0).cohort["crp_mg_l"].str.lstrip("<")  # LODs stay lowest
    true_median = pd.to_numeric(written)
    assert float(found[1]) == pytest.approx(true_median.median() / 10, rel=0.01)
    assert int(found[2]) in (10, 11)  # the reference median, 1.3 mg/L, over about 0.12
    assert "times below the published reference median of 1.3 mg/L" in message
    assert "Osimo et al., Psychol Med 2019" in message
    assert "The values look like mg/dL (median 1.2" in message
    assert "set data.units: {crp_mg_l: mg/dL}" in message
    assert "If they really are mg/L, say so with data.units: {crp_mg_l: mg/L}" in message


def test_crp_in_mg_dl_stated_in_data_units_is_converted_and_accepted(tmp_path: Path) -> None:
    original = simulate_cohort(2000, 0).cohort
    path = write(scaled(2000, 0, "crp_mg_l", 0.1), tmp_path)
    result = validate_cohort(DataConfig(path=str(path), units={"crp_mg_l": "mg/dL"}))
    assert (len(result.accepted), len(result.rejected)) == (2000, 0)
    expected = pd.to_numeric(original["crp_mg_l"], errors="coerce")
    measured = ~original["crp_mg_l"].str.startswith("<")
    assert np.allclose(result.accepted["crp_mg_l"][measured], expected[measured])


def test_the_cli_exits_2_naming_column_medians_and_unit(tmp_path: Path) -> None:
    path = write(scaled(500, 1, "crp_mg_l", 0.1), tmp_path)
    done = CliRunner().invoke(app, ["validate", "--data", str(path)])
    assert done.exit_code == 2
    text = re.sub(r"\s+", " ", done.output)
    assert "crp_mg_l: the median of 500 values is" in text
    assert "reference median of 1.3 mg/L" in text and "mg/dL" in text


@pytest.mark.parametrize(
    ("column", "factor", "stated", "likely"),
    [
        ("crp_mg_l", 9.52, "mg/L", "nmol/L"),  # nmol/L under the mg/L name
        ("il6_pg_ml", 0.001, "pg/mL", "ng/mL"),
        ("tnf_alpha_pg_ml", 0.001, "pg/mL", "ng/mL"),
        ("wbc_10e9_l", 1000, "10^9/L", "cells/uL"),
        ("lymphocytes_10e9_l", 1000, "10^9/L", "cells/uL"),
    ],
)
def test_other_unit_errors_are_refused_with_their_likely_unit(
    tmp_path: Path, column: str, factor: float, stated: str, likely: str
) -> None:
    path = write(scaled(300, 2, column, factor), tmp_path)
    with pytest.raises(InputError, match=rf"^{column}: the median of \d+ values") as refused:
        validate_cohort(DataConfig(path=str(path)))
    assert f"The values look like {likely} " in str(refused.value)
    assert f"data.units: {{{column}: {stated}}}" in str(refused.value)
    fixed = validate_cohort(DataConfig(path=str(path), units={column: likely}))
    assert len(fixed.accepted) + len(fixed.rejected) == 300


def test_a_percentage_where_a_count_belongs_has_no_likely_unit(tmp_path: Path) -> None:
    cohort = simulate_cohort(300, 3).cohort
    cohort["neutrophils_10e9_l"] = 58.0  # neutrophils as % of white cells
    with pytest.raises(InputError, match=r"^neutrophils_10e9_l: the median of 300") as refused:
        validate_cohort(DataConfig(path=str(write(cohort, tmp_path))))
    assert "No unit inflamrx knows explains it" in str(refused.value)
    assert "not a percentage" in str(refused.value)


def test_a_stated_unit_is_trusted(tmp_path: Path) -> None:
    path = write(scaled(300, 4, "crp_mg_l", 0.1), tmp_path)
    result = validate_cohort(DataConfig(path=str(path), units={"crp_mg_l": "mg/L"}))
    assert len(result.accepted) == 300


def test_fewer_than_20_values_are_not_judged(tmp_path: Path) -> None:
    path = write(scaled(19, 0, "crp_mg_l", 0.01), tmp_path)
    assert len(validate_cohort(DataConfig(path=str(path))).accepted) == 19


@pytest.mark.parametrize("n", [20, 30, 60])
def test_small_synthetic_cohorts_are_never_refused(n: int) -> None:
    # 60 seeds per size: the generator's smallest cohorts have the widest medians.
    for seed in range(60):
        cohort = simulate_cohort(n, seed).cohort
        for column in REFERENCES:
            sketch = MedianSketch()
            sketch.add(pd.to_numeric(cohort[column].astype("str").str.lstrip("<")))
            assert unit_problem(column, sketch) is None, (n, seed, column)


def test_the_synthetic_default_cohort_is_accepted(tmp_path: Path) -> None:
    write_cohort(simulate_cohort(2000, 0, two_arm=True), tmp_path / "synthetic.csv")
    assert len(validate_cohort(DataConfig(path=str(tmp_path / "synthetic.csv"))).accepted)
    small = write(simulate_cohort(20, 7).cohort, tmp_path)
    assert len(validate_cohort(DataConfig(path=str(small))).accepted) == 20


def test_real_nhanes_markers_pass_without_a_stated_unit() -> None:
    """configs/nhanes.yaml states its units; the check must pass on the values regardless."""
    tables = {name: _read_one(NHANES / f"{name}_J.xpt").raw for name in ("HSCRP", "CBC")}
    columns = {
        "crp_mg_l": tables["HSCRP"]["LBXHSCRP"],
        "wbc_10e9_l": tables["CBC"]["LBXWBCSI"],
        "neutrophils_10e9_l": tables["CBC"]["LBDNENO"],
        "lymphocytes_10e9_l": tables["CBC"]["LBDLYMNO"],
    }
    for column, text in columns.items():
        sketch = MedianSketch()
        sketch.add(pd.to_numeric(text).to_numpy())
        assert sketch.n > 7000
        assert unit_problem(column, sketch) is None, column


def test_the_sketch_takes_chunks_and_finds_the_median() -> None:
    """What a chunked reader would do: feed the values part by part, judge at the end."""
    rng = np.random.default_rng(0)
    values = np.exp(rng.normal(0.27, 1.35, 10_001))
    values[::50] = np.nan  # missing values are not counted
    sketch = MedianSketch()
    for chunk in np.array_split(values, 7):
        sketch.add(chunk)
    assert sketch.n == int(np.isfinite(values).sum())
    assert sketch.median() == pytest.approx(np.nanmedian(values), rel=0.005)
    zeros = MedianSketch()
    zeros.add(np.zeros(30))
    assert zeros.median() == 0.0
