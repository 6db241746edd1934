"""The synthetic cohort reproduces the published figures it cites (shared/literature.md)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from inflamrx.data.schema import COLUMNS, REQUIRED, Kind
from inflamrx.data.simulate import (
    PARAMETERS,
    TRUTH_COLUMNS,
    SimulatedCohort,
    oracle_auroc,
    simulate_cohort,
    write_cohort,
)

N = 20_000
LOD = 0.15


@pytest.fixture(scope="module")
def single() -> SimulatedCohort:
    return simulate_cohort(N, seed=0)


@pytest.fixture(scope="module")
def two_arm() -> SimulatedCohort:
    return simulate_cohort(N, seed=0, two_arm=True)


def crp_values(cohort: pd.DataFrame) -> pd.Series:
    """CRP as numbers, "<0.15" as LOD/sqrt(2) (the convention downstream ingestion uses)."""
    below = cohort["crp_mg_l"] == f"<{LOD:g}"
    return pd.to_numeric(cohort["crp_mg_l"].where(~below), errors="raise").fillna(LOD / np.sqrt(2))


def responded(cohort: pd.DataFrame, scale: str = "madrs") -> pd.Series:
    """Response as downstream derives it: a fall of at least 50% from baseline."""
    base = cohort["madrs_total" if scale == "madrs" else "hamd17_total"]
    return cohort[f"{scale}_followup"] <= 0.5 * base


def rates_by_band(sim: SimulatedCohort, arm: str) -> pd.Series:
    on_arm = sim.cohort["arm"] == arm
    crp = crp_values(sim.cohort)[on_arm]
    band = pd.cut(crp, [0, 1, 3, 5, np.inf], labels=["<1", "1-3", "3-5", ">5"])
    return responded(sim.cohort)[on_arm].astype(float).groupby(band, observed=True).mean()


# --- markers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cut", "expected", "tolerance"),
    [(1, 0.58, 0.03), (3, 0.27, 0.03), (10, 0.07, 0.02)],  # Osimo 2019
)
def test_crp_matches_osimo(single: SimulatedCohort, cut: float, expected: float, tolerance: float):
    share = float((crp_values(single.cohort) > cut).mean())
    assert share == pytest.approx(expected, abs=tolerance)


def test_crp_below_detection_limit_is_written_as_text(single: SimulatedCohort):
    text = single.cohort["crp_mg_l"]
    below = text == "<0.15"
    assert 0.01 < below.mean() < 0.10
    measured = pd.to_numeric(text[~below], errors="raise")
    assert (measured >= LOD).all()
    assert (measured == measured.round(2)).all()


def test_il6_median_and_correlation_with_crp(single: SimulatedCohort):
    il6 = single.cohort["il6_pg_ml"]
    assert il6.median() == pytest.approx(1.5, abs=0.15)
    present = il6.notna()
    r = np.corrcoef(np.log(crp_values(single.cohort)[present]), np.log(il6[present]))[0, 1]
    assert r == pytest.approx(0.45, abs=0.07)


def test_blood_counts_are_realistic(single: SimulatedCohort):
    means = single.cohort[["wbc_10e9_l", "neutrophils_10e9_l", "lymphocytes_10e9_l"]].mean()
    assert means.to_numpy() == pytest.approx([6.5, 3.8, 2.0], abs=0.3)


def test_fatigue_and_anhedonia_worse_with_inflammation(single: SimulatedCohort):
    high = crp_values(single.cohort) > 3
    low = crp_values(single.cohort) < 1
    facit, shaps = single.cohort["facit_fatigue"], single.cohort["shaps_total"]
    assert facit[high].mean() < facit[low].mean()  # FACIT: higher = less fatigue
    assert shaps[high].mean() > shaps[low].mean()


# --- contract -----------------------------------------------------------------------------


def test_every_value_is_within_the_cohort_contract(two_arm: SimulatedCohort):
    cohort = two_arm.cohort
    assert "response" not in cohort.columns
    for name in cohort.columns:
        spec, column = COLUMNS[name], cohort[name].dropna()
        if name == "crp_mg_l":
            column = crp_values(cohort)
        if spec.kind in (Kind.NUMBER, Kind.INTEGER):
            values = column.astype(float)
            lo = -np.inf if spec.minimum is None else spec.minimum
            hi = np.inf if spec.maximum is None else spec.maximum
            assert values.between(lo, hi).all(), name
            if spec.kind is Kind.INTEGER:
                assert (values == values.round()).all(), name
        if spec.allowed:
            assert set(column) <= set(spec.allowed), name
    assert set(cohort["site"]) == {"site-A", "site-B", "site-C", "site-D"}
    assert cohort["age"].between(18, 80).all()
    assert cohort["madrs_total"].mean() == pytest.approx(30, abs=1.5)


def test_required_never_missing_and_optional_sometimes_missing(single: SimulatedCohort):
    missing = single.cohort.isna().mean()
    assert (missing[list(REQUIRED)] == 0).all()
    for name in ("il6_pg_ml", "tnf_alpha_pg_ml", "il1b_pg_ml", "wbc_10e9_l", "eq5d_vas", "smoking"):
        assert 0.03 < missing[name] < 0.16, name


def test_identifiers_are_synthetic_and_unique(single: SimulatedCohort):
    ids = single.cohort["patient_id"]
    assert ids.is_unique
    assert ids.str.fullmatch(r"SYN-\d{6}").all()
    assert (single.truth["patient_id"] == ids).all()


# --- response -----------------------------------------------------------------------------


def test_drug_response_rises_with_crp(single: SimulatedCohort):
    rates = rates_by_band(single, "drug")
    assert 0.15 <= rates["<1"] <= 0.28  # Raison 2013; literature.md estimate 20%
    assert 0.42 <= rates[">5"] <= 0.62  # Raison 2013 62%, Insight trial 46%
    assert rates.is_monotonic_increasing


def test_placebo_response_is_lower_at_high_crp(two_arm: SimulatedCohort):
    on_placebo = two_arm.cohort["arm"] == "placebo"
    assert 0.15 <= responded(two_arm.cohort)[on_placebo].mean() <= 0.35  # Jones 2021
    rates = rates_by_band(two_arm, "placebo")
    assert rates.between(0.15, 0.35).all()
    assert rates[">5"] < rates["<1"]
    assert rates_by_band(two_arm, "drug")[">5"] > rates[">5"]


@pytest.mark.parametrize("fixture", ["single", "two_arm"])
def test_followup_agrees_with_response_on_both_scales(fixture: str, request: pytest.FixtureRequest):
    cohort = request.getfixturevalue(fixture).cohort
    assert (responded(cohort, "madrs") == responded(cohort, "hamd17")).all()
    assert cohort["madrs_followup"].between(0, 60).all()
    assert cohort["hamd17_followup"].between(0, 52).all()


def test_truth_is_the_probability_under_the_arm_received(two_arm: SimulatedCohort):
    truth = two_arm.truth
    assert tuple(truth.columns) == TRUTH_COLUMNS
    assert (truth["arm"] == two_arm.cohort["arm"]).all()
    expected = truth["p_response_drug"].where(truth["arm"] == "drug", truth["p_response_placebo"])
    assert (truth["p_response"] == expected).all()
    probs = truth[["p_response_drug", "p_response_placebo"]].to_numpy()
    assert ((probs > 0) & (probs < 1)).all()


def test_oracle_auroc_is_realistic(single: SimulatedCohort, two_arm: SimulatedCohort):
    assert 0.65 <= oracle_auroc(single.truth, responded(single.cohort)) <= 0.80
    on_drug = (two_arm.cohort["arm"] == "drug").to_numpy()
    treated = two_arm.truth[on_drug]
    assert 0.65 <= oracle_auroc(treated, responded(two_arm.cohort)[on_drug]) <= 0.80


def test_oracle_auroc_on_a_known_case():
    truth = pd.DataFrame({"p_response": [0.1, 0.4, 0.35, 0.8]})
    assert oracle_auroc(truth, [False, False, True, True]) == pytest.approx(0.75)
    assert oracle_auroc(truth, [0, 0, 0, 1]) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("outcome", "match"),
    [([True, False], "one value per truth row"), ([True] * 4, "both responders")],
)
def test_oracle_auroc_rejects_bad_outcomes(outcome: list[bool], match: str):
    with pytest.raises(ValueError, match=match):
        oracle_auroc(pd.DataFrame({"p_response": [0.1, 0.4, 0.35, 0.8]}), outcome)


# --- design, determinism, files -----------------------------------------------------------


def test_arms(single: SimulatedCohort, two_arm: SimulatedCohort):
    assert (single.cohort["arm"] == "drug").all()
    counts = two_arm.cohort["arm"].value_counts()
    assert abs(counts["drug"] - counts["placebo"]) <= 1
    assert (two_arm.cohort["drug"] == "tocilizumab").all()


def test_same_seed_same_frames_different_seed_different():
    first, again, other = (simulate_cohort(500, s, two_arm=True) for s in (7, 7, 8))
    pd.testing.assert_frame_equal(first.cohort, again.cohort)
    pd.testing.assert_frame_equal(first.truth, again.truth)
    assert not first.cohort.equals(other.cohort)
    assert not first.truth["p_response"].equals(other.truth["p_response"])


def test_written_files_are_byte_identical_and_labelled_synthetic(tmp_path: Path):
    written = [
        write_cohort(simulate_cohort(300, 3, two_arm=True), tmp_path / run / "syn.csv")
        for run in ("a", "b")
    ]
    assert set(written[0]) == {"cohort", "truth", "meta"}
    assert written[0]["truth"].name == "syn.truth.csv"
    assert written[0]["meta"].name == "syn.meta.json"
    for kind in written[0]:
        assert written[0][kind].read_bytes() == written[1][kind].read_bytes(), kind
    meta = json.loads(written[0]["meta"].read_text())
    assert meta["synthetic"] is True
    assert meta["generator"] == "inflamrx.simulate"
    assert (meta["seed"], meta["n"], meta["two_arm"]) == (3, 300, True)
    assert meta["parameters"]["log_crp_mean"]["value"] == 0.27
    assert "Osimo 2019" in meta["parameters"]["log_crp_mean"]["source"]
    assert all(p["source"] for p in meta["parameters"].values())
    back = pd.read_csv(written[0]["cohort"], dtype={"crp_mg_l": str})
    assert len(back) == 300
    assert back["patient_id"].str.startswith("SYN-").all()


def test_every_parameter_cites_a_source():
    cited = PARAMETERS.as_json()
    assert all(isinstance(p["source"], str) and p["source"] for p in cited.values())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n": 0, "seed": 0}, "'n' parameter"),
        ({"n": 2.5, "seed": 0}, "'n' parameter"),
        ({"n": True, "seed": 0}, "'n' parameter"),
        ({"n": "100", "seed": 0}, "'n' parameter"),
        ({"n": 10, "seed": -1}, "'seed' parameter"),
        ({"n": 10, "seed": 1.5}, "'seed' parameter"),
        ({"n": 10, "seed": None}, "'seed' parameter"),
    ],
)
def test_bad_arguments_are_refused(kwargs: dict[str, object], match: str):
    with pytest.raises(ValueError, match=match):
        simulate_cohort(**kwargs)  # type: ignore[arg-type]
