"""The two-arm cohort a benefit model is fitted on, and its cross-fitted predictions.

Validation is cross-fitted on all patients by default: each patient's predicted benefit comes
from a model fitted without them (folds stratified on arm x outcome), so every patient counts
once in the validation and nothing is wasted on a split (small trials are the norm).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold, train_test_split

from inflamrx.config import Config
from inflamrx.data.arms import Arms, check_arms
from inflamrx.data.outcomes import derive_outcome
from inflamrx.data.validate import ValidationResult
from inflamrx.errors import InputError
from inflamrx.modeling.benefit.learners import SIMPLEST_FIRST, TREE_KINDS
from inflamrx.modeling.features import model_input_columns
from inflamrx.modeling.kinds.benefit import BENEFIT, CONTROL, TREATED, fit_benefit
from inflamrx.modeling.splits import data_digest


@dataclass
class TwoArmCohort:
    """Accepted rows with a known outcome, their input columns (never the arm) and arms."""

    cohort: pd.DataFrame
    x: pd.DataFrame
    y: pd.Series
    arms: Arms
    n_without_outcome: int
    digest: str
    synthetic: bool

    @property
    def treated(self) -> np.ndarray:
        return self.arms.treated

    @property
    def strata(self) -> np.ndarray:
        """Arm x outcome (0..3): folds keep every combination on both sides."""
        return np.asarray(2 * self.treated + self.y.to_numpy(), dtype=int)

    @property
    def crp(self) -> np.ndarray:
        return self.cohort["crp_mg_l"].to_numpy(dtype=float)

    def subset(self, rows: np.ndarray) -> TwoArmCohort:
        treated = self.treated[rows]
        arms = Arms(treated, int(treated.sum()), int(len(rows) - treated.sum()), [])
        return TwoArmCohort(
            self.cohort.iloc[rows].reset_index(drop=True),
            self.x.iloc[rows].reset_index(drop=True),
            self.y.iloc[rows].reset_index(drop=True),
            arms,
            0,
            self.digest,
            self.synthetic,
        )


def prepare_two_arm(validated: ValidationResult, config: Config) -> TwoArmCohort:
    """Derive the outcome, check the arms and choose the input columns (the arm is an
    identity column: never an input)."""
    assert config.treatment is not None
    cohort = validated.accepted
    if cohort.empty:
        raise InputError("no row of the cohort was accepted; see `inflamrx validate` for why")
    y_all = derive_outcome(cohort, config.outcome)
    known = y_all.notna().to_numpy()
    cohort = cohort[known].reset_index(drop=True)
    y = y_all[known].astype(int).reset_index(drop=True)
    arms = check_arms(cohort, config.treatment)
    x = cohort[model_input_columns(list(cohort.columns), config.outcome)]
    return TwoArmCohort(
        cohort, x, y, arms, int((~known).sum()), data_digest(cohort), validated.synthetic
    )


def supported_learners(config: Config, data: TwoArmCohort) -> tuple[list[str], list[str]]:
    """The learners this cohort supports (simplest first), and why others are left out."""
    assert config.treatment is not None
    t = config.treatment
    asked: list[str] = list(SIMPLEST_FIRST) if t.learner == "auto" else [str(t.learner)]
    notes = []
    if data.arms.smaller < t.min_per_arm_for_learners:
        if asked != ["interaction"]:
            notes.append(
                f"small trial: {data.arms.smaller} patients in the smaller arm (below "
                f"treatment.min_per_arm_for_learners = {t.min_per_arm_for_learners}); only the "
                "interaction model with prespecified modifiers is fitted, as the data cannot "
                "support risk or tree models. Its intervals are wide: read them, not the point "
                "estimates"
            )
        return ["interaction"], notes
    if config.model.kind not in TREE_KINDS:
        tree = [name for name in asked if name not in ("interaction", "risk")]
        if tree:
            notes.append(
                f"model.kind {config.model.kind!r} is not a tree kind: {tree} left out "
                f"(meta-learners use {' or '.join(TREE_KINDS)}, missing values natively)"
            )
        asked = [name for name in asked if name in ("interaction", "risk")] or ["interaction"]
    return asked, notes


def folds_for(data: TwoArmCohort, n_folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Folds stratified on arm x outcome; when a combination is too rare for that (a small
    trial), on the outcome alone. Fewer folds than asked when a class is rare."""
    for strata in (data.strata, data.y.to_numpy()):
        n = min(n_folds, int(np.bincount(strata).min()))
        if n >= 2:
            splitter = StratifiedKFold(n_splits=n, shuffle=True, random_state=seed)
            return list(splitter.split(np.zeros(len(strata)), strata))
    raise InputError(
        "cross-fitting needs at least 2 responders and 2 non-responders; the data have "
        f"{int(data.y.sum())} responders among {len(data.y)} patients"
    )


def crossfit(config: Config, learner: str, data: TwoArmCohort) -> pd.DataFrame:
    """Out-of-fold predictions (treated, control, benefit) for every patient."""
    assert config.treatment is not None
    out = np.zeros((len(data.y), 3))
    for fit_idx, score_idx in folds_for(data, config.treatment.crossfit_folds, config.split.seed):
        part = data.subset(fit_idx)
        fitted = fit_benefit(config, learner, part.x, part.y, part.treated)
        out[score_idx] = fitted.predict(data.x.iloc[score_idx]).to_numpy()
    return pd.DataFrame(out, columns=[TREATED, CONTROL, BENEFIT])


def holdout_split(data: TwoArmCohort, config: Config) -> tuple[np.ndarray, np.ndarray]:
    """One stratified (arm x outcome) train/test split (treatment.validation: holdout)."""
    positions = np.arange(len(data.y))
    train, test = train_test_split(
        positions,
        test_size=config.split.test_size,
        stratify=data.strata,
        random_state=config.split.seed,
    )
    return np.sort(train), np.sort(test)
