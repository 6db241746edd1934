"""Optuna trials as MLflow runs: one child run per finished trial, and the trials table.

A tune job can be killed while it logs. The next job of the study ends the runs it left
RUNNING as KILLED (``end_killed_runs``), and logs each trial once (``log_trial_runs``): a
trial's child run is complete when it carries the ``optuna_logged`` tag (logged with its data
in one batch; runs of earlier releases: when they ended by themselves); a half-logged one is
completed in place, and complete ones whose parent job did not finish move under the job that
does. ``finished_job`` finds the job that already logged and
registered the study as it stands, so re-running a finished study registers nothing new.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import pandas as pd
from optuna.trial import FrozenTrial, TrialState

from inflamrx.tracking.faults import crash_point


def _ms(moment: datetime | None) -> int | None:
    return int(moment.timestamp() * 1000) if moment is not None else None


_RUN_STATUS = {
    TrialState.COMPLETE: "FINISHED",
    TrialState.PRUNED: "KILLED",
    TrialState.FAIL: "FAILED",
}


_NO_HEARTBEAT = "no heartbeat: the process running this trial stopped (killed?) before it ended"


_KILLED_NOTE = (
    "ended by a later tune job of this study: the job's process stopped (killed?) before the "
    "run ended"
)


def _quoted(value: str) -> str | None:
    for quote in ("'", '"'):
        if quote not in value:
            return f"{quote}{value}{quote}"
    return None  # holds both quote marks: filtered here instead


def runs_of_study(client: Any, experiment_id: str, study: str) -> list[Any]:
    """Every active run of the experiment tagged with this study (parents and children)."""
    quoted = _quoted(study)
    where = f"tags.optuna_study = {quoted}" if quoted else ""
    runs: list[Any] = []
    token = None
    while True:
        page = client.search_runs([experiment_id], where, max_results=1000, page_token=token)
        runs += [r for r in page if r.data.tags.get("optuna_study") == study]
        token = page.token
        if not token:
            return runs


def end_killed_runs(client: Any, experiment_id: str, study: str, before: datetime) -> list[str]:
    """End as KILLED the study's runs left RUNNING by jobs started before ``before`` (this
    job's start; one full job per study at a time: ``--search-only`` jobs log no runs)."""
    ended = []
    for run in runs_of_study(client, experiment_id, study):
        if run.info.status == "RUNNING" and run.info.start_time < _ms(before):
            client.set_tag(run.info.run_id, "ended_by", _KILLED_NOTE)
            client.set_terminated(run.info.run_id, "KILLED")
            ended.append(run.info.run_id)
    return ended


def finished_job(
    client: Any, experiment_id: str, study: str, trials: Sequence[FrozenTrial]
) -> Any | None:
    """The parent run of a job that finished (logged and registered) the study with exactly
    these finished trials, if there is one."""
    n_finished = str(sum(t.state in _RUN_STATUS for t in trials))
    for run in runs_of_study(client, experiment_id, study):
        tags = run.data.tags
        if (run.info.status == "FINISHED" and "optuna_trial" not in tags
                and tags.get("optuna_finished_trials") == n_finished):  # fmt: skip
            return run
    return None


def _logged(run: Any) -> bool:
    """A complete child run: tagged so with its data, or ended by an earlier release (which
    did not tag), not by ``end_killed_runs``."""
    tags = run.data.tags
    return "optuna_logged" in tags or (run.info.status != "RUNNING" and "ended_by" not in tags)


def log_trial_runs(
    client: Any,
    experiment_id: str,
    parent_id: str,
    study: str,
    trials: Sequence[FrozenTrial],
    skip: set[int] | frozenset[int] = frozenset(),
    value_name: str = "cv_auroc",
) -> None:
    """One nested MLflow run per finished trial (params, fold scores, state, duration, error),
    each trial logged once across jobs; trials numbered in ``skip`` are not logged. The trial's
    value is logged as ``value_name`` (a benefit study's: ``cv_c_for_benefit``)."""
    from mlflow.entities import Metric, Param, RunTag

    children: dict[int, Any] = {}
    for run in runs_of_study(client, experiment_id, study):
        number = run.data.tags.get("optuna_trial")
        if number is not None and (int(number) not in children or _logged(run)):
            children[int(number)] = run
    parents = {r.data.tags.get("mlflow.parentRunId") for r in children.values()} - {parent_id}
    unfinished = {p for p in parents if p and client.get_run(p).info.status != "FINISHED"}
    created = 0
    for t in trials:
        if t.state not in _RUN_STATUS or t.number in skip:
            continue  # still running on another machine: logged by the job that sees it end
        found = children.get(t.number)
        if found is not None and _logged(found):
            if found.data.tags.get("mlflow.parentRunId") in unfinished:
                client.set_tag(found.info.run_id, "mlflow.parentRunId", parent_id)
            continue
        start = _ms(t.datetime_start) or int(time.time() * 1000)
        tags = {"mlflow.parentRunId": parent_id, "optuna_study": study,
                "optuna_trial": str(t.number), "optuna_state": t.state.name}  # fmt: skip
        if t.state == TrialState.FAIL:
            tags["error"] = str(t.user_attrs.get("error", _NO_HEARTBEAT))
        if found is not None:  # half logged by a killed job: completed in place
            run_id = found.info.run_id
            if "ended_by" in found.data.tags:  # it ends with its trial's status below
                client.delete_tag(run_id, "ended_by")
            for key, value in tags.items():
                client.set_tag(run_id, key, value)
        else:
            run_id = client.create_run(
                experiment_id, start_time=start, tags=tags, run_name=f"trial-{t.number}"
            ).info.run_id
            crash_point("child-run-created", created)
            created += 1
        metrics = [Metric("cv_auroc_running", float(v), start, int(step))
                   for step, v in t.intermediate_values.items()]  # fmt: skip
        metrics += [Metric("fold_auroc", float(v), start, i)
                    for i, v in enumerate(t.user_attrs.get("fold_auroc", []))]  # fmt: skip
        extra = {value_name: t.value, "folds_fitted": t.user_attrs.get("folds_fitted"),
                 "n_estimators_early_stopped": t.user_attrs.get("n_estimators_early_stopped"),
                 "duration_s": t.duration.total_seconds() if t.duration else None}  # fmt: skip
        metrics += [Metric(k, float(v), start, 0) for k, v in extra.items() if v is not None]
        client.log_batch(
            run_id,
            metrics=metrics,
            params=[Param(k, str(v)) for k, v in t.params.items()],
            tags=[RunTag("trial_number", str(t.number)), RunTag("optuna_logged", "true")],
            synchronous=True,
        )
        client.set_terminated(run_id, _RUN_STATUS[t.state], _ms(t.datetime_complete))


def trial_table(trials: Sequence[FrozenTrial], value_name: str = "cv_auroc") -> pd.DataFrame:
    """Trial number, state, value, duration, folds, error and parameters (no patient data)."""
    rows = []
    for t in trials:
        rows.append(
            {"trial": t.number, "state": t.state.name, value_name: t.value,
             "duration_s": t.duration.total_seconds() if t.duration else None,
             "folds_fitted": t.user_attrs.get("folds_fitted"),
             "error": t.user_attrs.get("error"),
             "retry_of": t.system_attrs.get("failed_trial")}
            | {f"param.{k}": v for k, v in t.params.items()}
        )  # fmt: skip
    return pd.DataFrame(rows)
