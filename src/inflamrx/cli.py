"""The ``inflamrx`` command line: a thin layer that reads configs and prints results."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from inflamrx import __version__
from inflamrx.config import Config, load_config, parse_overrides
from inflamrx.errors import InputError

app = typer.Typer(
    name="inflamrx",
    help="Predict response to anti-inflammatory treatment for depression.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="YAML config (default: the embedded default).")
]
DataOpt = Annotated[str | None, typer.Option("--data", help="Overrides data.path.")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set", help="Override any config key, e.g. --set model.max_depth=4 (repeatable)."
    ),
]
ModelOpt = Annotated[
    str, typer.Option("--model", help="Model URI (runs:/..., models:/name@alias, models:/m-...).")
]
ExperimentOpt = Annotated[
    str | None,
    typer.Option("--experiment", help="MLflow experiment (overrides tracking.experiment)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]


def handles_input_errors(fn: F) -> F:
    """Unusable input ends with its message and exit code 2, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except InputError as e:
            err.print(
                "error: " + str(e), style="bold red", markup=False, highlight=False, soft_wrap=True
            )
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def write_table(frame: Any, path: Path) -> None:
    """Write a CSV or Parquet output; an unwritable path is an input error, not a traceback."""
    import csv

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix.lower() in (".parquet", ".pq"):
            frame.to_parquet(path, index=False)
        else:
            # Quote every field: a value holding a line break must stay one record.
            frame.to_csv(path, index=False, quoting=csv.QUOTE_ALL)
    except OSError as e:
        raise InputError(f"cannot write {path}: {e.strerror or e}") from None


def _quiet_libraries() -> None:
    """MLflow's informational logs and hints drown the output a user reads; keep errors."""
    import logging
    import warnings

    logging.getLogger("mlflow").setLevel(logging.ERROR)
    # Each model or artifact download would draw a progress bar over the summary.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    logging.getLogger("alembic").setLevel(logging.ERROR)
    for module in ("mlflow", "sqlalchemy", "skops", "pydantic"):
        warnings.filterwarnings("ignore", module=module)


def _config(config: Path | None, data: str | None, sets: list[str] | None) -> Config:
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DeprecationWarning)
        loaded = load_config(config, parse_overrides(sets or []), data)
    # A config written for an earlier release still works; say what to change in it.
    print_warnings([str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)])
    return loaded


def print_warnings(warnings: list[str]) -> None:
    for warning in warnings:
        out.print("warning: " + warning, style="yellow", markup=False)


def _job_config(
    config: Path | None,
    data: str | None,
    sets: list[str] | None,
    experiment: str | None,
    as_json: bool,
) -> tuple[Config, Console]:
    """The config of a tracked job and the console its progress goes to (stderr under --json,
    so stdout stays one JSON object); synthetic data is announced before anything runs."""
    cfg = _config(config, data, sets)
    if experiment:
        cfg.tracking.experiment = experiment
    from inflamrx.data.simulate import says_synthetic

    status = err if as_json else out
    if says_synthetic(cfg.data):
        status.print("[bold yellow]SYNTHETIC data[/]: figures below describe a simulated cohort.")
    return cfg, status


def _version(value: bool) -> None:
    if value:
        out.print(f"inflamrx {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool | None,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = None,
) -> None:
    """inflamrx: cohort contract, training, tuning, explanations and serving."""


@app.command()
@handles_input_errors
def simulate(
    n: Annotated[int, typer.Option(help="Number of patients.", min=10)] = 2000,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same file).")] = 0,
    out_path: Annotated[Path, typer.Option("--out", help="CSV to write.")] = Path(
        "data/synthetic.csv"
    ),
    two_arm: Annotated[
        bool, typer.Option("--two-arm", help="Randomise drug vs placebo 1:1.")
    ] = False,
) -> None:
    """Write a SYNTHETIC cohort generated from published figures (plus its true probabilities)."""
    from inflamrx.data.simulate import simulate_cohort, write_cohort

    written = write_cohort(simulate_cohort(n, seed, two_arm=two_arm), out_path)
    out.print(f"[bold]SYNTHETIC[/] cohort of {n} patients (seed {seed}) written:")
    for what, path in written.items():
        out.print(f"  {what}: {path}")


@app.command()
@handles_input_errors
def validate(
    config: ConfigOpt = None,
    data: DataOpt = None,
    sets: SetOpt = None,
    out_path: Annotated[
        Path | None, typer.Option("--out", help="Write the accepted canonical table (Parquet).")
    ] = None,
    rejected: Annotated[
        Path | None, typer.Option("--rejected", help="Write rejected rows with a reason (CSV).")
    ] = None,
) -> None:
    """Check a cohort against the data contract. Exit 0: all accepted, 1: some rejected, 2: unusable."""
    from inflamrx.data.validate import validate_cohort

    cfg = _config(config, data, sets)
    result = validate_cohort(cfg.data)
    if out_path is not None:
        write_table(result.accepted, out_path)
    if rejected is not None:
        write_table(result.rejected, rejected)
    print_validation(result, synthetic=result.synthetic)
    raise typer.Exit(result.exit_code)


def print_validation(result: Any, synthetic: bool) -> None:
    from inflamrx.data.validate import crp_bands, marker_summary, missingness

    label = " (SYNTHETIC data)" if synthetic else ""
    out.print(
        f"[bold]rows in {result.rows_in}[/]: accepted {len(result.accepted)}, "
        f"rejected {len(result.rejected)}{label}"
    )
    if result.problems:
        counts = result.reason_counts()
        table = Table(title="Reasons for rejection", show_lines=False)
        table.add_column("rows", justify="right")
        table.add_column("column: rule")
        for reason, count in counts.head(20).items():
            table.add_row(str(count), Text(str(reason)))
        out.print(table)
        for problem in result.problems[:10]:
            err.print(str(problem), markup=False, highlight=False, soft_wrap=True)
        if len(result.problems) > 10:
            err.print(f"... and {len(result.problems) - 10} more problems (see the rejected file)")
    print_warnings(result.warnings)
    if result.ignored_columns:
        ignored = f"ignored source columns (not in the contract): {result.ignored_columns[:20]}"
        out.print(ignored, markup=False)
    if result.accepted.empty:
        return
    miss = missingness(result.accepted)
    miss = miss[miss > 0]
    if len(miss):
        out.print(
            "missing values (% of accepted rows): "
            + ", ".join(f"{c} {v:.1f}%" for c, v in miss.items())
        )
    markers = marker_summary(result.accepted)
    table = Table(title="Markers against reference ranges (accepted rows)")
    for col in ("marker", "n", "median", "IQR", "% above ref.", "reference"):
        table.add_column(col)
    for row in markers.itertuples(index=False):
        table.add_row(
            row.marker, str(row.n), f"{row.median:.2f}", f"{row.q1:.2f}-{row.q3:.2f}",
            f"{row[5]:.1f}", row.reference,
        )  # fmt: skip
    out.print(table)
    bands = crp_bands(result.accepted)
    out.print("CRP bands (mg/L): " + ", ".join(f"{k}: {v:.1f}%" for k, v in bands.items()))


@app.command()
@handles_input_errors
def train(
    config: ConfigOpt = None,
    data: DataOpt = None,
    sets: SetOpt = None,
    experiment: ExperimentOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Train, validate (split.strategy: resample, holdout or site), log to MLflow and register
    the model."""
    import json

    from inflamrx.jobs.train import train as run_training

    _quiet_libraries()
    cfg, status = _job_config(config, data, sets, experiment, as_json)
    with status.status("training") as spinner:

        def progress(message: str) -> None:
            spinner.update(message)
            status.log(message)

        result = run_training(cfg, progress=progress)
    if as_json:
        print(json.dumps(result.summary(), default=float))
        return
    print_training(result)


def print_training(result: Any) -> None:
    tag = " [bold yellow](SYNTHETIC data)[/]" if result.synthetic else ""
    out.print(f"[bold]outcome[/]: {result.outcome}{tag}")
    split = f"test {result.n_test}" if result.has_test_set else "fitted on all of them"
    out.print(
        f"train {result.n_train}, {split}; rejected rows {result.n_rejected}; "
        f"accepted rows without an outcome (left out) {result.n_without_outcome}"
    )
    if result.comparison is not None:
        compared = Table(title="model.kind auto: candidates on the same resamples")
        for col in result.comparison.columns:
            compared.add_column(str(col))
        for row in result.comparison.itertuples(index=False):
            compared.add_row(*[f"{v:.3f}" if isinstance(v, float) else str(v) for v in row])
        out.print(compared)
        out.print(f"model kind: {result.model_kind}")
    if result.cv_auroc:
        import numpy as np

        out.print(
            f"cross-validated AUROC (training part): {np.mean(result.cv_auroc):.3f} +/- {np.std(result.cv_auroc):.3f} over {len(result.cv_auroc)} folds"
        )
    out.print(f"[bold]validation[/]: {result.validation}: {result.validation_method}")
    table = Table(title=f"Validation: {result.validation} (95% CIs)")
    for col in result.table.columns:
        table.add_column(str(col))
    for row in result.table.itertuples(index=False):
        table.add_row(*[str(v) for v in row])
    out.print(table)
    if result.sample_size not in result.warnings:  # else printed among the warnings
        out.print(result.sample_size, markup=False, highlight=False)
    print_warnings(result.warnings)
    out.print(
        f"run {result.run_id}\nmodel {result.model_uri}"
        + (
            f" (registered version {result.registered_version})"
            if result.registered_version
            else ""
        )
    )
    if result.report_uri:
        out.print(f"report {result.report_uri}", markup=False, highlight=False, soft_wrap=True)


@app.command()
@handles_input_errors
def tune(
    config: ConfigOpt = None,
    data: DataOpt = None,
    sets: SetOpt = None,
    trials: Annotated[
        int | None, typer.Option("--trials", help="Trial budget of the study (tuning.n_trials).")
    ] = None,
    timeout: Annotated[
        float | None, typer.Option("--timeout", help="Stop starting trials after S seconds.")
    ] = None,
    storage: Annotated[
        str | None,
        typer.Option(
            "--storage",
            help="Optuna storage: sqlite:///path or postgresql://user@host/db "
            "(default: SQLite beside the MLflow store).",
        ),
    ] = None,
    study: Annotated[
        str | None,
        typer.Option("--study", help="Study name; the same name resumes a killed or shared study."),
    ] = None,
    workers: Annotated[
        int, typer.Option("--workers", help="Local worker processes (one thread each).")
    ] = 1,
    search_only: Annotated[
        bool,
        typer.Option(
            "--search-only",
            help="Only add trials to the (shared) study: no nested estimate, refit or registration.",
        ),
    ] = False,
    experiment: ExperimentOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Tune hyperparameters (Optuna), estimate the procedure honestly (nested CV), refit, register."""
    import json

    import optuna
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from inflamrx.jobs.tune.job import tune as run_tune
    from inflamrx.jobs.tune.search import TrialCounts
    from inflamrx.jobs.tune.storage import TuneOptions, check_options

    _quiet_libraries()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    options = TuneOptions(trials, timeout, storage, study, workers, search_only)
    check_options(options)  # before any data is read: bad options fail fast
    cfg, status = _job_config(config, data, sets, experiment, as_json)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[detail]}"))  # fmt: skip
    with Progress(*columns, console=status, transient=False) as bar:
        task = bar.add_task("trials", total=trials or cfg.tuning.n_trials, detail="")

        def on_trials(c: TrialCounts) -> None:
            best = f"{c.best:.3f}" if c.best is not None else "-"
            detail = (
                f"complete {c.complete}, pruned {c.pruned}, failed {c.failed}, best AUROC {best}"
            )
            bar.update(task, completed=c.done, total=c.budget, detail=detail)

        result = run_tune(cfg, options, progress=bar.console.log, on_trials=on_trials)
    if as_json:
        print(json.dumps(result.summary(), default=float))
        return
    print_tuning(result)


def print_tuning(result: Any) -> None:
    c, n = result.counts, result.nested
    out.print(
        f"[bold]study[/] {result.study} ({result.storage}): {c.done} trials, complete "
        f"{c.complete}, pruned {c.pruned}, failed {c.failed}; pruning saved "
        f"{result.fold_fits_saved:.0%} of fold fits"
    )
    out.print(f"best trial {result.best_trial}: {result.best_params}", markup=False)
    out.print(
        f"best cross-validated AUROC {result.best_cv_auroc:.3f} (optimistic: it won on these folds)"
    )
    if n is None:  # --search-only
        out.print(
            "search only: the job that started the study estimates, refits and registers "
            "(run it without --search-only once the shared search is done)"
        )
        print_warnings(result.warnings)
        return
    folds = ", ".join(f"{a:.3f}" for a in n.fold_auroc)
    out.print(
        f"[bold]nested-CV AUROC of the whole tuning procedure[/] {n.pooled.estimate:.3f} "
        f"(95% CI {n.pooled.ci_low:.3f}-{n.pooled.ci_high:.3f}; outer folds {folds})"
    )
    print_warnings(result.warnings)
    print_training(result.train)


@app.command()
@handles_input_errors
def predict(
    model: ModelOpt,
    config: ConfigOpt = None,
    data: DataOpt = None,
    sets: SetOpt = None,
    out_path: Annotated[
        Path,
        typer.Option("--out", help="CSV of patient_id, response_probability, predicted_response."),
    ] = Path("predictions.csv"),
    rejected: Annotated[
        Path | None, typer.Option("--rejected", help="Write rejected rows with a reason (CSV).")
    ] = None,
) -> None:
    """Score patients with a logged model, through the same data contract as training."""
    from inflamrx.serving.batch import predict as run_predict

    _quiet_libraries()
    cfg = _config(config, data, sets)
    result = run_predict(model, cfg.data)
    write_table(result.predictions, out_path)
    if rejected is not None:
        write_table(result.validation.rejected, rejected)
    v = result.validation
    out.print(
        f"rows in {v.rows_in}: scored {len(result.predictions)}, rejected {len(v.rejected)}; threshold {result.threshold:g}; written {out_path}"
    )
    for problem in v.problems[:10]:
        err.print(str(problem), markup=False, highlight=False, soft_wrap=True)
    print_warnings(result.warnings)
    raise typer.Exit(v.exit_code)


@app.command()
@handles_input_errors
def export(
    model: ModelOpt,
    out_path: Annotated[
        Path, typer.Option("--out", help="New folder for the model, e.g. models/champion.")
    ],
) -> None:
    """Write a self-contained MLflow model folder that `mlflow models serve -m FOLDER` serves."""

    from inflamrx.serving.deploy import export as run_export

    _quiet_libraries()
    folder = run_export(model, out_path)
    out.print(
        f"exported {model} to {folder}\nserve it with: "
        f"mlflow models serve -m {folder} --env-manager local -p 5000",
        markup=False, highlight=False, soft_wrap=True,
    )  # fmt: skip


@app.command()
@handles_input_errors
def serve(
    model: ModelOpt,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.", min=1)] = 5000,
) -> None:
    """Serve a model over HTTP (`mlflow models serve`, this environment): POST /invocations."""
    from inflamrx.serving.deploy import serve_command

    _quiet_libraries()
    command, env = serve_command(model, host, port)
    err.print(f"serving {model} on http://{host}:{port}/invocations", markup=False)
    sys.stderr.flush()
    # Become the server process: signals (Ctrl-C, SIGTERM) reach MLflow directly.
    os.execvpe(command[0], command, env)


@app.command()
@handles_input_errors
def promote(
    run: Annotated[str, typer.Option("--run", help="Run id whose registered version to promote.")],
    alias: Annotated[str, typer.Option("--alias", help="Registry alias to set.")] = "champion",
    name: Annotated[
        str | None, typer.Option("--name", help="Registered model name (when several).")
    ] = None,
) -> None:
    """Point a registry alias at the model version registered from a run."""
    from inflamrx.serving.deploy import promote as run_promote

    _quiet_libraries()
    registered, version = run_promote(run, alias, name)
    out.print(f"models:/{registered}@{alias} -> version {version}", markup=False, highlight=False)


@app.command()
@handles_input_errors
def explain(
    model: ModelOpt,
    config: ConfigOpt = None,
    data: DataOpt = None,
    sets: SetOpt = None,
    patient: Annotated[
        list[str] | None,
        typer.Option("--patient", help="Explain these patient ids in the report (repeatable)."),
    ] = None,
    out_dir: Annotated[
        Path, typer.Option("--out", help="Folder for report.html, shap_values.parquet, figures.")
    ] = Path("explanations"),
) -> None:
    """SHAP explanations and the HTML report; logged to the model's run when it has one."""
    from inflamrx.jobs.explain import explain as run_explain
    from inflamrx.jobs.explain import explain_report

    _quiet_libraries()
    cfg = _config(config, data, sets)
    result = run_explain(model, cfg.data, patient or [], seed=cfg.report.seed)
    files, logged = explain_report(result, model, cfg.report, out_dir)
    v = result.validation
    tag = " (SYNTHETIC)" if result.synthetic else ""
    out.print(
        f"rows in {v.rows_in}: explained {len(result.explanation.patient_ids)}, rejected "
        f"{len(v.rejected)}{tag}; written {files.report}, {files.table} and "
        f"{len(files.figures)} figures"
        + (f"; logged to run {result.run_id}" if logged else ""),
        markup=False, highlight=False, soft_wrap=True,
    )  # fmt: skip
    for problem in v.problems[:10]:
        err.print(str(problem), markup=False, highlight=False, soft_wrap=True)
    print_warnings(v.warnings)
    raise typer.Exit(v.exit_code)
