"""`inflamrx validate --config configs/nhanes.yaml` reproduces data/nhanes-2017-2018/SOURCE.md.

Real public data (NHANES 2017-2018, five XPT files joined on SEQN), not synthetic.
"""

from __future__ import annotations

import pandas as pd
import pytest
from typer.testing import CliRunner, Result

from conftest import REPO, flat
from inflamrx.cli import app

pytestmark = pytest.mark.slow  # about 3 s: five XPT files, 5,533 adults


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Result, pd.DataFrame, pd.DataFrame]:
    out = tmp_path_factory.mktemp("nhanes")
    args = ["validate", "--config", "configs/nhanes.yaml"]
    args += ["--out", str(out / "clean.parquet"), "--rejected", str(out / "rejected.csv")]
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(REPO)  # the config's data paths are relative to the project
        result = CliRunner().invoke(app, args)
    if not (out / "clean.parquet").exists():
        pytest.fail(f"validate failed: {result.output}\n{result.exception!r}")
    accepted = pd.read_parquet(out / "clean.parquet")
    rejected = pd.read_csv(out / "rejected.csv", dtype=str, keep_default_na=False)
    return result, accepted, rejected


@pytest.fixture(scope="module")
def adults(run: tuple[Result, pd.DataFrame, pd.DataFrame]) -> pd.DataFrame:
    """Adults with PHQ-9 and CRP: the population of the reference figures."""
    accepted = run[1]
    return accepted[accepted["phq9_total"].notna() & accepted["crp_mg_l"].notna()]


def test_exit_code_and_counts(run: tuple[Result, pd.DataFrame, pd.DataFrame]) -> None:
    result, accepted, rejected = run
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert result.exit_code == 1  # some adults have no CRP: rejected, never dropped
    assert "rows in 5533: accepted 5144, rejected 389" in flat(result.stdout)
    assert (len(accepted), len(rejected)) == (5144, 389)


def test_rejected_rows_and_reasons(run: tuple[Result, pd.DataFrame, pd.DataFrame]) -> None:
    rejected = run[2]
    reasons = rejected["reason"].value_counts().to_dict()
    assert reasons == {
        "crp_mg_l = (empty): CRP is required and is missing": 387,
        "bmi = '86.2': BMI must be a number between 12 and 80 kg/m2": 1,
        "bmi = '84.4': BMI must be a number between 12 and 80 kg/m2": 1,
    }
    assert rejected["row"].astype(int).is_unique
    assert {"SEQN", "LBXHSCRP", "DPQ010", "row", "reason"} <= set(rejected.columns)


def test_reference_figures(adults: pd.DataFrame) -> None:
    assert len(adults) == 4753
    assert round(100 * (adults["phq9_total"] >= 10).mean(), 1) == 8.9
    assert adults["phq9_total"].quantile([0.25, 0.5, 0.75]).tolist() == [0, 2, 5]
    crp = adults["crp_mg_l"]
    assert crp.median() == pytest.approx(1.95)
    assert crp.quantile(0.25) == pytest.approx(0.88)
    assert crp.quantile(0.75) == pytest.approx(4.44)
    assert round(100 * (crp > 3).mean()) == 36


def test_codes_lod_and_xpt_zeros(adults: pd.DataFrame) -> None:
    items = adults[[f"phq9_{i}" for i in range(1, 10)]]
    assert set(items.stack().unique()) == {0.0, 1.0, 2.0, 3.0}  # no 7/9, no 5.4e-79
    assert adults["phq9_total"].min() == 0
    below = adults[adults["crp_mg_l_below_lod"]]
    assert len(below) == 11
    assert (below["crp_mg_l"] == 0.11).all()  # NHANES stores LOD 0.15 as 0.11
    assert not adults["crp_mg_l_below_lod"].isna().any()


def test_demographics(run: tuple[Result, pd.DataFrame, pd.DataFrame]) -> None:
    accepted = run[1]
    assert set(accepted["sex"]) == {"F", "M"}
    assert accepted["age"].between(18, 80).all()  # adults; NHANES top-codes age at 80
    assert accepted["patient_id"].is_unique
    assert accepted["patient_id"].iloc[0] == "93705"  # SEQN as written, no '.0'


def test_summary_is_printed(run: tuple[Result, pd.DataFrame, pd.DataFrame]) -> None:
    text = flat(run[0].stdout)
    assert "warning: 415 accepted rows with CRP above 10 mg/L" in text
    assert "Markers against reference ranges" in text
    # 17 adults at exactly 1.0 mg/L count in "1-3", as in the features.
    assert "CRP bands (mg/L): < 1: 28.8%, 1-3: 34.8%, 3-10: 28.3%, > 10: 8.1%" in text
    assert "missing values (% of accepted rows): phq9_total 7.6%" in text
