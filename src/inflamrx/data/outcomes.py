"""Derive the binary outcome a model predicts (cohort-schema.md, 'Follow-up and outcome')."""

from __future__ import annotations

import operator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from inflamrx.config import OutcomeConfig
from inflamrx.data.scales import item_columns
from inflamrx.data.schema import COLUMNS, OUTCOME_COLUMNS, SCALE_LABELS, SCALE_TOTALS
from inflamrx.errors import InputError

REMISSION_CUTOFF = {"hamd17": 7.0, "madrs": 10.0}  # Leucht 2017: HAM-D17 <= 7, MADRS <= 10
_OPS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt, "==": operator.eq}


def describe(cfg: OutcomeConfig) -> str:
    scale = SCALE_LABELS[cfg.scale]
    if cfg.kind == "response":
        return f"response: >= 50% reduction in {scale} from baseline to follow-up"
    if cfg.kind == "remission":
        return f"remission: {scale} at follow-up <= {REMISSION_CUTOFF[cfg.scale]:g}"
    if cfg.kind == "threshold":
        return f"{cfg.column} {cfg.op} {cfg.value:g}"
    return f"{cfg.column} (yes/no)"


@dataclass(frozen=True)
class OutcomeWords:
    """The outcome in the words figures and reports use: "response" and "responders" only
    when the outcome is response ("PHQ-9 total >= 10" for a depression screen)."""

    label: str  # "response", "remission", "PHQ-9 total >= 10"
    positives: str  # "responders", "patients with PHQ-9 total >= 10"
    negatives: str  # "non-responders", "patients without PHQ-9 total >= 10"

    @classmethod
    def of(cls, label: str) -> OutcomeWords:
        if label == "response":
            return cls(label, "responders", "non-responders")
        return cls(label, f"patients with {label}", f"patients without {label}")


def outcome_label(cfg: OutcomeConfig) -> str:
    """A few words for the outcome: "response", "remission", "PHQ-9 total >= 10"."""
    if cfg.kind in ("response", "remission"):
        return cfg.kind
    column = str(cfg.column)
    name = COLUMNS[column].label if column in COLUMNS else column
    return f"{name} {cfg.op} {cfg.value:g}" if cfg.kind == "threshold" else name


def label_of_description(description: str) -> str:
    """The label of a model logged before ``outcome_label`` was stored with it, from its
    ``describe`` text ("response: >= 50% ..." -> "response")."""
    return description.split(":")[0].strip() or "the outcome"


def needed_columns(cfg: OutcomeConfig) -> set[str]:
    """Columns the outcome is computed from."""
    if cfg.kind == "response":
        return {SCALE_TOTALS[cfg.scale], f"{cfg.scale}_followup"}
    if cfg.kind == "remission":
        return {f"{cfg.scale}_followup"}
    return {str(cfg.column)}


def never_features(cfg: OutcomeConfig) -> set[str]:
    """Outcome and follow-up columns of the contract, plus this outcome's own data.

    Baseline severity stays a legitimate predictor of response; but a cross-sectional
    threshold on a scale total (PHQ-9 >= 10) makes that total and its items outcome data.
    """
    banned = set(OUTCOME_COLUMNS) | (
        needed_columns(cfg) if cfg.kind in ("threshold", "column") else set()
    )
    for scale, total in SCALE_TOTALS.items():
        if total in banned:
            banned |= set(item_columns(scale))
    return banned


def derive_outcome(cohort: pd.DataFrame, cfg: OutcomeConfig) -> pd.Series:
    """1.0 / 0.0 per row, NaN where the outcome cannot be known (left out of training)."""
    needed = sorted(needed_columns(cfg))
    absent = [c for c in needed if c not in cohort]
    if absent:
        raise InputError(
            f"the outcome ({describe(cfg)}) needs columns {absent}, which the cohort lacks"
        )
    if cfg.kind == "response":
        base = cohort[SCALE_TOTALS[cfg.scale]].astype(float)
        follow = cohort[f"{cfg.scale}_followup"].astype(float)
        known = base.notna() & follow.notna() & (base > 0)
        y = (follow <= 0.5 * base).astype(float)
    elif cfg.kind == "remission":
        follow = cohort[f"{cfg.scale}_followup"].astype(float)
        known = follow.notna()
        y = (follow <= REMISSION_CUTOFF[cfg.scale]).astype(float)
    elif cfg.kind == "threshold":
        values = pd.to_numeric(cohort[str(cfg.column)], errors="coerce").astype(float)
        known = values.notna()
        y = _OPS[str(cfg.op)](values, float(cfg.value or 0.0)).astype(float)
    else:
        values = cohort[str(cfg.column)]
        as_bool = values.astype("boolean") if values.dtype != "boolean" else values
        known = as_bool.notna()
        y = as_bool.fillna(False).astype(float)
    return y.where(known, np.nan).rename("outcome")
