"""What `inflamrx tune` prints after its search, for single-arm and benefit studies alike: the
job that already finished the study, a search-only worker, or the honest nested estimate."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from inflamrx.cli import output
from inflamrx.modeling.metrics import Estimate

NESTED = SimpleNamespace(pooled=Estimate(0.61, 0.55, 0.67, 200), fold_scores=[0.6, 0.62])
EARLIER = {"run_id": "abc123", "registered_version": "4"}


def _result(**changes: Any) -> SimpleNamespace:
    base = dict(
        counts=SimpleNamespace(done=4, complete=4, pruned=0, failed=0),
        study="exp-xgboost-0123abcd", storage="sqlite:///mlruns/optuna.db", fold_fits_saved=0.1,
        best_trial=2, best_params={"max_depth": 2}, best_cv_auroc=0.7, best_cv_c_for_benefit=0.6,
        learners=["interaction"], best_cv_auroc_by_kind={}, earlier=None, nested=NESTED, train="TRAINED", warnings=[],
    )  # fmt: skip
    return SimpleNamespace(**(base | changes))


@pytest.mark.parametrize(
    ("printer", "honest"),
    [
        (output.print_tuning, "nested-CV AUROC of the whole tuning procedure"),
        (output.print_benefit_tuning, "nested cross-fitted C-for-benefit of the whole tuning"),
    ],
)
def test_what_tune_prints_after_its_search(
    printer: Any, honest: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    trained: list[object] = []
    monkeypatch.setattr(output, "print_training", trained.append)
    monkeypatch.setattr(output, "print_benefit_training", trained.append)

    printer(_result(warnings=["3 trials failed"]))
    said = " ".join(capsys.readouterr().out.split())
    assert f"{honest}" in said and "0.61" in said and "outer folds 0.600, 0.620" in said
    assert "3 trials failed" in said and trained == ["TRAINED"]

    printer(_result(nested=None, train=None))
    said = " ".join(capsys.readouterr().out.split())
    assert "search only" in said and honest not in said and trained == ["TRAINED"]

    printer(_result(earlier=EARLIER, nested=None, train=None))
    said = " ".join(capsys.readouterr().out.split())
    assert "already logged and registered by run abc123 (version 4)" in said
    assert "search only" not in said and trained == ["TRAINED"]


def test_an_auto_tune_says_which_kind_won(capsys: pytest.CaptureFixture[str]) -> None:
    by_kind = {"logistic": 0.6, "xgboost": None}  # no xgboost trial completed
    output.print_tuning(_result(best_cv_auroc_by_kind=by_kind, model_kind="logistic", nested=None))
    said = " ".join(capsys.readouterr().out.split())
    assert "kind chosen: logistic (best trial per kind: logistic 0.600, xgboost -)" in said
