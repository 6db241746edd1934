"""The arms of a two-arm (treatment-effect) cohort: declared, checked, never pooled silently.

A file holding drug and placebo patients mixes prognosis with benefit when one response model
is fitted on it; it is used only with a ``treatment`` section saying which arm is which. With
that section each row needs its arm (a row without one is rejected like a missing required
value), both arms must hold patients, and the arms' sizes are reported.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from inflamrx.config import TreatmentConfig
from inflamrx.errors import InputError

# Outside this share of treated patients the arms are reported as unbalanced (a 1:1 trial
# drawing 30 patients lands outside 40-60% about one time in three; it is a note, not a fault).
BALANCED = (0.4, 0.6)
DECLARE = (
    "declare them with a treatment section, for example `treatment: {column: arm, treated: drug, "
    "control: placebo, harm_threshold: 0.05}` in the config (or --set treatment.column=arm), "
    "or keep one arm's rows"
)


def requirement(treatment: TreatmentConfig) -> dict[str, str]:
    """What validation must require of a two-arm cohort (``validate_cohort(require=...)``)."""
    return {
        treatment.column: (
            f"a two-arm analysis (the config's treatment section) needs each patient's arm "
            f"({treatment.treated} or {treatment.control})"
        )
    }


def refuse_pooled(cohort: pd.DataFrame) -> None:
    """Refuse to fit one response model on a cohort holding both arms."""
    if "arm" not in cohort:
        return
    counts = cohort["arm"].value_counts().sort_index()  # drug before placebo, always
    if len(counts) > 1:
        held = ", ".join(f"{int(n)} {arm}" for arm, n in counts.items())
        raise InputError(
            f"the data hold two arms ({held}); one response model fitted on both would mix "
            f"who improves on the drug with who improves anyway (placebo response). To model "
            f"who benefits from the drug, {DECLARE}"
        )


@dataclass(frozen=True)
class Arms:
    """Each patient's arm as a 0/1 array (1: treated) and the arms' sizes."""

    treated: np.ndarray
    n_treated: int
    n_control: int
    warnings: list[str]

    @property
    def smaller(self) -> int:
        return min(self.n_treated, self.n_control)


def check_arms(cohort: pd.DataFrame, treatment: TreatmentConfig) -> Arms:
    """Both arms present, their sizes and balance reported. Rows whose arm is missing or not
    allowed were already rejected by validation (``requirement`` and the contract)."""
    arm = cohort[treatment.column].astype("str").to_numpy()
    treated = (arm == treatment.treated).astype(int)
    n_t, n_c = int(treated.sum()), int((arm == treatment.control).sum())
    for name, n in ((treatment.treated, n_t), (treatment.control, n_c)):
        if n == 0:
            raise InputError(
                f"the {name} arm is empty ({n_t} {treatment.treated}, {n_c} "
                f"{treatment.control} patients with an outcome); a benefit model compares two "
                "arms. For a single-arm response model remove the treatment section."
            )
    share = n_t / (n_t + n_c)
    warnings = []
    if not BALANCED[0] <= share <= BALANCED[1]:
        warnings.append(
            f"the arms are unbalanced: {n_t} {treatment.treated}, {n_c} {treatment.control} "
            f"({100 * share:.0f}% treated); the known share is used as the propensity"
        )
    return Arms(treated, n_t, n_c, warnings)
