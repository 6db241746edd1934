"""Clinical features: names, values, selection, missingness and the scikit-learn contract."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks
from xgboost import XGBClassifier

from inflamrx.data.schema import COLUMNS
from inflamrx.modeling.features import (
    FEATURE_GROUPS,
    LOG_FLOOR,
    ClinicalFeatures,
    build_feature_transformer,
    forbidden_feature_columns,
    resolve_selection,
)

MARKERS = [
    "CRP (mg/L, log)",
    "CRP 1-3 mg/L",
    "CRP 3-10 mg/L",
    "CRP > 10 mg/L (possible acute infection)",
    "IL-6 (pg/mL, log)",
    "TNF-alpha (pg/mL, log)",
    "IL-1beta (pg/mL, log)",
    "CRP below detection limit",
    "IL-6 below detection limit",
    "Neutrophil/lymphocyte ratio",
    "WBC (10^9/L)",
]
TREATMENT = [
    "TRD (>= 2 failed antidepressants)",
    "Failed antidepressants (n)",
    "Episode duration (months)",
]
SYMPTOMS = [
    "MADRS total",
    "HAM-D17 total",
    "PHQ-9 total",
    "SHAPS anhedonia",
    "Fatigue (FACIT-F, reversed: higher = more)",
    "EQ-5D VAS",
    "Inflammation-linked symptom score",
]
DEMOGRAPHICS = ["Age (years)", "Female sex", "BMI (kg/m2)", "Current smoker", "Former smoker"]
HISTORY = [
    "Autoimmune disease",
    "Family history of autoimmune disease",
    "Mood worse with physical illness",
]
INDICATORS = ["IL-6 (pg/mL, log) missing", "Smoking status missing"]


def _bool(*values: bool | None) -> pd.Series:
    return pd.Series(values, dtype="boolean")


@pytest.fixture
def cohort() -> pd.DataFrame:
    """Four patients in the canonical format, with identity and follow-up columns present."""
    return pd.DataFrame(
        {
            "patient_id": pd.Series(["p1", "p2", "p3", "p4"], dtype="str"),
            "site": pd.Series(["A", "A", "B", "B"], dtype="str"),
            "arm": pd.Series(["drug", "placebo", "drug", "placebo"], dtype="str"),
            "drug": pd.Series(["infliximab", None, "infliximab", None], dtype="str"),
            "age": [30.0, 45.0, 60.0, 52.0],
            "sex": pd.Series(["F", "M", "F", "M"], dtype="str"),
            "bmi": [22.0, 31.5, 27.0, 35.0],
            "smoking": pd.Series(["never", "current", "former", None], dtype="str"),
            "n_failed_antidepressants": [0.0, 1.0, 2.0, 5.0],
            "episode_duration_months": [6.0, 14.0, 30.0, 100.0],
            "autoimmune_disease": _bool(False, True, False, False),
            "family_history_autoimmune": _bool(True, False, False, False),
            "mood_worse_with_illness": _bool(False, False, True, True),
            "crp_mg_l": [0.5, 2.0, 5.0, 25.0],
            "crp_mg_l_below_lod": _bool(False, False, False, False),
            "il6_pg_ml": [1.5, np.nan, 3.0, 8.0],
            "il6_pg_ml_below_lod": _bool(False, False, False, False),
            "tnf_alpha_pg_ml": [2.0, 2.5, 3.0, 4.0],
            "il1b_pg_ml": [0.5, 0.6, 0.7, 0.8],
            "wbc_10e9_l": [6.0, 7.0, 8.0, 9.0],
            "neutrophils_10e9_l": [4.0, 4.5, 5.0, 6.0],
            "lymphocytes_10e9_l": [2.0, 1.5, 2.5, 1.0],
            "madrs_total": [28.0, 32.0, 25.0, 36.0],
            "hamd17_total": [20.0, 24.0, 18.0, 27.0],
            "phq9_total": [15.0, 18.0, 12.0, 22.0],
            "shaps_total": [7.0, 3.0, 0.0, 14.0],
            "facit_fatigue": [52.0, 30.0, 26.0, 0.0],
            "eq5d_vas": [50.0, 40.0, 60.0, 20.0],
            "madrs_followup": [10.0, 30.0, 12.0, 20.0],
            "hamd17_followup": [8.0, 22.0, 9.0, 14.0],
            "response": _bool(True, False, True, False),
        }
    )


def _fit(frame: pd.DataFrame, **params: list[str] | None) -> pd.DataFrame:
    return ClinicalFeatures(**params).set_output(transform="pandas").fit_transform(frame)


def _crp_only(crp: list[float]) -> pd.DataFrame:
    return pd.DataFrame({"crp_mg_l": crp})


# --- names --------------------------------------------------------------------------------


def test_feature_names_are_the_clinical_names(cohort: pd.DataFrame) -> None:
    features = ClinicalFeatures().fit(cohort)
    expected = MARKERS + TREATMENT + SYMPTOMS + DEMOGRAPHICS + HISTORY + INDICATORS
    assert list(features.get_feature_names_out()) == expected
    assert features.feature_groups_ == {
        "markers": MARKERS,
        "treatment_history": TREATMENT,
        "symptoms": SYMPTOMS,
        "demographics": DEMOGRAPHICS,
        "history": HISTORY,
        "missing_indicators": INDICATORS,
    }


def test_feature_names_are_valid_for_xgboost(cohort: pd.DataFrame) -> None:
    # XGBoost refuses feature names with '[', ']' or '<'.
    for name in ClinicalFeatures().fit(cohort).get_feature_names_out():
        assert not set(name) & set("[]<"), name


def test_feature_groups_name_only_canonical_baseline_columns() -> None:
    inputs = {c for columns in FEATURE_GROUPS.values() for c in columns}
    assert inputs <= set(COLUMNS)
    assert not inputs & forbidden_feature_columns()
    assert list(FEATURE_GROUPS) == [
        "markers",
        "treatment_history",
        "symptoms",
        "demographics",
        "history",
    ]


# --- values ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("crp", "band_1_3", "band_3_10", "acute"),
    [
        (0.5, 0, 0, 0),  # < 1: the reference band
        (1.0, 1, 0, 0),
        (2.0, 1, 0, 0),
        (3.0, 1, 0, 0),  # AHA/CDC: 1.0-3.0 is "average", > 3 "high"
        (5.0, 0, 1, 0),
        (10.0, 0, 1, 0),
        (25.0, 0, 0, 1),  # possible acute infection: flagged, not capped
    ],
)
def test_crp_log_bands_and_acute_flag(
    crp: float, band_1_3: int, band_3_10: int, acute: int
) -> None:
    row = _fit(_crp_only([crp])).iloc[0]
    assert row["CRP (mg/L, log)"] == pytest.approx(np.log(crp))
    assert row["CRP 1-3 mg/L"] == band_1_3
    assert row["CRP 3-10 mg/L"] == band_3_10
    assert row["CRP > 10 mg/L (possible acute infection)"] == acute


def test_log_of_zero_uses_the_documented_floor() -> None:
    out = _fit(_crp_only([0.0, 0.106]))
    assert out["CRP (mg/L, log)"].tolist() == pytest.approx([np.log(LOG_FLOOR), np.log(0.106)])


def test_missing_crp_stays_missing_in_every_crp_feature() -> None:
    out = _fit(_crp_only([np.nan, 2.0]))
    crp_features = [c for c in out.columns if c.startswith("CRP") and "missing" not in c]
    assert out.loc[0, crp_features].isna().all()
    assert out["CRP (mg/L, log) missing"].tolist() == [1.0, 0.0]


def test_negative_marker_is_refused() -> None:
    with pytest.raises(ValueError, match="'crp_mg_l' has negative values"):
        _fit(_crp_only([-1.0]))


@pytest.mark.parametrize(
    ("neutrophils", "lymphocytes", "nlr"),
    [(4.0, 2.0, 2.0), (3.0, 1.5, 2.0), (5.0, 0.0, np.nan), (np.nan, 2.0, np.nan)],
)
def test_neutrophil_lymphocyte_ratio(neutrophils: float, lymphocytes: float, nlr: float) -> None:
    frame = pd.DataFrame({"neutrophils_10e9_l": [neutrophils], "lymphocytes_10e9_l": [lymphocytes]})
    value = _fit(frame)["Neutrophil/lymphocyte ratio"].iloc[0]
    assert value == pytest.approx(nlr, nan_ok=True)


@pytest.mark.parametrize(
    ("failed", "trd"), [(0.0, 0.0), (1.0, 0.0), (2.0, 1.0), (7.0, 1.0), (np.nan, np.nan)]
)
def test_trd_is_two_or_more_failed_antidepressants(failed: float, trd: float) -> None:
    out = _fit(pd.DataFrame({"n_failed_antidepressants": [failed, 0.0]}))
    assert out["TRD (>= 2 failed antidepressants)"].iloc[0] == pytest.approx(trd, nan_ok=True)
    assert out["Failed antidepressants (n)"].iloc[0] == pytest.approx(failed, nan_ok=True)


def test_demographics_history_and_fatigue_values(cohort: pd.DataFrame) -> None:
    out = _fit(cohort)
    assert out["Female sex"].tolist() == [1.0, 0.0, 1.0, 0.0]
    assert out["Current smoker"].tolist()[:3] == [0.0, 1.0, 0.0]
    assert out["Former smoker"].tolist()[:3] == [0.0, 0.0, 1.0]
    assert out.loc[3, ["Current smoker", "Former smoker"]].isna().all()
    assert out["Autoimmune disease"].tolist() == [0.0, 1.0, 0.0, 0.0]
    assert out["Fatigue (FACIT-F, reversed: higher = more)"].tolist() == [0.0, 22.0, 26.0, 52.0]
    assert out["IL-6 (pg/mL, log)"].iloc[[0, 2]].tolist() == pytest.approx(np.log([1.5, 3.0]))


@pytest.mark.parametrize(
    ("column", "bad"), [("sex", "female"), ("smoking", "Current"), ("crp_mg_l", "high")]
)
def test_bad_values_are_refused_with_the_column_name(column: str, bad: str) -> None:
    frame = pd.DataFrame({"crp_mg_l": [1.0, 2.0], "sex": ["F", "M"], "smoking": ["never", None]})
    frame[column] = frame[column].astype(object)
    frame.loc[0, column] = bad
    with pytest.raises(ValueError, match=f"'{column}'"):
        ClinicalFeatures().fit_transform(frame)


def test_symptom_score_averages_domains_scaled_to_0_1() -> None:
    frame = pd.DataFrame(
        {
            "facit_fatigue": [52.0, 0.0, np.nan],  # fatigue 0, 1, -
            "shaps_total": [7.0, np.nan, np.nan],  # anhedonia 0.5, -, -
            "hamd17_4": [2.0, 0.0, np.nan],  # sleep: mean of items, each out of 2
            "hamd17_5": [2.0, 1.0, np.nan],
            "phq9_5": [np.nan, 3.0, np.nan],  # appetite, out of 3
        }
    )
    out = _fit(frame)
    score = out["Inflammation-linked symptom score"]
    assert score.iloc[0] == pytest.approx((0.0 + 0.5 + 1.0) / 3)
    assert score.iloc[1] == pytest.approx((1.0 + 0.25 + 1.0) / 3)
    assert np.isnan(score.iloc[2])
    assert out["Inflammation-linked symptom score missing"].tolist() == [0.0, 0.0, 1.0]


# --- selection ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("include", "exclude", "expected"),
    [
        (["markers"], None, [*MARKERS, "IL-6 (pg/mL, log) missing"]),
        (["history", "demographics"], None, [*DEMOGRAPHICS, *HISTORY, "Smoking status missing"]),
        (["crp_mg_l", "n_failed_antidepressants"], None, [*MARKERS[:4], *TREATMENT[:2]]),
        (["treatment_history"], ["episode_duration_months"], TREATMENT[:2]),
        (
            ["markers"],
            ["il6_pg_ml", "neutrophils_10e9_l"],
            [*MARKERS[:4], *MARKERS[5:9], MARKERS[10]],
        ),
    ],
)
def test_include_and_exclude(
    cohort: pd.DataFrame, include: list[str] | None, exclude: list[str] | None, expected: list[str]
) -> None:
    features = build_feature_transformer(include, exclude).fit(cohort)
    assert list(features.get_feature_names_out()) == expected


def test_exclude_groups(cohort: pd.DataFrame) -> None:
    names = set(
        build_feature_transformer(None, ["markers", "symptoms"]).fit(cohort).get_feature_names_out()
    )
    assert names == {*TREATMENT, *DEMOGRAPHICS, *HISTORY, "Smoking status missing"}


def test_scale_items_can_be_excluded_with_their_total() -> None:
    # PHQ-9 as the outcome of a survey: neither its total nor its items may feed any feature.
    frame = pd.DataFrame(
        {
            "crp_mg_l": [1.0, 4.0],
            "phq9_total": [20.0, 3.0],
            "phq9_3": [3.0, 0.0],
            "phq9_4": [3.0, 0.0],
        }
    )
    features = build_feature_transformer(None, ["phq9_total", "phq9_items"]).fit(frame)
    assert list(features.get_feature_names_out()) == MARKERS[:4]
    assert "phq9_3" not in features.feature_names_in_
    assert resolve_selection(None, ["phq9_items"]) == tuple(
        c for c in resolve_selection() if not c.startswith("phq9_") or c == "phq9_total"
    )


@pytest.mark.parametrize(
    ("name", "message"),
    [
        (
            "madrs_followup",
            r"'madrs_followup' is follow-up \(outcome\) data and can never be a feature",
        ),
        ("hamd17_followup", r"'hamd17_followup' is follow-up \(outcome\) data"),
        ("phq9_followup", r"'phq9_followup' is follow-up \(outcome\) data"),
        ("response", "'response' is outcome data and can never be a feature"),
        ("patient_id", "'patient_id' is identity/design data .* can never be a feature"),
        ("site", "'site' is identity/design data"),
        ("arm", "'arm' is identity/design data"),
        ("drug", "'drug' is identity/design data"),
    ],
)
def test_outcome_and_identity_columns_are_refused_in_include(
    cohort: pd.DataFrame, name: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        build_feature_transformer(["markers", name], None).fit(cohort)
    with pytest.raises(ValueError, match=message):
        resolve_selection([name])


def test_forbidden_columns() -> None:
    assert forbidden_feature_columns() == {
        "madrs_followup",
        "hamd17_followup",
        "phq9_followup",
        "response",
        "patient_id",
        "site",
        "arm",
        "drug",
    }


def test_outcome_and_identity_columns_are_never_read(cohort: pd.DataFrame) -> None:
    features = ClinicalFeatures(exclude=["madrs_followup", "response"]).fit(cohort)
    assert not set(features.feature_names_in_) & forbidden_feature_columns()
    # Garbage in the forbidden columns changes nothing: they are not read.
    spoiled = cohort.assign(**{c: "not a number" for c in forbidden_feature_columns()})
    np.testing.assert_array_equal(features.transform(spoiled), features.transform(cohort))
    np.testing.assert_array_equal(
        features.transform(cohort.drop(columns=list(forbidden_feature_columns() & set(cohort)))),
        features.transform(cohort),
    )


@pytest.mark.parametrize(
    ("include", "exclude", "message"),
    [
        (
            ["marker"],
            None,
            r"Unknown name 'marker' in 'include'. Allowed: a feature group \(markers, ",
        ),
        (None, ["crp"], "Unknown name 'crp' in 'exclude'.*crp_mg_l"),
        (["gad7_items"], None, "'gad7_items' in 'include' is a cohort column, but no feature"),
        ("markers", None, "The 'include' parameter must be a list .* Got 'markers' instead"),
        (None, [1], "The 'exclude' parameter must hold names"),
    ],
)
def test_bad_selection_is_refused(
    cohort: pd.DataFrame, include: object, exclude: object, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        ClinicalFeatures(include=include, exclude=exclude).fit(cohort)  # type: ignore[arg-type]


def test_excluding_columns_no_feature_reads_is_harmless(cohort: pd.DataFrame) -> None:
    # The config layer may exclude every outcome source, e.g. GAD-7 items for a GAD-7 outcome.
    features = ClinicalFeatures(exclude=["gad7_items", "gad7_total", "hamd17_followup"])
    assert "GAD-7 total" not in features.fit(cohort).get_feature_names_out()


def test_empty_selection_is_refused(cohort: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="No feature can be built"):
        ClinicalFeatures(include=[]).fit(cohort)


# --- columns absent at fit, missing at transform, missingness --------------------------------


def test_columns_absent_at_fit_are_skipped_and_recorded(cohort: pd.DataFrame) -> None:
    frame = cohort.drop(columns=["il6_pg_ml", "lymphocytes_10e9_l", "eq5d_vas"])
    features = ClinicalFeatures().fit(frame)
    names = set(features.get_feature_names_out())
    assert not names & {"IL-6 (pg/mL, log)", "Neutrophil/lymphocyte ratio", "EQ-5D VAS"}
    assert "IL-6 below detection limit" in names
    assert {"il6_pg_ml", "lymphocytes_10e9_l", "eq5d_vas"} <= set(features.absent_columns_)
    assert "neutrophils_10e9_l" not in features.feature_names_in_  # the ratio needs both
    features.transform(frame)  # the same columns at transform: fine


def test_column_missing_at_transform_is_an_error(cohort: pd.DataFrame) -> None:
    features = ClinicalFeatures().fit(cohort)
    with pytest.raises(
        ValueError,
        match=r"Columns passed to fit\(\) and transform\(\) differ: missing \['il6_pg_ml'\]",
    ):
        features.transform(cohort.drop(columns=["il6_pg_ml"]))


def test_extra_columns_and_column_order_at_transform_do_not_matter(cohort: pd.DataFrame) -> None:
    features = ClinicalFeatures().fit(cohort)
    shuffled = cohort[cohort.columns[::-1]].assign(unrelated=1.0)
    np.testing.assert_array_equal(features.transform(shuffled), features.transform(cohort))


def test_missing_indicators_are_learned_in_fit(cohort: pd.DataFrame) -> None:
    features = ClinicalFeatures().set_output(transform="pandas").fit(cohort)
    assert features.missing_indicators_ == ["il6_pg_ml", "smoking"]
    out = features.transform(cohort)
    assert out["IL-6 (pg/mL, log) missing"].tolist() == [0.0, 1.0, 0.0, 0.0]
    assert np.isnan(out["IL-6 (pg/mL, log)"].iloc[1])
    assert out["Smoking status missing"].tolist() == [0.0, 0.0, 0.0, 1.0]
    # BMI was complete in training: missing later stays NaN, with no new column.
    later = features.transform(cohort.assign(bmi=np.nan))
    assert list(later.columns) == list(out.columns)
    assert later["BMI (kg/m2)"].isna().all()


def test_does_not_modify_the_callers_dataframe(cohort: pd.DataFrame) -> None:
    before = cohort.copy(deep=True)
    ClinicalFeatures().fit(cohort).transform(cohort)
    ClinicalFeatures().set_output(transform="pandas").fit_transform(cohort)
    pd.testing.assert_frame_equal(cohort, before)


# --- scikit-learn integration --------------------------------------------------------------


def test_set_output_pandas(cohort: pd.DataFrame) -> None:
    frame = cohort.set_axis([f"row{i}" for i in range(len(cohort))])
    features = ClinicalFeatures().set_output(transform="pandas").fit(frame)
    out = features.transform(frame)
    assert isinstance(out, pd.DataFrame)
    assert list(out.columns) == list(features.get_feature_names_out())
    assert list(out.index) == list(frame.index)
    assert (out.dtypes == "float64").all()
    default = ClinicalFeatures().fit(frame).transform(frame)
    np.testing.assert_array_equal(out.to_numpy(), default)


def _training_cohort(n: int = 80, seed: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(seed)
    crp = np.exp(rng.normal(0.27, 1.35, n))
    il6 = np.exp(rng.normal(np.log(1.5), 0.65, n))
    il6[rng.random(n) < 0.2] = np.nan
    frame = pd.DataFrame(
        {
            "patient_id": pd.Series([f"p{i}" for i in range(n)], dtype="str"),
            "age": rng.uniform(18, 80, n),
            "sex": pd.Series(rng.choice(["F", "M"], n), dtype="str"),
            "crp_mg_l": crp,
            "il6_pg_ml": il6,
            "n_failed_antidepressants": rng.integers(0, 5, n).astype(float),
            "autoimmune_disease": pd.Series(rng.random(n) < 0.1, dtype="boolean"),
            "madrs_followup": rng.uniform(0, 40, n),
        }
    )
    y = pd.Series((np.log(crp) + rng.normal(0, 1, n) > 0.3).astype(int))
    return frame, y


@pytest.mark.parametrize("pandas_output", [False, True])
def test_pipeline_with_xgboost(pandas_output: bool) -> None:
    x, y = _training_cohort()
    features = build_feature_transformer(None, None)
    if pandas_output:
        features.set_output(transform="pandas")
    model = XGBClassifier(n_estimators=20, max_depth=2, n_jobs=1, random_state=0)
    pipeline = Pipeline([("features", features), ("model", model)]).fit(x, y)
    proba = pipeline.predict_proba(x.drop(columns=["madrs_followup"]))[:, 1]
    assert proba.shape == (len(x),) and np.all((proba > 0) & (proba < 1))
    names = pipeline[:-1].get_feature_names_out()
    assert "CRP (mg/L, log)" in names and "IL-6 (pg/mL, log) missing" in names
    assert pipeline["model"].n_features_in_ == len(names)


def test_pipeline_with_imputer_and_logistic_regression() -> None:
    x, y = _training_cohort()
    pipeline = Pipeline(
        [
            ("features", build_feature_transformer(["markers", "demographics"], None)),
            ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
            ("scale", StandardScaler()),
            ("model", LogisticRegression(max_iter=1000)),
        ]
    ).set_output(transform="pandas")
    pipeline.fit(x, y)
    proba = pipeline.predict_proba(x)[:, 1]
    assert np.isfinite(proba).all()
    names = pipeline[:-1].get_feature_names_out()
    assert list(pipeline["model"].feature_names_in_) == list(names)
    assert "Age (years)" in names and "Failed antidepressants (n)" not in names


def test_fitted_transformer_round_trips_through_skops(cohort: pd.DataFrame) -> None:
    # MLflow saves with skops: only the class itself may need trusting, no function or lambda.
    features = build_feature_transformer(None, None).fit(cohort)
    data = sio.dumps(features)
    assert sio.get_untrusted_types(data=data) == ["inflamrx.modeling.features.ClinicalFeatures"]
    loaded = sio.loads(data, trusted=["inflamrx.modeling.features.ClinicalFeatures"])
    np.testing.assert_array_equal(loaded.transform(cohort), features.transform(cohort))
    assert list(loaded.get_feature_names_out()) == list(features.get_feature_names_out())


def test_plain_array_columns_pass_through_with_indicators() -> None:
    X = np.array([[1.0, np.nan], [2.0, 3.0]])
    features = ClinicalFeatures().set_output(transform="pandas").fit(X)
    out = features.transform(X)
    assert list(out.columns) == ["x0", "x1", "x1 missing"]
    np.testing.assert_array_equal(out.to_numpy(), [[1.0, np.nan, 1.0], [2.0, 3.0, 0.0]])


def test_cohort_fitted_transformer_refuses_an_array(cohort: pd.DataFrame) -> None:
    features = ClinicalFeatures().fit(cohort)
    with pytest.raises(ValueError, match="fitted on a cohort DataFrame"):
        features.transform(np.zeros((2, 3)))


def test_selection_needs_a_cohort() -> None:
    with pytest.raises(ValueError, match="'include'/'exclude' select cohort columns"):
        ClinicalFeatures(include=["markers"]).fit(np.zeros((3, 2)))


# All common checks run on the numeric path (arrays and generic frames); none needs to be
# marked as an expected failure.
@parametrize_with_checks([ClinicalFeatures()])
def test_sklearn_estimator_contract(
    estimator: ClinicalFeatures, check: Callable[[ClinicalFeatures], None]
) -> None:
    check(estimator)
