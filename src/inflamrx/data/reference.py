"""Published reference figures for the markers, and the cohort-level unit check built on them.

The one home of these numbers (sources: /work/shared/literature.md unless stated). The
validation summary compares each marker with its reference range; ``unit_problem`` refuses a
cohort whose median is so far from the reference median that the unit must be wrong: CRP
recorded in mg/dL under the mg/L name reads ten times too low, and every value is still in
range, so no row-level rule can see it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from inflamrx.data.crp import CRP_ACUTE_INFECTION, CRP_RULE_THRESHOLD
from inflamrx.data.schema import COLUMNS, UNIT_FACTORS


@dataclass(frozen=True)
class Reference:
    median: float  # published median, canonical unit
    source: str  # of the median
    low: float  # reference range, for the summary table
    high: float
    range_source: str
    # Cohort medians outside this range are refused unless data.units states the unit. Set
    # wide: real cohorts differ (assays, selection), a unit error moves the median 10-1000x.
    plausible: tuple[float, float]


_NHANES = "NHANES 2017-2018 adults, CBC_J (data/nhanes-2017-2018)"
_ADULT_RANGE = "adult laboratory range"

REFERENCES: dict[str, Reference] = {
    # mg/dL turns published medians (1.3-2.4 mg/L) into 0.13-0.24, nmol/L into 12-23; a median
    # above 10 mg/L would put half the cohort in the acute-infection range (CDC/AHA).
    "crp_mg_l": Reference(
        1.3,
        "depressed patients, Osimo et al., Psychol Med 2019; NHANES 2017-2018 adults 1.95",
        0.0,
        CRP_RULE_THRESHOLD,
        "< 3 mg/L low/average risk (AHA/CDC); > 3 in ~27% of depressed patients",
        (0.3, CRP_ACUTE_INFECTION),
    ),
    # Cytokine assays disagree by several fold: only a unit error (ng/mL, 1000x) is judged.
    "il6_pg_ml": Reference(
        1.5,
        "depressed patients, estimate in literature.md; healthy about 0.9 (Thompson 2012)",
        0.0,
        1.9,
        "healthy about 0.9 +/- 0.5 pg/mL (Thompson 2012)",
        (0.05, 100.0),
    ),
    "tnf_alpha_pg_ml": Reference(
        2.0,
        "estimate for high-sensitivity plasma assays (literature.md gives no distribution)",
        0.0,
        8.1,
        "typical hs assay range",
        (0.05, 100.0),
    ),
    # Counts: cells/uL reads 1000x too high, a percentage of white cells 15-30x.
    "wbc_10e9_l": Reference(7.0, _NHANES, 4.0, 11.0, _ADULT_RANGE, (2.0, 30.0)),
    "neutrophils_10e9_l": Reference(4.0, _NHANES, 2.0, 7.5, _ADULT_RANGE, (1.0, 20.0)),
    "lymphocytes_10e9_l": Reference(2.1, _NHANES, 1.0, 4.0, _ADULT_RANGE, (0.5, 10.0)),
}

MIN_VALUES = 20  # fewer values say too little about a cohort's median

# log10 bins 0.0025 decades (0.6%) wide from 1e-6 to 1e6: a median to within 0.3%.
_LOW, _WIDTH, _BINS = -6.0, 0.0025, 4800


class MedianSketch:
    """The median of values fed chunk by chunk, in fixed memory (a histogram of log10 values),
    so that a chunked reader can judge a column it never holds whole."""

    def __init__(self) -> None:
        # Bin 0: zero, negatives and below 1e-6; bin _BINS + 1: above 1e6.
        self.counts = np.zeros(_BINS + 2, dtype=np.int64)

    def add(self, values: npt.ArrayLike) -> None:
        v = np.asarray(values, dtype=np.float64)
        v = v[~np.isnan(v)]
        with np.errstate(all="ignore"):  # log10 of zero, negatives; -inf divided
            logs = np.nan_to_num(np.log10(v), nan=-np.inf)  # zero and negatives: bin 0
            bins = np.clip(np.floor((logs - _LOW) / _WIDTH), -1, _BINS) + 1
        self.counts += np.bincount(bins.astype(np.int64), minlength=_BINS + 2)

    @property
    def n(self) -> int:
        return int(self.counts.sum())

    def median(self) -> float:
        middle = int(np.searchsorted(np.cumsum(self.counts), (self.n + 1) / 2))
        if middle == 0:
            return 0.0  # below 1e-6: zero for any marker
        return float(10 ** (_LOW + (min(middle, _BINS) - 0.5) * _WIDTH))


def unit_problem(column: str, sketch: MedianSketch) -> str | None:
    """Why ``column``'s values cannot be in its canonical unit, or None when they can be."""
    ref = REFERENCES.get(column)
    if ref is None or sketch.n < MIN_VALUES:
        return None
    median = sketch.median()
    low, high = ref.plausible
    if low <= median <= high:
        return None
    unit = COLUMNS[column].unit
    ratio = ref.median / median if median < low else median / ref.median
    side = "below" if median < low else "above"
    told = (
        f"{column}: the median of {sketch.n} values is {median:.3g} {unit}, "
        f"{ratio:.0f} times {side} the published reference median of {ref.median:g} {unit} "
        f"({ref.source}); a cohort median outside {low:g}-{high:g} {unit} means the values are "
        f"almost certainly not in {unit}. "
    )
    # The unit whose conversion brings the median closest to the reference, if any does.
    fits = [
        (abs(math.log(median * factor / ref.median)), name, median * factor)
        for name, factor in UNIT_FACTORS.get(unit, {}).items()
        if factor != 1.0 and low <= median * factor <= high
    ]
    if fits:
        _, likely, converted = min(fits)
        told += (
            f"The values look like {likely} (median {converted:.3g} {unit} once converted): "
            f"if so, set data.units: {{{column}: {likely}}}. "
        )
    else:
        told += (
            f"No unit inflamrx knows explains it: check that the column holds "
            f"{COLUMNS[column].label} in {unit} (not a percentage or another measure) and the "
            "data.columns mapping. "
        )
    return told + f"If they really are {unit}, say so with data.units: {{{column}: {unit}}}."
