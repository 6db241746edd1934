"""Score symptom-scale items into totals.

No scale is prorated: a total with any item missing stays missing. The MADRS and HAM-D17 are
clinician-rated and have no prorating rule; for the self-report scales (PHQ-9, GAD-7, BDI-II)
prorating conventions differ between manuals and studies, and the NHANES reference figures
treat a PHQ-9 with a missing item as missing. A missing total is handled downstream.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from inflamrx.data.schema import SCALE_ITEMS, SCALE_LABELS, SCALE_TOTALS


def item_columns(scale: str) -> list[str]:
    return [f"{scale}_{i}" for i in SCALE_ITEMS[scale]]


def score_scales(frame: pd.DataFrame) -> tuple[pd.DataFrame, dict[int, list[tuple[str, str]]]]:
    """Fill each scale's total from its items where the items are present.

    Returns the new frame and, per row position, (total column, message) for each recorded
    total that disagrees with the sum of its complete items: an error for that row.
    """
    out = frame.copy(deep=False)  # copy-on-write: the totals set below leave `frame` as it was
    problems: dict[int, list[tuple[str, str]]] = {}
    for scale in SCALE_ITEMS:
        items = [c for c in item_columns(scale) if c in out.columns]
        if not items:
            continue
        total_col = SCALE_TOTALS[scale]
        values = out.reindex(columns=item_columns(scale)).to_numpy(dtype=float)
        complete = ~np.isnan(values).any(axis=1)
        summed = np.where(complete, np.nansum(values, axis=1), np.nan)
        if total_col in out.columns:
            recorded = out[total_col].to_numpy(dtype=float)
            clash = complete & ~np.isnan(recorded) & (recorded != summed)
            for pos in np.flatnonzero(clash):
                problems.setdefault(int(pos), []).append(
                    (
                        total_col,
                        f"the {SCALE_LABELS[scale]} items {items[0]}..{items[-1]} add up to "
                        f"{summed[pos]:g}: the total must equal the sum of its items",
                    )
                )
            out[total_col] = np.where(np.isnan(recorded), summed, recorded)
        else:
            out[total_col] = summed
    return out, problems
