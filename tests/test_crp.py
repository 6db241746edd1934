"""One CRP definition: features, the cohort summary and the CRP > 3 mg/L rule agree at the edges."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from inflamrx.data.crp import CRP_BAND_LABELS, CRP_RULE, crp_band, crp_rule
from inflamrx.data.results import crp_bands
from inflamrx.modeling.features import ClinicalFeatures

FLAGS = ["CRP 1-3 mg/L", "CRP 3-10 mg/L", "CRP > 10 mg/L (possible acute infection)"]

# AHA/CDC: 1 and 3 belong to "1-3", 10 to "3-10"; the rule is strictly above 3.
EDGES = [
    (0.99, "< 1", False),
    (1.0, "1-3", False),
    (3.0, "1-3", False),
    (3.01, "3-10", True),
    (10.0, "3-10", True),
    (10.01, "> 10", True),
]


@pytest.mark.parametrize(("crp", "band", "positive"), EDGES)
def test_features_summary_and_rule_agree_at_the_band_edges(
    crp: float, band: str, positive: bool
) -> None:
    assert crp_band([crp]).tolist() == [band]
    flags = (
        ClinicalFeatures()
        .set_output(transform="pandas")
        .fit_transform(pd.DataFrame({"crp_mg_l": [crp]}))
    )
    expected = [float(band == label) for label in CRP_BAND_LABELS[1:]]
    assert flags.loc[0, FLAGS].tolist() == expected
    summary = crp_bands(pd.DataFrame({"crp_mg_l": [crp]}))
    assert summary == {label: 100.0 * (label == band) for label in CRP_BAND_LABELS}
    assert crp_rule([crp]).tolist() == [positive]


def test_summary_labels_and_shares() -> None:
    values = [crp for crp, _, _ in EDGES] + [np.nan]  # missing CRP is left out of the shares
    summary = crp_bands(pd.DataFrame({"crp_mg_l": values}))
    assert list(summary) == ["< 1", "1-3", "3-10", "> 10"]
    assert summary == pytest.approx(
        {"< 1": 100 / 6, "1-3": 200 / 6, "3-10": 200 / 6, "> 10": 100 / 6}
    )


def test_rule_flags_the_upper_bands_and_never_a_missing_value() -> None:
    values = np.array([0.5, 2.0, 3.0, 7.0, 30.0, np.nan])
    bands = crp_band(values)
    assert pd.isna(bands[-1])
    np.testing.assert_array_equal(crp_rule(values), bands.isin(["3-10", "> 10"]))
    assert CRP_RULE == "CRP > 3 mg/L"
