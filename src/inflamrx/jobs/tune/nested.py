"""The honest estimate of tuning: the best trial's score is optimistic (it won a contest on
those very folds), so the whole procedure is re-run inside nested cross-validation: each outer
fold runs its own in-memory study and scores its winner on the outer fold, which it never saw.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
from sklearn.metrics import roc_auc_score

from inflamrx.config import Config
from inflamrx.jobs.tune.search import (
    Objective,
    final_config,
    fold_splits,
    make_pruner,
    make_sampler,
)
from inflamrx.modeling.kinds.base import fit_model
from inflamrx.modeling.metrics import Estimate, bootstrap_metric_ci
from inflamrx.modeling.splits import PreparedCohort, Splits


@dataclass
class NestedFold:
    fold: int
    score: float  # the study's metric on this outer fold (AUROC; C-for-benefit for benefit)
    params: dict[str, Any]
    score_idx: list[int]
    p: list[float]  # the winner's predictions for the outer fold (probability; benefit)


@dataclass
class NestedEstimate:
    """Out-of-fold ``metric`` of the whole tuning procedure (search included)."""

    folds: list[NestedFold]
    pooled: Estimate  # the metric of the pooled out-of-fold predictions with its bootstrap CI
    metric: str = "auroc"  # names the summary's keys: nested_auroc, nested_c_for_benefit

    @property
    def fold_scores(self) -> list[float]:
        return [f.score for f in self.folds]

    def summary(self) -> dict[str, Any]:
        name = f"nested_{self.metric}"
        return {
            name: self.pooled.estimate,
            f"{name}_ci": [self.pooled.ci_low, self.pooled.ci_high],
            f"{name}_folds": self.fold_scores,
            f"{name}_fold_mean": float(np.mean(self.fold_scores)),
            f"{name}_fold_sd": float(np.std(self.fold_scores)),
        }


def outer_splits(data: PreparedCohort, config: Config) -> Splits:
    return fold_splits(
        data.y_train, data.groups_train, config.tuning.nested_folds, config.split.seed
    )


def nested_fold(data: PreparedCohort, config: Config, fold: int, n_trials: int) -> NestedFold:
    """One outer fold: a fresh in-memory study on the outer-training part, its winner refitted
    there and scored on the outer fold, which the study never saw."""
    x, y, groups = data.x_train, data.y_train, data.groups_train
    fit_idx, score_idx = outer_splits(data, config)[fold]
    inner_groups = groups.iloc[fit_idx] if groups is not None else None
    inner = fold_splits(y.iloc[fit_idx], inner_groups, config.tuning.cv_folds, config.split.seed)
    study = optuna.create_study(
        direction="maximize",
        sampler=make_sampler(config.tuning.seed, worker=fold + 1),
        pruner=make_pruner(config, len(inner)),
    )
    study.optimize(
        Objective(config, x.iloc[fit_idx], y.iloc[fit_idx], inner),
        n_trials=n_trials,
        catch=(Exception,),
    )
    try:
        best = study.best_trial
    except ValueError:
        raise RuntimeError(f"no trial of nested fold {fold} completed") from None
    fitted = fit_model(final_config(config, best), x.iloc[fit_idx], y.iloc[fit_idx])
    p = fitted.probability(x.iloc[score_idx])
    return NestedFold(
        fold=fold,
        score=float(roc_auc_score(y.iloc[score_idx], p)),
        params=dict(best.params),
        score_idx=[int(i) for i in score_idx],
        p=[float(v) for v in p],
    )


def pool_nested(folds: list[NestedFold], data: PreparedCohort, config: Config) -> NestedEstimate:
    idx = np.concatenate([f.score_idx for f in folds])
    p = np.concatenate([f.p for f in folds])
    boot = bootstrap_metric_ci(
        data.y_train.to_numpy()[idx],
        p,
        n_boot=config.evaluation.n_bootstrap,
        seed=config.evaluation.seed,
    )
    return NestedEstimate(folds=sorted(folds, key=lambda f: f.fold), pooled=boot.auroc)
