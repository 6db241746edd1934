"""Where a study lives and what it is for: the tune job's options, the Optuna storage (SQLite
beside the MLflow store, or PostgreSQL shared by many machines), and the study's fingerprint
and default name.

The study is created here, once, before any worker starts: two processes creating one SQLite
study at the same moment fail.

Killed trials. Each running trial writes a heartbeat; one silent for the grace period (its
process was killed) is failed and queued again with the same parameters (Optuna's
``RetryHeartbeatStaleTrialCallback``, the successor of ``RetryFailedTrialCallback``), so a kill
costs the trial, not a place in the budget. Optuna ignores a trial with no heartbeat row yet
(killed between its creation and its first beat); here it is stale once the grace period has
passed twice since its start, so one just started by another machine is left alone.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import optuna
import sqlalchemy
import sqlalchemy.orm
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.storages._rdb import models
from optuna.storages._rdb.storage import _create_scoped_session
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

from inflamrx.config import (
    AutoConfig,
    Config,
    ParamRange,
    TuningConfig,
    as_tuned_by_0_1_0,
    for_tuning,
)
from inflamrx.errors import InputError
from inflamrx.modeling.choice import candidate_config
from inflamrx.modeling.kinds.base import kind_of
from inflamrx.tracking.faults import crash_point
from inflamrx.tracking.store import DEFAULT_STORE, store_folder

STORAGE_SCHEMES = ("sqlite", "postgresql", "postgresql+psycopg2")
# Fingerprint-neutral tuning keys: they change how long or how honestly we search, not what
# one trial computes, so a study may be resumed with other values.
_NEUTRAL_TUNING_KEYS = ("n_trials", "timeout_s", "nested_folds", "nested_trials", "heartbeat_s")
# A trial killed this many times (the OOM killer on its parameters?) fails for good and counts.
MAX_RETRIES = 3


@dataclass(frozen=True)
class TuneOptions:
    """What the command line adds to the config: budget, where the study lives, how many
    local worker processes. ``None`` means the config's value or the default."""

    trials: int | None = None
    timeout_s: float | None = None
    storage: str | None = None
    study: str | None = None
    workers: int = 1
    # Add this machine's trials to a shared study and stop: the nested estimate, refit and
    # registration are left to the job that started the study, so they run once.
    search_only: bool = False


def _check_positive(value: float | None, name: str) -> None:
    if value is not None and not value >= 1:
        raise InputError(f"{name} must be at least 1; got {value!r}")


def _check_timeout(value: float | None) -> None:
    if value is not None and not value > 0:
        raise InputError(f"--timeout must be a positive number of seconds; got {value!r}")


def _check_study_name(name: str | None) -> None:
    if name is not None and not (0 < len(name.strip()) <= 512):
        raise InputError(f"--study must be a name of 1 to 512 characters; got {name!r}")


def redact(url: str) -> str:
    """The storage URL without its password, safe to print and to log."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url.split("@")[-1]


def _check_storage(url: str | None) -> None:
    if url is None:
        return
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme not in STORAGE_SCHEMES:
        raise InputError(
            "--storage must be a sqlite:///path/to/optuna.db or postgresql://user@host/db URL; "
            f"got {redact(url)!r} (scheme {scheme or 'missing'!r} is not supported)"
        )


def check_options(options: TuneOptions) -> None:
    """Refuse unusable options with a message that names the option (exit 2 in the CLI)."""
    _check_positive(options.trials, "--trials")
    _check_positive(options.workers, "--workers")
    _check_timeout(options.timeout_s)
    _check_study_name(options.study)
    _check_storage(options.storage)


def default_storage() -> str:
    """SQLite beside the MLflow store: in the folder of ``MLFLOW_TRACKING_URI`` when that is a
    SQLite URI (tests keep everything in their tmp dir), else ``mlruns/optuna.db``."""
    folder = store_folder() or DEFAULT_STORE
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(folder / 'optuna.db').resolve()}"


class _Storage(optuna.storages.RDBStorage):
    """Optuna's RDB storage, also failing trials that were killed before their first beat."""

    def _create_new_trial(
        self, study_id: int, template_trial: FrozenTrial | None = None
    ) -> FrozenTrial:
        trial = super()._create_new_trial(study_id, template_trial)
        crash_point("trial-created", trial.number)  # committed, not yet beating
        return trial

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        # Optuna's own rule (last beat older than the grace period, in database time) plus
        # trials that never beat, from their start (this machine's clock), in one query. Those
        # get twice the grace: before its first beat a trial is also sampled, and a loaded
        # machine is slow to write (a live trial failed here would be lost).
        assert self.grace_period is not None  # open_storage sets it
        grace = timedelta(seconds=self.grace_period)
        stale: list[int] = []
        with _create_scoped_session(self.scoped_session, True) as session:
            db_now = session.execute(sqlalchemy.func.now()).scalar()
            assert db_now is not None
            running = (
                session.query(models.TrialModel)
                .options(sqlalchemy.orm.selectinload(models.TrialModel.heartbeats))
                .filter(models.TrialModel.state == TrialState.RUNNING)
                .filter(models.TrialModel.study_id == study_id)
                .all()
            )
            for trial in running:
                if trial.heartbeats:
                    silent = db_now.replace(tzinfo=None) - trial.heartbeats[0].heartbeat
                elif trial.datetime_start is not None:
                    silent = (datetime.now() - trial.datetime_start) / 2
                else:
                    continue
                if silent > grace:
                    stale.append(int(trial.trial_id))
        return stale


def open_storage(url: str, heartbeat_s: int) -> optuna.storages.RDBStorage:
    """The RDB storage with a heartbeat: a trial whose process stops beating for three
    intervals (SIGKILL, power loss), or that never beat for six intervals after its start,
    is marked FAIL and queued again (at most ``MAX_RETRIES`` times) before the next trial
    starts."""
    from sqlalchemy.exc import SQLAlchemyError

    if url.startswith("postgresql://"):
        # SQLAlchemy 2.1 maps plain postgresql:// to psycopg 3; the pinned driver is psycopg2.
        url = "postgresql+psycopg2://" + url.removeprefix("postgresql://")
    engine: dict[str, Any] = (
        {"connect_args": {"timeout": 60}}  # several writers: wait for SQLite's lock, not fail
        if url.startswith("sqlite")
        else {"pool_pre_ping": True}
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            storage = _Storage(
                url,
                engine_kwargs=engine,
                heartbeat_interval=heartbeat_s,
                grace_period=3 * heartbeat_s,
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(MAX_RETRIES),
            )
    except (SQLAlchemyError, ImportError, ValueError) as exc:
        raise InputError(f"cannot open the study storage {redact(url)}: {exc}") from None
    if url.startswith("sqlite"):
        _write_ahead_log(storage.engine)
    return storage


def _write_ahead_log(engine: Any) -> None:
    """SQLite in WAL mode with normal sync: readers (progress, other workers) do not block the
    writer, and a commit does not wait for fsync; a crash can lose the last commits but never
    corrupts the file. Cuts the per-trial storage cost by about a third."""
    from sqlalchemy import event

    def pragmas(connection: Any, _record: Any) -> None:
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    event.listen(engine, "connect", pragmas)
    engine.dispose()  # connections opened while creating the tables get the pragmas too


# Release 0.1.0 had one model section holding every kind's parameters; its studies were
# fingerprinted with all of them, so the two kinds it had are fingerprinted in that shape.
_RELEASE_0_1_MODEL = {
    "n_estimators": 300, "max_depth": 3, "learning_rate": 0.03, "subsample": 0.8,
    "colsample_bytree": 0.8, "min_child_weight": 5.0, "reg_lambda": 1.0, "reg_alpha": 0.0,
    "C": 1.0, "penalty": "l2", "l1_ratio": 0.5, "seed": 0,
}  # fmt: skip
_RELEASE_0_1_KINDS = ("xgboost", "logistic")


def space_dump(space: dict[str, ParamRange]) -> dict[str, Any]:
    return {name: r.model_dump(mode="json") for name, r in space.items()}


def fingerprint(config: Config, digest: str) -> str:
    """What one trial computes: data, outcome, features, fixed model parameters, folds, space.
    A study made for another fingerprint is refused rather than silently mixed."""
    config = for_tuning(config)
    tree = config.model_dump(mode="json")
    tuning = {k: v for k, v in tree["tuning"].items() if k not in _NEUTRAL_TUNING_KEYS}
    kind = config.model.kind
    spaces = {k: config.tuning.space_for(k) or kind_of(k).search_space for k in _RELEASE_0_1_KINDS}
    if kind in _RELEASE_0_1_KINDS:  # the default study name must not change with the shape
        later = {"spline_knots": 0}  # keys added since, left out at their default
        if tuning.get("calibration_guard") == TuningConfig().calibration_guard:
            del tuning["calibration_guard"]
        model = {k: v for k, v in tree["model"].items() if later.get(k, object()) != v}
        tree["model"] = _RELEASE_0_1_MODEL | model
        del tuning["space"]
        tuning |= {f"{k}_space": space_dump(s) for k, s in spaces.items()}
    elif isinstance(config.model, AutoConfig):  # each candidate: fixed parameters and space
        tuning = {k: v for k, v in tuning.items() if not k.endswith("space")}
        fixed = {k: candidate_config(config, k) for k in config.model.candidates}
        tree["model"] |= {"fixed": {k: c.model.model_dump(mode="json") for k, c in fixed.items()}}
        tuning["spaces"] = {
            k: space_dump(config.tuning.space_for(k) or kind_of(k).search_space) for k in fixed
        }
    else:
        tuning = {k: v for k, v in tuning.items() if not k.endswith("_space")}
        tuning["space"] = space_dump(config.tuning.space or kind_of(kind).search_space)
    # The split in release 0.1.0's shape (tune holds out a test set: holdout or site).
    split = config.split
    tree["split"] = {
        "test_size": split.test_size, "group_by": split.group_by, "cv_folds": split.cv_folds,
        "cv_repeats": split.cv_repeats, "seed": split.seed,
    }  # fmt: skip
    keep = {k: tree[k] for k in ("outcome", "features", "model", "split")} | {"tuning": tuning}
    text = json.dumps(keep | {"data": digest}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def scored_as_started(study: Study, config: Config) -> tuple[Config, str | None]:
    """``config`` with the fold score ``study`` was started with, so its trials compare like
    with like, and a warning when that is not the configured one. A study with trials and no
    recorded guard was started by release 0.1.0, which scored by AUROC alone (guard 0); a
    recorded guard always matches, since a guard other than the default is in the fingerprint."""
    if "calibration_guard" in study.user_attrs:
        return config, None
    if not study.get_trials(deepcopy=False):
        study.set_user_attr("calibration_guard", config.tuning.calibration_guard)
        return config, None
    tuning = config.tuning.model_copy(update={"calibration_guard": 0.0})
    return config.model_copy(update={"tuning": tuning}), (
        f"study {study.study_name!r} was started by inflamrx 0.1.0, which scored trials by "
        "AUROC alone; it is resumed with that score so its trials compare like with like. "
        "For the calibration-guarded score start a new study (--study NAME)."
    )


def default_study_name(config: Config, digest: str) -> str:
    """``<experiment>-<kind>-<fingerprint>``; ``auto`` for a search across kinds."""
    kind = for_tuning(config).model.kind
    return f"{config.tracking.experiment}-{kind}-{fingerprint(config, digest)[:8]}"


def study_to_run(
    storage: optuna.storages.BaseStorage, config: Config, digest: str, study: str | None
) -> tuple[Config, str, str | None]:
    """The config and study name a job runs, and a warning. Release 0.1.0 tuned XGBoost for
    ``model.kind: auto`` (under XGBoost's default name): without ``--study``, an auto config
    whose own default study is not in the storage but 0.1.0's is resumes that one as XGBoost,
    and says how to get the search across kinds."""
    name = study or default_study_name(config, digest)
    if study is not None or not isinstance(config.model, AutoConfig):
        return config, name, None
    old = as_tuned_by_0_1_0(config)
    old_name = default_study_name(old, digest)
    existing = optuna.get_all_study_names(storage)
    if name in existing or old_name not in existing:
        return config, name, None
    return (
        old,
        old_name,
        (
            f"study {old_name!r} was started by an XGBoost search (model.kind auto tuned XGBoost "
            "only in inflamrx 0.1.0); it is resumed as XGBoost. For the search across "
            f"{', '.join(config.model.candidates)} start a new study: --study NAME (e.g. --study "
            f"{name})."
        ),
    )


def create_study(storage: optuna.storages.BaseStorage, name: str, fp: str, config: Config) -> Study:
    """Create the study once (or load it); refuse one made for another configuration."""
    study = optuna.create_study(
        storage=storage, study_name=name, direction="maximize", load_if_exists=True
    )
    found = study.user_attrs.get("fingerprint")
    if found is None:
        study.set_user_attr("fingerprint", fp)
        study.set_user_attr("model_kind", config.model.kind)
    elif found != fp:
        raise InputError(
            f"study {name!r} was made for another configuration or cohort (fingerprint {found}, "
            f"this job {fp}); give another --study, or the config and data it was made with"
        )
    return study
