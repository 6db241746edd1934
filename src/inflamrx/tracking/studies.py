"""Optuna trials as MLflow runs: one child run per finished trial, and the trials table."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import pandas as pd
from optuna.trial import FrozenTrial, TrialState


def _ms(moment: datetime | None) -> int | None:
    return int(moment.timestamp() * 1000) if moment is not None else None


_RUN_STATUS = {
    TrialState.COMPLETE: "FINISHED",
    TrialState.PRUNED: "KILLED",
    TrialState.FAIL: "FAILED",
}


_NO_HEARTBEAT = "no heartbeat: the process running this trial stopped (killed?) before it ended"


def log_trial_runs(
    client: Any, experiment_id: str, parent_id: str, study: str, trials: Sequence[FrozenTrial]
) -> None:
    """One nested MLflow run per finished trial: params, fold scores, state, duration, error."""
    from mlflow.entities import Metric, Param, RunTag

    for t in trials:
        if t.state not in _RUN_STATUS:
            continue  # still running on another machine: logged by the job that sees it end
        start = _ms(t.datetime_start) or int(time.time() * 1000)
        tags = {"mlflow.parentRunId": parent_id, "optuna_study": study,
                "optuna_trial": str(t.number), "optuna_state": t.state.name}  # fmt: skip
        if t.state == TrialState.FAIL:
            tags["error"] = str(t.user_attrs.get("error", _NO_HEARTBEAT))
        run = client.create_run(
            experiment_id, start_time=start, tags=tags, run_name=f"trial-{t.number}"
        )
        metrics = [Metric("cv_auroc_running", float(v), start, int(step))
                   for step, v in t.intermediate_values.items()]  # fmt: skip
        metrics += [Metric("fold_auroc", float(v), start, i)
                    for i, v in enumerate(t.user_attrs.get("fold_auroc", []))]  # fmt: skip
        extra = {"cv_auroc": t.value, "folds_fitted": t.user_attrs.get("folds_fitted"),
                 "n_estimators_early_stopped": t.user_attrs.get("n_estimators_early_stopped"),
                 "duration_s": t.duration.total_seconds() if t.duration else None}  # fmt: skip
        metrics += [Metric(k, float(v), start, 0) for k, v in extra.items() if v is not None]
        client.log_batch(
            run.info.run_id,
            metrics=metrics,
            params=[Param(k, str(v)) for k, v in t.params.items()],
            tags=[RunTag("trial_number", str(t.number))],
            synchronous=True,
        )
        client.set_terminated(run.info.run_id, _RUN_STATUS[t.state], _ms(t.datetime_complete))


def trial_table(trials: Sequence[FrozenTrial]) -> pd.DataFrame:
    """Trial number, state, value, duration, folds, error and parameters (no patient data)."""
    rows = []
    for t in trials:
        rows.append(
            {"trial": t.number, "state": t.state.name, "cv_auroc": t.value,
             "duration_s": t.duration.total_seconds() if t.duration else None,
             "folds_fitted": t.user_attrs.get("folds_fitted"),
             "error": t.user_attrs.get("error")}
            | {f"param.{k}": v for k, v in t.params.items()}
        )  # fmt: skip
    return pd.DataFrame(rows)
