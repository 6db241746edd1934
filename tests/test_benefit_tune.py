"""Benefit tuning (`inflamrx tune` with a treatment section) on the single-arm machinery: a
stored study under a default name that resumes, `--search-only`, `--workers 2` on SQLite, a
killed job resumed with its trial run again, one MLflow child run per trial, and the nested
C-for-benefit beside the optimistic best trial. Tiny cohort, linear learners, 2-4 trials."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import optuna
import pytest
from optuna.trial import TrialState
from typer.testing import CliRunner

from conftest import tracking_in
from inflamrx.cli import app
from inflamrx.config import load_config
from inflamrx.data.arms import requirement
from inflamrx.data.simulate import simulate_cohort, write_cohort
from inflamrx.data.validate import validate_cohort
from inflamrx.jobs.tune.benefit import benefit_cohort, benefit_study_name, fingerprint_benefit
from inflamrx.jobs.tune.search import counted, retried
from inflamrx.jobs.tune.storage import default_study_name, fingerprint
from inflamrx.modeling.benefit.cohort import holdout_split, prepare_two_arm
from inflamrx.tracking.faults import ENV

pytestmark = pytest.mark.slow

NAME = "inflamrx-benefit-tune"
EXPERIMENT = "benefit-tune"
SETS = {
    "treatment.column": "arm",
    # 120 per arm: the linear learners (interaction, risk; model.kind auto has no trees).
    "treatment.min_per_arm_for_learners": 10,
    "treatment.crossfit_folds": 3,
    "data.synthetic": True,
    "evaluation.n_bootstrap": 100,
    "report.enabled": False,
    "tuning.nested_folds": 2,
    "tuning.nested_trials": 2,
    "tuning.heartbeat_s": 1,
    "registry.name": NAME,
    "tracking.experiment": EXPERIMENT,
}


def _args(workspace: Path, *extra: str) -> list[str]:
    args = ["tune", "--data", str(workspace / "trial.csv"), "--json", *extra]
    for key, value in SETS.items():
        args += ["--set", f"{key}={json.dumps(value)}"]
    return args


def _tune(workspace: Path, *extra: str) -> dict[str, Any]:
    done = CliRunner().invoke(app, _args(workspace, *extra))
    assert done.exit_code == 0, done.output
    summary: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return summary


def _trials(workspace: Path, study: str) -> list[optuna.trial.FrozenTrial]:
    storage = f"sqlite:///{workspace / 'optuna.db'}"  # beside the MLflow store
    return optuna.load_study(study_name=study, storage=storage).trials


def _children(run_id: str) -> list[Any]:
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(EXPERIMENT)
    return client.search_runs(
        [experiment.experiment_id], f"tags.mlflow.parentRunId = '{run_id}'", max_results=100
    )


def _versions() -> int:
    return len(mlflow.MlflowClient().search_model_versions(f"name = '{NAME}'"))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("benefit-tune")
    write_cohort(simulate_cohort(240, seed=31, two_arm=True), root / "trial.csv")
    with tracking_in(root):
        yield root


def test_benefit_study_names_never_collide_with_single_arm_ones() -> None:
    digest = "0123456789abcdef"
    config = load_config(None, {"treatment.column": "arm"})
    name = benefit_study_name(config, digest)
    assert name.startswith("inflamrx-benefit-") and name != default_study_name(config, digest)
    assert fingerprint_benefit(config, digest) != fingerprint(config, digest)
    # The harm threshold changes no trial's score: the same study; the learners do.
    cheaper = load_config(None, {"treatment.column": "arm", "treatment.harm_threshold": 0.1})
    assert benefit_study_name(cheaper, digest) == name
    one = load_config(None, {"treatment.column": "arm", "treatment.learner": "interaction"})
    assert benefit_study_name(one, digest) != name


def test_with_a_holdout_the_search_never_sees_the_held_out_patients(workspace: Path) -> None:
    sets = {k: v for k, v in SETS.items() if k.startswith("treatment")}
    config = load_config(None, sets | {"data.path": str(workspace / "trial.csv")})
    validated = validate_cohort(config.data, require=requirement(config.treatment))
    assert len(benefit_cohort(validated, config).data.y) == 240  # cross-fitted: everyone
    held = config.model_copy(update={"treatment": config.treatment.model_copy(
        update={"validation": "holdout"})})  # fmt: skip
    train_idx, _ = holdout_split(prepare_two_arm(validated, held), held)
    searched = benefit_cohort(validated, held).data
    assert len(searched.y) == len(train_idx) < 240
    assert searched.cohort["patient_id"].tolist() == (
        validated.accepted["patient_id"].iloc[train_idx].tolist()
    )


def test_search_only_then_the_same_command_resumes_estimates_and_registers_once(
    workspace: Path,
) -> None:
    first = _tune(workspace, "--trials", "2", "--search-only")
    study = first["study"]
    assert study.startswith(f"{EXPERIMENT}-benefit-")  # derived from the config
    assert first["n_trials"] == 2 and first["tuning"]["learners"] == ["interaction", "risk"]
    assert "model_uri" not in first and "nested_c_for_benefit" not in first
    assert _versions() == 0  # search only: nothing fitted or registered
    before = [(t.number, t.params, t.value) for t in _trials(workspace, study)]

    second = _tune(workspace, "--trials", "4")  # the same command without --search-only
    assert second["study"] == study
    trials = _trials(workspace, study)
    assert len(trials) == 4 and second["n_trials"] == 4  # grew from 2: not restarted
    assert [(t.number, t.params, t.value) for t in trials[:2]] == before
    values = [t.value for t in trials if t.state == TrialState.COMPLETE]
    assert second["best_cv_c_for_benefit"] == max(values)
    assert second["best_params"]["learner"] == second["benefit_learner"]
    # The honest estimate beside the optimistic one, with its CI and per outer fold.
    low, high = second["nested_c_for_benefit_ci"]
    assert low <= second["nested_c_for_benefit"] <= high
    assert len(second["nested_c_for_benefit_folds"]) == 2
    assert any("nested estimate of the whole procedure" in w for w in second["warnings"])

    run = mlflow.get_run(second["run_id"])
    assert run.data.tags["job"] == "tune-benefit" and run.data.tags["optuna_study"] == study
    assert {"best_cv_c_for_benefit", "nested_c_for_benefit", "nested_c_for_benefit_ci_low",
            "nested_c_for_benefit_ci_high", "c_for_benefit"} <= set(run.data.metrics)  # fmt: skip
    assert run.data.metrics["nested_c_for_benefit"] == second["nested_c_for_benefit"]
    children = _children(second["run_id"])
    assert sorted(int(c.data.tags["optuna_trial"]) for c in children) == [0, 1, 2, 3]
    assert all("learner" in c.data.params and "cv_c_for_benefit" in c.data.metrics
               for c in children)  # fmt: skip
    assert _versions() == 1

    third = _tune(workspace, "--trials", "4")  # the finished study again: nothing new
    assert third["already_logged"] is True and third["run_id"] == second["run_id"]
    assert _versions() == 1 and len(_children(second["run_id"])) == 4


def test_two_workers_share_a_sqlite_study_without_duplicate_trials(workspace: Path) -> None:
    summary = _tune(workspace, "--trials", "4", "--workers", "2", "--study", "two-workers")
    trials = _trials(workspace, "two-workers")
    # Two workers may both pass the budget check in the same instant: at most one extra.
    assert 4 <= len(trials) <= 5 and summary["n_trials"] == len(trials)
    assert [t.number for t in trials] == list(range(len(trials)))
    assert all(t.state == TrialState.COMPLETE for t in trials)
    drawn = [json.dumps(t.params, sort_keys=True) for t in trials]
    assert len(set(drawn)) == len(drawn)  # each worker samples its own stream
    # The nested folds were dealt to this process and a worker process.
    assert len(summary["nested_c_for_benefit_folds"]) == 2
    children = _children(summary["run_id"])
    assert sorted(int(c.data.tags["optuna_trial"]) for c in children) == list(range(len(trials)))


def test_a_killed_benefit_tune_resumes_and_runs_the_killed_trial_again(workspace: Path) -> None:
    args = _args(workspace, "--trials", "3", "--study", "killed", "--search-only")
    command = [str(Path(sys.executable).parent / "inflamrx"), *args]
    env = os.environ | {"MLFLOW_TRACKING_URI": f"sqlite:///{workspace / 'mlflow.db'}"}
    # SIGKILL once trial 1 is committed, before its first heartbeat.
    killed = subprocess.run(
        command, cwd=workspace, env=env | {ENV: "trial-created:1"}, capture_output=True,
        timeout=300, check=False,
    )  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
    assert [t.state for t in _trials(workspace, "killed")] == [
        TrialState.COMPLETE,
        TrialState.RUNNING,
    ]
    again = subprocess.run(
        command, cwd=workspace, env=env, capture_output=True, timeout=300, check=False
    )
    assert again.returncode == 0, again.stderr.decode()[-2000:]
    trials = _trials(workspace, "killed")
    assert retried(trials) == {1}  # failed by the heartbeat, then run again
    assert len(counted(trials)) == 3 and len(trials) == 4
    retry = next(t for t in trials if t.system_attrs.get("failed_trial") == 1)
    assert retry.state == TrialState.COMPLETE and trials[1].state == TrialState.FAIL
    summary = json.loads(again.stdout.decode().strip().splitlines()[-1])
    assert summary["n_trials"] == 3 and summary["n_killed_and_retried"] == 1
