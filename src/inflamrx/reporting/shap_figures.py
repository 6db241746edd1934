"""The SHAP figures of the report: global importance, beeswarm, dependence, interactions and
per-patient waterfalls. Each takes an :class:`~inflamrx.modeling.explanations.Explanation`;
``scale`` names the contributions' additive scale where it is not the log-odds of the outcome
(a benefit model's log odds ratio or risk difference). Figures are ``matplotlib.figure.Figure``
objects on an Agg canvas (never pyplot), as in :mod:`inflamrx.reporting.figures`; no
identifier goes on a figure.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from scipy.special import expit

from inflamrx.data.schema import COLUMNS
from inflamrx.modeling.explanations import Explanation, global_importance
from inflamrx.modeling.factors import feature_sources
from inflamrx.reporting.figures import new_axes

TOP_FEATURES = 15  # bars and beeswarm rows: beyond ~15 a reader stops reading


def _axes(
    title: str, label: str | None, size: tuple[float, float] = (7.0, 5.0)
) -> tuple[Figure, Axes]:
    return new_axes(title, label, size=size, dpi=100)


def importance_figure(
    explanation: Explanation,
    label: str | None = None,
    outcome: str = "response",
    *,
    scale: str | None = None,
) -> Figure:
    importance = global_importance(explanation.contrib).head(TOP_FEATURES)[::-1]
    fig, ax = _axes("Global importance\n(mean |SHAP| over patients)", label, size=(8.0, 5.5))
    ax.barh(importance.index, importance.to_numpy(), color="#1f77b4")
    ax.set_xlabel(f"mean |contribution| ({scale or f'log-odds of {outcome}'})")
    return fig


def _percentile_colour(values: np.ndarray) -> np.ndarray:
    """Each value's rank in its feature (0 = lowest, 1 = highest), NaN kept: one colour scale
    serves features in different units."""
    ranks = pd.Series(values).rank(pct=True).to_numpy()
    return np.asarray(ranks, dtype=float)


def beeswarm_figure(
    explanation: Explanation,
    label: str | None = None,
    outcome: str = "response",
    *,
    scale: str | None = None,
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
    ax.set_xlabel(f"contribution ({scale or f'log-odds of {outcome}'}); grey = value missing")
    if top:
        bar = fig.colorbar(points, ax=ax, ticks=[0, 1])
        bar.ax.set_yticklabels(["low", "high"])
        bar.set_label("feature value (rank in cohort)")
    return fig


def dependence_figure(
    explanation: Explanation,
    feature: str,
    partner: str | None,
    label: str | None = None,
    *,
    scale: str = "log-odds",
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
    ax.set_ylabel(f"contribution of {feature.split(' (')[0]} ({scale})")
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
