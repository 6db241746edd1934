"""The training run's benefit figure: out-of-sample predicted benefit against CRP, by arm.

(The benefit report section, with calibration for benefit, Qini and the decision curve, is
``reporting.benefit``; this is the one plot the training run logs beside its metrics.)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from inflamrx.reporting.figures import new_axes


def save_benefit_by_crp(
    benefit: np.ndarray,
    crp: np.ndarray,
    treated: np.ndarray,
    path: Path,
    title: str,
    synthetic: bool,
    harm_threshold: float | None = None,
) -> Path:
    """Scatter of predicted benefit (probability points) on log CRP, drug and placebo
    patients marked, with the harm threshold when given."""
    fig, ax = new_axes(title, "SYNTHETIC cohort" if synthetic else None, size=(6.5, 5.0))
    crp = np.maximum(np.asarray(crp, dtype=float), 1e-3)
    on = np.asarray(treated).astype(bool)
    for mask, label, marker in ((on, "drug arm", "o"), (~on, "placebo arm", "x")):
        ax.scatter(crp[mask], 100 * benefit[mask], s=10, alpha=0.5, marker=marker, label=label)
    ax.axhline(0, color="grey", lw=0.8)
    if harm_threshold is not None:
        ax.axhline(100 * harm_threshold, color="crimson", ls="--", lw=1, label="harm threshold")
    ax.axvline(3.0, color="grey", ls=":", lw=1, label="CRP 3 mg/L")
    ax.set_xscale("log")
    ax.set_xlabel("CRP (mg/L, log scale)")
    ax.set_ylabel("predicted benefit (percentage points of response)")
    ax.legend(loc="best", fontsize=8)
    fig.savefig(path, dpi=110)
    return path
