"""A SYNTHETIC cohort of depressed patients treated with an anti-inflammatory drug.

Every number comes from ``Parameters`` below, each with its source in
``shared/literature.md`` (or marked "estimate"). The generator also returns the truth it
drew from: each patient's probability of response on drug and on placebo, so a model can be
compared with the best possible one (``oracle_auroc``). None of this is patient data, and the
files written say so.

Outline: demographics -> log CRP (covariate effects centred so the marginal stays at Osimo
2019) -> IL-6 / TNF-alpha / IL-1beta / blood counts -> symptom scales (a general severity
factor plus an inflammation-linked fatigue/anhedonia factor) -> P(response) -> a Bernoulli
response -> follow-up MADRS and HAM-D17 consistent with it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from inflamrx.config import DataConfig

FloatArray = npt.NDArray[np.float64]


def _p(value: Any, source: str) -> Any:
    """A parameter with its source, kept in the field metadata so the meta JSON can cite it."""
    return field(default=value, metadata={"source": source})


_LIT = "shared/literature.md"


@dataclass(frozen=True)
class Parameters:
    """Every number the generator uses, with its source."""

    # Design
    sites: tuple[str, ...] = _p(("site-A", "site-B", "site-C", "site-D"), "estimate")
    site_probs: tuple[float, ...] = _p((0.35, 0.30, 0.20, 0.15), "estimate: unequal recruitment")
    drug: str = _p("tocilizumab", f"{_LIT}: Insight trial (tocilizumab)")

    # Demographics and history
    age_mean: float = _p(45.0, "estimate: adults in depression trials")
    age_sd: float = _p(13.0, "estimate")
    age_range: tuple[float, float] = _p((18.0, 80.0), "estimate: trial eligibility")
    p_female: float = _p(0.60, "estimate: women about 60% of depression trial samples")
    bmi_median: float = _p(27.5, "estimate: mean BMI about 28 kg/m2")
    bmi_log_sd: float = _p(0.20, "estimate")
    smoking_probs: tuple[float, float, float] = _p(
        (0.50, 0.25, 0.25), "estimate: never/former/current"
    )
    # Negative binomial: mean 2.6, dispersion 2 gives about 60% with >= 2 failures (TRD).
    failed_mean: float = _p(2.6, "estimate: ~60% TRD (>= 2 failures) in anti-inflammatory trials")
    failed_dispersion: float = _p(2.0, "estimate")
    episode_median_months: float = _p(12.0, "estimate; Maudsley staging bands 12/24 months")
    episode_log_sd: float = _p(0.9, "estimate")
    episode_per_failure: float = _p(0.15, "estimate: longer episodes with more failed trials")
    p_autoimmune: float = _p(0.10, f"{_LIT}: Benros 2013 (autoimmune disease and mood); estimate")
    p_family_autoimmune: float = _p(0.12, "estimate")
    family_autoimmune_if_own: float = _p(0.15, "estimate: added risk when the patient has one")
    p_mood_worse_with_illness: float = _p(0.30, "estimate")
    mood_worse_per_sd_cluster: float = _p(0.5, "estimate: log-odds per SD of the fatigue cluster")

    # log CRP (mg/L): marginal Normal(0.27, 1.35) -> P(>1) 0.58, P(>3) 0.27, P(>10) 0.066
    log_crp_mean: float = _p(0.27, f"{_LIT}: Osimo 2019 (estimate fitted to its figures)")
    log_crp_sd: float = _p(1.35, f"{_LIT}: Osimo 2019 (estimate fitted to its figures)")
    crp_per_bmi: float = _p(0.078, f"{_LIT}: Kao 2009, log units per kg/m2")
    crp_female: float = _p(0.34, f"{_LIT}: NHANES medians 1.4x in women (estimate)")
    crp_per_decade: float = _p(0.10, f"{_LIT}: NHANES medians by decade (estimate)")
    crp_current_smoker: float = _p(0.30, f"{_LIT}: Sorensen 2014 (estimate)")
    crp_autoimmune: float = _p(0.50, "estimate: chronic inflammatory disease raises CRP")
    crp_lod: float = _p(0.15, f"{_LIT}: Roche hs-CRP measures from 0.15 mg/L")

    # IL-6 (pg/mL): log IL-6 ~ Normal(log 1.5, 0.65), correlation 0.45 with log CRP
    il6_median: float = _p(1.5, f"{_LIT}: estimate for depressed patients")
    il6_log_sd: float = _p(0.65, f"{_LIT}: estimate for depressed patients")
    il6_crp_corr: float = _p(
        0.45, f"{_LIT}: estimate (0.71-0.74 with infections is an upper bound)"
    )
    # Direct BMI term (in SD units): with CRP's own BMI link, ~3% per kg/m2 in total, half of
    # Holmes 2014's 7%, so that the CRP correlation and the marginal both hold.
    il6_bmi_direct: float = _p(0.15, f"{_LIT}: Holmes 2014 (+7%/kg/m2), attenuated (estimate)")
    tnf_median: float = _p(2.0, "estimate: high-sensitivity plasma assays")
    tnf_log_sd: float = _p(0.5, "estimate")
    tnf_crp_corr: float = _p(0.10, f"{_LIT}: TNF-alpha barely correlates with CRP")
    il1b_median: float = _p(0.5, "estimate: high-sensitivity plasma assays")
    il1b_log_sd: float = _p(0.8, f"{_LIT}: Haapakoski 2015 (IL-1beta unrelated); estimate")

    # Blood counts (10^9/L); WBC = neutrophils + lymphocytes + other cells
    neutrophil_median: float = _p(3.6, "estimate: adult reference, mean about 3.8")
    neutrophil_log_sd: float = _p(0.30, "estimate")
    neutrophil_crp_corr: float = _p(0.25, "estimate: neutrophils rise slightly with CRP")
    lymphocyte_median: float = _p(1.95, "estimate: adult reference, mean about 2.0")
    lymphocyte_log_sd: float = _p(0.30, "estimate")
    other_wbc_median: float = _p(0.65, "estimate: monocytes, eosinophils, basophils")
    other_wbc_log_sd: float = _p(0.25, "estimate")

    # Symptoms. The fatigue/anhedonia cluster loads on standardised log CRP and log IL-6
    # (corr with log CRP about 0.2: Frank 2021, Milaneschi 2021 report modest effects).
    cluster_crp: float = _p(0.15, f"{_LIT}: Frank 2021; Milaneschi 2021 (estimate)")
    cluster_il6: float = _p(0.15, f"{_LIT}: Milaneschi 2021, IL-6 and anhedonia OR 1.30 (estimate)")
    madrs_mean: float = _p(30.0, "estimate: moderate-severe baseline in trials")
    madrs_sd: float = _p(6.0, "estimate")
    madrs_min: float = _p(10.0, "estimate: trial entry requires at least mild depression")
    madrs_cluster_loading: float = _p(0.3, "estimate: MADRS lassitude, sleep, appetite items")
    hamd_per_madrs: float = _p(10 / 13, f"{_LIT}: Leucht 2018, HAM-D 10/20/30 ~ MADRS 13/26/39")
    hamd_cluster: float = _p(0.5, "estimate: HAM-D17 has more somatic items")
    hamd_noise_sd: float = _p(2.0, "estimate")
    # (mean, per SD of severity, per SD of the inflammation cluster, noise SD)
    phq9: tuple[float, float, float, float] = _p((17.0, 3.0, 1.0, 2.5), "estimate")
    gad7: tuple[float, float, float, float] = _p(
        (11.0, 2.0, 0.0, 3.5), f"{_LIT}: estimate; emotional symptoms not linked to inflammation"
    )
    shaps: tuple[float, float, float, float] = _p(
        (6.0, 1.5, 1.2, 2.8), f"{_LIT}: estimate; anhedonia with IL-6 (Milaneschi 2021)"
    )
    facit: tuple[float, float, float, float] = _p(
        (24.0, -3.0, -4.0, 8.0), f"{_LIT}: estimate; fatigue with CRP (Frank 2021)"
    )
    eq5d: tuple[float, float, float, float] = _p((48.0, -6.0, -3.0, 16.0), "estimate")

    # Response: logit P = b0 + b_crp x + b_fail (failures - mean)
    #           + drug * (d0 + d_crp x + d_il6 z_il6 + d_cluster cluster),  x = ln CRP - ln 3
    # literature.md's -1.1 / +0.5, shifted 0.1 so placebo is ~27% overall (Jones 2021: ~20% in
    # TRD) while the drug arm keeps its band rates.
    resp_intercept: float = _p(-1.2, f"{_LIT}: estimate (Raison 2013; Insight trial), recentred")
    resp_crp: float = _p(-0.2, f"{_LIT}: placebo response lower at high CRP (Raison 2013)")
    resp_per_failure: float = _p(
        -0.12, f"{_LIT}: more prior failures, less placebo response (Jones 2021); estimate"
    )
    drug_intercept: float = _p(0.6, f"{_LIT}: estimate (Insight trial 46% vs 19%), recentred")
    drug_crp: float = _p(0.6, f"{_LIT}: estimate (Raison 2013 arms cross near CRP 5 mg/L)")
    drug_il6: float = _p(0.25, "estimate: anti-IL-6 drug works better with more IL-6")
    drug_cluster: float = _p(
        0.35, f"{_LIT}: estimate (anhedonia g 0.40 in CRP-selected trials, Mac Giollabhui 2026)"
    )
    # Follow-up / baseline ratio: responders 0.5 * Beta(a, b), non-responders 0.5 + w * Beta
    responder_ratio_beta: tuple[float, float] = _p((3.5, 1.5), "estimate: mean fall about 65%")
    nonresponder_ratio_beta: tuple[float, float] = _p((2.0, 3.0), "estimate: mean fall about 24%")
    nonresponder_ratio_width: float = _p(0.65, "estimate: some patients worsen (ratio up to 1.15)")
    hamd_ratio_noise_sd: float = _p(0.08, "estimate: the two scales disagree a little")

    # Missing values (rate per group of columns, missing together): MCAR, estimate.
    missing: tuple[tuple[tuple[str, ...], float], ...] = _p(
        (
            (("smoking",), 0.06),
            (("bmi",), 0.04),
            (("episode_duration_months",), 0.08),
            (("autoimmune_disease",), 0.02),
            (("family_history_autoimmune",), 0.15),
            (("mood_worse_with_illness",), 0.10),
            (("il6_pg_ml", "tnf_alpha_pg_ml", "il1b_pg_ml"), 0.08),  # no cytokine panel
            (("il6_pg_ml",), 0.03),
            (("tnf_alpha_pg_ml",), 0.03),
            (("il1b_pg_ml",), 0.03),
            (("wbc_10e9_l", "neutrophils_10e9_l", "lymphocytes_10e9_l"), 0.07),
            (("phq9_total",), 0.05),
            (("gad7_total",), 0.05),
            (("shaps_total",), 0.08),
            (("facit_fatigue",), 0.08),
            (("eq5d_vas",), 0.10),
        ),
        "estimate: a few percent to 15% per optional column",
    )

    def as_json(self) -> dict[str, dict[str, Any]]:
        """Every parameter as {"value": ..., "source": ...} (tuples as lists)."""
        return {
            f.name: {"value": _jsonable(getattr(self, f.name)), "source": f.metadata["source"]}
            for f in fields(self)
        }


def _jsonable(value: Any) -> Any:
    return [_jsonable(v) for v in value] if isinstance(value, tuple) else value


PARAMETERS = Parameters()

TRUTH_COLUMNS = ("patient_id", "arm", "p_response", "p_response_drug", "p_response_placebo")
_INTEGER_COLUMNS = (
    "age", "n_failed_antidepressants", "madrs_total", "hamd17_total", "phq9_total",
    "gad7_total", "shaps_total", "facit_fatigue", "eq5d_vas", "madrs_followup",
    "hamd17_followup",
)  # fmt: skip
_BOOLEAN_COLUMNS = ("autoimmune_disease", "family_history_autoimmune", "mood_worse_with_illness")


@dataclass(frozen=True, eq=False)
class SimulatedCohort:
    """A SYNTHETIC cohort (canonical columns) and the truth it was drawn from."""

    cohort: pd.DataFrame
    truth: pd.DataFrame
    seed: int
    two_arm: bool

    @property
    def n(self) -> int:
        return len(self.cohort)


def _check_n(n: object) -> int:
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"The 'n' parameter must be a whole number of patients >= 1. Got {n!r}.")
    return int(n)


def _check_seed(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"The 'seed' parameter must be a whole number >= 0. Got {seed!r}.")
    return int(seed)


def _lognormal_moments(median: float, log_sd: float) -> tuple[float, float]:
    mean = median * np.exp(log_sd**2 / 2)
    return float(mean), float(mean * np.sqrt(np.expm1(log_sd**2)))


def _age_distribution(p: Parameters) -> Any:
    from scipy.stats import truncnorm  # scipy.stats costs seconds: `validate` never needs it

    lo, hi = p.age_range
    return truncnorm(
        (lo - p.age_mean) / p.age_sd, (hi - p.age_mean) / p.age_sd, p.age_mean, p.age_sd
    )


def _scale(
    rng: np.random.Generator, n: int, coef: tuple[float, ...], sev: FloatArray, cluster: FloatArray
) -> FloatArray:
    mean, per_sev, per_cluster, noise = coef
    return mean + per_sev * sev + per_cluster * cluster + noise * rng.standard_normal(n)


def _int_in(x: FloatArray, lo: float, hi: float) -> npt.NDArray[np.int64]:
    return np.clip(np.rint(x), lo, hi).astype(np.int64)


def _followup(
    baseline: npt.NDArray[np.int64], ratio: FloatArray, responded: npt.NDArray[np.bool_], top: int
) -> npt.NDArray[np.int64]:
    """Follow-up score with the same status: responders <= 50% of baseline, others > 50%."""
    half = baseline // 2  # the largest whole score that is still a >= 50% fall
    low = np.clip(np.floor(baseline * ratio), 0, half)
    high = np.clip(np.ceil(baseline * ratio), half + 1, top)
    return np.where(responded, low, high).astype(np.int64)


def _simulate(n: int, seed: int, two_arm: bool, p: Parameters) -> SimulatedCohort:
    from scipy.special import expit  # imported here: `validate` uses this module, not scipy

    rng = np.random.default_rng(seed)
    normal = rng.standard_normal

    # Design and demographics (drawn independently, so the CRP covariate moments are exact).
    site = rng.choice(np.array(p.sites), size=n, p=np.array(p.site_probs))
    # Two arms: complete randomisation, exactly 1:1 (drug gets the odd one out).
    on_drug = rng.permutation(np.arange(n) % 2 == 0) if two_arm else np.ones(n, dtype=bool)
    age_dist = _age_distribution(p)
    age = age_dist.rvs(size=n, random_state=rng)
    female = rng.random(n) < p.p_female
    bmi = np.clip(p.bmi_median * np.exp(p.bmi_log_sd * normal(n)), 12.0, 80.0)
    smoking = rng.choice(np.array(["never", "former", "current"]), size=n, p=p.smoking_probs)
    nb_p = p.failed_dispersion / (p.failed_dispersion + p.failed_mean)
    failed = np.minimum(rng.negative_binomial(p.failed_dispersion, nb_p, size=n), 30)
    episode = p.episode_median_months * np.exp(
        p.episode_per_failure * failed + p.episode_log_sd * normal(n)
    )
    autoimmune = rng.random(n) < p.p_autoimmune

    # log CRP: covariate effects centred on their population means, residual SD shrunk so
    # that the marginal is still Normal(mean, sd) as in Osimo 2019.
    bmi_mean, bmi_sd = _lognormal_moments(p.bmi_median, p.bmi_log_sd)
    effects = [  # (coefficient, covariate, population mean, population variance)
        (p.crp_per_bmi, bmi, bmi_mean, bmi_sd**2),
        (p.crp_female, female, p.p_female, p.p_female * (1 - p.p_female)),
        (p.crp_per_decade / 10, age, age_dist.mean(), age_dist.var()),
        (p.crp_current_smoker, smoking == "current", p.smoking_probs[2],
         p.smoking_probs[2] * (1 - p.smoking_probs[2])),
        (p.crp_autoimmune, autoimmune, p.p_autoimmune, p.p_autoimmune * (1 - p.p_autoimmune)),
    ]  # fmt: skip
    covariate_var = sum(b**2 * var for b, _, _, var in effects)
    residual_sd = np.sqrt(p.log_crp_sd**2 - covariate_var)
    log_crp = p.log_crp_mean + residual_sd * normal(n)
    for b, x, mean, _ in effects:
        log_crp = log_crp + b * (x - mean)
    z_crp = (log_crp - p.log_crp_mean) / p.log_crp_sd

    # log IL-6 standardised: a*z_crp + c*z_bmi + d*e with corr(z_il6, z_crp) = rho, var 1.
    r_crp_bmi = p.crp_per_bmi * bmi_sd / p.log_crp_sd
    c = p.il6_bmi_direct
    a = p.il6_crp_corr - c * r_crp_bmi
    d = np.sqrt(1 - a**2 - c**2 - 2 * a * c * r_crp_bmi)
    z_il6 = a * z_crp + c * (bmi - bmi_mean) / bmi_sd + d * normal(n)
    il6 = p.il6_median * np.exp(p.il6_log_sd * z_il6)

    def correlated(rho: float) -> FloatArray:
        return rho * z_crp + np.sqrt(1 - rho**2) * normal(n)

    tnf = p.tnf_median * np.exp(p.tnf_log_sd * correlated(p.tnf_crp_corr))
    il1b = p.il1b_median * np.exp(p.il1b_log_sd * normal(n))
    neut = p.neutrophil_median * np.exp(p.neutrophil_log_sd * correlated(p.neutrophil_crp_corr))
    lymph = p.lymphocyte_median * np.exp(p.lymphocyte_log_sd * normal(n))
    wbc = neut + lymph + p.other_wbc_median * np.exp(p.other_wbc_log_sd * normal(n))

    # Symptoms: general severity plus an inflammation-linked fatigue/anhedonia cluster (SD 1).
    sev = normal(n)
    wc, wi = p.cluster_crp, p.cluster_il6
    explained = wc**2 + wi**2 + 2 * wc * wi * p.il6_crp_corr
    cluster = wc * z_crp + wi * z_il6 + np.sqrt(1 - explained) * normal(n)
    lm = p.madrs_cluster_loading
    madrs_latent = p.madrs_mean + p.madrs_sd * (np.sqrt(1 - lm**2) * sev + lm * cluster)
    madrs = _int_in(madrs_latent, p.madrs_min, 60)
    hamd_latent = p.hamd_per_madrs * madrs_latent + p.hamd_cluster * cluster
    hamd = _int_in(hamd_latent + p.hamd_noise_sd * normal(n), 0, 52)
    phq9 = _int_in(_scale(rng, n, p.phq9, sev, cluster), 0, 27)
    gad7 = _int_in(_scale(rng, n, p.gad7, sev, cluster), 0, 21)
    shaps = _int_in(_scale(rng, n, p.shaps, sev, cluster), 0, 14)
    facit = _int_in(_scale(rng, n, p.facit, sev, cluster), 0, 52)
    eq5d = _int_in(_scale(rng, n, p.eq5d, sev, cluster), 0, 100)
    family = rng.random(n) < p.p_family_autoimmune + p.family_autoimmune_if_own * autoimmune
    mood_logit = np.log(p.p_mood_worse_with_illness / (1 - p.p_mood_worse_with_illness))
    mood_worse = rng.random(n) < expit(mood_logit + p.mood_worse_per_sd_cluster * cluster)

    # Response: literature.md's estimate plus IL-6, the symptom cluster and treatment history.
    x = log_crp - np.log(3.0)
    placebo_logit = (
        p.resp_intercept + p.resp_crp * x + p.resp_per_failure * (failed - p.failed_mean)
    )
    drug_logit = placebo_logit + (
        p.drug_intercept + p.drug_crp * x + p.drug_il6 * z_il6 + p.drug_cluster * cluster
    )
    p_drug, p_placebo = expit(drug_logit), expit(placebo_logit)
    p_response = np.where(on_drug, p_drug, p_placebo)
    responded = rng.random(n) < p_response

    # Follow-up as a fraction of baseline, kept on the side of 50% that the status dictates.
    ratio = np.where(
        responded,
        0.5 * rng.beta(*p.responder_ratio_beta, size=n),
        0.5 + p.nonresponder_ratio_width * rng.beta(*p.nonresponder_ratio_beta, size=n),
    )
    hamd_ratio = ratio + p.hamd_ratio_noise_sd * normal(n)
    madrs_fu = _followup(madrs, ratio, responded, 60)
    hamd_fu = _followup(hamd, hamd_ratio, responded, 52)

    ids = np.array([f"SYN-{i:06d}" for i in range(1, n + 1)])
    arm = np.where(on_drug, "drug", "placebo")
    crp = np.round(np.exp(log_crp), 2)
    crp_text = np.where(np.exp(log_crp) < p.crp_lod, f"<{p.crp_lod:g}", [f"{v:.2f}" for v in crp])
    columns: dict[str, Any] = {
        "patient_id": ids,
        "site": site,
        "arm": arm,
        "drug": np.full(n, p.drug),  # the trial's study drug; `arm` says who received it
        "age": np.floor(age).astype(np.int64),  # completed years
        "sex": np.where(female, "F", "M"),
        "bmi": np.round(bmi, 1),
        "smoking": smoking,
        "n_failed_antidepressants": failed,
        "episode_duration_months": np.round(np.clip(episode, 0, 600), 1),
        "autoimmune_disease": autoimmune,
        "family_history_autoimmune": family,
        "mood_worse_with_illness": mood_worse,
        "crp_mg_l": crp_text,  # text, as lab files are: "<0.15" below the detection limit
        "il6_pg_ml": np.round(il6, 2),
        "tnf_alpha_pg_ml": np.round(tnf, 2),
        "il1b_pg_ml": np.round(il1b, 2),
        "wbc_10e9_l": np.round(wbc, 2),
        "neutrophils_10e9_l": np.round(neut, 2),
        "lymphocytes_10e9_l": np.round(lymph, 2),
        "madrs_total": madrs,
        "hamd17_total": hamd,
        "phq9_total": phq9,
        "gad7_total": gad7,
        "shaps_total": shaps,
        "facit_fatigue": facit,
        "eq5d_vas": eq5d,
        "madrs_followup": madrs_fu,
        "hamd17_followup": hamd_fu,
    }
    cohort = pd.DataFrame(columns)  # the file's column order is the order built above
    cohort = cohort.astype(
        {col: "Int64" for col in _INTEGER_COLUMNS} | {col: "boolean" for col in _BOOLEAN_COLUMNS}
    )
    for group, rate in p.missing:  # genuinely missing, completely at random
        cohort.loc[rng.random(n) < rate, list(group)] = pd.NA
    truth = pd.DataFrame(
        {
            "patient_id": ids,
            "arm": arm,
            "p_response": p_response,
            "p_response_drug": p_drug,
            "p_response_placebo": p_placebo,
        }
    )
    return SimulatedCohort(cohort=cohort, truth=truth, seed=seed, two_arm=two_arm)


def simulate_cohort(n: int, seed: int, two_arm: bool = False) -> SimulatedCohort:
    """Draw a SYNTHETIC cohort of ``n`` patients; the same seed gives identical frames.

    ``cohort`` has the canonical columns (``crp_mg_l`` as text, with ``<0.15`` below the
    detection limit); ``truth`` has each patient's true probability of response under the
    arm received (``p_response``) and under each arm. Single-arm: everyone on drug;
    ``two_arm``: drug and placebo 1:1 at random.
    """
    return _simulate(_check_n(n), _check_seed(seed), bool(two_arm), PARAMETERS)


def write_cohort(sim: SimulatedCohort, out: Path) -> dict[str, Path]:
    """Write the cohort CSV at ``out``, plus ``<stem>.truth.csv`` and ``<stem>.meta.json``.

    Files are byte-identical for the same seed. Returns {"cohort", "truth", "meta": path}.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    paths = {
        "cohort": out,
        "truth": out.with_name(f"{out.stem}.truth.csv"),
        "meta": out.with_name(f"{out.stem}.meta.json"),
    }
    sim.cohort.to_csv(paths["cohort"], index=False, lineterminator="\n")
    sim.truth.to_csv(paths["truth"], index=False, lineterminator="\n")
    meta = {
        "synthetic": True,
        "note": "SYNTHETIC data drawn from published figures; not patient data.",
        "generator": "inflamrx.simulate",
        "seed": sim.seed,
        "n": sim.n,
        "two_arm": sim.two_arm,
        "truth_file": paths["truth"].name,
        "parameters": PARAMETERS.as_json(),
    }
    paths["meta"].write_bytes((json.dumps(meta, indent=2) + "\n").encode("utf-8"))
    return paths


def oracle_auroc(truth: pd.DataFrame, outcome: npt.ArrayLike) -> float:
    """AUROC of the true probabilities (``truth["p_response"]``) against the realised outcome.

    The best any model could reach on these rows: the ceiling to compare a model with.
    """
    score = truth["p_response"].to_numpy(dtype=float)
    y = np.asarray(pd.Series(outcome).astype("boolean").to_numpy(dtype=bool, na_value=False))
    if len(y) != len(score):
        raise ValueError(
            f"The 'outcome' must have one value per truth row ({len(score)}). Got {len(y)}."
        )
    if pd.Series(outcome).isna().any():
        raise ValueError("The 'outcome' has missing values: drop those rows from both inputs.")
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("The 'outcome' must contain both responders and non-responders.")
    from scipy.stats import rankdata

    ranks = rankdata(score)  # ties get the average rank (Mann-Whitney U)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def says_synthetic(data: DataConfig) -> bool:
    """Whether the data are labelled synthetic: ``data.synthetic`` when set, otherwise whether
    any data file has the ``<stem>.meta.json`` that ``write_cohort`` puts beside it, saying so."""
    if data.synthetic is not None:
        return data.synthetic
    return any(_meta_says_synthetic(Path(p).with_suffix(".meta.json")) for p in data.paths)


def _meta_says_synthetic(meta: Path) -> bool:
    try:
        return bool(json.loads(meta.read_text()).get("synthetic", False))
    except (OSError, ValueError, AttributeError):
        return False
