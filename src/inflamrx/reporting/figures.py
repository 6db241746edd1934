"""PNG figures of an :class:`~inflamrx.modeling.evaluate.Evaluation`: ROC, PR, calibration, decision curve.

Figures are built as ``matplotlib.figure.Figure`` objects on an Agg canvas, never through
pyplot, so no figure is registered in pyplot's global list (nothing to close, nothing leaks)
and the process-wide backend is left alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import optuna
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState
from sklearn.metrics import roc_auc_score, roc_curve

from inflamrx.data.outcomes import OutcomeWords
from inflamrx.modeling.evaluate import Evaluation
from inflamrx.modeling.metrics import Estimate, FloatArray, IntArray, check_labels, with_ci

# name -> (outcome labels, score); higher score means more likely to respond.
ExtraRoc = Mapping[str, tuple[npt.ArrayLike, npt.ArrayLike]]

PLOT_FILES = {
    "roc": "roc_curve.png",
    "precision_recall": "precision_recall_curve.png",
    "calibration": "calibration.png",
    "decision_curve": "decision_curve.png",
}


def new_axes(
    title: str,
    cohort_label: str | None,
    size: tuple[float, float] = (5.5, 5.0),
    dpi: float | None = None,
) -> tuple[Figure, Axes]:
    """A figure on an Agg canvas (never pyplot: no global state, safe in servers)."""
    fig = Figure(figsize=size, layout="constrained", dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    # The cohort label (e.g. "synthetic cohort") goes on every figure so none is mistaken.
    ax.set_title(title if cohort_label is None else f"{title}\n{cohort_label}")
    return fig, ax


def _with_ci(name: str, est: Estimate, alpha: float) -> str:
    # "to" rather than a dash, which reads as a minus sign next to negative intercepts.
    level = f"{100 * (1 - alpha):g}% CI"
    return f"{name} {with_ci(est.estimate, est.ci_low, est.ci_high, 2, level)}"


def _check_extra_roc(
    name: str, y: npt.ArrayLike, score: npt.ArrayLike
) -> tuple[IntArray, FloatArray]:
    y_arr = check_labels(y, f"extra_roc[{name!r}][0]")
    s = np.asarray(score, dtype=np.float64)
    if s.shape != y_arr.shape or not np.all(np.isfinite(s)):
        raise ValueError(
            f"The 'extra_roc[{name!r}][1]' score must be {len(y_arr)} finite numbers, one per "
            f"label. Got shape {s.shape} with {int(np.sum(~np.isfinite(s)))} non-finite values."
        )
    if y_arr.min() == y_arr.max():
        raise ValueError(f"The 'extra_roc[{name!r}][0]' labels must contain both 0 and 1.")
    return y_arr, s


RESPONSE = OutcomeWords.of("response")


def roc_figure(
    evaluation: Evaluation,
    *,
    extra_roc: ExtraRoc | None = None,
    cohort_label: str | None = None,
    words: OutcomeWords = RESPONSE,
) -> Figure:
    """ROC curve of the model, optionally beside baseline scores such as CRP alone."""
    fig, ax = new_axes("ROC curve", cohort_label)
    roc, alpha = evaluation.roc_curve, evaluation.metrics.alpha
    label = _with_ci("Model, AUROC", evaluation.metrics.auroc, alpha)
    ax.plot(roc["false_positive_rate"], roc["sensitivity"], lw=2, label=label)
    for name, (y, score) in (extra_roc or {}).items():
        y_arr, s = _check_extra_roc(name, y, score)
        fpr, tpr, _ = roc_curve(y_arr, s)
        ax.plot(fpr, tpr, ls="--", label=f"{name}, AUROC {roc_auc_score(y_arr, s):.2f}")
    ax.plot([0, 1], [0, 1], color="grey", ls=":", label="Chance")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), aspect="equal")
    ax.set_xlabel(f"1 − specificity ({words.negatives} wrongly flagged)")
    ax.set_ylabel(f"Sensitivity ({words.positives} correctly flagged)")
    ax.legend(loc="lower right", fontsize="small")
    return fig


def precision_recall_figure(
    evaluation: Evaluation, *, cohort_label: str | None = None, words: OutcomeWords = RESPONSE
) -> Figure:
    """Precision-recall curve, with the outcome's rate (what treating everyone achieves)."""
    fig, ax = new_axes("Precision-recall curve", cohort_label)
    pr, alpha = evaluation.pr_curve, evaluation.metrics.alpha
    label = _with_ci("Model, AUPRC", evaluation.metrics.auprc, alpha)
    ax.step(pr["sensitivity"], pr["ppv"], where="post", lw=2, label=label)
    ax.axhline(
        evaluation.prevalence,
        color="grey",
        ls=":",
        label=f"Rate of {words.label} {evaluation.prevalence:.2f} (treat all)",
    )
    ax.set(xlim=(0, 1), ylim=(0, 1.01))
    ax.set_xlabel(f"Sensitivity (share of {words.positives} flagged)")
    ax.set_ylabel(f"Positive predictive value (flagged with {words.label})")
    ax.legend(loc="upper right", fontsize="small")
    return fig


def calibration_figure(
    evaluation: Evaluation, *, cohort_label: str | None = None, words: OutcomeWords = RESPONSE
) -> Figure:
    """Observed against predicted outcome: quantile groups with Wilson CIs and a LOWESS line."""
    fig, ax = new_axes("Calibration", cohort_label)
    bins, smooth = evaluation.calibration_bins, evaluation.calibration_smooth
    ax.plot([0, 1], [0, 1], color="grey", ls=":", label="Perfect calibration")
    yerr = np.vstack(
        [
            bins["observed"] - bins["observed_ci_low"],
            bins["observed_ci_high"] - bins["observed"],
        ]
    )
    ax.errorbar(
        bins["mean_predicted"],
        bins["observed"],
        yerr=yerr,
        fmt="o",
        capsize=3,
        label=f"Groups of about {int(bins['n'].median())} patients "
        f"({100 * (1 - evaluation.metrics.alpha):g}% CI)",
    )
    ax.plot(smooth["predicted"], smooth["observed"], lw=2, label="Smoothed (LOWESS)")
    m = evaluation.metrics
    text = "\n".join(
        [
            _with_ci("Intercept", m.calibration_intercept, m.alpha),
            _with_ci("Slope", m.calibration_slope, m.alpha),
        ]
    )
    ax.text(0.03, 0.97, text, transform=ax.transAxes, va="top", fontsize="small")
    ax.set(xlim=(0, 1), ylim=(0, 1), aspect="equal")
    ax.set_xlabel(f"Predicted probability of {words.label}")
    ax.set_ylabel(f"Observed proportion with {words.label}")
    ax.legend(loc="lower right", fontsize="small")
    return fig


def decision_curve_figure(
    evaluation: Evaluation, *, cohort_label: str | None = None, words: OutcomeWords = RESPONSE
) -> Figure:
    """Net benefit across threshold probabilities: model, treat all, treat none and the rule."""
    fig, ax = new_axes("Decision curve", cohort_label)
    dca = evaluation.decision_curve
    ax.plot(dca["threshold"], dca["model"], lw=2, label="Model")
    ax.plot(dca["threshold"], dca["treat_all"], color="grey", label="Treat all")
    ax.plot(dca["threshold"], dca["treat_none"], color="black", ls=":", label="Treat none")
    if "rule" in dca:
        ax.plot(dca["threshold"], dca["rule"], ls="--", label=evaluation.rule_name or "Rule")
    # Treat-all plunges at high thresholds; keep the informative range in view.
    curves = dca.drop(columns="threshold").to_numpy()
    ax.set_ylim(-0.05, max(float(np.nanmax(curves)), 0.01) * 1.15)
    ax.set_xlabel(f"Threshold probability of {words.label} at which treatment is offered")
    ax.set_ylabel(f"Net benefit (net {words.positives} flagged per patient)")
    ax.legend(loc="upper right", fontsize="small")
    return fig


def save_evaluation_plots(
    evaluation: Evaluation,
    out_dir: Path,
    extra_roc: ExtraRoc | None = None,
    *,
    cohort_label: str | None = None,
    dpi: int = 150,
    words: OutcomeWords = RESPONSE,
) -> dict[str, Path]:
    """Write the four figures as PNGs into ``out_dir``; return ``{plot name: path}``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = {
        "roc": roc_figure(evaluation, extra_roc=extra_roc, cohort_label=cohort_label, words=words),
        "precision_recall": precision_recall_figure(
            evaluation, cohort_label=cohort_label, words=words
        ),
        "calibration": calibration_figure(evaluation, cohort_label=cohort_label, words=words),
        "decision_curve": decision_curve_figure(evaluation, cohort_label=cohort_label, words=words),
    }
    paths = {}
    for name, fig in figures.items():
        paths[name] = out_dir / PLOT_FILES[name]
        fig.savefig(paths[name], dpi=dpi)
    return paths


def save_tuning_plots(
    study: Study,
    trials: Sequence[FrozenTrial],
    folder: Path,
    label: str | None,
    score: tuple[str, str] = ("cross-validated AUROC, training part", "AUROC"),
) -> list[Path]:
    """Optimisation history and parameter importance (PNG, matplotlib, no pyplot state);
    ``score``: what a trial's value is, in the title and on the axis."""

    def axes(title: str) -> tuple[Any, Any]:
        return new_axes(title, label, size=(6.0, 4.5))

    written = []
    done = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    pruned = [t for t in trials if t.state == TrialState.PRUNED and t.intermediate_values]
    fig, ax = axes(f"Optimisation history ({score[0]})")
    ax.scatter([t.number for t in done], [t.value for t in done], s=14, label="complete")
    if pruned:
        last = [t.intermediate_values[max(t.intermediate_values)] for t in pruned]
        ax.scatter([t.number for t in pruned], last, s=14, marker="x", c="grey",
                   label="pruned (running AUROC when stopped)")  # fmt: skip
    if done:
        order = sorted(done, key=lambda t: t.number)
        ax.step([t.number for t in order], np.maximum.accumulate([float(t.value or 0) for t in order]),
                where="post", c="C3", label="best so far")  # fmt: skip
    ax.set_xlabel("trial")
    ax.set_ylabel(score[1])
    ax.legend(loc="lower right", fontsize=8)
    written.append(folder / "optimisation_history.png")
    fig.savefig(written[-1], dpi=110)

    try:
        importance = optuna.importance.get_param_importances(study)
    except (ValueError, RuntimeError, ZeroDivisionError):
        importance = {}  # too few complete trials to say
    if importance:
        fig, ax = axes("Parameter importance (PED-ANOVA)")
        names = list(importance)[::-1]
        ax.barh(names, [importance[n] for n in names])
        ax.set_xlabel("importance (share)")
        written.append(folder / "param_importance.png")
        fig.savefig(written[-1], dpi=110)
    return written
