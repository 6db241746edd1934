"""Tests for inflamrx.reporting.benefit: the benefit section's tables, figures and honesty
messages, inside the real report, rendered in headless Chromium (the `chromium` fixture; run
`eval "$(.ci/services)"` first)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import rendered_dom
from inflamrx.config import ReportConfig, load_config
from inflamrx.data.outcomes import derive_outcome
from inflamrx.data.simulate import simulate_cohort
from inflamrx.data.validate import validate_frame
from inflamrx.modeling.benefit.validation import BenefitValidation, validate_benefit
from inflamrx.modeling.explanations import Explanation, explain_rows
from inflamrx.modeling.features import model_input_columns
from inflamrx.modeling.kinds.base import fit_model
from inflamrx.reporting.benefit import (
    BENEFIT_PLOT_FILES,
    BENEFIT_SECTION,
    BenefitWaterfalls,
    benefit_section,
)
from inflamrx.reporting.html import NO_VALIDATION, SECTIONS, ReportContext, write_report

SMALL = ReportConfig(max_patients=150, example_patients=1, dependence_features=2)
FIGURE_IDS = [f"img-{key.replace('_', '-')}" for key in BENEFIT_PLOT_FILES]


def _trial(n: int, seed: int) -> tuple[pd.DataFrame, BenefitValidation]:
    """A SYNTHETIC two-arm cohort; the "model" is the truth plus noise (the validation is
    what is tested here, not a learner)."""
    config = load_config(None)
    sim = simulate_cohort(n, seed=seed, two_arm=True)
    cohort = validate_frame(sim.cohort, config.data).accepted.reset_index(drop=True)
    truth = sim.truth.set_index("patient_id").loc[cohort["patient_id"]]
    y = derive_outcome(cohort, config.outcome)
    known = y.notna().to_numpy()
    cohort, truth = cohort[known].reset_index(drop=True), truth[known]
    rng = np.random.default_rng(seed)
    p_t = np.clip(truth["p_response_drug"].to_numpy() + rng.normal(0, 0.05, len(cohort)), 0, 1)
    p_c = np.clip(truth["p_response_placebo"].to_numpy() + rng.normal(0, 0.05, len(cohort)), 0, 1)
    validation = validate_benefit(
        y[known].astype(int).to_numpy(), (cohort["arm"] == "drug").to_numpy(), p_t - p_c,
        p_t, p_c, cohort["crp_mg_l"].to_numpy(dtype=float), n_boot=150, seed=0,
    )  # fmt: skip
    patients = pd.DataFrame(
        {
            "patient_id": cohort["patient_id"].astype(str),
            "predicted_benefit": p_t - p_c,
            "crp_mg_l": cohort["crp_mg_l"].astype(float),
            "il6_pg_ml": cohort["il6_pg_ml"].astype(float),
            "y": y[known].astype(int).to_numpy(),
        }
    )
    return patients, validation


@pytest.fixture(scope="module")
def trial() -> tuple[pd.DataFrame, BenefitValidation]:
    return _trial(600, seed=3)


@pytest.fixture(scope="module")
def explanation(trial: tuple[pd.DataFrame, BenefitValidation]) -> Explanation:
    """A stand-in benefit explanation: SHAP of a small model's log-odds, labelled with a
    benefit scale. The section only needs the Explanation form (base + sum = margin)."""
    config = load_config(None, {"model.n_estimators": 30})
    sim = simulate_cohort(300, seed=4, two_arm=True)
    cohort = validate_frame(sim.cohort, config.data).accepted
    y = derive_outcome(cohort, config.outcome)
    cohort = cohort[y.notna().to_numpy()].reset_index(drop=True)
    x = cohort[[c for c in model_input_columns(list(cohort.columns), config.outcome) if c != "arm"]]
    fitted = fit_model(config, x, y.dropna().astype(int))
    return explain_rows(fitted, x, cohort["patient_id"], interaction_rows=50)


def _page(section: str) -> str:
    return f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"></head><body>{section}</body></html>'


def test_section_shows_every_figure_and_table_beside_crp(
    trial: tuple[pd.DataFrame, BenefitValidation],
) -> None:
    patients, validation = trial
    html = benefit_section(validation, patients, label="SYNTHETIC cohort")
    assert html.startswith(f'<section id="{BENEFIT_SECTION}">')
    for ident in FIGURE_IDS:
        assert f'id="{ident}"' in html, ident
    for heading in ("benefit-ranking", "benefit-markers", "benefit-calibration",
                    "benefit-curves", "benefit-decision", "benefit-interaction", "benefit-arms"):  # fmt: skip
        assert f'id="{heading}"' in html, heading
    # The model is compared with CRP alone and the CRP rule in one table.
    assert "<th>model</th><th>CRP alone</th><th>CRP &gt; 3 mg/L</th>" in html
    assert "C-for-benefit" in html and "RATE (AUTOC)" in html and "E-for-benefit" in html
    assert "not a prescription" in html
    # No identifier, even though the frame carries patient_id.
    assert not any(pid in html for pid in patients["patient_id"].head(50))


def test_thirty_patient_section_says_plainly_it_cannot_tell_model_from_crp() -> None:
    patients, validation = _trial(34, seed=8)
    html = benefit_section(validation, patients)
    assert "Small trial" in html
    assert "cannot distinguish the model" in html
    assert 'class="benefit-message"' in html


def test_section_refuses_a_frame_without_predicted_benefit(
    trial: tuple[pd.DataFrame, BenefitValidation],
) -> None:
    patients, validation = trial
    with pytest.raises(ValueError, match="'predicted_benefit' column"):
        benefit_section(validation, patients.drop(columns="predicted_benefit"))


def test_benefit_waterfalls_from_an_explanation(
    trial: tuple[pd.DataFrame, BenefitValidation], explanation: Explanation
) -> None:
    patients, validation = trial
    html = benefit_section(
        validation, patients, waterfalls=BenefitWaterfalls(explanation, "log odds ratio", 2)
    )
    assert 'id="img-benefit-waterfall-1"' in html and 'id="img-benefit-waterfall-2"' in html
    assert "log odds ratio scale" in html


@pytest.fixture(scope="module")
def report_with_benefit(
    trial: tuple[pd.DataFrame, BenefitValidation],
    explanation: Explanation,
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    patients, validation = trial
    section = benefit_section(
        validation, patients, label="SYNTHETIC cohort",
        waterfalls=BenefitWaterfalls(explanation, "log odds ratio", 2),
    )  # fmt: skip
    context = ReportContext(
        model_uri="models:/m-benefit-test", outcome="response", synthetic=True,
        validation=NO_VALIDATION, cohort=explanation.x, n_rejected=0, population="test",
    )  # fmt: skip
    out = tmp_path_factory.mktemp("benefit-report")
    return write_report(explanation, context, SMALL, out, extra_sections=[section]).report


def test_benefit_section_sits_before_the_caveats(report_with_benefit: Path) -> None:
    page = report_with_benefit.read_text(encoding="utf-8")
    assert page.index('<section id="benefit">') < page.index('<section id="caveats">')
    assert "<script" not in page


@pytest.mark.slow
def test_benefit_section_renders_in_headless_chromium(
    report_with_benefit: Path, chromium: str, tmp_path: Path
) -> None:
    dom = rendered_dom(chromium, report_with_benefit.read_text(encoding="utf-8"), tmp_path)
    for ident in (*SECTIONS, BENEFIT_SECTION):
        assert f'id="{ident}"' in dom, ident
    section = re.search(r'<section id="benefit">.*?</section>', dom, flags=re.S)
    assert section
    assert "Who benefits: drug vs placebo" in section.group(0)
    widths = {
        ident: int(width)
        for ident, width in re.findall(
            r'<img id="([^"]+)"[^>]*data-width="(\d+)"', section.group(0)
        )
    }
    expected = [*FIGURE_IDS, "img-benefit-waterfall-1", "img-benefit-waterfall-2"]
    assert sorted(widths) == sorted(expected)
    assert min(widths.values()) > 100, widths  # every figure decoded
