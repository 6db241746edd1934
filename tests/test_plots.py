"""Tests for inflamrx.reporting.figures: every figure is written as a PNG and nothing leaks into pyplot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib import pyplot as plt
from scipy.special import expit

from inflamrx.modeling.evaluate import Evaluation, evaluate_predictions
from inflamrx.reporting import figures as plots


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    z = rng.normal(size=300)
    crp = np.exp(z + rng.normal(size=300))
    return rng.binomial(1, expit(z - 0.3)), expit(0.8 * z - 0.3), crp


@pytest.fixture(scope="module")
def evaluation(data: tuple[np.ndarray, np.ndarray, np.ndarray]) -> Evaluation:
    y, p, crp = data
    return evaluate_predictions(
        y, p, baseline_rule=crp > 3, baseline_rule_name="CRP > 3 mg/L", n_boot=50
    )


def test_save_evaluation_plots_writes_png_files(
    evaluation: Evaluation, data: tuple[np.ndarray, np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    y, _, crp = data
    paths = plots.save_evaluation_plots(
        evaluation, tmp_path / "plots", {"CRP alone": (y, crp)}, cohort_label="Synthetic cohort"
    )
    assert set(paths) == {"roc", "precision_recall", "calibration", "decision_curve"}
    for path in paths.values():
        assert path.parent == tmp_path / "plots"
        assert path.stat().st_size > 1_000
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plt.get_fignums() == []  # built without pyplot: nothing left open


def test_figures_use_clinical_labels_and_show_the_cohort(evaluation: Evaluation) -> None:
    roc = plots.roc_figure(evaluation, cohort_label="Synthetic cohort").axes[0]
    assert "specificity" in roc.get_xlabel() and "Sensitivity" in roc.get_ylabel()
    assert "Synthetic cohort" in roc.get_title()
    dca = plots.decision_curve_figure(evaluation).axes[0]
    assert "Net benefit" in dca.get_ylabel()
    legend = dca.get_legend()
    assert legend is not None
    assert {t.get_text() for t in legend.get_texts()} == {
        "Model",
        "Treat all",
        "Treat none",
        "CRP > 3 mg/L",
    }
    cal = plots.calibration_figure(evaluation).axes[0]
    assert "Predicted probability" in cal.get_xlabel()


def test_plots_work_without_rule(data: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    y, p, _ = data
    fig = plots.decision_curve_figure(evaluate_predictions(y, p, n_boot=20))
    assert len(fig.axes[0].get_lines()) == 3


def test_extra_roc_with_wrong_length_is_refused(
    evaluation: Evaluation, data: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> None:
    y, _, crp = data
    with pytest.raises(ValueError, match=r"'extra_roc\['CRP alone'\]\[1\]' score must be 300"):
        plots.roc_figure(evaluation, extra_roc={"CRP alone": (y, crp[:-1])})
