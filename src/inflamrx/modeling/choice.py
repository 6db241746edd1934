"""``model.kind: auto``: the candidate kinds are validated on the same resamples and one is kept
by a stated rule.

Rule: take the candidate with the best corrected AUROC; then keep the simplest candidate
(logistic < histgb < xgboost, the order of ``model.candidates``) whose out-of-sample AUROC is
not distinguishable from the best one's: the 95% CI of the paired difference (best minus it,
percentile bootstrap over patients of their out-of-sample predictions) includes 0. Choosing
among few candidates on the same data adds a little optimism of its own, not corrected here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from inflamrx.config import MODEL_CONFIGS, Config
from inflamrx.modeling.kinds.base import kind_of
from inflamrx.modeling.metrics import bootstrap_weights, percentile_ci, weighted_auroc
from inflamrx.modeling.validation import Resampled, resample

RULE = (
    "best corrected AUROC, unless a simpler kind's out-of-sample AUROC is within the 95% CI "
    "of the paired difference; then the simplest such kind"
)


def candidate_config(config: Config, kind: str) -> Config:
    """``config`` with the model section of candidate ``kind`` (its small-sample settings)."""
    model = MODEL_CONFIGS[kind](seed=config.model.seed, **kind_of(kind).small_sample)
    return config.model_copy(update={"model": model})


@dataclass(frozen=True)
class Choice:
    chosen: Resampled
    config: Config  # the chosen candidate's config
    table: pd.DataFrame  # one row per candidate


def compare(config: Config, x: pd.DataFrame, y: pd.Series, n_boot: int, seed: int) -> Choice:
    """Validate every candidate of an ``auto`` config on the same resamples; keep one."""
    kinds: list[str] = list(getattr(config.model, "candidates", [config.model.kind]))
    found = [resample(candidate_config(config, k), x, y) for k in kinds]
    best = int(np.argmax([f.corrected["auroc"] for f in found]))
    yv = y.to_numpy()
    seen = np.all([np.isfinite(f.p_out_of_sample) for f in found], axis=0)
    w = bootstrap_weights(int(seen.sum()), n_boot, seed)
    ys = yv[seen]
    ok = (w @ ys > 0) & (w @ ys < seen.sum())
    w = w[ok]
    best_oos = found[best].p_out_of_sample[seen]
    rows, chosen = [], None
    for i, f in enumerate(found):
        p = f.p_out_of_sample[seen]
        point = float(weighted_auroc(ys, best_oos, np.ones((1, len(ys))))[0]) - float(
            weighted_auroc(ys, p, np.ones((1, len(ys))))[0]
        )
        diff = percentile_ci(
            point, weighted_auroc(ys, best_oos, w) - weighted_auroc(ys, p, w), 0.05
        )
        close = i == best or diff.ci_low <= 0
        if chosen is None and close:
            chosen = i
        rows.append(
            {
                "kind": f.kind,
                "auroc": f.corrected["auroc"],
                "calibration_slope": f.corrected["calibration_slope"],
                "brier": f.corrected["brier"],
                "optimism_auroc": f.optimism["auroc"],
                "best_minus_this_auroc": point,
                "difference_ci_low": diff.ci_low,
                "difference_ci_high": diff.ci_high,
            }
        )
    assert chosen is not None  # the best one is always close to itself
    table = pd.DataFrame(rows)
    table["chosen"] = [i == chosen for i in range(len(found))]
    return Choice(found[chosen], candidate_config(config, kinds[chosen]), table)
