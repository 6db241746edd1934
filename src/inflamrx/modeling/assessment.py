"""What a fitted model is worth on patients it never saw: the evaluation on the held-out test
set (holdout, site) or by resampling every patient (resample), beside the CRP > 3 mg/L rule and
CRP alone on the same patients, Riley et al.'s sample size criteria, and the warnings they
raise. Computation only: the jobs log and report it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pandas as pd

from inflamrx.config import Config
from inflamrx.data.crp import CRP_RULE, crp_rule
from inflamrx.modeling.evaluate import Evaluation, evaluate_predictions
from inflamrx.modeling.kinds.base import FittedModel
from inflamrx.modeling.metrics import Estimate, bootstrap_metric_ci, with_ci
from inflamrx.modeling.samplesize import SampleSize, riley_criteria
from inflamrx.modeling.splits import PreparedCohort
from inflamrx.modeling.validation import (
    Resampled,
    caveat,
    corrected_metrics,
    describe_method,
    with_corrected,
)

HOLDOUT_METHOD = "held-out test set; 95% CIs: percentile bootstrap over its patients"
SITE_METHOD = "held-out sites as the test set; 95% CIs: percentile bootstrap over its patients"


@dataclass(frozen=True)
class Assessment:
    """The validation of one fitted model, with the CRP baselines beside it."""

    evaluation: Evaluation
    baselines: dict[str, Estimate]  # CRP alone and the CRP > 3 mg/L rule, same patients
    table: pd.DataFrame  # metric, model, CRP > 3 rule, CRP alone (point and 95% CI)
    sample_size: SampleSize
    y_test: np.ndarray  # the patients evaluated: the test set, or every patient (resample)
    crp_test: np.ndarray
    validation: str  # holdout, site, resample-bootstrap or resample-cv
    method: str  # how the figures were obtained, one sentence

    @property
    def warnings(self) -> list[str]:
        size = [] if self.sample_size.met else [self.sample_size.text()]
        return [*size, *self.evaluation.notes]


def sample_size(model: FittedModel, y: pd.Series, c_statistic: float) -> SampleSize:
    """Riley et al.'s criteria for the patients ``model`` was fitted on."""
    return riley_criteria(
        len(y),
        int(y.sum()),
        model.n_parameters,
        c_statistic=c_statistic if np.isfinite(c_statistic) and c_statistic > 0.5 else None,
    )


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
    site = config.split.strategy == "site"
    return Assessment(
        evaluation=evaluation,
        baselines=baselines,
        table=baseline_table(evaluation, baselines),
        sample_size=sample_size(model, data.y_train, evaluation.metrics.auroc.estimate),
        y_test=y_test,
        crp_test=crp,
        validation="site" if site else "holdout",
        method=SITE_METHOD if site else HOLDOUT_METHOD,
    )


def assess_resampled(
    found: Resampled, data: PreparedCohort, config: Config, recalibration: str | None = None
) -> Assessment:
    """The resampling validation of a model fitted on every patient: corrected headline
    metrics, and curves, thresholds and subgroups from out-of-sample predictions; the CRP
    baselines on every patient (nothing is fitted for them, so nothing to correct)."""
    e = config.evaluation
    y = data.y.to_numpy()
    seen = np.isfinite(found.p_out_of_sample)  # bootstrap: a patient in every resample has none
    cohort = data.cohort[seen].reset_index(drop=True)
    crp = data.cohort["crp_mg_l"].to_numpy(dtype=float)
    prevalence = float(y.mean())
    # Chosen from the final fit's own predictions, before any out-of-sample outcome is seen.
    thresholds = reported_thresholds(e.thresholds, prevalence, found.fitted.probability(data.x))
    out_of_sample = evaluate_predictions(
        y[seen],
        found.p_out_of_sample[seen],
        baseline_rule=crp_rule(crp[seen]),
        baseline_rule_name=CRP_RULE,
        subgroups={k: v for k, v in subgroups(cohort).items() if k in e.subgroups},
        thresholds=thresholds,
        dca_thresholds=decision_curve_thresholds(prevalence),
        n_boot=e.n_bootstrap,
        seed=e.seed,
    )
    metrics = corrected_metrics(found, y, e.n_bootstrap, e.seed)
    evaluation = with_corrected(out_of_sample, metrics)
    extra = tuple(n for n in (recalibration, caveat(found)) if n)
    evaluation = dataclasses.replace(evaluation, notes=(*evaluation.notes, *extra))
    if not seen.all():
        note = f"{int((~seen).sum())} patient(s) were in every bootstrap sample: no out-of-bag prediction"
        evaluation = dataclasses.replace(evaluation, notes=(*evaluation.notes, note))
    baselines = crp_baselines(y, crp, config)
    return Assessment(
        evaluation=evaluation,
        baselines=baselines,
        table=baseline_table(evaluation, baselines),
        sample_size=sample_size(found.fitted, data.y, metrics.auroc.estimate),
        y_test=y,
        crp_test=crp,
        validation=f"resample-{found.method}",
        method=describe_method(found, e.n_bootstrap),
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
