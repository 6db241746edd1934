"""The researcher's report: one self-contained HTML file explaining a logged model.

Sections: cohort summary, the model and its validation (the training run's own evaluation,
handed over by the job that holds it), global importance, beeswarm, dependence, interactions,
selected patients and caveats. Images are PNG data URIs and the CSS is inline, so the file
opens offline and nothing is fetched. Figures are ``matplotlib.figure.Figure`` objects on an
Agg canvas (never pyplot), as in :mod:`inflamrx.reporting.figures`.

Identifiers: the report carries none. Selected patients are numbered ("Patient 1"); the SHAP
table (``shap_values.parquet``) gives each number in its ``report_patient`` column. Written for
a tracking store (``with_ids=False``, the default of training runs) the table holds a ``row``
number instead of the pseudonymous ``patient_id``, so nothing links it to a patient; a local
``inflamrx explain`` folder keeps the ids the user gave it.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from inflamrx.config import ReportConfig
from inflamrx.data.results import crp_bands, marker_summary
from inflamrx.data.schema import COLUMNS
from inflamrx.modeling.explanations import (
    Explanation,
    global_importance,
    probability_points,
    shap_table,
    strongest_partner,
    top_interactions,
)
from inflamrx.modeling.factors import feature_sources, patient_factors
from inflamrx.reporting.figures import PLOT_FILES
from inflamrx.reporting.shap_figures import (
    beeswarm_figure,
    dependence_figure,
    importance_figure,
    interaction_figure,
    waterfall_figure,
)

REPORT_FILE = "report.html"
TABLE_FILE = "shap_values.parquet"
FIGURE_DIR = "figures"
EVALUATION_IMAGES = {
    PLOT_FILES["calibration"]: "Calibration (out-of-sample predictions)",
    PLOT_FILES["decision_curve"]: "Decision curve (out-of-sample predictions)",
    PLOT_FILES["roc"]: "ROC curve (out-of-sample predictions)",
}
WATERFALL_FEATURES = 10
SECTIONS = (
    "summary",
    "model",
    "importance",
    "beeswarm",
    "dependence",
    "interactions",
    "patients",
    "caveats",
)


@dataclass(frozen=True)
class ModelValidation:
    """The model's validation as its training run recorded it: the metrics table (model
    beside the CRP baselines) and the evaluation curves (PNG bytes by file name)."""

    table: pd.DataFrame | None
    images: dict[str, bytes]
    # How the figures were obtained (the run's `validation_method` tag).
    method: str = "held-out test set; 95% CIs: percentile bootstrap over its patients"


NO_VALIDATION = ModelValidation(None, {})


@dataclass(frozen=True)
class ReportContext:
    """What the report says about where the model and the explained patients come from."""

    model_uri: str
    outcome: str
    synthetic: bool
    validation: ModelValidation  # what the job holds of the model's own validation
    cohort: pd.DataFrame  # accepted canonical rows that were explained (summary figures only)
    n_rejected: int
    population: str  # e.g. "held-out test patients of the training run"
    outcome_label: str = "response"  # the outcome in a few words (data.outcomes.outcome_label)


@dataclass(frozen=True)
class ReportFiles:
    report: Path
    table: Path
    figures: list[Path]


# --- choosing what to show -----------------------------------------------------------------


def example_patients(explanation: Explanation, n: int) -> list[str]:
    """``n`` patients spread over the predicted probabilities (lowest, ..., highest): a
    deterministic choice that shows the model's range without cherry-picking."""
    count = len(explanation.patient_ids)
    if n <= 0 or count == 0:
        return []
    order = np.argsort(explanation.contrib.probability, kind="stable")
    picks = np.unique(np.round(np.linspace(0, count - 1, min(n, count))).astype(int))
    return [str(explanation.patient_ids.iloc[order[i]]) for i in picks]


def dependence_features(explanation: Explanation, n: int) -> list[str]:
    """CRP and IL-6 (the markers the treatment targets), then the most important others."""
    names = list(explanation.contrib.values.columns)
    sources = dict(zip(names, feature_sources(names), strict=True))
    markers = [
        f for f in names if sources[f].restates and sources[f].column in ("crp_mg_l", "il6_pg_ml")
    ]
    ranked = [f for f in global_importance(explanation.contrib).index if not sources[f].indicator]
    return list(dict.fromkeys([*markers, *ranked]))[: max(n, len(markers))]


# --- the HTML file ---------------------------------------------------------------------------

CSS = """
body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;max-width:1100px;
margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}th{background:#f3f3f3}
img{max-width:100%;height:auto;border:1px solid #eee;margin:.4em 0}
.synthetic{background:#fff3cd;border:2px solid #e0a800;padding:.8em 1em;font-size:1.15em;
font-weight:bold}
.curves img{width:32%}.muted{color:#666;font-size:.9em}.patient{border-left:4px solid #1f77b4;padding-left:1em}
"""


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def _img(png: bytes, alt: str, ident: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img id="{ident}" alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _table(frame: pd.DataFrame, floats: str = "{:.3g}") -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = "".join(
        "<tr>"
        + "".join(
            f"<td>{html.escape(floats.format(v) if isinstance(v, float) else str(v))}</td>"
            for v in row
        )
        + "</tr>"
        for row in frame.itertuples(index=False)
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _section(ident: str, title: str, body: str) -> str:
    return f'<section id="{ident}"><h2>{html.escape(title)}</h2>{body}</section>'


def _p(text: str, cls: str = "") -> str:
    attr = f' class="{cls}"' if cls else ""
    return f"<p{attr}>{html.escape(text)}</p>"


def _summary_html(explanation: Explanation, context: ReportContext) -> str:
    cohort = context.cohort
    n = len(explanation.patient_ids)
    parts = [
        _p(
            f"{n} patients explained ({context.population}); {context.n_rejected} rows "
            f"rejected by the data contract. Outcome: {context.outcome}."
        )
    ]
    facts = []
    if "age" in cohort and cohort["age"].notna().any():
        age = cohort["age"].astype(float)
        facts.append(
            ("Age (years), median (IQR)", f"{age.median():.0f} ({age.quantile(0.25):.0f}-"
             f"{age.quantile(0.75):.0f})")
        )  # fmt: skip
    if "sex" in cohort:
        facts.append(("Female", f"{100 * float((cohort['sex'] == 'F').mean()):.0f}%"))
    facts.append(
        ("Predicted probability, mean", f"{float(explanation.contrib.probability.mean()):.2f}")
    )
    parts.append(_table(pd.DataFrame(facts, columns=["", "value"])))
    if "crp_mg_l" in cohort and cohort["crp_mg_l"].notna().any():
        bands = crp_bands(cohort)
        parts.append(
            _p("CRP bands (mg/L): " + ", ".join(f"{k}: {v:.0f}%" for k, v in bands.items()))
        )
    markers = marker_summary(cohort)
    if not markers.empty:
        markers["marker"] = [f"{COLUMNS[m].label} ({COLUMNS[m].unit})" for m in markers["marker"]]
        parts.append(_table(markers, floats="{:.2f}"))
    return _section("summary", "Cohort summary", "".join(parts))


def _model_html(context: ReportContext, evaluation: ModelValidation, kind: str) -> str:
    parts = [
        _p(f"Model: {context.model_uri} ({kind}). Outcome: {context.outcome}."),
    ]
    if evaluation.table is None:
        parts.append(
            _p(
                "The training run's evaluation was not found (the model URI does not resolve "
                "to an inflamrx training run), so no validation is shown.",
                "muted",
            )
        )
    else:
        parts.append(_p(f"Validation: {evaluation.method}. Point estimates with 95% CIs:"))
        parts.append(_table(evaluation.table))
    curves = [
        _img(evaluation.images[name], caption, f"img-{name.split('.')[0]}")
        for name, caption in EVALUATION_IMAGES.items()
        if name in evaluation.images
    ]
    parts.append(f'<div class="curves">{"".join(curves)}</div>')
    return _section("model", "The model and its validation", "".join(parts))


def _patients_html(
    explanation: Explanation,
    ids: list[str],
    pngs: dict[str, bytes],
    factors: list[list[dict[str, object]]],
    with_ids: bool = True,
    outcome: str = "response",
) -> str:
    if not ids:
        return _section("patients", "Selected patients", _p("No patient selected."))
    chosen = explanation.rows(ids)
    points = probability_points(chosen.contrib)
    where = "pseudonymous id" if with_ids else "row (the table holds no patient id)"
    parts = [
        _p(
            f"No identifier appears in this report: the column report_patient of {TABLE_FILE} "
            f"(written beside it) gives each numbered patient's {where}. Points are "
            "percentage points of predicted probability.",
            "muted",
        )
    ]
    for i in range(len(ids)):
        rows = pd.DataFrame(
            [(f["text"], f["log_odds"], f["points"]) for f in factors[i]],
            columns=["factor", "log-odds", "probability points"],
        )
        total = float(points.iloc[i].sum())
        parts.append(
            f'<div class="patient"><h3>Patient {i + 1}</h3>'
            + _p(
                f"Predicted probability of {outcome} {chosen.contrib.probability[i]:.2f}; "
                f"base value {chosen.contrib.base_value:+.2f} log-odds, patient "
                f"{chosen.contrib.margin[i]:+.2f}. Points of all features sum to {total:+.1f} "
                "(on the probability scale contributions are not exactly additive)."
            )
            + _table(rows, floats="{:+.2f}")
            + _img(pngs[f"waterfall_{i + 1}"], f"waterfall {i + 1}", f"img-waterfall-{i + 1}")
            + "</div>"
        )
    return _section("patients", "Selected patients", "".join(parts))


CAVEATS = (
    "SHAP values describe association inside this model, not causation: a marker that "
    "raises the predicted probability is not shown to cause the outcome, and changing it would "
    "not be expected to change the outcome.",
    "Contributions are relative to the model's average patient (the base value) and depend on "
    "the other features: correlated features (CRP and IL-6, the symptom scales) share credit "
    "in ways that can move between models.",
    "Probability points are approximate: on the probability scale contributions are not "
    "additive, so a factor's points depend on the rest of the patient's profile. Log-odds "
    "values are exact (base value + contributions = the model's log-odds).",
    "The model is only as good as its validation above; explanations of a poorly calibrated "
    "or weak model explain its errors too. Not for clinical decisions.",
)


def render_html(
    explanation: Explanation,
    context: ReportContext,
    pngs: dict[str, bytes],
    patients: list[str],
    dependence: list[tuple[str, str | None]],
    factors: list[list[dict[str, object]]],
    extra_sections: Sequence[str] = (),
    with_ids: bool = True,
) -> str:
    """The page; ``extra_sections`` (ready HTML, e.g. ``reporting.benefit.benefit_section``)
    go before the caveats."""
    banner = SYNTHETIC_BANNER if context.synthetic else ""
    importance = _section(
        "importance",
        "Global importance",
        _p("Which features move predictions most, on average over the explained patients.")
        + _img(pngs["importance"], "global importance", "img-importance"),
    )
    beeswarm = _section(
        "beeswarm",
        "Contributions per patient",
        _p(
            "One dot per patient: position = contribution (log-odds), colour = the feature's "
            "value (red high, blue low, grey missing)."
        )
        + _img(pngs["beeswarm"], "beeswarm", "img-beeswarm"),
    )
    dep = "".join(
        _p(f"{f}: coloured by {p or 'nothing'} (its strongest interaction).")
        + _img(pngs[f"dependence_{i + 1}"], f"dependence of {f}", f"img-dependence-{i + 1}")
        for i, (f, p) in enumerate(dependence)
    )
    if "interactions" in pngs:
        inter = _p(
            "Mean |SHAP interaction value| of the strongest pairs, on a sample of patients."
        ) + _img(pngs["interactions"], "interactions", "img-interactions")
    else:
        inter = _p(
            f"The model ({explanation.model_label}) has no interactions by construction.", "muted"
        )
    caveats = "<ul>" + "".join(f"<li>{html.escape(c)}</li>" for c in CAVEATS) + "</ul>"
    if context.synthetic:
        caveats += _p("These results come from SYNTHETIC data.", "synthetic")
    title = f"inflamrx: what drives predicted {context.outcome_label}" + (
        " (SYNTHETIC)" if context.synthetic else ""
    )
    body = "".join(
        [
            f"<h1>{html.escape(title)}</h1>",
            banner,
            _summary_html(explanation, context),
            _model_html(context, context.validation, explanation.model_label),
            importance,
            beeswarm,
            _section("dependence", "Dependence", dep),
            _section("interactions", "Interactions", inter),
            _patients_html(explanation, patients, pngs, factors, with_ids, context.outcome_label),
            *extra_sections,
            _section("caveats", "Caveats", caveats),
        ]
    )
    return page(title, body)


SYNTHETIC_BANNER = (
    '<div id="synthetic-banner" class="synthetic">SYNTHETIC DATA: this model was '
    "trained on, or these patients are, a simulated cohort. Nothing here describes "
    "real patients.</div>"
)


def page(title: str, body: str) -> str:
    """One self-contained HTML page: inline CSS, no script, nothing fetched."""
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head>"
        f"<body>{body}</body></html>"
    )


# --- writing and logging ---------------------------------------------------------------------


def write_report(
    explanation: Explanation,
    context: ReportContext,
    config: ReportConfig,
    out: Path,
    patients: Sequence[str] = (),
    extra_sections: Sequence[str] = (),
    *,
    with_ids: bool = True,
) -> ReportFiles:
    """Write report.html, shap_values.parquet and the figures under ``out``.

    ``with_ids=False``: the table carries a ``row`` number in place of ``patient_id`` (see
    :func:`without_ids`), for anything logged to a tracking store.

    ``patients``: the ids to show and to tabulate; empty: every explained patient is
    tabulated and ``config.example_patients`` spread over the predictions are shown.
    Cohort figures use at most ``config.max_patients`` rows (sampled with ``config.seed``).
    """
    out.mkdir(parents=True, exist_ok=True)
    (out / FIGURE_DIR).mkdir(exist_ok=True)
    label = "SYNTHETIC cohort" if context.synthetic else None
    outcome = context.outcome_label
    shown = list(patients) or example_patients(explanation, config.example_patients)
    tabulated = explanation.rows(list(patients)) if patients else explanation
    table = out / TABLE_FILE
    numbered = dict(zip(shown, range(1, len(shown) + 1), strict=True))
    values = shap_table(tabulated.contrib, tabulated.patient_ids)
    values.insert(1, "report_patient", values["patient_id"].map(numbered).astype("Int64"))
    (values if with_ids else without_ids(values)).to_parquet(table, index=False)

    sample = _sample(explanation, config.max_patients, config.seed)
    figures: dict[str, Figure] = {
        "importance": importance_figure(explanation, label, outcome),
        "beeswarm": beeswarm_figure(sample, label, outcome),
    }
    dependence = [
        (f, strongest_partner(sample.contrib, f, explanation.interactions))
        for f in dependence_features(explanation, config.dependence_features)
    ]
    for i, (feature, partner) in enumerate(dependence):
        figures[f"dependence_{i + 1}"] = dependence_figure(sample, feature, partner, label)
    if explanation.interactions is not None:
        figures["interactions"] = interaction_figure(
            top_interactions(explanation.interactions), label, outcome
        )
    chosen = explanation.rows(shown)
    # Computed once for the waterfalls and the patients' tables.
    factors = patient_factors(chosen.contrib, chosen.x, WATERFALL_FEATURES, with_subject=True)
    for i in range(len(shown)):
        figures[f"waterfall_{i + 1}"] = waterfall_figure(chosen, i, factors[i], label, outcome)
    pngs = {name: _png(fig) for name, fig in figures.items()}
    paths = []
    for name, png in pngs.items():
        path = out / FIGURE_DIR / f"{name}.png"
        path.write_bytes(png)
        paths.append(path)

    page = render_html(
        explanation, context, pngs, shown, dependence, factors, extra_sections, with_ids
    )
    report = out / REPORT_FILE
    report.write_text(page, encoding="utf-8")
    return ReportFiles(report=report, table=table, figures=paths)


def without_ids(table: pd.DataFrame) -> pd.DataFrame:
    """``patient_id`` replaced by ``row`` (1, 2, ...): the report's raw values link to no one."""
    out = table.drop(columns="patient_id")
    out.insert(0, "row", range(1, len(out) + 1))
    return out


def _sample(explanation: Explanation, n: int, seed: int) -> Explanation:
    count = len(explanation.patient_ids)
    if count <= n:
        return explanation
    return explanation.take(np.sort(np.random.default_rng(seed).choice(count, n, replace=False)))
