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
from matplotlib.axes import Axes
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from scipy.special import expit

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
from inflamrx.reporting.figures import PLOT_FILES, new_axes

REPORT_FILE = "report.html"
TABLE_FILE = "shap_values.parquet"
FIGURE_DIR = "figures"
EVALUATION_IMAGES = {
    PLOT_FILES["calibration"]: "Calibration (out-of-sample predictions)",
    PLOT_FILES["decision_curve"]: "Decision curve (out-of-sample predictions)",
    PLOT_FILES["roc"]: "ROC curve (out-of-sample predictions)",
}
TOP_FEATURES = 15  # bars and beeswarm rows: beyond ~15 a reader stops reading
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


# --- figures ---------------------------------------------------------------------------------


def _axes(
    title: str, label: str | None, size: tuple[float, float] = (7.0, 5.0)
) -> tuple[Figure, Axes]:
    return new_axes(title, label, size=size, dpi=100)


def importance_figure(
    explanation: Explanation, label: str | None = None, outcome: str = "response"
) -> Figure:
    importance = global_importance(explanation.contrib).head(TOP_FEATURES)[::-1]
    fig, ax = _axes("Global importance\n(mean |SHAP| over patients)", label, size=(8.0, 5.5))
    ax.barh(importance.index, importance.to_numpy(), color="#1f77b4")
    ax.set_xlabel(f"mean |contribution| (log-odds of {outcome})")
    return fig


def _percentile_colour(values: np.ndarray) -> np.ndarray:
    """Each value's rank in its feature (0 = lowest, 1 = highest), NaN kept: one colour scale
    serves features in different units."""
    ranks = pd.Series(values).rank(pct=True).to_numpy()
    return np.asarray(ranks, dtype=float)


def beeswarm_figure(
    explanation: Explanation, label: str | None = None, outcome: str = "response"
) -> Figure:
    values, features = explanation.contrib.values, explanation.contrib.features
    top = list(global_importance(explanation.contrib).head(TOP_FEATURES).index)
    fig, ax = _axes("Contributions per patient (beeswarm)", label, size=(8.0, 6.5))
    rng = np.random.default_rng(0)
    for row, name in enumerate(reversed(top)):
        shap_values = values[name].to_numpy()
        # Vertical spread proportional to the local density, so crowded regions look crowded.
        counts, edges = np.histogram(shap_values, bins=40)
        density = counts[np.clip(np.digitize(shap_values, edges) - 1, 0, len(counts) - 1)]
        spread = 0.4 * density / max(density.max(), 1)
        y = row + rng.uniform(-1, 1, len(shap_values)) * spread
        colour = _percentile_colour(features[name].to_numpy())
        missing = np.isnan(colour)
        ax.scatter(shap_values[missing], y[missing], s=6, c="#b0b0b0", linewidths=0)
        points = ax.scatter(
            shap_values[~missing], y[~missing], s=6, c=colour[~missing], cmap="coolwarm",
            norm=Normalize(0, 1), linewidths=0,
        )  # fmt: skip
    ax.set_yticks(range(len(top)), list(reversed(top)))
    ax.axvline(0, color="#555555", linewidth=0.8)
    ax.set_xlabel(f"contribution (log-odds of {outcome}); grey = value missing")
    if top:
        bar = fig.colorbar(points, ax=ax, ticks=[0, 1])
        bar.ax.set_yticklabels(["low", "high"])
        bar.set_label("feature value (rank in cohort)")
    return fig


def dependence_figure(
    explanation: Explanation, feature: str, partner: str | None, label: str | None = None
) -> Figure:
    """SHAP of ``feature`` against its value in clinical units (the raw input where the feature
    restates one, e.g. CRP in mg/L on a log axis), coloured by ``partner``."""
    contrib = explanation.contrib
    (source,) = feature_sources([feature])
    if source.restates and source.column is not None and source.column in explanation.x.columns:
        x = pd.to_numeric(explanation.x[source.column], errors="coerce").to_numpy(dtype=float)
        unit = _unit(source.column)
        xlabel = f"{feature.split(' (')[0]}{f' ({unit})' if unit else ''}"
    else:
        x, xlabel = contrib.features[feature].to_numpy(), feature
    y = contrib.values[feature].to_numpy()
    fig, ax = _axes(f"Dependence: {feature}", label, size=(6.5, 4.8))
    shown = ~np.isnan(x)
    if partner is not None:
        colour = contrib.features[partner].to_numpy()
        known = shown & ~np.isnan(colour)
        ax.scatter(x[shown & ~known], y[shown & ~known], s=8, c="#b0b0b0", linewidths=0)
        points = ax.scatter(x[known], y[known], s=8, c=colour[known], cmap="viridis", linewidths=0)
        fig.colorbar(points, ax=ax).set_label(f"{partner} (grey: missing)")
    else:
        ax.scatter(x[shown], y[shown], s=8, c="#1f77b4", linewidths=0)
    if source.log_scale and np.nanmin(x, initial=np.inf) > 0:
        ax.set_xscale("log")
    ax.axhline(0, color="#555555", linewidth=0.8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"contribution of {feature.split(' (')[0]} (log-odds)")
    return fig


def interaction_figure(
    pairs: pd.DataFrame, label: str | None = None, outcome: str = "response"
) -> Figure:
    fig, ax = _axes("Strongest interactions\n(SHAP, sampled patients)", label, size=(9.0, 5.0))
    names = [f"{a} x {b}" for a, b in zip(pairs["feature"], pairs["with"], strict=True)]
    ax.barh(names[::-1], pairs["mean_abs_interaction"].to_numpy()[::-1], color="#9467bd")
    ax.set_xlabel(f"mean |interaction| (log-odds of {outcome})")
    return fig


def waterfall_figure(
    explanation: Explanation,
    position: int,
    factors: list[dict[str, object]],
    label: str | None = None,
    outcome: str = "response",
    *,
    title: str | None = None,
    xlabel: str | None = None,
) -> Figure:
    """From the model's average patient (base value) to this patient's log-odds, one bar per
    factor (``patient_factors(..., with_subject=True)`` of the row at ``position``); the
    remaining contributions are pooled. No identifier goes on the figure. ``title`` and
    ``xlabel`` name another additive scale (e.g. a benefit explanation's log odds ratio)."""
    contrib = explanation.contrib
    steps = [(str(f["subject"]), float(f["log_odds"])) for f in factors]  # type: ignore[arg-type]
    rest = float(contrib.values.iloc[position].sum()) - sum(v for _, v in steps)
    n_rest = contrib.values.shape[1] - len(steps)
    if n_rest > 0:
        steps.append((f"{n_rest} other features", rest))
    base, margin = contrib.base_value, float(contrib.margin[position])
    if title is None:
        title = (
            f"Predicted probability {expit(margin):.2f}\n"
            f"(model's average patient {expit(base):.2f})"
        )
    fig, ax = _axes(title, label, size=(9.0, 0.45 * len(steps) + 2.2))
    # Top-down, the largest factor first, as a reader scans.
    cumulative = base
    for row, (_, value) in enumerate(steps):
        y = len(steps) - 1 - row
        ax.barh(y, value, left=cumulative, color="#d62728" if value > 0 else "#1f77b4")
        ax.text(
            cumulative + value, y, f" {value:+.2f}", va="center",
            ha="left" if value > 0 else "right", fontsize=8,
        )  # fmt: skip
        cumulative += value
    # Bars set sticky x-limits at their left edges; widen by hand so no bar or label is cut.
    ends = np.cumsum([base] + [v for _, v in steps])
    pad = 0.2 * max(float(ends.max() - ends.min()), 1e-3)
    ax.set_xlim(float(ends.min()) - pad, float(ends.max()) + pad)
    ax.set_yticks(range(len(steps)), [text for text, _ in reversed(steps)])
    ax.axvline(base, color="#555555", linewidth=0.8, linestyle="--")
    ax.axvline(margin, color="#000000", linewidth=0.8)
    ax.set_xlabel(
        xlabel or f"log-odds of {outcome}\n(dashed: average patient; solid: this patient)"
    )
    return fig


def _unit(column: str) -> str:
    return COLUMNS[column].unit if column in COLUMNS else ""


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
    banner = ""
    if context.synthetic:
        banner = (
            '<div id="synthetic-banner" class="synthetic">SYNTHETIC DATA: this model was '
            "trained on, or these patients are, a simulated cohort. Nothing here describes "
            "real patients.</div>"
        )
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
