"""The explain report of a two-arm benefit model (inflamrx.reporting.benefit_explain) for both
explanation scales: additivity of the written SHAP table on the stated scale, the sections,
no identifier, asked-for patients, and a render in headless Chromium (the `chromium` fixture;
run `eval "$(.ci/services)"` first). The CLI and its MLflow run: test_benefit_train.py."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.special import logit

from conftest import rendered_dom
from inflamrx.config import ReportConfig, build_config
from inflamrx.data.outcomes import derive_outcome
from inflamrx.data.simulate import simulate_cohort
from inflamrx.data.validate import validate_frame
from inflamrx.modeling.benefit.learners import LOG_ODDS_RATIO, RISK_DIFFERENCE
from inflamrx.modeling.explanations import explain_rows
from inflamrx.modeling.features import model_input_columns
from inflamrx.modeling.kinds.benefit import BENEFIT, CONTROL, TREATED, fit_benefit, scale_of
from inflamrx.reporting.benefit_explain import (
    EXPLAINED,
    SECTIONS,
    validation_table,
    write_benefit_report,
)
from inflamrx.reporting.html import NO_VALIDATION, TABLE_FILE, ReportContext

pytestmark = pytest.mark.slow  # fits two learners

CONFIG = build_config({"treatment": {}, "model": {"n_estimators": 40, "max_depth": 2}})
SMALL = ReportConfig(max_patients=150, example_patients=2)
SCALES = {"interaction": LOG_ODDS_RATIO, "x_learner": RISK_DIFFERENCE}


@pytest.fixture(scope="module")
def trial() -> tuple[pd.DataFrame, pd.DataFrame, pd.Series, np.ndarray]:
    """(cohort, model inputs, outcome, arm 0/1) of a SYNTHETIC two-arm trial."""
    sim = simulate_cohort(500, seed=5, two_arm=True)
    cohort = validate_frame(sim.cohort, CONFIG.data).accepted
    y = derive_outcome(cohort, CONFIG.outcome)
    cohort = cohort[y.notna().to_numpy()].reset_index(drop=True)
    x = cohort[[c for c in model_input_columns(list(cohort.columns), CONFIG.outcome) if c != "arm"]]
    treated = (cohort["arm"] == "drug").to_numpy().astype(int)
    return cohort, x, y.dropna().astype(int).reset_index(drop=True), treated


@pytest.fixture(scope="module", params=list(SCALES))
def report(
    request: pytest.FixtureRequest,
    trial: tuple[pd.DataFrame, pd.DataFrame, pd.Series, np.ndarray],
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[str, Path, pd.DataFrame]:
    """(learner, output folder, cohort) of a report on 120 patients."""
    cohort, x, y, treated = trial
    model = fit_benefit(CONFIG, request.param, x, y, treated)
    rows = slice(0, 120)
    explanation = explain_rows(model, x.iloc[rows], cohort["patient_id"].iloc[rows])
    context = ReportContext(
        model_uri="models:/benefit-test/1", outcome="response", synthetic=True,
        validation=NO_VALIDATION, cohort=cohort.iloc[rows], n_rejected=0, population="test",
    )  # fmt: skip
    out = tmp_path_factory.mktemp(f"explain-{request.param}")
    predicted = model.predict(x.iloc[rows])
    write_benefit_report(explanation, predicted, scale_of(model), 0.05, context, SMALL, out)
    return request.param, out, cohort


def test_contributions_add_up_to_the_predicted_benefit_on_the_stated_scale(
    report: tuple[str, Path, pd.DataFrame],
) -> None:
    learner, out, _ = report
    table = pd.read_parquet(out / TABLE_FILE)
    assert set(table["scale"]) == {SCALES[learner]}
    features = list(table.columns[list(table.columns).index("base_value") + 1 :])
    assert "CRP (mg/L, log)" in features
    total = (table["base_value"] + table[features].sum(axis=1)).to_numpy()
    np.testing.assert_allclose(total, table[EXPLAINED], atol=1e-6)  # float32 trees
    if SCALES[learner] == LOG_ODDS_RATIO:
        expected = (logit(table[TREATED]) - logit(table[CONTROL])).to_numpy()
    else:  # the risk difference, where no probability was clipped into [0, 1]
        inside = ((table[TREATED] > 0) & (table[TREATED] < 1)).to_numpy()
        total, expected = total[inside], table[BENEFIT].to_numpy()[inside]
    np.testing.assert_allclose(total, expected, atol=1e-4)
    np.testing.assert_allclose(table[TREATED] - table[CONTROL], table[BENEFIT], atol=1e-12)


def test_report_states_its_scale_and_shows_every_section_without_ids(
    report: tuple[str, Path, pd.DataFrame],
) -> None:
    learner, out, cohort = report
    page = (out / "report.html").read_text(encoding="utf-8")
    for ident in SECTIONS:
        assert f'<section id="{ident}">' in page, ident
    assert f"{SCALES[learner]} (drug vs placebo)" in page
    for ident in ("img-importance", "img-beeswarm", "img-benefit-crp", "img-benefit-il6",
                  "img-dependence-1", "img-dependence-2", "img-benefit-waterfall-1",
                  "img-benefit-waterfall-2"):  # fmt: skip
        assert f'id="{ident}"' in page, ident
    assert "CRP (mg/L, log)" in page and "mean |contribution|" in page
    assert "SYNTHETIC" in page and "not a prescription" in page
    assert not any(pid in page for pid in cohort["patient_id"].astype(str))
    assert "<script" not in page


def test_asked_patients_are_the_ones_shown_and_tabulated(
    trial: tuple[pd.DataFrame, pd.DataFrame, pd.Series, np.ndarray], tmp_path: Path
) -> None:
    cohort, x, y, treated = trial
    model = fit_benefit(CONFIG, "interaction", x, y, treated)
    explanation = explain_rows(model, x.iloc[:60], cohort["patient_id"].iloc[:60])
    asked = [str(cohort["patient_id"].iloc[i]) for i in (7, 3)]
    context = ReportContext("models:/b/1", "response", True, NO_VALIDATION, cohort, 0, "test")
    predicted = model.predict(x.iloc[:60])
    write_benefit_report(
        explanation, predicted, LOG_ODDS_RATIO, 0.05, context, SMALL, tmp_path, asked
    )
    table = pd.read_parquet(tmp_path / TABLE_FILE)
    assert list(table["patient_id"]) == asked and list(table["report_patient"]) == [1, 2]
    np.testing.assert_allclose(table[BENEFIT], predicted[BENEFIT].iloc[[7, 3]], atol=1e-12)
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "Patients are asked for" in page and 'id="img-benefit-waterfall-3"' not in page


def test_validation_table_reads_the_training_runs_benefit_metrics() -> None:
    table = validation_table(
        {"c_for_benefit": 0.61, "c_for_benefit_ci_low": 0.55, "c_for_benefit_ci_high": 0.66,
         "qini_coefficient": 0.02, "auroc": 0.7}
    )  # fmt: skip
    assert table is not None
    assert table.values.tolist() == [
        ["C-for-benefit (model)", "0.610", "0.550 to 0.660"],
        ["Qini coefficient", "0.020", ""],
    ]
    assert validation_table({"auroc": 0.7}) is None


def test_benefit_explain_report_renders_in_headless_chromium(
    report: tuple[str, Path, pd.DataFrame], chromium: str, tmp_path: Path
) -> None:
    _, out, _ = report
    page = (out / "report.html").read_text(encoding="utf-8")
    dom = rendered_dom(chromium, page, tmp_path)
    for ident in SECTIONS:
        assert f'<section id="{ident}">' in dom, ident
    widths = dict(re.findall(r'<img id="([^"]+)"[^>]*data-width="(\d+)"', dom))
    assert len(widths) == page.count("<img "), sorted(widths)
    assert min(int(w) for w in widths.values()) > 100, widths  # every figure decoded
