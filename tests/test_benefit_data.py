"""Two-arm data: never pooled silently, arms checked like contract columns."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from inflamrx.cli import app
from inflamrx.config import DataConfig, TreatmentConfig, build_config
from inflamrx.data.arms import check_arms, requirement
from inflamrx.data.simulate import simulate_cohort, write_cohort
from inflamrx.data.validate import validate_cohort
from inflamrx.errors import InputError
from inflamrx.jobs.train import train
from inflamrx.modeling.splits import prepare


@pytest.fixture(scope="module")
def two_arm_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("arms") / "trial.csv"
    write_cohort(simulate_cohort(120, seed=4, two_arm=True), path)
    return path


def test_a_two_arm_file_without_a_treatment_section_is_refused_not_pooled(
    two_arm_csv: Path,
) -> None:
    # Before: `inflamrx train` fitted one response model on drug and placebo patients pooled.
    config = build_config({"data": {"path": str(two_arm_csv)}})
    with pytest.raises(InputError, match=r"two arms \(60 drug, 60 placebo\).*treatment:"):
        train(config)


def test_the_cli_says_how_to_declare_the_arms(two_arm_csv: Path) -> None:
    done = CliRunner().invoke(app, ["train", "--data", str(two_arm_csv)])
    assert done.exit_code != 0
    text = " ".join(done.output.split())
    assert "two arms" in text and "treatment.column=arm" in text
    assert "Traceback" not in done.output


def test_a_single_arm_file_still_trains_as_before(tmp_path: Path) -> None:
    path = tmp_path / "one.csv"
    write_cohort(simulate_cohort(80, seed=5), path)  # everyone on drug
    validated = validate_cohort(DataConfig(path=str(path)))
    prepared = prepare(validated, build_config({}))
    assert len(prepared.y) == 80


def test_rows_without_an_arm_are_rejected_with_row_column_and_rule(
    two_arm_csv: Path, tmp_path: Path
) -> None:
    frame = pd.read_csv(two_arm_csv, dtype=str, keep_default_na=False)
    frame.loc[2, "arm"] = ""  # source row 4 (header is row 1)
    frame.loc[5, "arm"] = "active"  # not an allowed arm
    path = tmp_path / "holes.csv"
    frame.to_csv(path, index=False)
    treatment = TreatmentConfig()
    result = validate_cohort(DataConfig(path=str(path)), require=requirement(treatment))
    assert result.rows_in == 120 == len(result.accepted) + len(result.rejected)
    assert len(result.rejected) == 2
    by_row = {p.row: p for p in result.problems}
    assert by_row[4].column == "arm" and "needs each patient's arm" in by_row[4].rule
    assert by_row[7].column == "arm" and by_row[7].value == "active"
    assert "must be one of drug, placebo" in by_row[7].rule
    # Without a treatment section a missing arm is allowed (single-arm data may omit it).
    plain = validate_cohort(DataConfig(path=str(path)))
    assert len(plain.rejected) == 1


def test_a_treatment_section_on_data_without_an_arm_column_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "no_arm.csv"
    cohort = simulate_cohort(40, seed=1).cohort.drop(columns=["arm"])
    cohort.to_csv(path, index=False)
    with pytest.raises(InputError, match=r"no arm column; a two-arm analysis"):
        validate_cohort(DataConfig(path=str(path)), require=requirement(TreatmentConfig()))


def test_an_empty_arm_is_refused_and_imbalance_is_reported() -> None:
    only_drug = pd.DataFrame({"arm": ["drug"] * 10})
    with pytest.raises(InputError, match=r"the placebo arm is empty \(10 drug, 0 placebo"):
        check_arms(only_drug, TreatmentConfig())
    skewed = pd.DataFrame({"arm": ["drug"] * 70 + ["placebo"] * 30})
    arms = check_arms(skewed, TreatmentConfig())
    assert (arms.n_treated, arms.n_control, arms.smaller) == (70, 30, 30)
    assert arms.warnings and "unbalanced: 70 drug, 30 placebo (70% treated)" in arms.warnings[0]
    balanced = check_arms(pd.DataFrame({"arm": ["drug", "placebo"] * 20}), TreatmentConfig())
    assert balanced.warnings == []
    swapped = check_arms(skewed, TreatmentConfig(treated="placebo", control="drug"))
    assert swapped.n_treated == 30


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"treated": "drug", "control": "drug"}, "must differ"),
        ({"column": "group"}, "treatment.column"),
        ({"harm_threshold": 1.5}, "treatment.harm_threshold"),
        ({"learner": "s_learner"}, "treatment.learner"),
        ({"colum": "arm"}, "unknown key 'treatment.colum'. Allowed keys here: column"),
    ],
)
def test_bad_treatment_sections_are_refused(section: dict[str, object], message: str) -> None:
    with pytest.raises(InputError, match=message):
        build_config({"treatment": section})


def test_a_single_arm_job_on_a_two_arm_config_names_the_benefit_jobs(two_arm_csv: Path) -> None:
    config = build_config({"data": {"path": str(two_arm_csv)}, "treatment": {}})
    validated = validate_cohort(config.data, require=requirement(TreatmentConfig()))
    with pytest.raises(InputError, match=r"inflamrx\.train_benefit, inflamrx\.tune_benefit"):
        prepare(validated, config)
    # ...and the names it gives are the public API's.
    import inflamrx
    from inflamrx.jobs.benefit import train_benefit
    from inflamrx.jobs.benefit_tune import tune_benefit

    assert (inflamrx.train_benefit, inflamrx.tune_benefit) == (train_benefit, tune_benefit)
