"""The report of ``inflamrx explain`` on a two-arm benefit model: what drives each patient's
predicted benefit of the drug over placebo.

Contributions are SHAP values of the predicted benefit on the scale the served
``top_factors`` use (the learner's ``scale``, ``kinds.benefit.scale_of``): the log odds ratio,
drug vs placebo (interaction, risk and T-learner: the drug arm's log-odds explanation minus
the placebo arm's), or the risk difference (X- and DR-learner: TreeSHAP of their effect
models). Base value + contributions = the patient's benefit on that scale, exactly (checked
by ``modeling.explanations.contributions``). Sections: cohort summary, the model and its
validation (as its training run logged it), the scale, global importance, beeswarm, predicted
benefit and the CRP and IL-6 contributions against the markers, per-patient benefit waterfalls
and caveats. The page, SHAP table and figures are written as the single-arm report's are
(same helpers); no identifier appears in the page or on a figure.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from inflamrx.config import ReportConfig
from inflamrx.modeling.benefit.learners import LOG_ODDS_RATIO
from inflamrx.modeling.explanations import Explanation, global_importance, strongest_partner
from inflamrx.modeling.kinds.benefit import BENEFIT, CONTROL, TREATED
from inflamrx.reporting.benefit import (
    BENEFIT_PLOT_FILES,
    CAVEAT,
    MARKERS,
    BenefitWaterfalls,
    benefit_marker_figure,
    scale_words,
    waterfalls_html,
)
from inflamrx.reporting.html import (
    FIGURE_DIR,
    REPORT_FILE,
    SYNTHETIC_BANNER,
    TABLE_FILE,
    ModelValidation,
    ReportContext,
    ReportFiles,
    _img,
    _p,
    _png,
    _sample,
    _section,
    _table,
    dependence_features,
    example_patients,
    page,
)
from inflamrx.reporting.shap_figures import (
    TOP_FEATURES,
    beeswarm_figure,
    dependence_figure,
    importance_figure,
)

SECTIONS = ("summary", "model", "scale", "importance", "beeswarm", "markers", "patients", "caveats")
EXPLAINED = "explained_benefit"  # the SHAP table's column: base + contributions, on the scale
# The training run's benefit figures shown beside its metrics (file name: caption).
VALIDATION_IMAGES = {
    BENEFIT_PLOT_FILES["benefit_calibration"]: "Calibration for benefit",
    BENEFIT_PLOT_FILES["qini"]: "Qini curve",
    BENEFIT_PLOT_FILES["benefit_decision_curve"]: "Decision curve for treatment benefit",
}
# The training run's benefit metrics the report tabulates (metric name: words).
VALIDATION_METRICS = {
    "c_for_benefit": "C-for-benefit (model)",
    "crp_alone_c_for_benefit": "C-for-benefit (CRP alone)",
    "calibration_for_benefit_slope": "Calibration-for-benefit slope",
    "calibration_for_benefit_intercept": "Calibration-for-benefit intercept",
    "rate_autoc": "RATE (AUTOC)",
    "qini_coefficient": "Qini coefficient",
    "observed_benefit_selected_minus_rest": "Observed benefit, treated by the model - rest",
}
CAVEATS = (
    "SHAP values describe association inside this model, not causation: a factor that raises "
    "a patient's predicted benefit is not shown to cause it.",
    "Contributions are relative to the model's average patient (the base value) and depend on "
    "the other features: correlated features (CRP and IL-6, the symptom scales) share credit "
    "in ways that can move between models.",
    CAVEAT,
)


def validation_table(metrics: dict[str, float]) -> pd.DataFrame | None:
    """The training run's benefit metrics (``BenefitValidation.as_metrics`` names) as rows of
    estimate and 95% CI; None when the run logged none of them."""
    rows = []
    for name, words in VALIDATION_METRICS.items():
        if name not in metrics:
            continue
        low, high = metrics.get(f"{name}_ci_low"), metrics.get(f"{name}_ci_high")
        ci = f"{low:.3f} to {high:.3f}" if low is not None and high is not None else ""
        rows.append((words, f"{metrics[name]:.3f}", ci))
    return pd.DataFrame(rows, columns=["", "estimate", "95% CI"]) if rows else None


def shap_table(explanation: Explanation, predictions: pd.DataFrame, scale: str) -> pd.DataFrame:
    """One row per patient: pseudonymous ``patient_id``, both arms' probabilities, the
    predicted benefit, the explained benefit on ``scale`` with its base value, and each
    feature's contribution on that scale."""
    contrib = explanation.contrib
    head = pd.DataFrame(
        {
            "patient_id": explanation.patient_ids.astype(str).to_numpy(),
            TREATED: predictions[TREATED].to_numpy(dtype=float),
            CONTROL: predictions[CONTROL].to_numpy(dtype=float),
            BENEFIT: predictions[BENEFIT].to_numpy(dtype=float),
            "scale": scale,
            EXPLAINED: contrib.margin,
            "base_value": contrib.base_value,
        }
    )
    return pd.concat([head, contrib.values.reset_index(drop=True)], axis=1)


def _summary(predictions: pd.DataFrame, context: ReportContext, harm: float) -> str:
    benefit = predictions[BENEFIT].to_numpy(dtype=float)
    facts = pd.DataFrame(
        [
            ("P(response | drug), mean", f"{predictions[TREATED].mean():.3f}"),
            ("P(response | placebo), mean", f"{predictions[CONTROL].mean():.3f}"),
            ("Predicted benefit, mean (IQR)", f"{benefit.mean():+.3f} "
             f"({np.quantile(benefit, 0.25):+.3f} to {np.quantile(benefit, 0.75):+.3f})"),
            (f"Predicted benefit above the harm threshold {harm:g}",
             f"{100 * float((benefit > harm).mean()):.0f}%"),
        ],
        columns=["", "value"],
    )  # fmt: skip
    text = _p(
        f"{len(predictions)} patients explained ({context.population}); {context.n_rejected} "
        f"rows rejected by the data contract. Outcome: {context.outcome}. Predicted benefit = "
        "P(response | drug) - P(response | placebo); the arm is not a model input."
    )
    return _section("summary", "Cohort summary", text + _table(facts))


def _model(context: ReportContext, learner: str) -> str:
    validation: ModelValidation = context.validation
    parts = [_p(f"Model: {context.model_uri} ({learner}). Outcome: {context.outcome}.")]
    if validation.table is None:
        parts.append(
            _p(
                "The training run's benefit validation was not found (the model URI does not "
                "resolve to an inflamrx training run), so none is shown.",
                "muted",
            )
        )
    else:
        parts += [_p(f"Validation: {validation.method}."), _table(validation.table)]
    images = [
        _img(validation.images[name], caption, f"img-{name.split('.')[0].replace('_', '-')}")
        for name, caption in VALIDATION_IMAGES.items()
        if name in validation.images
    ]
    parts.append(f'<div class="curves">{"".join(images)}</div>')
    return _section("model", "The model and its validation", "".join(parts))


def _scale(scale: str, explanation: Explanation, predictions: pd.DataFrame) -> str:
    if scale == LOG_ODDS_RATIO:
        what = (
            "the log odds ratio of response, drug vs placebo: each contribution is the "
            "feature's contribution to the drug arm's log-odds minus its contribution to the "
            "placebo arm's. Base value + contributions = log(odds on drug / odds on placebo)."
        )
    else:
        what = (
            "the risk difference: P(response | drug) - P(response | placebo), from exact "
            "TreeSHAP of the learner's effect models. Base value + contributions = the "
            "predicted benefit."
        )
    text = _p(
        f"Contributions are SHAP values of the predicted benefit on {what} The additivity is "
        "checked for every patient (to 1e-4); the served top_factors and `inflamrx predict` "
        "give the same values."
    )
    if scale != LOG_ODDS_RATIO:  # a treated-arm probability clipped into [0, 1]
        gap = np.abs(explanation.contrib.margin - predictions[BENEFIT].to_numpy(dtype=float))
        clipped = int((gap > 1e-4).sum())
        if clipped:
            text += _p(
                f"For {clipped} patient(s) the effect models' risk difference put the drug "
                "arm's probability outside 0-1; their predicted benefit is the clipped value, "
                "the contributions explain the unclipped one.",
                "muted",
            )
    return _section("scale", "The scale of the contributions", text)


def _importance_table(explanation: Explanation) -> pd.DataFrame:
    values = explanation.contrib.values
    top = global_importance(explanation.contrib).head(TOP_FEATURES)
    top = top[top > 0]  # a feature with no share of any patient's benefit is left out
    return pd.DataFrame(
        {
            "feature": top.index,
            "mean |contribution|": top.to_numpy(),
            "mean contribution": values[top.index].mean().to_numpy(),
        }
    )


def write_benefit_report(
    explanation: Explanation,
    predictions: pd.DataFrame,
    scale: str,
    harm_threshold: float,
    context: ReportContext,
    config: ReportConfig,
    out: Path,
    patients: Sequence[str] = (),
) -> ReportFiles:
    """Write report.html, shap_values.parquet and the figures under ``out``.

    ``predictions``: ``kinds.benefit`` outputs for the rows of ``explanation`` (same order);
    ``scale``: the learner's (``scale_of``). ``patients``: the ids to show and tabulate;
    empty: every explained patient is tabulated and ``config.example_patients`` spread over
    the predicted benefit are shown. Cohort figures use at most ``config.max_patients`` rows.
    """
    out.mkdir(parents=True, exist_ok=True)
    (out / FIGURE_DIR).mkdir(exist_ok=True)
    label = "SYNTHETIC cohort" if context.synthetic else None
    words = scale_words(scale)
    predictions = predictions.reset_index(drop=True)
    shown = list(patients) or example_patients(explanation, config.example_patients)
    numbered = dict(zip(shown, range(1, len(shown) + 1), strict=True))
    at = pd.Index(explanation.patient_ids.astype(str)).get_indexer(list(patients))
    tabulated = explanation.take(at) if patients else explanation
    rows = predictions.iloc[at] if patients else predictions
    table = shap_table(tabulated, rows, scale)
    table.insert(1, "report_patient", table["patient_id"].map(numbered).astype("Int64"))
    table.to_parquet(out / TABLE_FILE, index=False)

    sample = _sample(explanation, config.max_patients, config.seed)
    figures: dict[str, Figure] = {
        "importance": importance_figure(explanation, label, scale=words),
        "beeswarm": beeswarm_figure(sample, label, scale=words),
    }
    frame = explanation.x.assign(patient_id=explanation.patient_ids.astype(str).to_numpy())
    frame = pd.concat([frame, predictions[[TREATED, CONTROL, BENEFIT]]], axis=1)
    for key, (column, name) in MARKERS.items():
        if column in frame and pd.to_numeric(frame[column], errors="coerce").gt(0).any():
            figures[key] = benefit_marker_figure(frame, column, name, harm_threshold, label)
    markers = dependence_features(explanation, 0)  # CRP and IL-6 only
    for i, feature in enumerate(markers):
        partner = strongest_partner(sample.contrib, feature)
        figures[f"dependence_{i + 1}"] = dependence_figure(
            sample, feature, partner, label, scale=words
        )
    pngs = {name: _png(fig) for name, fig in figures.items()}
    waterfalls = BenefitWaterfalls(explanation, words, len(shown), tuple(shown))
    patients_html, waterfall_pngs = waterfalls_html(waterfalls, frame, label)
    pngs |= {f"benefit_waterfall_{i + 1}": png for i, png in enumerate(waterfall_pngs)}
    paths = []
    for name, png in pngs.items():
        path = out / FIGURE_DIR / f"{name}.png"
        path.write_bytes(png)
        paths.append(path)

    def img(key: str, alt: str) -> str:
        return _img(pngs[key], alt, f"img-{key.replace('_', '-')}") if key in pngs else ""

    dependence = "".join(
        img(f"dependence_{i + 1}", f"contribution of {f}") for i, f in enumerate(markers)
    )
    title = "inflamrx: who benefits from the drug rather than placebo, and why" + (
        " (SYNTHETIC)" if context.synthetic else ""
    )
    caveats = "<ul>" + "".join(f"<li>{html.escape(c)}</li>" for c in CAVEATS) + "</ul>"
    body = [
        f"<h1>{html.escape(title)}</h1>",
        SYNTHETIC_BANNER if context.synthetic else "",
        _summary(predictions, context, harm_threshold),
        _model(context, explanation.model_label),
        _scale(scale, explanation, predictions),
        _section(
            "importance",
            "Global importance of the predicted benefit",
            _p(f"Mean |contribution| and mean contribution ({words}) over the patients.")
            + _table(_importance_table(explanation), floats="{:+.4f}")
            + img("importance", "global importance"),
        ),
        _section(
            "beeswarm",
            "Contributions to the benefit per patient",
            _p(
                f"One dot per patient: position = contribution ({words}), colour = the "
                "feature's value (red high, blue low, grey missing)."
            )
            + img("beeswarm", "beeswarm"),
        ),
        _section(
            "markers",
            "Predicted benefit against CRP and IL-6",
            f'<div class="curves">{img("benefit_crp", "benefit vs CRP")}'
            f"{img('benefit_il6', 'benefit vs IL-6')}</div>"
            + _p(f"The markers' own contributions to the benefit ({words}):")
            + f'<div class="curves">{dependence}</div>',
        ),
        _section("patients", "Selected patients", patients_html or _p("No patient selected.")),
        _section("caveats", "Caveats", caveats),
    ]
    report = out / REPORT_FILE
    report.write_text(page(title, "".join(body)), encoding="utf-8")
    return ReportFiles(report=report, table=out / TABLE_FILE, figures=paths)
