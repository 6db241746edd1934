"""What validation finds: each problem, the result of a table, the summary that is printed.

Apart from ``validate`` (how a table is checked), so that a file checked chunk by chunk
(``data.stream``) and a whole table (``validate.validate_source``) report in the same terms.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from inflamrx.data.crp import CRP_BAND_LABELS, crp_band
from inflamrx.data.reference import REFERENCES


@dataclass(frozen=True)
class Problem:
    row: int
    patient_id: str | None
    column: str
    value: str
    rule: str
    check: str = "rule"  # short name of the rule broken, for counting
    withheld: bool = False  # the value may be patient information: never quoted back

    def reason(self) -> str:
        if not self.column:
            return self.rule
        if self.withheld:
            return f"{self.column}: {self.rule}"
        shown = "(empty)" if self.value == "" else repr(self.value)
        return f"{self.column} = {shown}: {self.rule}"

    def __str__(self) -> str:
        who = f" (patient {self.patient_id})" if self.patient_id else ""
        return f"row {self.row}{who}: {self.reason()}"


@dataclass
class ValidationResult:
    accepted: pd.DataFrame  # canonical cohort, canonical dtypes
    rejected: pd.DataFrame  # source values as text + ROW + reason
    problems: list[Problem]
    ignored_columns: list[str] = field(default_factory=list)  # resembling no canonical name
    warnings: list[str] = field(default_factory=list)
    # Source columns not read though they look like an absent canonical one: {source: canonical}.
    near_misses: dict[str, str] = field(default_factory=dict)
    synthetic: bool = False  # the data say they are synthetic (data.simulate.says_synthetic)

    @property
    def rows_in(self) -> int:
        return len(self.accepted) + len(self.rejected)

    @property
    def exit_code(self) -> int:
        return 0 if self.rejected.empty and not self.near_misses else 1

    def reason_counts(self) -> pd.Series:
        keys = [f"{p.column or 'line'}: {p.check}" for p in self.problems]
        return pd.Series(keys, dtype="str").value_counts()

    def summary(self, first_problems: int = 10) -> ValidationSummary:
        accepted = self.accepted
        return ValidationSummary(
            n_accepted=len(accepted),
            n_rejected=len(self.rejected),
            problems=self.problems[:first_problems],
            n_problems=len(self.problems),
            reasons=self.reason_counts(),
            ignored_columns=self.ignored_columns,
            warnings=self.warnings,
            near_misses=self.near_misses,
            synthetic=self.synthetic,
            missing=missingness(accepted),
            markers=accepted[[c for c in REFERENCES if c in accepted]],
        )


@dataclass
class ValidationSummary:
    """What is printed about a validated cohort: from a ``ValidationResult`` (``summary``), or
    added up chunk by chunk over a file never held whole (``data.stream``)."""

    n_accepted: int
    n_rejected: int
    problems: list[Problem]  # the first few
    n_problems: int
    reasons: pd.Series  # rows per 'column: rule', most frequent first
    ignored_columns: list[str]
    warnings: list[str]
    near_misses: dict[str, str]
    synthetic: bool
    missing: pd.Series  # percent of accepted rows missing, per canonical column
    markers: pd.DataFrame  # the accepted rows' marker columns (``marker_summary``, ``crp_bands``)

    @property
    def rows_in(self) -> int:
        return self.n_accepted + self.n_rejected

    @property
    def exit_code(self) -> int:
        return 0 if self.n_rejected == 0 and not self.near_misses else 1


def marker_summary(cohort: pd.DataFrame) -> pd.DataFrame:
    """Distribution of each marker present, against its reference range."""
    rows = []
    for col, ref in REFERENCES.items():
        if col not in cohort or cohort[col].notna().sum() == 0:
            continue
        v = cohort[col].dropna()
        rows.append(
            {
                "marker": col,
                "n": len(v),
                "median": v.median(),
                "q1": v.quantile(0.25),
                "q3": v.quantile(0.75),
                "% above reference": 100 * float((v > ref.high).mean()),
                "% below reference": 100 * float((v < ref.low).mean()),
                "reference": ref.range_source,
            }
        )
    return pd.DataFrame(rows)


def crp_bands(cohort: pd.DataFrame) -> dict[str, float]:
    """Share of patients in each CRP band of ``inflamrx.data.crp`` (percent)."""
    bands = pd.Series(crp_band(cohort["crp_mg_l"].dropna()))
    return {
        k: 100 * float(v)
        for k, v in bands.value_counts(normalize=True).reindex(CRP_BAND_LABELS).items()
    }


def missingness(cohort: pd.DataFrame) -> pd.Series:
    """Percent missing per canonical column present."""
    return (100 * cohort.isna().mean()).sort_values(ascending=False)
