"""The data contract on a CSV file too big to hold: chunk by chunk, outputs written as they go.

Each chunk is checked as a whole table is (``validate.check_rows``), except the two checks that
need the whole file:
- units: every marker's values go into a fixed-memory median sketch; the unit check judges
  the whole column after the last chunk, before any output is put in place (outputs are written
  to ``.partial`` files, moved to their names only when the whole file passed);
- patient_id uniqueness: each row's id is kept as two 64-bit hashes with its row number (24
  bytes a row, never the id itself); when the first pass finds an id repeated, a second pass
  rewrites the outputs with those rows rejected, naming every row that holds the id, as the
  in-memory check does (a file with repeated ids is read twice).
Accepted and rejected rows, reasons and line numbers are the same as ``validate_cohort``'s.
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from inflamrx.config import DataConfig
from inflamrx.data.csvfile import CHUNK_ROWS, csv_chunks
from inflamrx.data.ingest import source_from_chunk
from inflamrx.data.reference import REFERENCES, MedianSketch
from inflamrx.data.results import Problem, ValidationResult, ValidationSummary
from inflamrx.data.simulate import says_synthetic
from inflamrx.data.validate import (
    check_rows,
    check_sketches,
    count_unusual,
    warning_texts,
)
from inflamrx.errors import InputError

_KEYS = ("inflamrx-ids-001", "inflamrx-ids-002")  # two 64-bit hashes: collisions ~ n^2 / 2^129


def streams(data: DataConfig) -> bool:
    """Whether ``data`` is one CSV file, which ``validate_stream`` reads chunk by chunk."""
    paths = data.paths
    return len(paths) == 1 and Path(paths[0]).suffix.lower() in (".csv", ".txt")


class ChunkSink(Protocol):
    """Where each checked chunk goes (written to files, scored...)."""

    def start(self) -> None:
        """(Re)start the outputs: a second pass rewrites them from the beginning."""

    def write(self, chunk: ValidationResult) -> None: ...


class FileSink(ChunkSink, Protocol):
    def finish(self) -> None:
        """Put the outputs in place: the whole file passed."""

    def discard(self) -> None:
        """Remove the partial outputs: the file was refused."""


def _hashes(ids: pd.Series) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint64]]:
    values = ids.to_numpy(dtype=object)
    # categorize=False: ids are mostly distinct, factorizing them first would only cost.
    first, second = (pd.util.hash_array(values, hash_key=k, categorize=False) for k in _KEYS)
    return first, second


class _SeenIds:
    """Every row's patient_id as two hashes with the row number: the first pass records them
    and reports no repeat (the pass is redone when ``repeated`` finds some)."""

    def __init__(self) -> None:
        self.parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def __call__(self, ids: pd.Series, rows: npt.NDArray[np.int64]) -> Mapping[int, list[int]]:
        present = ids.notna().to_numpy()
        first, second = _hashes(ids[present])
        self.parts.append((first, second, np.asarray(rows)[present]))
        return {}

    def repeated(self) -> dict[tuple[int, int], list[int]]:
        """Each repeated id (its hashes) with the rows holding it."""
        if not self.parts:
            return {}
        first, second, rows = (np.concatenate(p) for p in zip(*self.parts, strict=True))
        order = np.argsort(first)
        same = first[order][1:] == first[order][:-1]  # a candidate: its first hash repeats
        if not same.any():
            return {}
        candidates = np.unique(np.concatenate([order[1:][same], order[:-1][same]]))
        repeats: dict[tuple[int, int], list[int]] = {}
        for i in candidates:
            repeats.setdefault((int(first[i]), int(second[i])), []).append(int(rows[i]))
        return {key: sorted(rows) for key, rows in repeats.items() if len(rows) > 1}


class _KnownRepeats:
    """The second pass: the rows of a chunk whose id repeats, each with all its rows."""

    def __init__(self, repeats: dict[tuple[int, int], list[int]]) -> None:
        self.repeats = repeats
        self.firsts = np.array([k[0] for k in repeats], dtype=np.uint64)

    def __call__(self, ids: pd.Series, rows: npt.NDArray[np.int64]) -> Mapping[int, list[int]]:
        present = np.flatnonzero(ids.notna().to_numpy())
        first, second = _hashes(ids.iloc[present])
        found: dict[int, list[int]] = {}
        for i in np.flatnonzero(np.isin(first, self.firsts)):
            rows_of = self.repeats.get((int(first[i]), int(second[i])))
            if rows_of is not None:
                found[int(present[i])] = rows_of
        return found


@dataclass
class _Tally:
    """What is printed about the whole file, added up chunk by chunk."""

    first_problems: int = 10
    n_accepted: int = 0
    n_rejected: int = 0
    n_problems: int = 0
    # As a whole table lists them: the cells' problems in row order, then malformed lines'.
    problems: list[Problem] = field(default_factory=list)
    lines: list[Problem] = field(default_factory=list)
    reasons: Counter[str] = field(default_factory=Counter)
    line_reasons: Counter[str] = field(default_factory=Counter)
    missing: Counter[str] = field(default_factory=Counter)
    columns: list[str] = field(default_factory=list)
    unusual: Counter[str] = field(default_factory=Counter)
    markers: list[pd.DataFrame] = field(default_factory=list)
    last: ValidationResult | None = None

    def add(self, chunk: ValidationResult) -> None:
        self.n_accepted += len(chunk.accepted)
        self.n_rejected += len(chunk.rejected)
        self.n_problems += len(chunk.problems)
        for problem in chunk.problems:
            if problem.column:
                self.reasons[f"{problem.column}: {problem.check}"] += 1
                if len(self.problems) < self.first_problems:
                    self.problems.append(problem)
            else:  # a line with the wrong number of fields
                self.line_reasons[f"line: {problem.check}"] += 1
                if len(self.lines) < self.first_problems:
                    self.lines.append(problem)
        accepted = chunk.accepted
        self.columns = list(accepted.columns)
        self.missing.update(accepted.isna().sum().to_dict())
        self.unusual.update(count_unusual(accepted))
        self.markers.append(accepted[[c for c in REFERENCES if c in accepted]])
        self.last = chunk

    def summary(self, synthetic: bool) -> ValidationSummary:
        assert self.last is not None  # at least one chunk, even of a header only
        n = self.n_accepted
        reasons = self.reasons + self.line_reasons  # the cells' first, as in a whole table
        missing = pd.Series({c: self.missing[c] for c in self.columns}, dtype="float64")
        return ValidationSummary(
            n_accepted=n,
            n_rejected=self.n_rejected,
            problems=(self.problems + self.lines)[: self.first_problems],
            n_problems=self.n_problems,
            reasons=pd.Series(reasons, dtype="int64").sort_values(ascending=False, kind="stable"),
            ignored_columns=self.last.ignored_columns,
            warnings=warning_texts(self.last.near_misses, self.unusual),
            near_misses=self.last.near_misses,
            synthetic=synthetic,
            missing=(100 * (missing / n)).sort_values(ascending=False) if n else missing,
            markers=pd.concat(self.markers, ignore_index=True),
        )


def validate_stream(
    data: DataConfig,
    sink: ChunkSink,
    chunk_rows: int = CHUNK_ROWS,
    require: Mapping[str, str] | None = None,
) -> ValidationSummary:
    """Check the one CSV file of ``data`` chunk by chunk, each checked chunk to ``sink``."""
    path = Path(data.paths[0])
    if not path.exists():
        raise InputError(f"data file not found: {path}")
    seen = _SeenIds()
    tally = _pass(path, data, sink, chunk_rows, require, seen, {})
    if tally.n_accepted + tally.n_rejected == 0:
        raise InputError("the input has a header but no data rows")
    repeats = seen.repeated()
    if repeats:  # rejected with every row of their id: the outputs are written again
        tally = _pass(path, data, sink, chunk_rows, require, _KnownRepeats(repeats), None)
    return tally.summary(says_synthetic(data))


def write_stream(
    data: DataConfig,
    sink: FileSink,
    chunk_rows: int = CHUNK_ROWS,
    require: Mapping[str, str] | None = None,
) -> ValidationSummary:
    """``validate_stream`` into files: in place when the whole file passed, removed if not."""
    try:
        summary = validate_stream(data, sink, chunk_rows, require)
    except BaseException:
        sink.discard()
        raise
    sink.finish()
    return summary


def _pass(
    path: Path,
    data: DataConfig,
    sink: ChunkSink,
    chunk_rows: int,
    require: Mapping[str, str] | None,
    repeats: _SeenIds | _KnownRepeats,
    sketches: dict[str, MedianSketch] | None,
) -> _Tally:
    """One pass over the file; with ``sketches`` (the first pass) the unit check is judged at
    its end (a second pass has nothing new to judge)."""
    sink.start()
    tally = _Tally()
    for chunk in csv_chunks(path, chunk_rows):
        source = source_from_chunk(chunk)
        if source.raw.empty and not source.malformed:
            continue  # only blank lines (or a header only: no chunk holds a row)
        # The second pass has the units judged already: its sketches are not looked at.
        result = check_rows(source, data, require, {} if sketches is None else sketches, repeats)
        tally.add(result)
        sink.write(result)
    if sketches:
        check_sketches(sketches)
    return tally


class TableWriter:
    """A CSV or Parquet table written chunk by chunk to ``<name>.partial`` beside ``path``,
    put in place by ``finish`` (or removed by ``discard``): a file refused half-way (a unit
    error is found after the last chunk) leaves no output that looks complete."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.partial = path.with_name(path.name + ".partial")
        self.parquet = path.suffix.lower() in (".parquet", ".pq")
        self._writer: pq.ParquetWriter | None = None
        self._started = False

    def start(self) -> None:
        self._close()
        self._started = False
        try:
            self.partial.unlink(missing_ok=True)
        except OSError as e:
            raise InputError(f"cannot write {self.path}: {e.strerror or e}") from None

    def write(self, frame: pd.DataFrame) -> None:
        try:
            if not self._started:  # no folder made for a file refused before its first chunk
                self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.parquet:
                table = pa.Table.from_pandas(
                    frame,
                    schema=self._writer.schema if self._writer else None,
                    preserve_index=False,
                )
                if self._writer is None:
                    self._writer = pq.ParquetWriter(self.partial, table.schema)
                self._writer.write_table(table)
            else:
                # Quote every field: a value holding a line break must stay one record.
                frame.to_csv(
                    self.partial,
                    mode="a" if self._started else "w",
                    header=not self._started,
                    index=False,
                    quoting=csv.QUOTE_ALL,
                )
        except OSError as e:
            raise InputError(f"cannot write {self.path}: {e.strerror or e}") from None
        self._started = True

    def _close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def finish(self) -> None:
        self._close()
        os.replace(self.partial, self.path)

    def discard(self) -> None:
        self._close()
        self.partial.unlink(missing_ok=True)


class ValidatedFiles:
    """The sink of ``inflamrx validate``: accepted rows (``--out``), rejected (``--rejected``)."""

    def __init__(self, accepted: Path | None, rejected: Path | None) -> None:
        self.accepted = TableWriter(accepted) if accepted else None
        self.rejected = TableWriter(rejected) if rejected else None
        self.writers = [w for w in (self.accepted, self.rejected) if w is not None]

    def start(self) -> None:
        for writer in self.writers:
            writer.start()

    def write(self, chunk: ValidationResult) -> None:
        if self.accepted is not None:
            self.accepted.write(chunk.accepted)
        if self.rejected is not None:
            self.rejected.write(chunk.rejected)

    def finish(self) -> None:
        for writer in self.writers:
            writer.finish()

    def discard(self) -> None:
        for writer in self.writers:
            writer.discard()
