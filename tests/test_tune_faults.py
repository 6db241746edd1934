"""Fault-proof tuning: a real ``inflamrx tune`` process SIGKILLed at the awkward moments (a
trial created but not yet beating; MLflow child runs half logged), then re-run. The study
ends with exactly ``--trials`` counted trials, nothing RUNNING in Optuna or MLflow, one child
run per trial and one registered version, and a re-run of the finished study registers
nothing. The kills are placed by the test-only ``INFLAMRX_TEST_KILL_AT`` crash points."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import mlflow
import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState

from conftest import synthetic_workspace
from inflamrx.jobs.tune.search import count_trials, counted, retried
from inflamrx.jobs.tune.storage import open_storage
from inflamrx.tracking.faults import ENV

TRIALS = 5
# Small, quick and unpruned (so every counted trial is COMPLETE).
SETS = {
    "data.synthetic": True,
    "evaluation.n_bootstrap": 100,
    "report.enabled": False,
    "tuning.cv_folds": 2,
    "tuning.nested_folds": 2,
    "tuning.nested_trials": 2,
    "tuning.heartbeat_s": 1,
    "tuning.pruner": "none",
    "tuning.xgboost_space": {
        "max_depth": {"low": 2, "high": 4, "integer": True},
        "n_estimators": {"low": 20, "high": 40, "integer": True},
    },
    "tracking.experiment": "faults",
    "model.kind": "xgboost",
}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic_workspace(tmp_path_factory, "faults", n=400, seed=3)


def _tune(
    workspace: Path, study: str, kill_at: str | None = None
) -> subprocess.CompletedProcess[str]:
    sets = SETS | {"data.path": str(workspace / "synthetic.csv")}
    args = ["--trials", str(TRIALS), "--study", study, "--json"]
    for key, value in sets.items():
        args += ["--set", f"{key}={json.dumps(value)}"]
    env = os.environ | {"MLFLOW_TRACKING_URI": f"sqlite:///{workspace / 'mlflow.db'}"}
    env.pop(ENV, None)
    if kill_at is not None:
        env[ENV] = kill_at
    return subprocess.run(
        [str(Path(sys.executable).parent / "inflamrx"), "tune", *args],
        cwd=workspace, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def _trials(workspace: Path, study: str) -> list[optuna.trial.FrozenTrial]:
    storage = open_storage(f"sqlite:///{workspace / 'optuna.db'}", heartbeat_s=1)
    return optuna.load_study(study_name=study, storage=storage).get_trials()


def _runs(workspace: Path, study: str) -> list[Any]:
    client = mlflow.MlflowClient(f"sqlite:///{workspace / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("faults")
    return client.search_runs([experiment.experiment_id], f"tags.optuna_study = '{study}'")


def _versions(workspace: Path, runs: list[Any]) -> list[Any]:
    client = mlflow.MlflowClient(f"sqlite:///{workspace / 'mlflow.db'}")
    ids = {r.info.run_id for r in runs}
    return [v for v in client.search_model_versions() if v.run_id in ids]


def _assert_whole(workspace: Path, study: str, done: subprocess.CompletedProcess[str]) -> Any:
    """The study and its MLflow record after a successful job: the promised invariants."""
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    trials = _trials(workspace, study)
    assert [t.state for t in counted(trials)] == [TrialState.COMPLETE] * TRIALS
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert summary["n_trials"] == summary["n_complete"] == TRIALS
    runs = _runs(workspace, study)
    assert not [r for r in runs if r.info.status == "RUNNING"]
    parents = [r for r in runs if "optuna_trial" not in r.data.tags]
    finished = [r for r in parents if r.info.status == "FINISHED"]
    assert len(finished) == 1
    children = [r for r in runs if "optuna_trial" in r.data.tags]
    # One child run per counted trial, all under the job that finished the study.
    assert sorted(int(r.data.tags["optuna_trial"]) for r in children) == sorted(
        t.number for t in counted(trials)
    )
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {finished[0].info.run_id}
    assert all(r.info.status == "FINISHED" and r.data.params for r in children)
    assert not [r for r in children if "ended_by" in r.data.tags]
    assert len(_versions(workspace, runs)) == 1
    return summary, trials, parents


def test_a_trial_that_never_beat_is_retried_after_the_grace_period_only(tmp_path: Path) -> None:
    storage = open_storage(f"sqlite:///{tmp_path / 'o.db'}", heartbeat_s=1)  # grace: 3 s
    study = optuna.create_study(storage=storage, study_name="grace", direction="maximize")
    sid = study._study_id
    just_started, killed, beating, raised = (storage.create_new_trial(sid) for _ in range(4))
    storage.set_trial_param(killed, "x", 0.25, optuna.distributions.FloatDistribution(0, 1))
    storage.record_heartbeat(beating)
    storage.set_trial_state_values(raised, TrialState.FAIL)  # an exception: counts, no retry
    ten_s_ago = datetime.now(UTC).replace(tzinfo=None) - timedelta(seconds=10)
    with storage.engine.begin() as db:  # started 10 s ago (stored in UTC)
        db.execute(
            sqlalchemy.text("UPDATE trials SET datetime_start = :t WHERE trial_id IN (:a, :b)"),
            {"t": ten_s_ago, "a": killed, "b": beating},
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    trials = study.get_trials()
    states = {t._trial_id: t.state for t in trials}
    # Only the old trial without a heartbeat is failed; a trial just started on another machine
    # (no beat yet) and an old one still beating are left running.
    assert states[killed] == TrialState.FAIL
    assert states[just_started] == states[beating] == TrialState.RUNNING
    retry = trials[-1]
    assert retry.state == TrialState.WAITING and retry.params == {"x": 0.25}
    assert retried(trials) == {trials[1].number}
    assert [t._trial_id for t in counted(trials)] == [just_started, beating, raised]


@pytest.mark.slow
def test_killed_right_after_trial_creation_is_retried_not_counted(workspace: Path) -> None:
    study = "created"
    first = _tune(workspace, study, kill_at="trial-created:2")
    assert first.returncode == -signal.SIGKILL, first.stderr[-2000:]
    trials = _trials(workspace, study)
    # The moment the test means: trial 2 exists, RUNNING, and never wrote a heartbeat.
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2 + [TrialState.RUNNING]
    assert trials[2].params == {}

    second = _tune(workspace, study)
    summary, trials, parents = _assert_whole(workspace, study, second)
    assert retried(trials) == {2} and trials[2].state == TrialState.FAIL
    assert count_trials(trials, TRIALS).retried == summary["n_killed_and_retried"] == 1
    assert summary["n_failed"] == 0
    assert len(trials) == TRIALS + 1 and len(parents) == 1


@pytest.mark.slow
def test_killed_while_logging_then_rerun_logs_each_trial_once(workspace: Path) -> None:
    study = "logging"
    first = _tune(workspace, study, kill_at="child-run-created:2")
    assert first.returncode == -signal.SIGKILL, first.stderr[-2000:]
    runs = _runs(workspace, study)
    # The moment the test means: the parent and the third child run left RUNNING.
    assert sorted(r.info.status for r in runs) == ["FINISHED", "FINISHED", "RUNNING", "RUNNING"]
    killed_parent = next(r for r in runs if "optuna_trial" not in r.data.tags).info.run_id

    second = _tune(workspace, study)
    summary, trials, parents = _assert_whole(workspace, study, second)
    assert len(trials) == TRIALS and not retried(trials)
    statuses = {r.info.run_id: r.info.status for r in parents}
    assert statuses.pop(killed_parent) == "KILLED" and list(statuses.values()) == ["FINISHED"]
    version = summary["registered_version"]

    # The finished study again: nothing estimated, refitted, logged or registered again.
    third = _tune(workspace, study)
    again, _, parents_after = _assert_whole(workspace, study, third)
    assert again["already_logged"] and again["registered_version"] == version
    assert again["run_id"] == summary["run_id"] and len(parents_after) == 2
    assert "nested_auroc_folds" not in again
