"""CRP bands and the CRP > 3 mg/L rule: one definition for the features, the cohort summaries
and the baseline the model is compared with.

AHA/CDC (Pearson et al., Circulation 2003): < 1 mg/L low, 1-3 average, > 3 high; above 10 mg/L
suggests an acute infection. Boundaries: ``CRP < 1``, ``1 <= CRP <= 3``, ``3 < CRP <= 10``,
``CRP > 10``, so the rule "CRP > 3 mg/L" flags exactly the two upper bands.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pandas as pd

CRP_LOW_MAX = 1.0  # mg/L: below it, the reference band
CRP_RULE_THRESHOLD = 3.0  # mg/L: above it, "high" risk and a positive of the rule
CRP_ACUTE_INFECTION = 10.0  # mg/L: above it, possible acute infection
CRP_BAND_LABELS: tuple[str, ...] = ("< 1", "1-3", "3-10", "> 10")
CRP_RULE = "CRP > 3 mg/L"


def crp_band(crp: npt.ArrayLike) -> pd.Categorical:
    """Each value's band, categories ``CRP_BAND_LABELS`` in order; missing values stay missing."""
    values = np.asarray(crp, dtype=np.float64)
    codes = (
        (values >= CRP_LOW_MAX).astype(np.int8)
        + (values > CRP_RULE_THRESHOLD)
        + (values > CRP_ACUTE_INFECTION)
    )
    return pd.Categorical.from_codes(np.where(np.isnan(values), -1, codes), CRP_BAND_LABELS)


def crp_rule(crp: npt.ArrayLike) -> npt.NDArray[np.bool_]:
    """The CRP > 3 mg/L rule: True above the threshold; False at or below it, or missing."""
    return np.asarray(crp, dtype=np.float64) > CRP_RULE_THRESHOLD
