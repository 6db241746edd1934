"""The cohort a model is fitted on, the one train/test split (holdout and site strategies; the
resample strategy fits on every patient), and cross-validation folds.

Split once, before anything is fitted; every cross-validation (train's estimate, each tuning
trial, nested tuning) draws its folds from ``cv_folds``, so they all follow one rule.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.model_selection import (
    GroupKFold,
    GroupShuffleSplit,
    RepeatedStratifiedKFold,
    train_test_split,
)

from inflamrx.config import Config, SplitConfig
from inflamrx.data.arms import refuse_pooled
from inflamrx.data.outcomes import derive_outcome
from inflamrx.data.validate import ValidationResult
from inflamrx.errors import InputError
from inflamrx.modeling.features import model_input_columns

Splits = list[tuple[np.ndarray, np.ndarray]]


def data_digest(frame: pd.DataFrame) -> str:
    hashed = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    return hashlib.sha256(hashed.tobytes() + ",".join(frame.columns).encode()).hexdigest()[:16]


def split_once(
    y: pd.Series, groups: pd.Series | None, cfg: SplitConfig
) -> tuple[np.ndarray, np.ndarray]:
    """The one train/test split, made before anything is fitted."""
    positions = np.arange(len(y))
    if groups is not None:
        splitter = GroupShuffleSplit(n_splits=1, test_size=cfg.test_size, random_state=cfg.seed)
        train_idx, test_idx = next(splitter.split(positions, y, groups))
        return train_idx, test_idx
    smallest = int(min((y == 1).sum(), (y == 0).sum()))
    if smallest < 4:
        raise InputError(
            f"the outcome has only {smallest} patients in its smaller class; at least 4 are "
            "needed to hold out a stratified test set and cross-validate"
        )
    train_idx, test_idx = train_test_split(
        positions, test_size=cfg.test_size, stratify=y, random_state=cfg.seed
    )
    return np.sort(train_idx), np.sort(test_idx)


@dataclass(frozen=True)
class Folds:
    """Cross-validation folds with both outcome classes on each side, and why others are not
    there: ``skipped`` folds had a single class on one side (no AUROC, or nothing to learn);
    ``impossible`` says why there are no folds at all (None when there are some)."""

    splits: Splits
    skipped: int
    impossible: str | None

    def required(self) -> Splits:
        """The folds, or an InputError saying why there are none."""
        if self.impossible is not None:
            raise InputError(self.impossible)
        return self.splits


def cv_folds(
    y: pd.Series, groups: pd.Series | None, n_folds: int, seed: int, repeats: int = 1
) -> Folds:
    """Stratified folds (repeated ``repeats`` times), or grouped folds (by site) when
    ``groups`` is given; each fold keeps both outcome classes on both sides."""
    positions = np.arange(len(y))
    if groups is not None:
        n = min(n_folds, int(groups.nunique()))
        if n < 2:
            return Folds([], 0, "cross-validation needs at least 2 sites (split.site_column)")
        raw = GroupKFold(n_splits=n).split(positions, y, groups)
    else:
        n = min(n_folds, int(y.value_counts().min()) if y.nunique() == 2 else 0)
        if n < 2:
            return Folds([], 0, "cross-validation needs at least 2 patients of each outcome class")
        splitter = RepeatedStratifiedKFold(n_splits=n, n_repeats=repeats, random_state=seed)
        raw = splitter.split(positions, y)
    made = list(raw)
    kept = [(f, s) for f, s in made if y.iloc[s].nunique() == 2 and y.iloc[f].nunique() == 2]
    why = None if kept else "no cross-validation fold has both outcome classes on both sides"
    return Folds(kept, len(made) - len(kept), why)


@dataclass
class PreparedCohort:
    """Accepted rows with a known outcome, the model's input columns and the one split."""

    cohort: pd.DataFrame
    x: pd.DataFrame
    y: pd.Series
    groups: pd.Series | None
    train_idx: np.ndarray
    test_idx: np.ndarray
    n_without_outcome: int
    digest: str
    synthetic: bool  # the data say they are synthetic (read once, by validation)

    @property
    def x_train(self) -> pd.DataFrame:
        return self.x.iloc[self.train_idx]

    @property
    def y_train(self) -> pd.Series:
        return self.y.iloc[self.train_idx]

    @property
    def groups_train(self) -> pd.Series | None:
        return self.groups.iloc[self.train_idx] if self.groups is not None else None

    @property
    def test_cohort(self) -> pd.DataFrame:
        return self.cohort.iloc[self.test_idx].reset_index(drop=True)


def prepare(validated: ValidationResult, config: Config) -> PreparedCohort:
    """Derive the outcome, choose the input columns and split once, before any fitting."""
    cohort = validated.accepted
    if cohort.empty:
        raise InputError("no row of the cohort was accepted; see `inflamrx validate` for why")
    if config.treatment is not None:
        raise InputError(
            "this job fits single-arm response models, and the config has a treatment section "
            "(two arms): `inflamrx train` and `inflamrx tune` fit and tune the benefit model "
            "(Python: inflamrx.train_benefit, inflamrx.tune_benefit). Remove the treatment "
            "section to model "
            "one arm."
        )
    refuse_pooled(cohort)
    y_all = derive_outcome(cohort, config.outcome)
    known = y_all.notna().to_numpy()
    cohort, y = (
        cohort[known].reset_index(drop=True),
        y_all[known].astype(int).reset_index(drop=True),
    )
    x = cohort[model_input_columns(list(cohort.columns), config.outcome)]
    group_col = config.split.group_by
    if group_col is not None and group_col not in cohort:
        raise InputError(
            f"split.strategy is site with split.site_column {group_col!r}, but the cohort has "
            "no such column"
        )
    groups = cohort[group_col].fillna("unknown").astype(str) if group_col else None
    if config.split.strategy == "resample":  # every patient is fitted on; no test set
        train_idx, test_idx = np.arange(len(y)), np.arange(0)
    else:
        train_idx, test_idx = split_once(y, groups, config.split)
    return PreparedCohort(
        cohort=cohort,
        x=x,
        y=y,
        groups=groups,
        train_idx=train_idx,
        test_idx=test_idx,
        n_without_outcome=int((~known).sum()),
        digest=data_digest(cohort),
        synthetic=validated.synthetic,
    )
