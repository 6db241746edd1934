"""Train and evaluate: one split, cross-validation on the training part, one test evaluation,
everything tracked in MLflow and the fitted pipeline logged and registered."""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from sklearn.base import clone
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import (
    GroupKFold,
    GroupShuffleSplit,
    RepeatedStratifiedKFold,
    train_test_split,
)
from sklearn.pipeline import Pipeline

from inflamrx.config import Config, SplitConfig, flatten
from inflamrx.data.crp import CRP_RULE, crp_rule
from inflamrx.data.outcomes import derive_outcome, describe, never_features
from inflamrx.data.validate import ValidationResult, validate_cohort
from inflamrx.errors import InputError
from inflamrx.modeling.evaluate import Evaluation, evaluate_predictions, events_per_variable
from inflamrx.modeling.metrics import Estimate, bootstrap_metric_ci
from inflamrx.modeling.model import build_pipeline, model_input_columns

# MLflow, matplotlib and skops are imported where runs are logged, not here: tuning workers
# import this module for `prepare` alone and would pay seconds of start-up for nothing.
Progress = Callable[[str], None]
EVALUATION_ARTIFACTS = "evaluation"  # folder of the run's evaluation files (read by the report)
METRICS_TABLE_FILE = "metrics_table.csv"


@dataclass
class TrainResult:
    run_id: str
    model_uri: str
    registered_version: str | None
    outcome: str
    synthetic: bool
    n_train: int
    n_test: int
    n_rejected: int
    n_without_outcome: int
    cv_auroc: list[float]
    evaluation: Evaluation
    table: pd.DataFrame  # metric, model, CRP > 3 rule, CRP alone (point and 95% CI)
    test_patient_ids: list[str]  # in memory only (benchmarks); never logged
    warnings: list[str] = field(default_factory=list)
    report_uri: str | None = None  # the SHAP report logged to the run (report.enabled)

    @property
    def test_auroc(self) -> float:
        return float(self.evaluation.metrics.auroc.estimate)

    @property
    def test_auroc_ci(self) -> tuple[float, float]:
        auroc = self.evaluation.metrics.auroc
        return (float(auroc.ci_low), float(auroc.ci_high))

    def summary(self) -> dict[str, Any]:
        """The JSON the CLI prints with --json."""
        return {
            "run_id": self.run_id,
            "model_uri": self.model_uri,
            "registered_version": self.registered_version,
            "outcome": self.outcome,
            "synthetic": self.synthetic,
            "test_auroc": self.test_auroc,
            "test_auroc_ci": list(self.test_auroc_ci),
            "cv_auroc_mean": float(np.mean(self.cv_auroc)),
            "cv_auroc_sd": float(np.std(self.cv_auroc)),
            "n_train": self.n_train,
            "n_test": self.n_test,
            "n_rejected": self.n_rejected,
            "n_without_outcome": self.n_without_outcome,
            "metrics": self.evaluation.to_mlflow_metrics(),
            "warnings": self.warnings,
            "report_uri": self.report_uri,
        }


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


def cross_validate(
    pipeline: Pipeline, x: pd.DataFrame, y: pd.Series, groups: pd.Series | None, cfg: SplitConfig
) -> list[float]:
    """Repeated stratified (or grouped) CV AUROC on the training part only."""
    if groups is not None:
        n_groups = groups.nunique()
        if n_groups < 2:
            return []
        splits = GroupKFold(n_splits=min(cfg.cv_folds, n_groups)).split(x, y, groups)
    else:
        folds = max(2, min(cfg.cv_folds, int(min((y == 1).sum(), (y == 0).sum()))))
        splitter = RepeatedStratifiedKFold(
            n_splits=folds, n_repeats=cfg.cv_repeats, random_state=cfg.seed
        )
        splits = splitter.split(x, y)
    scores = []
    for fit_idx, score_idx in splits:
        if y.iloc[score_idx].nunique() < 2:
            continue  # a fold with one outcome class has no AUROC
        fitted = clone(pipeline).fit(x.iloc[fit_idx], y.iloc[fit_idx])
        scores.append(
            float(roc_auc_score(y.iloc[score_idx], fitted.predict_proba(x.iloc[score_idx])[:, 1]))
        )
    return scores


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


def check_feature_request(config: Config) -> None:
    banned = never_features(config.outcome)
    asked = sorted(set(config.features.include or []) & banned)
    if asked:
        raise InputError(
            f"features.include asks for {asked}, which are outcome or follow-up data for "
            f"'{describe(config.outcome)}'; they can never be features"
        )


def train(config: Config, progress: Progress | None = None) -> TrainResult:
    """Validate, split, cross-validate, fit, evaluate once on the test set, log and register."""
    say = progress or (lambda _msg: None)
    check_feature_request(config)
    say("validating the cohort")
    validated = validate_cohort(config.data)
    return train_on(validated, config, say)


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

    @property
    def x_train(self) -> pd.DataFrame:
        return self.x.iloc[self.train_idx]

    @property
    def y_train(self) -> pd.Series:
        return self.y.iloc[self.train_idx]

    @property
    def groups_train(self) -> pd.Series | None:
        return self.groups.iloc[self.train_idx] if self.groups is not None else None


def prepare(validated: ValidationResult, config: Config) -> PreparedCohort:
    """Derive the outcome, choose the input columns and split once, before any fitting."""
    cohort = validated.accepted
    if cohort.empty:
        raise InputError("no row of the cohort was accepted; see `inflamrx validate` for why")
    y_all = derive_outcome(cohort, config.outcome)
    known = y_all.notna().to_numpy()
    cohort, y = (
        cohort[known].reset_index(drop=True),
        y_all[known].astype(int).reset_index(drop=True),
    )
    x = cohort[model_input_columns(list(cohort.columns), config)]
    group_col = config.split.group_by
    if group_col is not None and group_col not in cohort:
        raise InputError(f"split.group_by is {group_col!r}, but the cohort has no such column")
    groups = cohort[group_col].fillna("unknown").astype(str) if group_col else None
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
    )


def log_job_inputs(data: PreparedCohort, config: Config, job: str) -> None:
    """Tags, flattened config and dataset lineage (digest and schema, no rows) of the active run."""
    import mlflow
    from mlflow.data.pandas_dataset import from_pandas

    from inflamrx.tracking.store import standard_tags

    mlflow.set_tags(
        standard_tags(data.digest, config.data.is_synthetic)
        | {"job": job, "outcome": describe(config.outcome)}
    )
    mlflow.log_params(flatten(config))
    dataset = from_pandas(
        data.x.assign(outcome=data.y),
        source=",".join(config.data.paths),
        targets="outcome",
        name="cohort",
        digest=data.digest,
    )
    mlflow.log_input(dataset, context="training")


def train_on(validated: ValidationResult, config: Config, say: Progress) -> TrainResult:
    from inflamrx.tracking.store import tracked_run, use_experiment

    data = prepare(validated, config)
    pipeline = build_pipeline(config)
    experiment_id = use_experiment(config.tracking.experiment)
    with tracked_run(experiment_id, run_name=f"train-{config.model.kind}") as run:
        log_job_inputs(data, config, job="train")
        say(f"cross-validating on {len(data.train_idx)} training patients")
        cv_scores = cross_validate(
            pipeline, data.x_train, data.y_train, data.groups_train, config.split
        )
        say("fitting the final pipeline")
        fitted = clone(pipeline).fit(data.x_train, data.y_train)
        return evaluate_and_log(run.info.run_id, fitted, data, validated, config, cv_scores, say)


def evaluate_and_log(
    run_id: str,
    fitted: Pipeline,
    data: PreparedCohort,
    validated: ValidationResult,
    config: Config,
    cv_scores: list[float],
    say: Progress,
) -> TrainResult:
    """Evaluate the fitted pipeline once on the held-out test set, log the evaluation to the
    active run, then log and register the model. Shared by ``train`` and ``tune``."""
    import mlflow

    from inflamrx.reporting.figures import save_evaluation_plots
    from inflamrx.serving.registry import log_pipeline

    test_idx = data.test_idx
    x_test, y_test = data.x.iloc[test_idx], data.y.iloc[test_idx]
    synthetic = config.data.is_synthetic  # read once: it opens the data's meta.json
    n_features = len(fitted.named_steps["features"].get_feature_names_out())

    say(f"evaluating once on {len(test_idx)} held-out patients")
    p_test = fitted.predict_proba(x_test)[:, 1]
    test_cohort = data.cohort.iloc[test_idx].reset_index(drop=True)
    crp = test_cohort["crp_mg_l"].to_numpy(dtype=float)
    evaluation = evaluate_predictions(
        y_test.to_numpy(),
        p_test,
        baseline_rule=crp_rule(crp),
        baseline_rule_name=CRP_RULE,
        subgroups={
            k: v for k, v in subgroups(test_cohort).items() if k in config.evaluation.subgroups
        },
        thresholds=tuple(config.evaluation.thresholds),
        n_boot=config.evaluation.n_bootstrap,
        seed=config.evaluation.seed,
    )
    baselines = crp_baselines(y_test.to_numpy(), crp, config)
    table = baseline_table(evaluation, baselines)
    epv = events_per_variable(data.y_train.to_numpy(), n_features)
    warnings = [w for w in [epv.warning, *evaluation.notes, *validated.warnings] if w]

    metrics = evaluation.to_mlflow_metrics() | {
        "n_train": float(len(data.train_idx)),
        "n_test": float(len(test_idx)),
        "n_rejected": float(len(validated.rejected)),
        "n_without_outcome": float(data.n_without_outcome),
        "events_per_variable": float(epv.epv),
    }
    if cv_scores:
        metrics |= {
            "cv_auroc_mean": float(np.mean(cv_scores)),
            "cv_auroc_sd": float(np.std(cv_scores)),
        }
    for name, est in baselines.items():
        key = f"baseline_{name}"
        metrics |= {key: est.estimate, f"{key}_ci_low": est.ci_low, f"{key}_ci_high": est.ci_high}
    mlflow.log_metrics({k: v for k, v in metrics.items() if np.isfinite(v)})
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        save_evaluation_plots(
            evaluation,
            folder,
            extra_roc={"CRP alone": (y_test.to_numpy(), crp)},
            cohort_label="SYNTHETIC cohort" if synthetic else None,
        )
        table.to_csv(folder / METRICS_TABLE_FILE, index=False)
        evaluation.to_frame().to_csv(folder / "metrics_detail.csv", index=False)
        (folder / "config.yaml").write_text(
            yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
        )
        (folder / "validation.json").write_text(
            json.dumps(_validation_counts(validated, data.n_without_outcome), indent=2)
        )
        mlflow.log_artifacts(str(folder), artifact_path=EVALUATION_ARTIFACTS)

    say("logging and registering the model")
    model_uri, version = log_pipeline(fitted, data.x_train, config, synthetic=synthetic)
    report_uri = None
    if config.report.enabled:
        from inflamrx.reporting.html import report_training_run  # matplotlib/shap only when needed

        say("writing the SHAP report on the held-out patients")
        report_training_run(
            run_id, model_uri, fitted, test_cohort, x_test, config, len(validated.rejected)
        )
        report_uri = mlflow.get_artifact_uri("explanations/report.html")
    return TrainResult(
        run_id=run_id,
        model_uri=model_uri,
        registered_version=version,
        outcome=describe(config.outcome),
        synthetic=synthetic,
        n_train=len(data.train_idx),
        n_test=len(test_idx),
        n_rejected=len(validated.rejected),
        n_without_outcome=data.n_without_outcome,
        cv_auroc=cv_scores,
        evaluation=evaluation,
        table=table,
        test_patient_ids=test_cohort["patient_id"].astype(str).tolist(),
        warnings=warnings,
        report_uri=report_uri,
    )


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
    return f"{est.estimate:.3f} ({est.ci_low:.3f}-{est.ci_high:.3f})"


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
            rule_text = f"{r[stat]:.3f} ({r[stat + '_ci_low']:.3f}-{r[stat + '_ci_high']:.3f})"
        for row in model_rows.itertuples(index=False):
            d = row._asdict()
            rows.append(
                (
                    f"{stat.upper() if len(stat) == 3 else stat.capitalize()} at p >= {d['threshold']:g}",
                    f"{d[stat]:.3f} ({d[stat + '_ci_low']:.3f}-{d[stat + '_ci_high']:.3f})",
                    rule_text,
                    "",
                )
            )
    return pd.DataFrame(rows, columns=["metric", "model", CRP_RULE, "CRP alone (score)"])


def _validation_counts(validated: ValidationResult, without_outcome: int) -> dict[str, Any]:
    # Counts only: no patient identifier leaves the process through the tracking store.
    return {
        "rows_in": validated.rows_in,
        "accepted": len(validated.accepted),
        "rejected": len(validated.rejected),
        "accepted_without_outcome": without_outcome,
        "rejection_reasons": {str(k): int(v) for k, v in validated.reason_counts().items()},
    }
