"""The search's feature memo: the same arrays as a fresh feature step, computed once per rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from inflamrx.config import for_tuning, load_config
from inflamrx.data.simulate import simulate_cohort, write_cohort
from inflamrx.data.validate import validate_cohort
from inflamrx.modeling.features import build_feature_transformer
from inflamrx.modeling.kinds.base import EarlyStopping, fit_model
from inflamrx.modeling.reused_features import FeatureMemo, ReusedFeatures
from inflamrx.modeling.splits import PreparedCohort, prepare


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> PreparedCohort:
    path = tmp_path_factory.mktemp("memo") / "synthetic.csv"
    write_cohort(simulate_cohort(300, 0), path)
    config = for_tuning(load_config(None, {"data.path": str(path)}))
    return prepare(validate_cohort(config.data), config)


@pytest.fixture(scope="module")
def cohort(prepared: PreparedCohort) -> pd.DataFrame:
    return prepared.x_train


def test_reused_step_gives_a_fresh_steps_arrays_for_every_fit_rows(cohort: pd.DataFrame) -> None:
    memo = FeatureMemo()
    # Fitted on a without missing IL-6, the step has no "IL-6 missing" column; on b it has.
    a = cohort[cohort["il6_pg_ml"].notna()].iloc[:150]
    b, scored = cohort.iloc[50:200], cohort.iloc[200:]
    assert cohort["il6_pg_ml"].iloc[50:200].isna().any()
    for fit_rows in (a, b, a, b):  # alternating: a stale fit or transform would show
        fresh = build_feature_transformer().fit(fit_rows).transform(scored)
        reused = ReusedFeatures(memo=memo).fit(fit_rows).transform(scored)
        np.testing.assert_array_equal(reused, fresh)
    first = ReusedFeatures(memo=memo).fit(a).transform(scored)
    assert ReusedFeatures(memo=memo).fit(a).transform(scored) is first  # computed once
    assert not first.flags.writeable  # shared: nobody may change it


def test_rows_without_a_unique_integer_index_are_computed_every_time(
    cohort: pd.DataFrame,
) -> None:
    memo = FeatureMemo()
    doubled = pd.concat([cohort.iloc[:50], cohort.iloc[:50]])  # repeated labels
    named = cohort.iloc[:50].set_axis([f"r{i}" for i in range(50)])
    for frame in (doubled, named):
        step = ReusedFeatures(memo=memo).fit(frame)
        np.testing.assert_array_equal(
            step.transform(frame), build_feature_transformer().fit(frame).transform(frame)
        )
    assert memo.entries == {}


def test_a_fit_with_the_memo_predicts_what_a_fresh_fit_does(prepared: PreparedCohort) -> None:
    config = for_tuning(load_config(None, {"model.kind": "xgboost"}))
    x, y = prepared.x_train, prepared.y_train
    stop = EarlyStopping(10, 0.2, 0)
    memo = FeatureMemo()
    fresh = fit_model(config, x.iloc[:200], y.iloc[:200], stop)
    for _ in range(2):  # the second fit reads everything from the memo
        reused = fit_model(config, x.iloc[:200], y.iloc[:200], stop, memo)
        np.testing.assert_array_equal(
            reused.probability(x.iloc[200:]), fresh.probability(x.iloc[200:])
        )
        assert reused.rounds_kept == fresh.rounds_kept
    assert len(memo.entries) == 4  # the fit, and the inner, validation and scored rows
