"""What the command line prints and writes: result tables, warnings and output files.

Kept apart from the commands (``inflamrx.cli``) so each stays readable; like the commands it
imports the data and modelling layers lazily, so ``--help`` and ``validate`` start fast."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from inflamrx.errors import InputError

# Progress lines carry a time, not the source line that printed them (of no use to a reader).
out = Console(log_path=False)
err = Console(stderr=True, log_path=False)


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


def print_warnings(warnings: list[str]) -> None:
    for warning in warnings:
        out.print("warning: " + warning, style="yellow", markup=False)


def print_validation(summary: Any) -> None:
    """Print a ``ValidationSummary`` (a whole result's, or a file's added up chunk by chunk)."""
    from inflamrx.data.results import crp_bands, marker_summary

    label = " (SYNTHETIC data)" if summary.synthetic else ""
    out.print(
        f"[bold]rows in {summary.rows_in}[/]: accepted {summary.n_accepted}, "
        f"rejected {summary.n_rejected}{label}"
    )
    if summary.n_problems:
        table = Table(title="Reasons for rejection", show_lines=False)
        table.add_column("rows", justify="right")
        table.add_column("column: rule")
        for reason, count in summary.reasons.head(20).items():
            table.add_row(str(count), Text(str(reason)))
        out.print(table)
        print_problems(summary.problems, summary.n_problems)
    print_warnings(summary.warnings)
    if summary.ignored_columns:
        ignored = f"ignored source columns (not in the contract): {summary.ignored_columns[:20]}"
        out.print(ignored, markup=False)
    if summary.n_accepted == 0:
        return
    miss = summary.missing[summary.missing > 0]
    if len(miss):
        out.print(
            "missing values (% of accepted rows): "
            + ", ".join(f"{c} {v:.1f}%" for c, v in miss.items())
        )
    markers = marker_summary(summary.markers)
    table = Table(title="Markers against reference ranges (accepted rows)")
    for col in ("marker", "n", "median", "IQR", "% above ref.", "reference"):
        table.add_column(col)
    for row in markers.itertuples(index=False):
        table.add_row(
            row.marker, str(row.n), f"{row.median:.2f}", f"{row.q1:.2f}-{row.q3:.2f}",
            f"{row[5]:.1f}", row.reference,
        )  # fmt: skip
    out.print(table)
    bands = crp_bands(summary.markers)
    out.print("CRP bands (mg/L): " + ", ".join(f"{k}: {v:.1f}%" for k, v in bands.items()))


def print_problems(problems: list[Any], total: int) -> None:
    """The first problems (to stderr), and how many more are in the rejected file."""
    for problem in problems[:10]:
        err.print(str(problem), markup=False, highlight=False, soft_wrap=True)
    if total > 10:
        err.print(f"... and {total - 10} more problems (see the rejected file)")


def print_benefit_training(result: Any) -> None:
    tag = " [bold yellow](SYNTHETIC data)[/]" if result.synthetic else ""
    out.print(f"[bold]outcome[/]: {result.outcome}{tag}; benefit of treatment over control")
    out.print(
        f"arms: {result.n_treated} treated, {result.n_control} control; rejected rows "
        f"{result.n_rejected}; without an outcome (left out) {result.n_without_outcome}"
    )
    m = result.metrics
    out.print(
        f"model: {result.learner_label} ({result.validation}); C-for-benefit "
        f"{m.get('c_for_benefit', float('nan')):.3f} (95% CI "
        f"{m.get('c_for_benefit_ci_low', float('nan')):.3f} to "
        f"{m.get('c_for_benefit_ci_high', float('nan')):.3f})",
        markup=False,
    )
    for name, value in result.candidates.items():
        out.print(f"  candidate {name}: cross-fitted C-for-benefit {value:.3f}", markup=False)
    if result.trust != "ok":
        out.print(f"[bold red]trust: {result.trust}[/]")
    print_warnings(result.warnings)
    version = (
        f" (registered version {result.registered_version})" if result.registered_version else ""
    )
    out.print(f"run {result.run_id}\nmodel {result.model_uri}{version}", markup=False)
    if result.report_uri:
        out.print(f"report {result.report_uri}", markup=False, highlight=False, soft_wrap=True)


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


def print_tuning(result: Any) -> None:
    c = result.counts
    out.print(
        f"[bold]study[/] {result.study} ({result.storage}): {c.done} trials, complete "
        f"{c.complete}, pruned {c.pruned}, failed {c.failed}; pruning saved "
        f"{result.fold_fits_saved:.0%} of fold fits"
    )
    out.print(f"best trial {result.best_trial}: {result.best_params}", markup=False)
    out.print(
        f"best cross-validated AUROC {result.best_cv_auroc:.3f} (optimistic: it won on these folds)"
    )
    if result.best_cv_auroc_by_kind:  # model.kind auto: the search went across kinds
        best = ", ".join(
            f"{k} {v:.3f}" if v is not None else f"{k} -"
            for k, v in result.best_cv_auroc_by_kind.items()
        )
        out.print(f"kind chosen: {result.model_kind} (best trial per kind: {best})")
    _print_after_search(result, "nested-CV AUROC of the whole tuning procedure", print_training)


def print_benefit_tuning(result: Any) -> None:
    c = result.counts
    out.print(
        f"[bold]study[/] {result.study} ({result.storage}): {c.done} trials, complete "
        f"{c.complete}, failed {c.failed}; learners searched: {', '.join(result.learners)}"
    )
    out.print(f"best trial {result.best_trial}: {result.best_params}", markup=False)
    out.print(
        f"best cross-fitted C-for-benefit {result.best_cv_c_for_benefit:.3f} (optimistic: it "
        "won on these folds)"
    )
    _print_after_search(
        result,
        "nested cross-fitted C-for-benefit of the whole tuning procedure",
        print_benefit_training,
    )


def _print_after_search(result: Any, honest: str, print_trained: Any) -> None:
    """What a tune job did after its search: already done by an earlier job, search only, or
    the nested (honest) estimate labelled ``honest`` and the trained model."""
    n = result.nested
    if result.earlier is not None:  # the study as it stands was finished by an earlier job
        e = result.earlier
        out.print(
            f"already logged and registered by run {e['run_id']} (version "
            f"{e['registered_version']}); nothing fitted or registered again: give a larger "
            "--trials to continue the study"
        )
    elif n is None:  # --search-only
        out.print(
            "search only: the job that started the study estimates, fits and registers "
            "(run it without --search-only once the shared search is done)"
        )
    else:
        from inflamrx.modeling.metrics import with_ci

        folds = ", ".join(f"{v:.3f}" for v in n.fold_scores)
        pooled = with_ci(n.pooled.estimate, n.pooled.ci_low, n.pooled.ci_high, level="95% CI")
        out.print(f"[bold]{honest}[/] {pooled}; outer folds {folds}")
    print_warnings(result.warnings)
    if result.earlier is None and n is not None:
        print_trained(result.train)
