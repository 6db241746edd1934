"""Benchmark `inflamrx tune` on a SYNTHETIC cohort.

Run: .venv/bin/python benchmarks/tune_benchmark.py [--n 2000] [--trials 40] [--nested-trials 10]
     [--cv-folds 5] [--repeat 2] [--before SRC] [--rate-trials 0]

With ``--before SRC`` (for example the ``src`` folder of a checkout of main) the same command
also runs with that source first on PYTHONPATH: before and after are printed side by side,
taking turns within each repeat so both see the same machine load.

Prints
1. tuned against default parameters, both estimated honestly: the nested-CV AUROC of the whole
   tuning procedure against the default parameters scored on the same outer folds (pooled
   out-of-fold predictions, 95% bootstrap CIs), and the held-out test AUROC of each;
2. the fraction of cross-validation fold fits that pruning saved;
3. the wall time of the tune command (a fresh process running ``inflamrx tune --json``
   through the CLI: imports, validation, SQLite study with heartbeat, nested CV, MLflow parent
   and child runs, refit, evaluation, registration), phase by phase, beside a plain Optuna +
   XGBoost loop over the same trials (in-memory study, no tracking, the same score so TPE
   proposes the same parameters; once rebuilding the features every fit as the search did
   before, once with features computed once per fold); medians over the repeats, and whether
   each tree gave the same best parameters, CV score and nested estimate;
4. where the time goes: the search per trial (model fitting, feature step, Optuna storage
   reads and writes, the heartbeat thread's writes, the rest: sampler, pruner, Optuna), and the
   other phases (validation, study, nested estimate, child runs per trial, figures, refit,
   evaluation, model logging and registration);
5. with ``--rate-trials N``: trials per minute of the search with 1 and 2 worker processes.
Tracking and studies go to a temporary folder; the cohort is made like
`inflamrx simulate --n N --seed 0`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parents[1]
BREAKDOWN = "BREAKDOWN "  # the child's last line: its breakdown as JSON


SEARCHING = threading.Event()  # set while the search loop runs (the child's search timers)


def _timed(
    owner: Any, name: str, sink: dict[str, list[float]], label: str, in_search: bool = False
) -> None:
    """Replace ``owner.name`` by a wrapper adding its calls and seconds to ``sink[label]``
    (calls made in other threads than the main one go to ``label + " (thread)"``);
    ``in_search``: only calls made while the search loop runs count."""
    original = getattr(owner, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if in_search and not SEARCHING.is_set():
            return original(*args, **kwargs)
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            main = threading.current_thread() is threading.main_thread()
            entry = sink[label if main else f"{label} (thread)"]
            entry[0] += 1
            entry[1] += time.perf_counter() - start

    setattr(owner, name, wrapper)


STORAGE_READS = ("get_all_trials", "get_trial", "_get_stale_trial_ids", "get_best_trial",
                 "get_trial_id_from_study_id_trial_number", "get_study_user_attrs")  # fmt: skip
STORAGE_WRITES = ("create_new_trial", "set_trial_param", "set_trial_state_values",
                  "set_trial_intermediate_value", "set_trial_user_attr",
                  "set_trial_system_attr", "record_heartbeat")  # fmt: skip
# Job-level steps of the tune after the search (module, attribute, label).
JOB_STEPS = (
    ("inflamrx.jobs.tune.job", "validate_cohort", "validate cohort"),
    ("inflamrx.jobs.tune.job", "prepare", "prepare (split)"),
    ("inflamrx.jobs.tune.job", "open_storage", "open study storage"),
    ("inflamrx.jobs.tune.job", "create_study", "create/load study"),
    ("inflamrx.jobs.tune.job", "_finished_before", "look up earlier jobs (MLflow)"),
    ("inflamrx.jobs.tune.job", "finished_before", "look up earlier jobs (MLflow)"),  # renamed
    ("inflamrx.jobs.tune.job", "_nested", "nested estimate"),
    ("inflamrx.jobs.tune.job", "log_job_inputs", "log inputs (MLflow dataset)"),
    ("inflamrx.jobs.tune.job", "log_trial_runs", "child runs per trial (MLflow)"),
    ("inflamrx.jobs.tune.job", "save_tuning_plots", "tuning figures"),
    ("inflamrx.jobs.tune.job", "fit_model", "refit best on all training data"),
    ("inflamrx.jobs.train", "log_assessment", "evaluate + log evaluation"),
    ("inflamrx.jobs.train", "log_and_register", "log + register model"),
)


def child(args: argparse.Namespace) -> None:
    """One tune through the CLI in this process, with timers around the search's storage,
    fold fitting and feature step and around the job's later steps."""
    started = time.perf_counter()
    from importlib import import_module

    import optuna

    from inflamrx.cli import app
    from inflamrx.modeling.features import ClinicalFeatures

    imported = time.perf_counter() - started
    sink: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    search = import_module("inflamrx.jobs.tune.search")
    _timed(search, "score_fold", sink, "fold fitting", in_search=True)
    _timed(ClinicalFeatures, "fit", sink, "feature step", in_search=True)
    _timed(ClinicalFeatures, "transform", sink, "feature step", in_search=True)
    for module, name, label in JOB_STEPS:
        if hasattr(import_module(module), name):
            _timed(import_module(module), name, sink, label)
    storages = optuna.storages._cached_storage._CachedStorage  # what RDB studies go through
    for name in STORAGE_READS:
        _timed(storages, name, sink, "storage reads", in_search=True)
    for name in STORAGE_WRITES:
        _timed(storages, name, sink, "storage writes", in_search=True)
    run_search = search.run_search

    def searching(*a: Any, **k: Any) -> Any:
        SEARCHING.set()
        cpu = time.process_time()
        try:
            return run_search(*a, **k)
        finally:
            SEARCHING.clear()
            sink["search loop CPU"][1] += time.process_time() - cpu

    search.run_search = searching
    _timed(search, "run_search", sink, "search loop")
    args_cli = ["tune", "--trials", str(args.trials), "--study", args.study, "--json",
                "--data", args.data]  # fmt: skip
    for setting in args.sets:
        args_cli += ["--set", setting]
    try:
        app(args_cli, standalone_mode=False)
    finally:
        breakdown = {k: v for k, v in sink.items()} | {"imports": [1, imported]}
        print(BREAKDOWN + json.dumps(breakdown))


def run_tree(
    src: Path | None, folder: Path, args: argparse.Namespace, sets: list[str], name: str
) -> dict[str, Any]:
    """The tune command in a fresh process with ``src`` first on PYTHONPATH (None: this
    environment's inflamrx); its summary, wall time and breakdown."""
    env = os.environ | {"MLFLOW_TRACKING_URI": f"sqlite:///{folder / f'{name}.db'}"}
    if src is not None:
        env["PYTHONPATH"] = str(src.resolve())
    command = [sys.executable, str(Path(__file__).resolve()), "--child", "--study", name,
               "--trials", str(args.trials), "--data", str(folder / "synthetic.csv"),
               "--sets", *sets]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"tune ({name}) failed:\n{done.stderr[-3000:]}")
    lines = done.stdout.strip().splitlines()
    breakdown = json.loads(lines[-1].removeprefix(BREAKDOWN))
    summary = json.loads(next(line for line in reversed(lines) if line.startswith("{")))
    return {"summary": summary, "wall": wall, "breakdown": breakdown}


def plain_loop(
    config: Any, data: Any, n_trials: int, once_per_fold: bool
) -> tuple[float, float, Any]:
    """The same trials without inflamrx's search: in-memory study, features and XGBoost by
    hand, the same guarded score (so TPE proposes the same parameters). ``once_per_fold``:
    the feature step fitted and applied once per fold, not once per fit."""
    import numpy as np
    import optuna
    from sklearn.model_selection import train_test_split
    from xgboost import XGBClassifier

    from inflamrx.jobs.tune.search import guarded_auroc, make_pruner, search_space, task_splits
    from inflamrx.modeling.features import build_feature_transformer

    x, y = data.x_train, data.y_train
    splits = task_splits(data, config)
    t = config.tuning
    space = search_space(config)
    # The guard is a config setting since tuning.calibration_guard; older trees had a constant.
    guard = (t.calibration_guard,) if hasattr(t, "calibration_guard") else ()
    cache: dict[int, tuple[Any, Any, Any, Any, Any]] = {}

    def fold_matrices(step: int, fit_idx: Any, score_idx: Any) -> tuple[Any, ...]:
        if once_per_fold and step in cache:
            return cache[step]
        xf, yf = x.iloc[fit_idx], y.iloc[fit_idx]
        inner, valid = train_test_split(np.arange(len(yf)), test_size=t.validation_fraction,
                                        stratify=yf, random_state=t.seed)  # fmt: skip
        features = build_feature_transformer(config.features.include,
                                             sorted(set(config.features.exclude)))  # fmt: skip
        features.fit(xf.iloc[inner], yf.iloc[inner])
        found = (features.transform(xf.iloc[inner]), yf.iloc[inner],
                 features.transform(xf.iloc[valid]), yf.iloc[valid],
                 features.transform(x.iloc[score_idx]))  # fmt: skip
        cache[step] = found
        return found

    def objective(trial: optuna.Trial) -> float:
        params: dict[str, Any] = {}
        for name, r in space.items():  # the default space is numeric only
            assert r.low is not None and r.high is not None
            if r.integer:
                params[name] = trial.suggest_int(name, int(r.low), int(r.high), log=r.log)
            else:
                params[name] = trial.suggest_float(name, r.low, r.high, log=r.log)
        scores = []
        for step, (fit_idx, score_idx) in enumerate(splits):
            x_inner, y_inner, x_valid, y_valid, x_score = fold_matrices(step, fit_idx, score_idx)
            model = XGBClassifier(**params, tree_method="hist", eval_metric="logloss",
                                  random_state=0, n_jobs=1,
                                  early_stopping_rounds=t.early_stopping_rounds)  # fmt: skip
            model.fit(x_inner, y_inner, eval_set=[(x_valid, y_valid)], verbose=False)
            p = model.predict_proba(x_score)[:, 1]
            scores.append(guarded_auroc(y.iloc[score_idx].to_numpy(), p, *guard))
            trial.report(float(np.mean(scores)), step)
            if step < len(splits) - 1 and trial.should_prune():
                raise optuna.TrialPruned()
        return float(np.mean(scores))

    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=t.seed),
        pruner=make_pruner(config, len(splits)),
    )
    start, cpu = time.perf_counter(), time.process_time()
    study.optimize(objective, n_trials=n_trials)
    return time.perf_counter() - start, time.process_time() - cpu, study.best_params


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _same_results(runs: list[dict[str, Any]]) -> bool:
    keys = ("best_params", "best_cv_auroc", "nested_auroc", "nested_auroc_ci",
            "nested_auroc_folds", "test_auroc")  # fmt: skip
    first = runs[0]["summary"]
    return all(r["summary"].get(k) == first.get(k) for r in runs for k in keys)


def print_breakdown(trees: dict[str, list[dict[str, Any]]], n_trials: int) -> None:
    """Section 4: medians over the repeats of each tree's timers."""
    names = list(trees)

    def med(tree: str, label: str, field: int = 1) -> float:
        return _median([r["breakdown"].get(label, [0, 0.0])[field] for r in trees[tree]])

    def search_rows(tree: str) -> dict[str, float]:
        fold = med(tree, "fold fitting")
        features = med(tree, "feature step")
        reads, writes = med(tree, "storage reads"), med(tree, "storage writes")
        loop = med(tree, "search loop")
        return {
            "model fitting (XGBoost, scoring)": fold - features,
            "feature step (fit + transforms)": features,
            "storage reads (main thread)": reads,
            "storage writes (main thread)": writes,
            "sampler, pruner, Optuna, rest": loop - fold - reads - writes,
            "search loop, total": loop,
            "storage writes in the heartbeat thread": med(tree, "storage writes (thread)"),
        }

    print("\n4. Where the time goes (median of the repeats; machine loaded by other agents)")
    print(f"  search, ms per trial ({n_trials} trials)".ljust(46) +
          "".join(f"{n:>12}" for n in names))  # fmt: skip
    rows = {n: search_rows(n) for n in names}
    for label in rows[names[0]]:
        print(f"    {label:<42}" + "".join(f"{rows[n][label] / n_trials * 1000:12.0f}"
                                           for n in names))  # fmt: skip
    for n in names:
        r = trees[n][0]["breakdown"]
        calls = {k: r.get(k, [0, 0])[0] / n_trials for k in ("storage reads", "storage writes")}
        print(f"    storage calls per trial ({n}): {calls['storage reads']:.1f} reads, "
              f"{calls['storage writes']:.1f} writes")  # fmt: skip
    print("  the other phases, seconds".ljust(46) + "".join(f"{n:>12}" for n in names))
    print(f"    {'imports (CLI, stack)':<42}" +
          "".join(f"{med(n, 'imports'):12.1f}" for n in names))  # fmt: skip
    for label in dict.fromkeys(label for _module, _name, label in JOB_STEPS):
        print(f"    {label:<42}" + "".join(f"{med(n, label):12.1f}" for n in names))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--nested-trials", type=int, default=10)
    parser.add_argument("--cv-folds", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--before", type=Path, help="another source tree, run side by side")
    parser.add_argument("--rate-trials", type=int, default=0, help="0: no throughput section")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--study", default="bench", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--sets", nargs="*", default=[], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    import optuna

    from inflamrx.config import for_tuning, load_config
    from inflamrx.data.simulate import simulate_cohort, write_cohort
    from inflamrx.data.validate import validate_cohort
    from inflamrx.modeling.splits import prepare

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sets = {"tuning.cv_folds": args.cv_folds, "tuning.nested_trials": args.nested_trials,
            "report.enabled": False, "tracking.experiment": "bench"}  # fmt: skip
    cli_sets = [f"{k}={v}" for k, v in sets.items()]
    sources: dict[str, Path | None] = {"after": None}
    if args.before is not None:
        sources = {"before": args.before, "after": None}
    trees: dict[str, list[dict[str, Any]]] = {name: [] for name in sources}
    plain: dict[str, list[float]] = defaultdict(list)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{folder / 'mlflow.db'}"
        write_cohort(simulate_cohort(args.n, 0), folder / "synthetic.csv")
        config = for_tuning(load_config(None, sets | {"data.path": str(folder / "synthetic.csv")}))
        data = prepare(validate_cohort(config.data), config)
        for k in range(args.repeat):
            order = list(sources) if k % 2 == 0 else list(sources)[::-1]  # ABBA
            for i, name in enumerate(order):
                trees[name].append(run_tree(sources[name], folder, args, cli_sets, f"{name}{k}"))
                print(f"  repeat {k + 1}: {name} {trees[name][-1]['wall']:.1f} s", flush=True)
                if i == 0 or len(order) == 1:  # the plain loops between the two trees
                    for variant, once_per_fold in (("rebuilt", False), ("once", True)):
                        wall, cpu, plain_best = plain_loop(config, data, args.trials, once_per_fold)
                        plain[variant].append(wall)
                        plain[f"{variant} CPU"].append(cpu)
        accuracy = _accuracy(config, data)
        rates = _rates(config, data, folder, args.rate_trials) if args.rate_trials else None

    last = trees["after"][-1]["summary"]
    print(f"\nSYNTHETIC cohort n = {args.n} (seed 0), n_train = {last['n_train']}, "
          f"{args.trials} trials x {args.cv_folds} folds, nested {config.tuning.nested_folds} "
          f"outer folds x {args.nested_trials} trials; {args.repeat} repeats, trees taking "
          "turns; the machine was loaded by other agents")  # fmt: skip
    _print_accuracy(last, accuracy)
    print(f"\n2. Pruning: {last['n_pruned']} of {last['n_trials']} trials pruned; "
          f"{last['fold_fits_saved_by_pruning']:.0%} of fold fits saved")  # fmt: skip
    names = list(trees)
    print("\n3. Wall time (s, median of the repeats)".ljust(46) +
          "".join(f"{n:>12}" for n in names))  # fmt: skip
    print(f"  {'tune command, whole':<44}" +
          "".join(f"{_median([r['wall'] for r in trees[n]]):12.1f}" for n in names))  # fmt: skip
    phases = list(last["seconds"])
    for phase in phases:
        print(f"    {phase:<42}" + "".join(
            f"{_median([r['summary']['seconds'].get(phase, float('nan')) for r in trees[n]]):12.1f}"
            for n in names))  # fmt: skip
    rebuilt, once = _median(plain["rebuilt"]), _median(plain["once"])
    print(f"  plain Optuna + XGBoost loop (search), features every fit {rebuilt:8.1f}")
    print(f"  plain loop, features once per fold                       {once:8.1f}")

    def search(n: str) -> float:
        return _median([r["summary"]["seconds"]["search"] for r in trees[n]])

    def whole_ratio(n: str) -> float:
        s = trees[n]
        return _median([r["summary"]["seconds"]["search"] + r["summary"]["seconds"]["prepare"]
                        for r in s]) / rebuilt  # fmt: skip

    def cpu(n: str) -> float:
        return _median([r["breakdown"]["search loop CPU"][1] for r in trees[n]])

    rebuilt_cpu, once_cpu = _median(plain["rebuilt CPU"]), _median(plain["once CPU"])
    print(f"  CPU seconds: search loop {', '.join(f'{n} {cpu(n):.1f}' for n in names)}; "
          f"plain loop {rebuilt_cpu:.1f} (every fit), {once_cpu:.1f} (once per fold)")  # fmt: skip
    for label, value in (
        ("search / plain loop (features every fit)", lambda n: search(n) / rebuilt),
        ("search / plain loop (features once per fold)", lambda n: search(n) / once),
        ("(search + prepare) / plain loop (every fit)", whole_ratio),
        ("search CPU / plain CPU (every fit)", lambda n: cpu(n) / rebuilt_cpu),
        ("search CPU / plain CPU (once per fold)", lambda n: cpu(n) / once_cpu),
    ):
        print(f"  {label:<44}" + "".join(f"{value(n):11.2f}x" for n in names))
    for n in names:
        print(f"  {n}: same best params, CV score, nested estimate and test AUROC in every "
              f"repeat: {_same_results(trees[n])}")  # fmt: skip
    if len(names) > 1:
        print(f"  before and after give the same results: "
              f"{_same_results(trees['before'] + trees['after'])}")  # fmt: skip
    print(f"  same best params as the plain loop: {plain_best == last['best_params']}")
    print_breakdown(trees, args.trials)
    if rates is not None:
        print(f"\n5. Search throughput ({args.rate_trials} trials, SQLite study, worker start "
              "included), trials per minute")  # fmt: skip
        print(f"  1 worker  {rates[0]:5.1f}\n  2 workers {rates[1]:5.1f}")


def _accuracy(config: Any, data: Any) -> tuple[Any, Any]:
    """Default parameters on the nested estimate's outer folds, and trained as `train` does."""
    import numpy as np

    from inflamrx.jobs.train import train
    from inflamrx.jobs.tune.nested import outer_splits
    from inflamrx.modeling.kinds.base import fit_model
    from inflamrx.modeling.metrics import bootstrap_metric_ci

    x, y = data.x_train, data.y_train
    idx, p = [], []
    for fit_idx, score_idx in outer_splits(data, config):
        fitted = fit_model(config, x.iloc[fit_idx], y.iloc[fit_idx])
        idx.append(score_idx)
        p.append(fitted.probability(x.iloc[score_idx]))
    y_pooled = y.to_numpy()[np.concatenate(idx)]
    outer = bootstrap_metric_ci(y_pooled, np.concatenate(p), n_boot=1000, seed=0).auroc
    return outer, train(config).evaluation.metrics.auroc


def _print_accuracy(result: dict[str, Any], accuracy: tuple[Any, Any]) -> None:
    import pandas as pd

    def ci(e: Any) -> str:
        return f"{e.estimate:.3f} ({e.ci_low:.3f}-{e.ci_high:.3f})"

    lo, hi = result["nested_auroc_ci"]
    t_lo, t_hi = result["test_auroc_ci"]
    default_outer, default_test = accuracy
    print("\n1. Tuned against default parameters (AUROC, 95% bootstrap CI)")
    rows = [
        ("tuned (nested CV, whole procedure)", f"{result['nested_auroc']:.3f} ({lo:.3f}-{hi:.3f})"),
        ("default params (same outer folds)", ci(default_outer)),
        ("tuned, held-out test set", f"{result['test_auroc']:.3f} ({t_lo:.3f}-{t_hi:.3f})"),
        ("default params, held-out test set", ci(default_test)),
        ("best trial CV AUROC (optimistic)", f"{result['best_cv_auroc']:.3f}"),
    ]
    print(pd.DataFrame(rows, columns=["estimate", "AUROC"]).to_string(index=False))


def _rates(config: Any, data: Any, folder: Path, n: int) -> tuple[float, float]:
    from inflamrx.jobs.tune.storage import create_study, fingerprint, open_storage
    from inflamrx.jobs.tune.workers import _search

    def per_minute(workers: int) -> float:
        url = f"sqlite:///{folder / f'rate-{workers}.db'}"
        fp = fingerprint(config, data.digest)
        study = create_study(open_storage(url, 5), "rate", fp, config)
        start = time.perf_counter()
        quiet: Callable[[Any], None] = lambda _c: None  # noqa: E731
        _search(study, url, data, config, n, None, workers, datetime.now(), quiet)
        return n / (time.perf_counter() - start) * 60

    return per_minute(1), per_minute(2)


if __name__ == "__main__":
    main()
