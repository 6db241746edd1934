"""Tests for inflamrx.reporting.html: sections, self-containment, identifiers and a real render in
headless Chromium (the `chromium` fixture; run `eval "$(.ci/services)"` first)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread
from scipy.special import expit

from conftest import chromium_flags, rendered_dom
from inflamrx.config import ReportConfig, load_config
from inflamrx.data.outcomes import derive_outcome
from inflamrx.data.simulate import simulate_cohort
from inflamrx.data.validate import validate_frame
from inflamrx.modeling.explanations import Explanation, explain_rows
from inflamrx.modeling.features import model_input_columns
from inflamrx.modeling.kinds.base import fit_model
from inflamrx.reporting.html import (
    NO_VALIDATION,
    SECTIONS,
    WATERFALL_FEATURES,
    ReportContext,
    ReportFiles,
    example_patients,
    write_report,
)

SMALL = ReportConfig(max_patients=150, example_patients=2, dependence_features=3)


@pytest.fixture(scope="module")
def explained() -> tuple[Explanation, pd.DataFrame]:
    config = load_config(None, {"model.n_estimators": 40})
    cohort = validate_frame(simulate_cohort(400, seed=2).cohort, config.data).accepted
    y = derive_outcome(cohort, config.outcome)
    known = y.notna().to_numpy()
    cohort = cohort[known].reset_index(drop=True)
    x = cohort[model_input_columns(list(cohort.columns), config.outcome)]
    fitted = fit_model(config, x, y[known].astype(int))
    return explain_rows(fitted, x, cohort["patient_id"], interaction_rows=100), cohort


def _context(cohort: pd.DataFrame, synthetic: bool) -> ReportContext:
    return ReportContext(
        model_uri="models:/m-test",
        outcome="response",
        synthetic=synthetic,
        validation=NO_VALIDATION,
        cohort=cohort,
        n_rejected=0,
        population="test patients",
    )


@pytest.fixture(scope="module")
def report(
    explained: tuple[Explanation, pd.DataFrame], tmp_path_factory: pytest.TempPathFactory
) -> ReportFiles:
    explanation, cohort = explained
    out = tmp_path_factory.mktemp("report")
    return write_report(explanation, _context(cohort, synthetic=True), SMALL, out)


def _section(page: str, ident: str) -> str:
    match = re.search(rf'<section id="{ident}">.*?</section>', page, flags=re.S)
    assert match, f"section {ident!r} missing"
    return match.group(0)


def test_report_has_every_section_and_is_self_contained(report: ReportFiles) -> None:
    page = report.report.read_text(encoding="utf-8")
    for ident in SECTIONS:
        _section(page, ident)
    sources = re.findall(r'<img [^>]*src="([^"]{0,40})', page)
    assert len(sources) == len(report.figures)  # no evaluation images: no run here
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    assert not re.search(r"(?:src|href)=\"(?:https?:)?//", page)  # nothing fetched
    assert "<script" not in page
    assert "CRP (mg/L, log)" in page  # clinical names
    assert "not found" in _section(page, "model")  # says so when validation is unavailable


def test_synthetic_is_labelled_prominently(
    explained: tuple[Explanation, pd.DataFrame], report: ReportFiles, tmp_path: Path
) -> None:
    page = report.report.read_text(encoding="utf-8")
    assert 'id="synthetic-banner"' in page and "<title>" in page and "(SYNTHETIC)</title>" in page
    explanation, cohort = explained
    real = write_report(explanation, _context(cohort, synthetic=False), SMALL, tmp_path)
    assert "SYNTHETIC" not in real.report.read_text(encoding="utf-8")


def test_the_report_carries_no_identifier_and_the_table_maps_numbered_patients(
    report: ReportFiles,
) -> None:
    page = report.report.read_text(encoding="utf-8")
    assert "SYN-" not in page
    patients = _section(page, "patients")
    assert re.findall(r"Patient (\d+)</h3>", patients) == ["1", "2", "3"][: SMALL.example_patients]
    table = pd.read_parquet(report.table)
    assert table["patient_id"].str.startswith("SYN-").all()
    numbered = table.dropna(subset=["report_patient"]).sort_values("report_patient")
    assert numbered["report_patient"].tolist() == list(range(1, SMALL.example_patients + 1))
    cols = ["patient_id", "report_patient", "probability", "log_odds", "base_value"]
    assert list(table.columns[:5]) == cols
    assert not {"site", "arm", "drug", "age"} & set(table.columns)


def test_example_patients_span_the_predictions(
    explained: tuple[Explanation, pd.DataFrame],
) -> None:
    explanation, _ = explained
    ids = example_patients(explanation, 3)
    p = pd.Series(explanation.contrib.probability, index=explanation.patient_ids)
    assert p[ids[0]] == p.min() and p[ids[-1]] == p.max() and len(set(ids)) == 3
    assert example_patients(explanation, 0) == []


def test_chosen_patients_are_shown_and_tabulated(
    explained: tuple[Explanation, pd.DataFrame], tmp_path: Path
) -> None:
    explanation, cohort = explained
    ids = [str(explanation.patient_ids.iloc[5]), str(explanation.patient_ids.iloc[1])]
    files = write_report(explanation, _context(cohort, True), SMALL, tmp_path, patients=ids)
    table = pd.read_parquet(files.table)
    assert list(table["patient_id"]) == ids and list(table["report_patient"]) == [1, 2]
    patients = _section(files.report.read_text(encoding="utf-8"), "patients")
    assert "Patient 1</h3>" in patients and "Patient 2</h3>" in patients
    assert not any(i in patients for i in ids)
    # Each patient's factors are their largest contributions, largest first, with the signed
    # log-odds and probability points recomputed here from the contributions.
    blocks = re.findall(r'<div class="patient">.*?</table>', patients, flags=re.S)
    assert len(blocks) == len(ids)
    for patient, block in zip(ids, blocks, strict=True):
        rows = [re.findall(r"<td>(.*?)</td>", r) for r in re.findall(r"<tr><td>.*?</tr>", block)]
        i = explanation.patient_ids.tolist().index(patient)
        shap = explanation.contrib.values.iloc[i]
        margin = explanation.contrib.margin[i]
        top = shap.abs().sort_values(ascending=False, kind="stable").index[:WATERFALL_FEATURES]
        assert len(rows) == WATERFALL_FEATURES
        for (text, log_odds, points), feature in zip(rows, top, strict=True):
            expected = 100 * (expit(margin) - expit(margin - shap[feature]))
            sign = "+" if expected > 0 else "-"
            assert log_odds == f"{shap[feature]:+.2f}", (patient, feature)
            assert points[0] == sign and abs(float(points) - expected) < 0.006, (patient, feature)
            shown = re.fullmatch(r".+: ([+-][0-9.]+) points", text)
            assert shown and abs(float(shown[1]) - expected) <= 0.5, (patient, text)
            assert shown[1][0] == sign, (patient, text)
    # In clinical words: patient 1's largest factor is their CRP, raw value in its unit.
    crp = cohort.loc[cohort["patient_id"] == ids[0], "crp_mg_l"].item()
    first = re.search(r"<tr><td>(.*?)</td>", blocks[0])
    assert first and first[1].startswith(f"CRP {crp:g} mg/L: "), first


@pytest.mark.slow
def test_report_renders_in_headless_chromium(
    report: ReportFiles, chromium: str, tmp_path: Path
) -> None:
    """Render the real report, and a test copy with a tiny script that writes each image's
    decoded width into the DOM (the shipped report has no script)."""
    dom = rendered_dom(chromium, report.report.read_text(encoding="utf-8"), tmp_path, 120)
    for ident in SECTIONS:
        assert f'id="{ident}"' in dom
    widths = [int(w) for w in re.findall(r'data-width="(\d+)"', dom)]
    assert len(widths) == len(report.figures) and min(widths) > 100, widths

    shot = tmp_path / "report.png"
    subprocess.run(
        [*chromium_flags(chromium, tmp_path), f"--screenshot={shot}", "--window-size=1280,4000",
         report.report.as_uri()],
        capture_output=True, timeout=120, check=True,
    )  # fmt: skip
    pixels = imread(shot)
    assert pixels.shape[:2] == (4000, 1280)
    assert float(np.std(pixels[..., :3])) > 0.05  # not blank
