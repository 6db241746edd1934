"""Riley et al.'s minimum sample size criteria against their published example."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from inflamrx.modeling.samplesize import expected_shrinkage, r2cs_from_c, riley_criteria


def test_the_published_chagas_example() -> None:
    """Riley et al., Stat Med 2019;38:1276 (and pmsampsize's binary example): 24 candidate
    parameters, prevalence 0.174, anticipated Cox-Snell R2 0.288 -> criterion (i) 623,
    (ii) 662, (iii) 221 participants; 662 needed, EPP 4.8."""
    size = riley_criteria(1000, 174, 24, r2cs=0.288)
    assert (size.n_shrinkage, size.n_r2_optimism, size.n_prevalence) == (623, 662, 221)
    assert size.n_required == 662
    assert round(size.n_required * 0.174 / 24, 1) == 4.8
    assert size.met  # 1,000 >= 662


def test_expected_shrinkage_inverts_criterion_one() -> None:
    assert expected_shrinkage(623, 24, 0.288) == pytest.approx(0.9, abs=0.001)
    assert expected_shrinkage(5000, 24, 0.288) > 0.98
    assert expected_shrinkage(100, 24, 0.288) < 0.7


def test_too_few_patients_are_reported_with_the_shrinkage_to_expect() -> None:
    size = riley_criteria(300, 90, 40, c_statistic=0.70)
    assert not size.met
    text = size.text()
    assert "NOT met" in text and "Expected shrinkage" in text and "300" in text


def test_cox_snell_r2_from_the_c_statistic_matches_a_large_logistic_fit() -> None:
    """The conversion's definition: a logistic model on a normal linear predictor with this C
    in a large sample has this Cox-Snell R2."""
    rng = np.random.default_rng(0)
    n, prevalence, c = 200_000, 0.3, 0.75
    y = (rng.random(n) < prevalence).astype(int)
    mu = math.sqrt(2) * 0.6744897501960817  # sqrt(2) * Phi^-1(0.75)
    lp = rng.normal(np.where(y == 1, mu, 0.0), 1.0)
    assert roc_auc_score(y, lp) == pytest.approx(c, abs=0.005)
    fit = LogisticRegression(C=1e6).fit(lp[:, None], y)
    p = fit.predict_proba(lp[:, None])[:, 1]
    ll = np.sum(y * np.log(p) + (1 - y) * np.log(1 - p))
    phi = y.mean()
    ll0 = n * (phi * np.log(phi) + (1 - phi) * np.log(1 - phi))
    r2 = 1 - np.exp(-2 * (ll - ll0) / n)
    assert r2cs_from_c(c, prevalence) == pytest.approx(r2, abs=0.005)
    assert r2cs_from_c(0.5, prevalence) == pytest.approx(0.0, abs=1e-9)
    assert r2cs_from_c(0.8, prevalence) > r2cs_from_c(0.7, prevalence)
