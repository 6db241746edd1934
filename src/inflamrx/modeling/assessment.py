"""What a fitted model is worth on patients it never saw: the evaluation on the held-out test
set beside the CRP > 3 mg/L rule and CRP alone, events per variable, and the warnings they
raise. Computation only: the jobs log and report it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from inflamrx.config import Config
from inflamrx.data.crp import CRP_RULE, crp_rule
from inflamrx.modeling.evaluate import (
    Evaluation,
    EventsPerVariable,
    evaluate_predictions,
    events_per_variable,
)
from inflamrx.modeling.kinds.base import FittedModel
from inflamrx.modeling.metrics import Estimate, bootstrap_metric_ci, with_ci
from inflamrx.modeling.splits import PreparedCohort


@dataclass(frozen=True)
class Assessment:
    """The test-set evaluation of one fitted model, with the CRP baselines beside it."""

    evaluation: Evaluation
    baselines: dict[str, Estimate]  # CRP alone and the CRP > 3 mg/L rule, same patients
    table: pd.DataFrame  # metric, model, CRP > 3 rule, CRP alone (point and 95% CI)
    epv: EventsPerVariable
    y_test: np.ndarray
    crp_test: np.ndarray
    # How the evaluation was obtained: the one name tags, descriptions and reports quote.
    validation: str = "held-out test set"

    @property
    def warnings(self) -> list[str]:
        return [w for w in [self.epv.warning, *self.evaluation.notes] if w]


def assess(model: FittedModel, data: PreparedCohort, config: Config) -> Assessment:
    """Evaluate ``model`` once on the held-out test patients of ``data``."""
    test_cohort = data.test_cohort
    y_test = data.y.iloc[data.test_idx].to_numpy()
    p_test = model.probability(data.x.iloc[data.test_idx])
    prevalence = float(data.y_train.mean())
    thresholds = reported_thresholds(
        config.evaluation.thresholds, prevalence, model.probability(data.x_train)
    )
    crp = test_cohort["crp_mg_l"].to_numpy(dtype=float)
    evaluation = evaluate_predictions(
        y_test,
        p_test,
        baseline_rule=crp_rule(crp),
        baseline_rule_name=CRP_RULE,
        subgroups={
            k: v for k, v in subgroups(test_cohort).items() if k in config.evaluation.subgroups
        },
        thresholds=thresholds,
        dca_thresholds=decision_curve_thresholds(prevalence),
        n_boot=config.evaluation.n_bootstrap,
        seed=config.evaluation.seed,
    )
    baselines = crp_baselines(y_test, crp, config)
    return Assessment(
        evaluation=evaluation,
        baselines=baselines,
        table=baseline_table(evaluation, baselines),
        epv=events_per_variable(data.y_train.to_numpy(), len(model.feature_names)),
        y_test=y_test,
        crp_test=crp,
    )


def reported_thresholds(
    configured: list[float] | None, prevalence: float, p_train: np.ndarray
) -> tuple[float, ...]:
    """Probabilities at which sensitivity, PPV... are reported: the config's, or 1, 1.5 and 2
    times the outcome's prevalence in the training part, keeping those that flag at least 5%
    of the training patients (a threshold nobody reaches reports PPV 0/0). Chosen before the
    test set is looked at; the served decision threshold is ``serving.threshold``."""
    if configured is not None:
        return tuple(configured)
    candidates = sorted({round(f * prevalence, 2) for f in (1.0, 1.5, 2.0)})
    kept = [t for t in candidates if 0 < t < 1 and float(np.mean(p_train >= t)) >= 0.05]
    return tuple(kept) or (float(np.clip(round(prevalence, 2), 0.01, 0.99)),)


def decision_curve_thresholds(prevalence: float) -> tuple[float, ...]:
    """The decision curve from a third of the prevalence to 30 points above it (1% steps):
    the range where a decision at this prevalence is made (0.05-0.60 hides a 9% outcome)."""
    low = max(1, round(100 * prevalence / 3))
    high = min(95, max(low + 10, round(100 * prevalence) + 30))
    return tuple(k / 100 for k in range(low, high + 1))


def subgroups(cohort: pd.DataFrame) -> dict[str, np.ndarray]:
    """Clinical subgroups for subgroup AUROC: sex, age band, TRD, site (where present)."""
    out: dict[str, np.ndarray] = {"sex": cohort["sex"].astype(str).to_numpy()}
    out["age_band"] = (
        pd.cut(cohort["age"], [0, 40, 60, np.inf], right=False, labels=["<40", "40-59", ">=60"])
        .astype(str)
        .to_numpy()
    )
    if "n_failed_antidepressants" in cohort:
        failed = cohort["n_failed_antidepressants"]
        out["trd"] = np.where(failed.isna(), "unknown", np.where(failed >= 2, "TRD", "not TRD"))
    if "site" in cohort and cohort["site"].notna().any():
        out["site"] = cohort["site"].fillna("unknown").astype(str).to_numpy()
    return out


def crp_baselines(y: np.ndarray, crp: np.ndarray, config: Config) -> dict[str, Estimate]:
    """AUROC/AUPRC of CRP alone as a score (rank-based), and AUROC of the CRP > 3 rule."""
    boot = {"n_boot": config.evaluation.n_bootstrap, "seed": config.evaluation.seed}
    alone = bootstrap_metric_ci(y, crp / (1.0 + crp), **boot)  # monotone map: same ranks as CRP
    rule = bootstrap_metric_ci(y, crp_rule(crp).astype(float), **boot)
    return {
        "crp_alone_auroc": alone.auroc,
        "crp_alone_auprc": alone.auprc,
        "crp_rule_auroc": rule.auroc,
    }


def _fmt(est: Estimate) -> str:
    return with_ci(est.estimate, est.ci_low, est.ci_high)


def baseline_table(evaluation: Evaluation, base: dict[str, Estimate]) -> pd.DataFrame:
    """The model beside the CRP > 3 mg/L rule and CRP alone, on the same test patients."""
    m = evaluation.metrics
    rule = evaluation.threshold_table
    rule = rule[rule["classifier_kind"] == "rule"].head(1)
    rows = [
        ("AUROC", _fmt(m.auroc), _fmt(base["crp_rule_auroc"]), _fmt(base["crp_alone_auroc"])),
        ("AUPRC", _fmt(m.auprc), "", _fmt(base["crp_alone_auprc"])),
        ("Brier score", _fmt(m.brier), "", ""),
        ("Calibration intercept", _fmt(m.calibration_intercept), "", ""),
        ("Calibration slope", _fmt(m.calibration_slope), "", ""),
    ]
    model_rows = evaluation.threshold_table[
        evaluation.threshold_table["classifier_kind"] == "model"
    ]
    for stat in ("sensitivity", "specificity", "ppv", "npv"):
        rule_text = ""
        if not rule.empty:
            r = rule.iloc[0]
            rule_text = with_ci(r[stat], r[stat + "_ci_low"], r[stat + "_ci_high"])
        for row in model_rows.itertuples(index=False):
            d = row._asdict()
            rows.append(
                (
                    f"{stat.upper() if len(stat) == 3 else stat.capitalize()} at p >= {d['threshold']:g}",
                    with_ci(d[stat], d[stat + "_ci_low"], d[stat + "_ci_high"]),
                    rule_text,
                    "",
                )
            )
    return pd.DataFrame(rows, columns=["metric", "model", CRP_RULE, "CRP alone (score)"])
