"""The report's benefit section: who benefits from the drug rather than placebo, and how well
the model's predicted benefit was validated (a :class:`BenefitValidation`).

Figures: predicted benefit against CRP and against IL-6, calibration for benefit, the Qini and
TOC curves (model beside CRP alone and the CRP > 3 mg/L rule), the decision curve for
treatment benefit, and per-patient benefit waterfalls from a benefit SHAP explanation (an
:class:`~inflamrx.modeling.explanations.Explanation` whose contributions are on the benefit
explanation's additive scale, named by the caller). Figures are matplotlib ``Figure`` objects
on an Agg canvas; the section is HTML with PNG data URIs, as the rest of the report. No MLflow
here and no identifier: patients are numbered.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter

from inflamrx.data.crp import CRP_RULE, CRP_RULE_THRESHOLD
from inflamrx.modeling.benefit.validation import BenefitValidation, Ranking
from inflamrx.modeling.explanations import Explanation
from inflamrx.modeling.factors import patient_factors
from inflamrx.modeling.kinds.benefit import BENEFIT, CONTROL, TREATED
from inflamrx.modeling.metrics import Estimate
from inflamrx.reporting.figures import new_axes

# The report's own helpers: one way to write sections, paragraphs, tables and images.
from inflamrx.reporting.html import (
    WATERFALL_FEATURES,
    _img,
    _p,
    _png,
    _section,
    _table,
    example_patients,
)
from inflamrx.reporting.shap_figures import waterfall_figure

BENEFIT_SECTION = "benefit"
BENEFIT_PLOT_FILES = {
    "benefit_crp": "benefit_vs_crp.png",
    "benefit_il6": "benefit_vs_il6.png",
    "benefit_calibration": "calibration_for_benefit.png",
    "qini": "qini_curve.png",
    "toc": "toc_curve.png",
    "benefit_decision_curve": "benefit_decision_curve.png",
}
BENEFIT_COLUMN = BENEFIT  # the per-patient frame's column, as served
MARKERS = {"benefit_crp": ("crp_mg_l", "CRP (mg/L)"), "benefit_il6": ("il6_pg_ml", "IL-6 (pg/mL)")}
CAVEAT = (
    "Predicted benefit is a model estimate to support a shared decision between patient and "
    "clinician, not a prescription. It is validated on trial patients like these only; "
    "intervals are 95% bootstrap CIs unless stated."
)
GROUP_COLUMNS = {
    "group": "group",
    "n_treated": "n drug",
    "n_control": "n placebo",
    "predicted_mean": "mean predicted benefit",
    "observed": "observed benefit",
    "observed_ci_low": "95% CI low",
    "observed_ci_high": "95% CI high",
}
TOC_MIN_PATIENTS = 10  # the TOC curve is drawn from this many top-ranked patients on
STYLES = {"model": ("C0", "-"), "CRP alone": ("C1", "--"), CRP_RULE: ("C2", ":")}


@dataclass(frozen=True)
class BenefitWaterfalls:
    """A benefit SHAP explanation of some patients, and the scale its values are on."""

    explanation: Explanation  # contributions on ``scale``; base + sum = the benefit margin
    scale: str  # e.g. "log odds ratio (drug vs placebo)" or "probability difference"
    n_patients: int = 3
    patients: tuple[str, ...] = ()  # these ids (e.g. explain --patient); empty: spread out


def scale_words(scale: str) -> str:
    """A benefit explanation's scale (``kinds.benefit.scale_of``) as figures and text name it."""
    return f"{scale} (drug vs placebo)"


# --- figures ---------------------------------------------------------------------------------


def benefit_marker_figure(
    patients: pd.DataFrame, column: str, name: str, harm_threshold: float, label: str | None
) -> Figure:
    """Predicted benefit of each patient against a marker on a log axis (missing left out)."""
    fig, ax = new_axes(f"Predicted benefit against {name.split(' (')[0]}", label, size=(6.0, 4.6))
    x = pd.to_numeric(patients[column], errors="coerce").to_numpy(dtype=float)
    y = patients[BENEFIT_COLUMN].to_numpy(dtype=float)
    shown = np.isfinite(x) & (x > 0)
    ax.scatter(x[shown], y[shown], s=8, alpha=0.6, linewidths=0, color="C0")
    ax.set_xscale("log")
    # Plain numbers (0.3, 1, 10) read better than 3x10^-1 and do not collide.
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.axhline(0, color="#555555", lw=0.8)
    ax.axhline(
        harm_threshold, color="C3", ls="--", lw=1, label=f"harm threshold {harm_threshold:g}"
    )
    if column == "crp_mg_l":
        ax.axvline(CRP_RULE_THRESHOLD, color="C2", ls=":", lw=1, label=CRP_RULE)
    missing = int((~shown).sum())
    ax.set_xlabel(name + (f"; {missing} missing not shown" if missing else ""))
    ax.set_ylabel("predicted benefit\n(P(response | drug) - P(response | placebo))")
    ax.legend(loc="upper left", fontsize="small")
    return fig


def benefit_calibration_figure(v: BenefitValidation, label: str | None) -> Figure:
    """Observed against predicted benefit: quantile groups (Newcombe CIs) and the smoothed
    matched-pair curve used for E-for-benefit."""
    cal = v.calibration
    fig, ax = new_axes("Calibration for benefit", label, size=(6.0, 5.2))
    groups = cal.groups
    yerr = np.vstack(
        [
            groups["observed"] - groups["observed_ci_low"],
            groups["observed_ci_high"] - groups["observed"],
        ]
    )
    ax.errorbar(
        groups["predicted_mean"], groups["observed"], yerr=yerr, fmt="o", capsize=3,
        label=f"{len(groups)} groups by predicted benefit (95% CI)",
    )  # fmt: skip
    ax.plot(cal.smooth["predicted"], cal.smooth["observed"], lw=2, label="matched pairs, smoothed")
    values = np.r_[groups["observed_ci_low"], groups["observed_ci_high"], cal.smooth["predicted"]]
    values = values[np.isfinite(values)]
    lo, hi = float(min(values.min(), -0.05)), float(max(values.max(), 0.1))
    ax.plot([lo, hi], [lo, hi], color="grey", ls=":", label="perfect calibration")
    ax.axhline(0, color="#555555", lw=0.6)
    text = "\n".join(
        [
            _ci("C-for-benefit", v.model.c_for_benefit),
            _ci("Intercept", cal.intercept),
            _ci("Slope", cal.slope),
            _ci("E-avg", cal.e_avg, "{:.3f}"),
        ]
    )
    ax.text(0.03, 0.97, text, transform=ax.transAxes, va="top", fontsize="small")
    ax.set_xlabel("predicted benefit (probability of response, drug - placebo)")
    ax.set_ylabel("observed benefit (response rate, drug - placebo)")
    ax.legend(loc="lower right", fontsize="small")
    return fig


def _rankings(v: BenefitValidation) -> list[Ranking]:
    return [r for r in (v.model, v.crp_alone, v.crp_rule) if r is not None]


def _curve_figure(v: BenefitValidation, which: str, label: str | None) -> Figure:
    qini = which == "qini"
    title = "Qini curve" if qini else "TOC curve (targeting operator characteristic)"
    fig, ax = new_axes(title, label, size=(6.0, 4.8))
    for ranking in _rankings(v):
        table = ranking.qini if qini else ranking.toc
        colour, style = STYLES.get(ranking.name, ("C4", "-"))
        area = ranking.qini_coefficient if qini else ranking.autoc
        name = "Qini coefficient" if qini else "RATE (AUTOC)"
        x = np.r_[0.0, table["fraction"]] if qini else table["fraction"].to_numpy()
        y = np.r_[0.0, table[which]] if qini else table[which].to_numpy()
        if not qini:  # the mean of a handful of patients' scores is noise, not a curve
            x, y = x[x * v.n >= TOC_MIN_PATIENTS], y[x * v.n >= TOC_MIN_PATIENTS]
        ax.plot(
            x, y, color=colour, ls=style, lw=2, label=f"{ranking.name}: {_ci(name, area, '{:.3f}')}"
        )
        if ranking is v.model:
            band = table[table["fraction"] * v.n >= (0 if qini else TOC_MIN_PATIENTS)]
            ax.fill_between(
                band["fraction"], band["ci_low"], band["ci_high"], color=colour, alpha=0.15
            )
    if qini:
        ate = v.calibration.observed_overall.estimate
        ax.plot([0, 1], [0, ate], color="grey", ls="-.", label="random targeting")
        ax.set_ylabel("extra responders per patient\n(treating the top fraction vs nobody)")
    else:
        ax.axhline(0, color="grey", ls="-.", label="no better than treating at random")
        ax.set_xlim(0, 1)
        ax.set_ylabel("benefit in the top fraction\nminus benefit in everyone")
    shown_from = "" if qini else f" (from {TOC_MIN_PATIENTS} patients on)"
    ax.set_xlabel(f"fraction treated, highest ranked first{shown_from}")
    ax.legend(loc="best", fontsize="x-small")
    return fig


def qini_figure(v: BenefitValidation, label: str | None) -> Figure:
    return _curve_figure(v, "qini", label)


def toc_figure(v: BenefitValidation, label: str | None) -> Figure:
    return _curve_figure(v, "toc", label)


def benefit_decision_figure(v: BenefitValidation, label: str | None) -> Figure:
    """Net benefit of treating by predicted benefit across harm thresholds."""
    dca = v.decision_curve
    fig, ax = new_axes("Decision curve for treatment benefit", label, size=(6.0, 4.8))
    ax.plot(dca["threshold"], dca["model"], lw=2, label="treat if predicted benefit > threshold")
    ax.plot(dca["threshold"], dca["treat_all"], color="grey", label="treat all")
    ax.plot(dca["threshold"], dca["treat_none"], color="black", ls=":", label="treat none")
    if "crp_rule" in dca:
        ax.plot(
            dca["threshold"], dca["crp_rule"], color="C2", ls="--", label=f"treat if {CRP_RULE}"
        )
    ax.axvline(
        v.harm_threshold, color="C3", lw=0.8, ls="--", label=f"configured {v.harm_threshold:g}"
    )
    # Treat-all plunges at high thresholds; keep every other curve in view.
    curves = dca.drop(columns=["threshold", "treat_all"]).to_numpy(dtype=float)
    finite = curves[np.isfinite(curves)]
    top = max(float(finite.max(initial=0.0)), float(dca["treat_all"].max()), 0.01)
    bottom = min(float(finite.min(initial=0.0)), 0.0) - 0.05 * top
    ax.set_ylim(bottom, top * 1.2)
    ax.set_xlabel("harm threshold (benefit in probability of response needed to treat)")
    ax.set_ylabel("net benefit (extra responders per patient\nminus threshold x fraction treated)")
    ax.legend(loc="upper right", fontsize="x-small")
    return fig


def benefit_waterfall_figure(
    waterfalls: BenefitWaterfalls,
    position: int,
    factors: list[dict[str, object]],
    predicted_benefit: float | None,
    label: str | None,
) -> Figure:
    """The report's waterfall on the benefit explanation's scale: from the average patient's
    benefit margin to this patient's, one bar per factor."""
    contrib = waterfalls.explanation.contrib
    margin, base = float(contrib.margin[position]), contrib.base_value
    head = f"Predicted benefit {predicted_benefit:+.2f}\n" if predicted_benefit is not None else ""
    # Two short lines: one long line is cut at the figure's edge.
    title = f"{head}{waterfalls.scale}\npatient {margin:+.2f}, average patient {base:+.2f}"
    return waterfall_figure(
        waterfalls.explanation, position, factors, label, title=title,
        xlabel=f"{waterfalls.scale}\n(dashed: average patient; solid: this patient)",
    )  # fmt: skip


def benefit_figures(
    v: BenefitValidation, patients: pd.DataFrame, label: str | None = None
) -> dict[str, Figure]:
    """The section's cohort figures by ``BENEFIT_PLOT_FILES`` key (markers absent from
    ``patients`` are skipped), e.g. for a job to log as PNGs."""
    figures: dict[str, Figure] = {}
    for key, (column, name) in MARKERS.items():
        if column in patients and pd.to_numeric(patients[column], errors="coerce").gt(0).any():
            figures[key] = benefit_marker_figure(patients, column, name, v.harm_threshold, label)
    figures["benefit_calibration"] = benefit_calibration_figure(v, label)
    figures["qini"] = qini_figure(v, label)
    figures["toc"] = toc_figure(v, label)
    figures["benefit_decision_curve"] = benefit_decision_figure(v, label)
    return figures


# --- the HTML section --------------------------------------------------------------------------


def _ci(name: str, est: Estimate, fmt: str = "{:.2f}") -> str:
    if not np.isfinite(est.estimate):
        return f"{name} not estimable"
    if not (np.isfinite(est.ci_low) and np.isfinite(est.ci_high)):
        return f"{name} {fmt.format(est.estimate)}"
    return f"{name} {fmt.format(est.estimate)} (95% CI {fmt.format(est.ci_low)} to {fmt.format(est.ci_high)})"


def _cell(est: Estimate | None, fmt: str = "{:.3f}") -> str:
    if est is None or not np.isfinite(est.estimate):
        return "not estimable"
    if not (np.isfinite(est.ci_low) and np.isfinite(est.ci_high)):
        return fmt.format(est.estimate)
    return f"{fmt.format(est.estimate)} ({fmt.format(est.ci_low)} to {fmt.format(est.ci_high)})"


def ranking_table(v: BenefitValidation) -> pd.DataFrame:
    """The model beside CRP alone and the CRP rule, statistic by statistic."""
    rankings = _rankings(v)
    rows = [
        ("C-for-benefit", [_cell(r.c_for_benefit) for r in rankings]),
        ("RATE (AUTOC)", [_cell(r.autoc) for r in rankings]),
        ("Qini coefficient", [_cell(r.qini_coefficient) for r in rankings]),
        ("Who would be treated", [r.selection for r in rankings]),
        (
            "Treated by it: n drug / placebo",
            [f"{r.selected.n_treated} / {r.selected.n_control}" for r in rankings],
        ),
        ("Observed benefit among them", [_cell(r.selected.observed) for r in rankings]),
        ("Observed benefit among the rest", [_cell(r.rest.observed) for r in rankings]),
        ("Difference", [_cell(r.selected_minus_rest) for r in rankings]),
    ]
    # CRP alone has no benefit scale, so no harm threshold to apply.
    net = {"model": "model", CRP_RULE: "crp_rule"}
    rows.append(
        (
            f"Net benefit at harm threshold {v.harm_threshold:g}",
            [_cell(v.net_benefit.get(net[r.name])) if r.name in net else "(no benefit scale)"
             for r in rankings],
        )
    )  # fmt: skip
    return pd.DataFrame(
        [[name, *cells] for name, cells in rows], columns=["", *[r.name for r in rankings]]
    )


def _arm_table(v: BenefitValidation) -> pd.DataFrame | None:
    rows = []
    for arm, result, n in (
        ("drug", v.arm_treated, v.n_treated),
        ("placebo", v.arm_control, v.n_control),
    ):
        if result is not None:
            rows.append(
                [f"P(response | {arm}) among the {n} on {arm}", _cell(result.auroc),
                 _cell(result.calibration_intercept, "{:.2f}"), _cell(result.calibration_slope, "{:.2f}")]
            )  # fmt: skip
    if not rows:
        return None
    return pd.DataFrame(
        rows, columns=["arm model", "AUROC", "calibration intercept", "calibration slope"]
    )


def waterfalls_html(
    waterfalls: BenefitWaterfalls, patients: pd.DataFrame, label: str | None
) -> tuple[str, list[bytes]]:
    """The per-patient benefit waterfalls (HTML, and the PNGs in patient order). ``patients``
    as for :func:`benefit_section`; where it holds both arms' probabilities they are shown."""
    explanation = waterfalls.explanation
    ids = list(waterfalls.patients) or example_patients(explanation, waterfalls.n_patients)
    if not ids:
        return "", []
    chosen = explanation.rows(ids)
    factors = patient_factors(chosen.contrib, chosen.x, WATERFALL_FEATURES, with_subject=True)
    # A feature with no share of the benefit (the interaction model's non-modifiers) is not a
    # factor, as in the served top_factors.
    factors = [[f for f in row if float(f["log_odds"]) != 0.0] for row in factors]  # type: ignore[arg-type]
    by_id = (
        patients.set_index(patients["patient_id"].astype(str))
        if "patient_id" in patients and BENEFIT_COLUMN in patients
        else None
    )
    how = "asked for" if waterfalls.patients else "chosen spread over the predicted benefit"
    parts = [
        _p(
            f"Contributions are on the {waterfalls.scale} scale (base value + contributions = "
            f"the patient's value on that scale, exactly). Patients are {how} and numbered; "
            "no identifier appears.",
            "muted",
        )
    ]
    pngs = []
    for i, pid in enumerate(ids):
        row = None if by_id is None or pid not in by_id.index else by_id.loc[pid]
        benefit = None if row is None else float(row[BENEFIT_COLUMN])
        fig = benefit_waterfall_figure(
            BenefitWaterfalls(chosen, waterfalls.scale), i, factors[i], benefit, label
        )
        pngs.append(_png(fig))
        arms = (
            _p(
                f"P(response | drug) {float(row[TREATED]):.2f}, P(response | placebo) "
                f"{float(row[CONTROL]):.2f}: predicted benefit {benefit:+.2f}."
            )
            if row is not None and TREATED in row and CONTROL in row
            else ""
        )
        parts.append(
            f'<div class="patient"><h3>Benefit, patient {i + 1}</h3>{arms}'
            + _img(pngs[-1], f"benefit waterfall {i + 1}", f"img-benefit-waterfall-{i + 1}")
            + "</div>"
        )
    title = "<h3>Why this patient's predicted benefit</h3>"
    return f'<div id="benefit-patients">{title}{"".join(parts)}</div>', pngs


def benefit_section(
    v: BenefitValidation,
    patients: pd.DataFrame,
    *,
    label: str | None = None,
    waterfalls: BenefitWaterfalls | None = None,
) -> str:
    """The benefit section (``<section id="benefit">``) for ``html.write_report``'s
    ``extra_sections``. ``patients``: one row per validated patient with ``predicted_benefit``
    and, where known, ``crp_mg_l``, ``il6_pg_ml`` (and ``patient_id`` to look up waterfall
    patients; never shown). ``label`` (e.g. "SYNTHETIC cohort") goes on every figure."""
    if BENEFIT_COLUMN not in patients:
        raise ValueError(
            f"The 'patients' frame must have a '{BENEFIT_COLUMN}' column. "
            f"Got columns {list(patients.columns)[:10]}."
        )
    figures = {key: _png(fig) for key, fig in benefit_figures(v, patients, label).items()}

    def img(key: str, alt: str) -> str:
        return _img(figures[key], alt, f"img-{key.replace('_', '-')}") if key in figures else ""

    honesty = "".join(
        f'<p class="benefit-message" style="border-left:4px solid #e0a800;padding-left:.6em">'
        f"{html.escape(m)}</p>"
        for m in v.messages
    )
    cal = v.calibration
    calibration = pd.DataFrame(
        [
            ("Mean predicted benefit", f"{cal.mean_predicted:.3f}"),
            ("Observed benefit (response rate drug - placebo)", _cell(cal.observed_overall)),
            ("Intercept (observed pair benefit at predicted 0)", _cell(cal.intercept)),
            ("Slope (1 = calibrated; < 1 overfitted)", _cell(cal.slope, "{:.2f}")),
            (
                "E-for-benefit: E-avg / E50 / E90",
                f"{_cell(cal.e_avg)} / {_cell(cal.e50)} / {_cell(cal.e90)}",
            ),
        ],
        columns=["calibration for benefit", "value (95% CI)"],
    )
    groups = cal.groups.rename(columns=GROUP_COLUMNS)[list(GROUP_COLUMNS.values())]
    interaction = (
        _p(v.interaction.message)
        if v.interaction is not None
        else _p("No CRP: no interaction analysis.", "muted")
    )
    arms = _arm_table(v)
    body = [
        _p(
            f"Out-of-sample validation on {v.n} patients ({v.n_treated} drug, {v.n_control} "
            f"placebo). Predicted benefit = predicted probability of response on drug minus on "
            f"placebo; the model would treat patients whose predicted benefit exceeds the harm "
            f"threshold {v.harm_threshold:g}."
        ),
        honesty,
        '<h3 id="benefit-ranking">Ordering patients by benefit: model, CRP alone, CRP rule</h3>',
        _table(ranking_table(v)),
        _p(
            "C-for-benefit: concordance of predicted with observed benefit over matched "
            f"drug/placebo pairs ({v.matching}). RATE and Qini: areas under the TOC and Qini "
            "curves (Yadlowsky et al.); 0 = no better than random.",
            "muted",
        ),
        '<h3 id="benefit-markers">Predicted benefit against CRP and IL-6</h3>',
        f'<div class="curves">{img("benefit_crp", "benefit vs CRP")}{img("benefit_il6", "benefit vs IL-6")}</div>',
        '<h3 id="benefit-calibration">Calibration for benefit</h3>',
        _table(calibration),
        _table(groups),
        img("benefit_calibration", "calibration for benefit"),
        '<h3 id="benefit-curves">Qini and TOC curves</h3>',
        f'<div class="curves">{img("qini", "Qini curve")}{img("toc", "TOC curve")}</div>',
        '<h3 id="benefit-decision">Decision curve for treatment benefit</h3>',
        _p(
            "Net benefit = fraction treated x (observed benefit among them - harm threshold): "
            "extra responders per patient, after charging each treated patient the benefit "
            "they would need to accept the drug's risks and cost."
        ),
        img("benefit_decision_curve", "benefit decision curve"),
        '<h3 id="benefit-interaction">Prespecified CRP x arm interaction</h3>',
        interaction,
    ]
    if arms is not None:
        body += ['<h3 id="benefit-arms">Each arm\'s outcome model</h3>', _table(arms)]
    if waterfalls is not None:
        body.append(waterfalls_html(waterfalls, patients, label)[0])
    body.append(_p(CAVEAT, "muted"))
    return _section(BENEFIT_SECTION, "Who benefits: drug vs placebo", "".join(body))
