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
from inflamrx.cli.output import (
    err,
    out,
    print_benefit_training,
    print_benefit_tuning,
    print_training,
    print_tuning,
    print_validation,
    print_warnings,
    write_table,
)
from inflamrx.config import Config, load_config, parse_overrides
from inflamrx.errors import InputError

app = typer.Typer(
    name="inflamrx",
    help="Predict response to anti-inflammatory treatment for depression.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
F = TypeVar("F", bound=Callable[..., Any])

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="YAML config (default: the embedded default).")
]
DataOpt = Annotated[str | None, typer.Option("--data", help="Overrides data.path.")]
ChunkRowsOpt = Annotated[
    int,
    typer.Option(
        "--chunk-rows",
        min=1,
        help="A CSV file is read this many rows at a time (memory grows with it, not the file).",
    ),
]
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
RunNameOpt = Annotated[
    str | None,
    typer.Option(
        "--run-name",
        help="MLflow run name (default: job, model kind, outcome, data and n; "
        "overrides tracking.run_name).",
    ),
]


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


def _quiet_libraries() -> None:
    """MLflow's informational logs and hints drown the output a user reads: the CLI says
    itself what happened (errors come back as exceptions, which it reports)."""
    import logging
    import warnings

    from mlflow.utils.logging_utils import disable_logging

    logging.getLogger("mlflow").setLevel(logging.ERROR)
    # "Successfully registered model ...", "Created version ..." bypass the log level: MLflow
    # prints them to its own logging stream, which this switches off.
    disable_logging()
    # Each model or artifact download would draw a progress bar over the summary.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("TQDM_DISABLE", "1")
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


def _job_config(
    config: Path | None,
    data: str | None,
    sets: list[str] | None,
    experiment: str | None,
    as_json: bool,
    run_name: str | None = None,
) -> tuple[Config, Console]:
    """The config of a tracked job and the console its progress goes to (stderr under --json,
    so stdout stays one JSON object); synthetic data is announced before anything runs."""
    cfg = _config(config, data, sets)
    if experiment:
        cfg.tracking.experiment = experiment
    if run_name:
        cfg.tracking.run_name = run_name
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
def schema(as_json: JsonOpt = False) -> None:
    """The data contract: canonical columns, units, ranges and roles (shipped with inflamrx)."""
    import json

    from inflamrx.data.schema import contract_rows

    rows = contract_rows()
    if as_json:
        print(json.dumps({"columns": rows}, indent=2))
        return
    table = Table(title="inflamrx cohort contract (canonical columns)")
    for col in ("column", "unit", "rule", "required", "role"):
        table.add_column(col)
    for r in rows:
        required = "yes" if r["required"] else ""
        table.add_row(
            str(r["name"]), str(r["unit"]), Text(str(r["rule"])), required, str(r["role"])
        )
    out.print(table)
    out.print(
        "Map site columns with data.columns, units with data.units (see the README); "
        "`inflamrx validate` checks a file against this contract.",
        markup=False,
    )


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
    chunk_rows: ChunkRowsOpt = 100_000,
) -> None:
    """Check a cohort against the data contract. Exit 0: all accepted, 1: some rejected, 2: unusable."""
    from inflamrx.data.stream import ValidatedFiles, streams, write_stream
    from inflamrx.data.validate import validate_cohort

    cfg = _config(config, data, sets)
    if streams(cfg.data):  # one CSV file: chunk by chunk, whatever its size
        summary = write_stream(cfg.data, ValidatedFiles(out_path, rejected), chunk_rows)
    else:
        result = validate_cohort(cfg.data)
        if out_path is not None:
            write_table(result.accepted, out_path)
        if rejected is not None:
            write_table(result.rejected, rejected)
        summary = result.summary()
    print_validation(summary)
    raise typer.Exit(summary.exit_code)


@app.command()
@handles_input_errors
def train(
    config: ConfigOpt = None,
    data: DataOpt = None,
    sets: SetOpt = None,
    experiment: ExperimentOpt = None,
    run_name: RunNameOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Train, validate (split.strategy: resample, holdout or site), log to MLflow and register
    the model."""
    import json

    from inflamrx.jobs.train import train as run_training

    _quiet_libraries()
    cfg, status = _job_config(config, data, sets, experiment, as_json, run_name)
    with status.status("training") as spinner:

        def progress(message: str) -> None:
            spinner.update(message)
            status.log(message)

        if cfg.treatment is not None:  # two arms: a benefit model (inflamrx.jobs.benefit)
            from inflamrx.jobs.benefit import train_benefit

            result: Any = train_benefit(cfg, progress=progress)
        else:
            result = run_training(cfg, progress=progress)
    if as_json:
        print(json.dumps(result.summary(), default=float))
        return
    if cfg.treatment is not None:
        print_benefit_training(result)
        return
    print_training(result)


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
    run_name: RunNameOpt = None,
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
    cfg, status = _job_config(config, data, sets, experiment, as_json, run_name)
    job: Any = run_tune
    metric, printer = "AUROC", print_tuning
    if cfg.treatment is not None:  # two arms: choose the benefit model by a benefit metric
        from inflamrx.jobs.benefit_tune import tune_benefit

        job, metric, printer = tune_benefit, "C-for-benefit", print_benefit_tuning
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[detail]}"))  # fmt: skip
    with Progress(*columns, console=status, transient=False) as bar:
        task = bar.add_task("trials", total=trials or cfg.tuning.n_trials, detail="")

        def on_trials(c: TrialCounts) -> None:
            best = f"{c.best:.3f}" if c.best is not None else "-"
            detail = (
                f"complete {c.complete}, pruned {c.pruned}, failed {c.failed}, best {metric} {best}"
            )
            bar.update(task, completed=c.done, total=c.budget, detail=detail)

        result = job(cfg, options, progress=bar.console.log, on_trials=on_trials)
    if as_json:
        print(json.dumps(result.summary(), default=float))
        return
    printer(result)


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
    chunk_rows: ChunkRowsOpt = 100_000,
) -> None:
    """Score patients with a logged model, through the same data contract as training."""
    from inflamrx.serving.lookup import model_info

    _quiet_libraries()
    cfg = _config(config, data, sets)
    model_info(model)  # an unknown model is refused before the modelling stack is imported
    from inflamrx.data.stream import streams
    from inflamrx.serving.batch import predict as run_predict
    from inflamrx.serving.batch import predict_file

    if streams(cfg.data):  # one CSV file: chunk by chunk, predictions written as they come
        streamed = predict_file(model, cfg.data, out_path, rejected, chunk_rows)
        n_scored, v, threshold = streamed.n_scored, streamed.validation, streamed.threshold
        warnings = streamed.warnings
    else:
        result = run_predict(model, cfg.data)
        write_table(result.predictions, out_path)
        if rejected is not None:
            write_table(result.validation.rejected, rejected)
        n_scored, v, threshold = (
            len(result.predictions),
            result.validation.summary(),
            result.threshold,
        )
        warnings = result.warnings
    out.print(
        f"rows in {v.rows_in}: scored {n_scored}, rejected {v.n_rejected}; threshold {threshold:g}; written {out_path}"
    )
    for problem in v.problems[:10]:
        err.print(str(problem), markup=False, highlight=False, soft_wrap=True)
    print_warnings(warnings)
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
    # mlflow starts `uvicorn` from PATH: a bare `mlflow` outside an activated venv fails.
    bin_dir = os.path.dirname(sys.executable)
    out.print(
        f"exported {model} to {folder}\nserve it with: PATH=\"{bin_dir}:$PATH\" "
        f"mlflow models serve -m {folder} --env-manager local -p 5000",
        markup=False, highlight=False, soft_wrap=True,
    )  # fmt: skip


@app.command()
@handles_input_errors
def serve(
    model: ModelOpt,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 5000,
    workers: Annotated[
        int | None,
        typer.Option("--workers", help="Worker processes (default: this machine's cores)."),
    ] = None,
    timeout: Annotated[
        int, typer.Option("--timeout", help="Seconds a request may take (MLflow's timeout).")
    ] = 60,
) -> None:
    """Serve a model over HTTP: MLflow's scoring app (POST /invocations) run by uvicorn, whose
    error answers never quote the request. SIGTERM lets requests in flight finish."""
    from inflamrx.serving.address import check_serve_options, default_workers

    workers = default_workers() if workers is None else workers
    check_serve_options(host, port, workers, timeout)  # before MLflow is even imported
    from inflamrx.serving.deploy import serve as run_serve

    _quiet_libraries()

    def announce(line: str) -> None:
        err.print(line, markup=False, highlight=False, soft_wrap=True)
        sys.stderr.flush()

    run_serve(model, host, port, workers, timeout, announce)


@app.command("trust-model")
@handles_input_errors
def trust_model(model: ModelOpt) -> None:
    """Record the SHA-256 manifest of a model that has none (logged by release 0.1.0): only
    for a model whose source you trust; predict, explain, serve and export check it."""
    from inflamrx.serving.integrity import trust_model as run_trust

    _quiet_libraries()
    where = run_trust(model)
    out.print(f"recorded the manifest of {model} in {where}", markup=False, highlight=False)


@app.command()
@handles_input_errors
def promote(
    run: Annotated[str, typer.Option("--run", help="Run id whose registered version to promote.")],
    alias: Annotated[str, typer.Option("--alias", help="Registry alias to set.")] = "champion",
    name: Annotated[
        str | None, typer.Option("--name", help="Registered model name (when several).")
    ] = None,
    force: Annotated[
        bool,
        typer.Option("--force", help="Promote a version marked below the minimum anyway."),
    ] = False,
) -> None:
    """Point a registry alias at the model version registered from a run."""
    from inflamrx.serving.deploy import promote as run_promote

    _quiet_libraries()
    registered, version, marked = run_promote(run, alias, name, force=force)
    out.print(f"models:/{registered}@{alias} -> version {version}", markup=False, highlight=False)
    if marked:
        print_warnings([f"promoted with --force although below the minimum: {marked}"])


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
    run_name: RunNameOpt = None,
) -> None:
    """SHAP explanations and the HTML report; logged to a new run beside the model's own."""
    from inflamrx.jobs.explain import explain as run_explain
    from inflamrx.jobs.explain import explain_report

    _quiet_libraries()
    cfg = _config(config, data, sets)
    result = run_explain(model, cfg.data, patient or [], seed=cfg.report.seed)
    files, logged = explain_report(result, model, cfg, out_dir, run_name)
    v = result.validation
    tag = " (SYNTHETIC)" if result.synthetic else ""
    out.print(
        f"rows in {v.rows_in}: explained {len(result.explanation.patient_ids)}, rejected "
        f"{len(v.rejected)}{tag}; written {files.report}, {files.table} and "
        f"{len(files.figures)} figures"
        + (f"; logged to run {logged} (explaining run {result.run_id})" if logged else ""),
        markup=False, highlight=False, soft_wrap=True,
    )  # fmt: skip
    for problem in v.problems[:10]:
        err.print(str(problem), markup=False, highlight=False, soft_wrap=True)
    print_warnings(v.warnings)
    raise typer.Exit(v.exit_code)
