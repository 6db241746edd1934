"""Tuning: search, pruning, failures, resume after SIGKILL, workers on PostgreSQL, nested
estimate, MLflow parent and child runs. Small cohorts and few trials keep it to a few minutes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import mlflow
import optuna
import pytest
from optuna.trial import TrialState
from typer.testing import CliRunner

import inflamrx.jobs.tune.search as search_module
from conftest import synthetic_workspace, tracking_in
from inflamrx.cli import app
from inflamrx.config import Config, as_tuned_by_0_1_0, for_tuning, load_config
from inflamrx.data.validate import validate_cohort
from inflamrx.errors import InputError
from inflamrx.jobs.tune.job import TuneResult, calibrated_refit, tune
from inflamrx.jobs.tune.search import counted, retried, search_here, with_params
from inflamrx.jobs.tune.storage import (
    TuneOptions,
    check_options,
    create_study,
    default_storage,
    default_study_name,
    fingerprint,
    open_storage,
)
from inflamrx.modeling.kinds.base import fit_model
from inflamrx.modeling.metrics import calibration_intercept_slope
from inflamrx.modeling.splits import PreparedCohort, prepare
from inflamrx.modeling.validation import SLOPE_BAND

pytestmark = pytest.mark.slow

# A small space with cheap, short trials; depth varies so a test can make deep trials fail.
SMALL_SPACE = {
    "max_depth": {"low": 2, "high": 5, "integer": True},
    "learning_rate": {"low": 0.02, "high": 0.3, "log": True},
    "n_estimators": {"low": 20, "high": 80, "integer": True},
    "min_child_weight": {"low": 1, "high": 30, "log": True},
}


def overrides(workspace: Path, **extra: Any) -> dict[str, Any]:
    return {
        "data.path": str(workspace / "synthetic.csv"),
        "data.synthetic": True,
        "evaluation.n_bootstrap": 200,
        "report.enabled": False,
        "tuning.cv_folds": 3,
        "tuning.nested_folds": 2,
        "tuning.nested_trials": 3,
        "tuning.heartbeat_s": 1,
        "tuning.xgboost_space": SMALL_SPACE,
        "tracking.experiment": "tune",
        "model.kind": "xgboost",  # auto (across kinds) has its own tests
    } | extra


def cli_sets(values: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for key, value in values.items():
        out += ["--set", f"{key}={json.dumps(value)}"]  # JSON is YAML: the CLI reads it back
    return out


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic_workspace(tmp_path_factory, "tune", n=400, seed=3)


@pytest.fixture(scope="module")
def tuned(workspace: Path) -> tuple[TuneResult, str]:
    with tracking_in(workspace) as uri:
        result = tune(load_config(None, overrides(workspace)), TuneOptions(trials=14, study="e2e"))
    return result, uri


@pytest.fixture(scope="module")
def prepared(workspace: Path) -> tuple[Config, PreparedCohort]:
    config = for_tuning(load_config(None, overrides(workspace)))  # as `tune` runs it
    return config, prepare(validate_cohort(config.data), config)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (TuneOptions(trials=0), r"--trials must be at least 1; got 0"),
        (TuneOptions(workers=0), r"--workers must be at least 1; got 0"),
        (TuneOptions(timeout_s=-5), r"--timeout must be a positive number"),
        (TuneOptions(study=""), r"--study must be a name of 1 to 512 characters"),
        (TuneOptions(storage="mysql://u:secret@db/x"), r"scheme 'mysql' is not supported"),
        (TuneOptions(storage="optuna.db"), r"scheme 'missing' is not supported"),
    ],
)
def test_bad_options_are_refused_with_the_option_named(options: TuneOptions, message: str) -> None:
    with pytest.raises(InputError, match=message) as info:
        check_options(options)
    assert "secret" not in str(info.value)  # a password never reaches a message


@pytest.mark.parametrize(
    "args",
    [["--workers", "0"], ["--trials", "0"], ["--storage", "redis://h/0"], ["--timeout", "0"]],
)
def test_cli_bad_options_exit_2_without_traceback(args: list[str]) -> None:
    done = CliRunner().invoke(app, ["tune", *args])
    assert done.exit_code == 2
    assert "error:" in done.output and "Traceback" not in done.output


def test_unreachable_postgres_is_an_input_error() -> None:
    url = "postgresql://nobody:pw@127.0.0.1:1/none?connect_timeout=2"
    with pytest.raises(InputError, match=r"cannot open the study storage .*127\.0\.0\.1:1"):
        open_storage(url, heartbeat_s=1)


def test_default_storage_follows_a_sqlite_tracking_uri(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'x' / 'mlflow.db'}")
    assert default_storage() == f"sqlite:///{tmp_path / 'x' / 'optuna.db'}"


def test_a_study_made_for_another_config_is_refused(
    tmp_path: Path, prepared: tuple[Config, PreparedCohort]
) -> None:
    config, data = prepared
    storage = open_storage(f"sqlite:///{tmp_path / 'o.db'}", heartbeat_s=1)
    create_study(storage, "s", fingerprint(config, data.digest), config)
    other = config.model_copy(update={"split": config.split.model_copy(update={"seed": 9})})
    with pytest.raises(InputError, match="made for another configuration"):
        create_study(storage, "s", fingerprint(other, data.digest), other)
    # Budget and honesty settings may change between runs of one study.
    more = config.model_copy(update={"tuning": config.tuning.model_copy(update={"n_trials": 99})})
    assert fingerprint(more, data.digest) == fingerprint(config, data.digest)


# --------------------------------------------------------------------------- the search


def _search(tmp_path: Path, config: Config, data: PreparedCohort, name: str, n: int) -> Any:
    storage = open_storage(f"sqlite:///{tmp_path / 'search.db'}", heartbeat_s=1)
    study = create_study(storage, name, fingerprint(config, data.digest), config)
    search_here(study, data, config, n, None, n_existing=0, worker=0, since=datetime.now())
    return optuna.load_study(study_name=name, storage=storage)


def test_same_seed_one_worker_same_best_params(
    tmp_path: Path, prepared: tuple[Config, PreparedCohort]
) -> None:
    config, data = prepared
    first = _search(tmp_path, config, data, "a", 8)
    second = _search(tmp_path, config, data, "b", 8)
    assert first.best_params == second.best_params
    assert [t.params for t in first.trials] == [t.params for t in second.trials]
    assert [t.state for t in first.trials] == [t.state for t in second.trials]


def test_a_failing_trial_is_recorded_and_the_study_goes_on(
    tmp_path: Path, prepared: tuple[Config, PreparedCohort], monkeypatch: pytest.MonkeyPatch
) -> None:
    config, data = prepared
    real = search_module.score_fold

    def deep_trees_explode(cfg: Config, *args: Any) -> tuple[float, int | None]:
        if cfg.model.max_depth >= 4:
            raise RuntimeError(f"boom: max_depth {cfg.model.max_depth} is not allowed")
        return real(cfg, *args)

    monkeypatch.setattr(search_module, "score_fold", deep_trees_explode)
    study = _search(tmp_path, config, data, "failing", 10)
    states = [t.state for t in study.trials]
    assert len(states) == 10  # the study went on to its budget
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert failed and TrialState.COMPLETE in states
    for t in failed:
        assert t.params["max_depth"] >= 4
        assert t.user_attrs["error"].startswith("RuntimeError: boom: max_depth")


# --------------------------------------------------------------------------- the job


def test_summary_has_the_promised_keys(tuned: tuple[TuneResult, str]) -> None:
    result, _ = tuned
    summary = json.loads(json.dumps(result.summary(), default=float))
    assert {"study", "n_trials", "best_params", "best_cv_auroc", "nested_auroc",
            "nested_auroc_ci", "nested_auroc_folds", "run_id", "model_uri", "test_auroc",
            "test_auroc_ci"} <= set(summary)  # fmt: skip
    assert summary["study"] == "e2e" and summary["n_trials"] == 14
    assert set(summary["best_params"]) == set(SMALL_SPACE)


def test_nested_estimate_is_present_and_honest(tuned: tuple[TuneResult, str]) -> None:
    result, _ = tuned
    nested = result.nested
    assert len(nested.fold_scores) == 2
    assert nested.pooled.ci_low <= nested.pooled.estimate <= nested.pooled.ci_high
    assert 0.5 < nested.pooled.estimate < 0.9
    # Nested folds score only outer-fold patients of the training part: never the test set.
    scored = sorted(i for f in nested.folds for i in f.score_idx)
    assert scored == list(range(result.train.n_train))


def test_pruning_prunes_and_saves_fold_fits(tuned: tuple[TuneResult, str]) -> None:
    result, _ = tuned
    assert result.counts.pruned >= 1
    assert 0 < result.fold_fits_saved < 1
    assert result.counts.done == 14 and result.counts.running == 0


def test_mlflow_parent_run_with_child_runs_and_no_patient_ids(
    tuned: tuple[TuneResult, str], workspace: Path
) -> None:
    result, uri = tuned
    client = mlflow.MlflowClient(uri)
    parent = client.get_run(result.train.run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["job"] == "tune" and parent.data.tags["optuna_study"] == "e2e"
    metrics = parent.data.metrics
    assert {"best_cv_auroc", "nested_auroc", "nested_auroc_ci_low", "test_auroc"} <= set(metrics)
    for name, value in result.best_params.items():
        if name != "n_estimators":  # refitted with the early-stopped number of trees
            assert float(parent.data.params[f"model.{name}"]) == pytest.approx(value)
    artifacts = {a.path for a in client.list_artifacts(result.train.run_id, "tuning")}
    assert {
        "tuning/optimisation_history.png",
        "tuning/trials.csv",
        "tuning/nested.json",
    } <= artifacts
    children = client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{result.train.run_id}'"
    )
    assert len(children) == 14
    states = {c.data.tags["optuna_state"]: c.info.status for c in children}
    assert states.get("COMPLETE") == "FINISHED" and states.get("PRUNED") == "KILLED"
    assert all(set(c.data.params) == set(SMALL_SPACE) for c in children)
    assert all("fold_auroc" in c.data.metrics for c in children)
    version = client.get_model_version("inflamrx-response", result.train.registered_version)
    assert version.run_id == result.train.run_id
    study = optuna.load_study(study_name="e2e", storage=f"sqlite:///{workspace / 'optuna.db'}")
    everything = json.dumps(
        [parent.data.params, parent.data.tags, parent.data.metrics, study.user_attrs]
        + [[c.data.params, c.data.tags, c.data.metrics] for c in children]
        + [[t.user_attrs, t.params] for t in study.trials],
        default=str,
    )
    assert "SYN-" not in everything


def test_the_refit_records_its_cv_calibration_and_any_recalibration(
    tuned: tuple[TuneResult, str],
) -> None:
    result, uri = tuned
    metrics = mlflow.MlflowClient(uri).get_run(result.train.run_id).data.metrics
    slope = metrics["tuned_cv_calibration_slope"]
    outside = not SLOPE_BAND[0] <= slope <= SLOPE_BAND[1]
    assert ("recalibration_slope" in metrics) == outside
    assert any("after recalibration" in w for w in result.train.warnings) == outside


def test_an_overfitting_tuned_configuration_is_recalibrated_and_says_so(
    prepared: tuple[Config, PreparedCohort],
) -> None:
    config, data = prepared
    deep = with_params(
        config,
        {"max_depth": 2, "n_estimators": 60, "learning_rate": 0.05},
    )
    refit = calibrated_refit(deep, data)
    assert refit.cv_slope < SLOPE_BAND[0]  # too extreme out of sample
    assert refit.fitted.recalibration is not None
    assert refit.fitted.recalibration[1] == pytest.approx(refit.cv_slope)
    assert refit.note is not None and "after recalibration" in refit.note
    # The recalibrated model's log-odds are the plain refit's, shrunk by the CV slope.
    plain = fit_model(deep, data.x_train, data.y_train).probability(data.x_train)
    y = data.y_train.to_numpy()
    shrunk = refit.fitted.probability(data.x_train)
    assert calibration_intercept_slope(y, shrunk)[1] > calibration_intercept_slope(y, plain)[1]


def test_a_calibrated_tuned_configuration_is_refitted_as_it_is(
    prepared: tuple[Config, PreparedCohort],
) -> None:
    config, data = prepared
    plain = with_params(config, {"max_depth": 1, "n_estimators": 55, "learning_rate": 0.05})
    refit = calibrated_refit(plain, data)
    assert SLOPE_BAND[0] <= refit.cv_slope <= SLOPE_BAND[1], refit.cv_slope
    assert refit.fitted.recalibration is None and refit.note is None
    expected = fit_model(plain, data.x_train, data.y_train).probability(data.x)
    assert (refit.fitted.probability(data.x) == expected).all()


# --------------------------------------------------------------------------- processes


def _cli(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "inflamrx"), "tune", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _env(workspace: Path, db: str) -> dict[str, str]:
    return os.environ | {"MLFLOW_TRACKING_URI": f"sqlite:///{workspace / db}"}


def test_resume_after_sigkill_loses_and_repeats_nothing(workspace: Path) -> None:
    # Slower trials (no early stopping, more trees) so the kill lands mid-study.
    sets = overrides(workspace, **{"tuning.early_stopping_rounds": 1000})
    sets["tuning.xgboost_space"] = SMALL_SPACE | {"n_estimators": {"low": 150, "high": 300, "integer": True}}  # fmt: skip
    args = ["--trials", "12", "--study", "killed", "--json", *cli_sets(sets)]
    env = _env(workspace, "resume-mlflow.db")
    storage = f"sqlite:///{workspace / 'optuna.db'}"  # beside resume-mlflow.db

    first = _cli(args, workspace, env)
    finished: dict[int, tuple[str, Any, dict[str, Any]]] = {}
    deadline = time.time() + 120
    while len(finished) < 3 and time.time() < deadline and first.poll() is None:
        time.sleep(0.3)
        try:
            trials = optuna.load_study(study_name="killed", storage=storage).trials
        except KeyError:
            continue  # the study does not exist yet
        finished = {t.number: (t.state.name, t.value, t.params) for t in trials
                    if t.state in (TrialState.COMPLETE, TrialState.PRUNED)}  # fmt: skip
    assert first.poll() is None, first.stderr.read().decode() if first.stderr else ""
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    assert 3 <= len(finished) < 12

    second = _cli(args, workspace, env)
    out, err = second.communicate(timeout=240)
    assert second.returncode == 0, err.decode()[-3000:]
    summary = json.loads(out.decode().strip().splitlines()[-1])
    trials = optuna.load_study(study_name="killed", storage=storage).trials
    again = retried(trials)
    assert len(again) <= 1  # the trial the kill interrupted, if it fell inside one
    assert summary["n_trials"] == len(counted(trials)) == 12  # budget exact
    assert len(trials) == 12 + len(again)
    assert [t.number for t in trials] == list(range(len(trials)))
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL) for t in trials)
    for number, before in finished.items():  # no finished trial lost or changed
        t = trials[number]
        assert (t.state.name, t.value, t.params) == before
    for number in again:  # failed by the heartbeat, then run again with its parameters
        assert trials[number].state == TrialState.FAIL and "error" not in trials[number].user_attrs
        retry = next(t for t in trials if t.system_attrs.get("failed_trial") == number)
        assert retry.params == trials[number].params and retry.state != TrialState.FAIL


def test_two_workers_share_a_postgresql_study(workspace: Path, postgres_url: str) -> None:
    study = f"pg-{uuid.uuid4().hex[:10]}"
    # Longer trials (no early stopping): both worker processes start together and spend
    # ~10 s importing; each must still find trials to run.
    sets = overrides(workspace, **{"tuning.early_stopping_rounds": 1000, "tuning.nested_trials": 2})
    sets["tuning.xgboost_space"] = SMALL_SPACE | {"n_estimators": {"low": 300, "high": 600, "integer": True}}  # fmt: skip
    args = ["--trials", "12", "--workers", "2", "--storage", postgres_url, "--study", study,
            "--json", *cli_sets(sets)]  # fmt: skip
    done = _cli(args, workspace, _env(workspace, "pg-mlflow.db"))
    out, err = done.communicate(timeout=240)
    assert done.returncode == 0, err.decode()[-3000:]
    summary = json.loads(out.decode().strip().splitlines()[-1])
    storage = open_storage(postgres_url, heartbeat_s=1)  # chooses the pinned psycopg2 driver
    trials = optuna.load_study(study_name=study, storage=storage).trials
    # Two workers may both pass the budget check in the same instant: at most one extra.
    assert 12 <= len(trials) <= 13 and summary["n_trials"] == len(trials)
    assert len({t.user_attrs.get("worker") for t in trials}) == 2  # both processes ran trials
    assert summary["nested_auroc_ci"][0] <= summary["nested_auroc"] <= summary["nested_auroc_ci"][1]
    assert summary["storage"].startswith("postgresql://")


def test_search_only_adds_trials_and_leaves_refit_to_the_starting_job(workspace: Path) -> None:
    """A second machine joins a shared study with --search-only: its trials are kept, and
    nothing is estimated, refitted or registered there; the full job then continues the study
    to its budget and is the one that registers a model."""
    study = f"shared-{uuid.uuid4().hex[:8]}"
    with tracking_in(workspace) as uri:
        args = ["tune", "--trials", "4", "--study", study, "--search-only", "--json"]
        done = CliRunner().invoke(app, [*args, *cli_sets(overrides(workspace))])
        assert done.exit_code == 0, done.output
        summary = json.loads(done.stdout)
        assert summary["n_trials"] == 4 and summary["best_params"]
        assert "model_uri" not in summary and "nested_auroc" not in summary
        versions_before = len(mlflow.MlflowClient(uri).search_model_versions())

        full = tune(load_config(None, overrides(workspace)), TuneOptions(trials=6, study=study))
        assert full.counts.done == 6  # continued from the 4 trials of the search-only job
        assert full.train is not None and full.nested is not None
        assert len(mlflow.MlflowClient(uri).search_model_versions()) == versions_before + 1


# --------------------------------------------------------------------------- auto: across kinds


def auto_config(workspace: Path) -> Config:
    return load_config(None, overrides(workspace, **{"model.kind": "auto"}))


def test_auto_searches_across_kinds_and_registers_the_best_trials_kind(workspace: Path) -> None:
    with tracking_in(workspace) as uri:
        result = tune(auto_config(workspace), TuneOptions(trials=8, study="auto-e2e"))
    study = optuna.load_study(study_name="auto-e2e", storage=f"sqlite:///{workspace / 'optuna.db'}")
    kinds = {t.params["kind"] for t in study.trials}
    assert kinds == {"logistic", "xgboost"}
    for t in study.trials:  # each trial holds its own kind's parameters only
        own = set(SMALL_SPACE) if t.params["kind"] == "xgboost" else {"C", "penalty", "l1_ratio"}
        assert set(t.params) - {"kind"} <= own
    chosen = result.best_params["kind"]
    assert result.model_kind == chosen and result.train is not None
    assert result.train.model_kind == chosen
    run = mlflow.MlflowClient(uri).get_run(result.train.run_id)
    assert run.data.tags["model_kind_chosen"] == chosen
    assert run.data.params["model.kind"] == chosen
    artifacts = {a.path for a in mlflow.MlflowClient(uri).list_artifacts(run.info.run_id, "tuning")}
    assert {"tuning/trials.csv", "tuning/optimisation_history.png"} <= artifacts
    summary = json.loads(json.dumps(result.summary()))
    assert summary["model_kind"] == chosen and summary["best_params"]["kind"] == chosen
    by_kind = summary["best_cv_auroc_by_kind"]
    assert set(by_kind) == {"logistic", "xgboost"}
    assert max(v for v in by_kind.values() if v is not None) == pytest.approx(result.best_cv_auroc)
    # The nested estimate re-runs the same search across kinds in each outer fold.
    assert result.nested is not None and len(result.nested.folds) == 2
    assert all(f.params["kind"] in kinds for f in result.nested.folds)
    assert 0.5 < result.nested.pooled.estimate <= 1


def test_an_auto_config_survives_the_trip_to_a_worker_process(workspace: Path) -> None:
    config = for_tuning(auto_config(workspace))
    rebuilt = Config.model_validate(config.model_dump(mode="json"))  # as workers.worker_main
    assert rebuilt == config and rebuilt.model.kind == "auto"
    assert fingerprint(rebuilt, "d") == fingerprint(config, "d")


def test_a_0_1_0_default_study_is_resumed_as_xgboost_and_says_so(
    workspace: Path, tmp_path: Path
) -> None:
    """0.1.0 tuned XGBoost for the default kind, under XGBoost's default name: a job with auto
    and no --study resumes that study as it was started and says how to search across kinds."""
    config = for_tuning(auto_config(workspace))
    digest = prepare(validate_cohort(config.data), config).digest
    old = as_tuned_by_0_1_0(config)
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    old_name = default_study_name(old, digest)
    create_study(open_storage(url, 1), old_name, fingerprint(old, digest), old)
    options = TuneOptions(trials=2, storage=url, search_only=True)
    with tracking_in(workspace):
        result = tune(config, options)
    assert result.study == old_name and "-xgboost-" in old_name
    assert result.model_kind == "xgboost" and "kind" not in result.best_params
    note = " ".join(result.warnings)
    assert "resumed as XGBoost" in note and f"--study {default_study_name(config, digest)}" in note

    fresh = TuneOptions(trials=2, storage=f"sqlite:///{tmp_path / 'new.db'}", search_only=True)
    with tracking_in(workspace):
        new = tune(config, fresh)
    assert new.study == default_study_name(config, digest) and "-auto-" in new.study
    assert not any("XGBoost" in w for w in new.warnings)


def test_an_explicit_kinds_default_study_name_is_unchanged(workspace: Path) -> None:
    config = load_config(None, overrides(workspace))  # model.kind: xgboost
    auto = auto_config(workspace)
    assert default_study_name(config, "d") == default_study_name(as_tuned_by_0_1_0(auto), "d")
    assert default_study_name(config, "d").startswith("tune-xgboost-")
