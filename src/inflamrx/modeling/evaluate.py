"""Honest clinical evaluation of predicted probabilities on a held-out test set.

``evaluate_predictions`` measures one test set (labels ``y`` 0/1, predicted probabilities
``p``) with the metrics of :mod:`inflamrx.modeling.metrics`: confidence intervals for AUROC,
AUPRC, Brier score and the calibration intercept/slope are bootstrap percentile intervals from
one shared set of resamples; proportions at a threshold (sensitivity, specificity, PPV, NPV)
get Wilson score intervals. Subgroup AUROCs and notes on suspicious
results complete it.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from sklearn.metrics import precision_recall_curve, roc_curve

from inflamrx.modeling.metrics import (
    DEFAULT_DCA_THRESHOLDS,
    BoolArray,
    BootstrapResult,
    Estimate,
    bootstrap_metric_ci,
    bootstrap_weights,
    calibration_bins,
    check_alpha,
    check_both_classes,
    check_rule,
    check_same_length,
    check_thresholds,
    check_y_p,
    decision_curve,
    lowess_calibration,
    net_benefit_from_counts,
    percentile_ci,
    weighted_auroc,
    wilson_interval,
)

DEFAULT_THRESHOLDS: tuple[float, ...] = (0.2, 0.3, 0.4, 0.5)
MIN_SUBGROUP_SIZE = 10
# Subgroup keys: two slugs of at most SLUG_MAX characters and an optional hash, 99 characters
# at most, so with a suffix ("_auroc_ci_high") and a prefix they stay within MLflow's 250.
SLUG_MAX = 40
HASH_LENGTH = 8
# Above this on real clinical data leakage is likelier than discovery (see ENGINEERING.md).
SUSPICIOUS_AUROC = 0.85
# Validation studies need about 100 events for usable precision (Collins et al., 2016).
MIN_VALIDATION_EVENTS = 100


# --------------------------------------------------------------------------- result types


@dataclass(frozen=True, eq=False)
class Evaluation:
    """Everything measured on one test set. Holds aggregates only, never patient rows.

    Tables (one row per item, plain columns) are DataFrames; the plots read them directly.
    """

    n: int
    n_events: int
    metrics: BootstrapResult
    roc_curve: pd.DataFrame  # false_positive_rate, sensitivity
    pr_curve: pd.DataFrame  # sensitivity, ppv
    calibration_bins: pd.DataFrame
    calibration_smooth: pd.DataFrame  # predicted, observed
    threshold_table: pd.DataFrame
    decision_curve: pd.DataFrame
    subgroups: pd.DataFrame
    rule_name: str | None
    notes: tuple[str, ...]

    @property
    def prevalence(self) -> float:
        return self.n_events / self.n

    def to_mlflow_metrics(self, prefix: str = "test_") -> dict[str, float]:
        """Flat ``{name: float}`` for ``mlflow.log_metrics``; non-finite values are left out."""
        out: dict[str, float] = {}

        def put(key: str, value: float) -> None:
            key = prefix + key
            if key in out:
                raise ValueError(
                    f"Metric key {key!r} occurs twice; thresholds must differ in their first "
                    "6 significant digits."
                )
            if math.isfinite(value):
                out[key] = float(value)

        put("n", self.n)
        put("events", self.n_events)
        put("prevalence", self.prevalence)
        m = self.metrics
        for name, _, est in m.headline():
            put(name, est.estimate)
            put(f"{name}_ci_low", est.ci_low)
            put(f"{name}_ci_high", est.ci_high)
        put("bootstrap_n", m.n_boot)
        put("bootstrap_skipped_single_class", m.n_skipped_single_class)
        proportions = ("sensitivity", "specificity", "ppv", "npv")
        for row in _records(self.threshold_table):
            kind, at = row["classifier_kind"], f"at_{_slug(format(row['threshold'], 'g'))}"
            put(f"{kind}_net_benefit_{at}", row["net_benefit"])
            # Treat-all has sensitivity 1 and specificity 0 by definition: nothing to log.
            if kind == "model":
                for col in proportions:
                    put(f"model_{col}_{at}", row[col])
        # A fixed rule's proportions do not depend on the threshold: log them once.
        for row in _records(self.threshold_table.query("classifier_kind == 'rule'").head(1)):
            for col in proportions:
                put(f"rule_{col}", row[col])
        rows = _records(self.subgroups)
        keys = subgroup_keys([(str(r["variable"]), str(r["level"])) for r in rows])
        for row, key in zip(rows, keys, strict=True):
            put(f"{key}_n", row["n"])
            put(f"{key}_events", row["events"])
            put(f"{key}_auroc", row["auroc"])
            put(f"{key}_auroc_ci_low", row["ci_low"])
            put(f"{key}_auroc_ci_high", row["ci_high"])
        return out

    def to_frame(self) -> pd.DataFrame:
        """Tidy table of every metric with its interval: one row per (metric, scope)."""
        boot = f"bootstrap percentile ({self.metrics.n_boot} resamples)"
        rows: list[dict[str, object]] = []
        for _, label, est in self.metrics.headline():
            rows.append(_row(label, "overall", est.estimate, est.ci_low, est.ci_high, boot, self.n))
        for r in _records(self.threshold_table):
            scope = f"{r['classifier']} at threshold {r['threshold']:g}"
            for col, label, n in [
                ("sensitivity", "Sensitivity", r["tp"] + r["fn"]),
                ("specificity", "Specificity", r["tn"] + r["fp"]),
                ("ppv", "PPV", r["tp"] + r["fp"]),
                ("npv", "NPV", r["tn"] + r["fn"]),
            ]:
                low, high = r[f"{col}_ci_low"], r[f"{col}_ci_high"]
                rows.append(_row(label, scope, r[col], low, high, "Wilson", n))
            rows.append(_row("Net benefit", scope, r["net_benefit"], np.nan, np.nan, "", self.n))
        for r in _records(self.subgroups):
            scope = f"{r['variable']} = {r['level']}"
            rows.append(
                _row("AUROC", scope, r["auroc"], r["ci_low"], r["ci_high"], boot, r["n"], r["note"])
            )
        return pd.DataFrame(rows)


def _row(
    metric: str,
    scope: str,
    estimate: float,
    low: float,
    high: float,
    method: str,
    n: int,
    note: str = "",
) -> dict[str, object]:
    return {
        "metric": metric,
        "scope": scope,
        "estimate": float(estimate),
        "ci_low": float(low),
        "ci_high": float(high),
        "ci_method": method,
        "n": int(n),
        "note": note,
    }


def _records(table: pd.DataFrame) -> list[dict[str, Any]]:
    return [{str(k): v for k, v in row.items()} for row in table.to_dict("records")]


def _slug(text: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", text.lower()).strip("_")


def subgroup_keys(pairs: Sequence[tuple[str, str]]) -> list[str]:
    """``subgroup_<variable>_<level>`` per distinct (variable, level): unique, [a-z0-9_] only,
    99 characters at most.

    Levels are free text (a site's name) and become MLflow metric names, so each part is a slug
    cut to ``SLUG_MAX`` characters. A key whose slug was cut or is empty, or that equals another
    key, ends in a hash of its raw values: no silent merge, no run failing on a long name.
    """
    plain, hashed, use_hash = [], [], []
    for variable, level in pairs:
        v, lv = _slug(variable), _slug(level)
        key = "_".join(["subgroup", *filter(None, (s[:SLUG_MAX].rstrip("_") for s in (v, lv)))])
        digest = hashlib.sha256("\0".join([variable, level]).encode()).hexdigest()
        plain.append(key)
        hashed.append(f"{key}_{digest[:HASH_LENGTH]}")
        use_hash.append(not v or not lv or len(v) > SLUG_MAX or len(lv) > SLUG_MAX)
    while True:
        keys = [h if u else k for k, h, u in zip(plain, hashed, use_hash, strict=True)]
        counts = Counter(keys)
        # A plain key that meets another key takes its hash; repeat, since that may meet a
        # plain key in turn (a level ending in 8 hex digits). Each round hashes one more key.
        clash = [counts[k] > 1 and not u for k, u in zip(keys, use_hash, strict=True)]
        if not any(clash):
            return keys
        use_hash = [u or c for u, c in zip(use_hash, clash, strict=True)]


# --------------------------------------------------------------------------- thresholds


def classification_at_thresholds(
    y: npt.ArrayLike,
    p: npt.ArrayLike,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    *,
    rule: npt.ArrayLike | None = None,
    rule_name: str = "rule",
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Counts, sensitivity, specificity, PPV, NPV (Wilson CIs) and net benefit per threshold.

    One row per threshold for the model (positive means p >= threshold), for treat-all, and
    for the fixed ``rule`` if given. The rule's counts do not depend on the threshold, but
    its net benefit does, so it is repeated per threshold to make the comparison direct.
    """
    y_arr, p_arr = check_y_p(y, p)
    pts = check_thresholds(thresholds, "thresholds")
    alpha = check_alpha(alpha)
    candidates: list[tuple[str, str, BoolArray | None]] = [
        ("model", "model", None),
        ("treat all", "treat_all", np.ones(len(y_arr), dtype=bool)),
    ]
    if rule is not None:
        rule_arr = check_rule(rule, "rule")
        check_same_length(y_arr, rule_arr, "rule")
        candidates.append((rule_name, "rule", rule_arr))
    rows = []
    for pt in pts:
        for name, kind, fixed in candidates:
            pos = p_arr >= pt if fixed is None else fixed
            tp, fp = int(np.sum(pos & (y_arr == 1))), int(np.sum(pos & (y_arr == 0)))
            fn, tn = int(np.sum(~pos & (y_arr == 1))), int(np.sum(~pos & (y_arr == 0)))
            row: dict[str, object] = {
                "classifier": name,
                "classifier_kind": kind,
                "threshold": float(pt),
                "tp": tp,
                "fp": fp,
                "tn": tn,
                "fn": fn,
            }
            for col, k, m in [
                ("sensitivity", tp, tp + fn),
                ("specificity", tn, tn + fp),
                ("ppv", tp, tp + fp),
                ("npv", tn, tn + fn),
            ]:
                low, high = wilson_interval(k, m, alpha)
                row[col] = k / m if m else np.nan
                row[f"{col}_ci_low"], row[f"{col}_ci_high"] = float(low), float(high)
            row["net_benefit"] = net_benefit_from_counts(tp, fp, len(y_arr), pt)
            rows.append(row)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- subgroups


def subgroup_auroc(
    y: npt.ArrayLike,
    p: npt.ArrayLike,
    subgroups: Mapping[str, npt.ArrayLike],
    *,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    min_size: int = MIN_SUBGROUP_SIZE,
) -> pd.DataFrame:
    """AUROC with bootstrap CI per level of each subgroup variable (missing labels: 'missing').

    A level with fewer than ``min_size`` rows or one outcome class gets NaN and a ``note``;
    it never raises, because small subgroups are expected and must still be reported.
    """
    y_arr, p_arr = check_y_p(y, p)
    rows = []
    for variable, labels in subgroups.items():
        values = pd.Series(np.asarray(labels, dtype=object))
        check_same_length(y_arr, values.to_numpy(), f"subgroups[{variable!r}]")
        levels = values.astype(str).where(values.notna(), "missing")
        for level in sorted(levels.unique()):
            mask = (levels == level).to_numpy()
            yy, pp = y_arr[mask], p_arr[mask]
            events = int(yy.sum())
            note, est = "", Estimate(np.nan, np.nan, np.nan, 0)
            if len(yy) < min_size:
                note = f"fewer than {min_size} rows"
            elif events in (0, len(yy)):
                note = "only one outcome class"
            else:
                w = bootstrap_weights(len(yy), n_boot, seed)
                point = float(weighted_auroc(yy, pp, np.ones((1, len(yy))))[0])
                est = percentile_ci(point, weighted_auroc(yy, pp, w), alpha)
                if est.n_resamples < n_boot:
                    note = f"{n_boot - est.n_resamples} single-class resamples skipped"
            rows.append(
                {
                    "variable": variable,
                    "level": level,
                    "n": len(yy),
                    "events": events,
                    "non_events": len(yy) - events,
                    "auroc": est.estimate,
                    "ci_low": est.ci_low,
                    "ci_high": est.ci_high,
                    "note": note,
                }
            )
    columns = ["variable", "level", "n", "events", "non_events", "auroc", "ci_low", "ci_high"]
    return pd.DataFrame(rows, columns=[*columns, "note"])


# --------------------------------------------------------------------------- entry point


def evaluate_predictions(
    y: npt.ArrayLike,
    p: npt.ArrayLike,
    *,
    baseline_rule: npt.ArrayLike | None = None,
    baseline_rule_name: str = "baseline rule",
    subgroups: Mapping[str, npt.ArrayLike] | None = None,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    dca_thresholds: Sequence[float] = DEFAULT_DCA_THRESHOLDS,
    n_bins: int = 10,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> Evaluation:
    """Evaluate predicted probabilities ``p`` against outcomes ``y`` on a held-out test set.

    ``baseline_rule`` is a boolean array (e.g. ``crp > 3``) compared with the model at each
    threshold and on the decision curve. ``subgroups`` maps a name to one label per row.
    Choose ``thresholds`` on clinical grounds before looking at the test set.
    """
    y_arr, p_arr = check_y_p(y, p)
    check_both_classes(y_arr)
    check_thresholds(dca_thresholds, "dca_thresholds")
    rule = None
    if baseline_rule is not None:
        rule = check_rule(baseline_rule, "baseline_rule")
        check_same_length(y_arr, rule, "baseline_rule")

    metrics = bootstrap_metric_ci(y_arr, p_arr, n_boot=n_boot, seed=seed, alpha=alpha)
    fpr, tpr, _ = roc_curve(y_arr, p_arr)
    precision, recall, _ = precision_recall_curve(y_arr, p_arr)

    notes = []
    if metrics.auroc.estimate > SUSPICIOUS_AUROC:
        notes.append(
            f"AUROC {metrics.auroc.estimate:.2f} is above {SUSPICIOUS_AUROC}: on real clinical "
            "data check for leakage (follow-up measurements, duplicated patients) first."
        )
    if int(y_arr.sum()) < MIN_VALIDATION_EVENTS:
        notes.append(
            f"Only {int(y_arr.sum())} events in the test set (< {MIN_VALIDATION_EVENTS}): "
            "calibration and threshold metrics are imprecise."
        )
    if not math.isfinite(metrics.calibration_slope.estimate):
        notes.append(
            "Calibration slope not estimable: the predictions separate the outcomes perfectly."
        )
    if metrics.n_skipped_single_class:
        notes.append(f"{metrics.n_skipped_single_class} single-class bootstrap resamples skipped.")

    return Evaluation(
        n=len(y_arr),
        n_events=int(y_arr.sum()),
        metrics=metrics,
        roc_curve=pd.DataFrame({"false_positive_rate": fpr, "sensitivity": tpr}),
        pr_curve=pd.DataFrame({"sensitivity": recall, "ppv": precision}),
        calibration_bins=calibration_bins(y_arr, p_arr, n_bins, alpha),
        calibration_smooth=lowess_calibration(y_arr, p_arr),
        threshold_table=classification_at_thresholds(
            y_arr, p_arr, thresholds, rule=rule, rule_name=baseline_rule_name, alpha=alpha
        ),
        decision_curve=decision_curve(y_arr, p_arr, rule=rule, thresholds=dca_thresholds),
        subgroups=subgroup_auroc(
            y_arr, p_arr, subgroups or {}, n_boot=n_boot, seed=seed, alpha=alpha
        ),
        rule_name=baseline_rule_name if rule is not None else None,
        notes=tuple(notes),
    )
