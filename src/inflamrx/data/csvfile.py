"""Read a CSV file as text, in chunks of rows, each row with its line number.

A chunk of lines that holds no quote character is one record per line: pyarrow's CSV parser
reads it (far faster than a Python loop; nothing is converted, every value stays text). From
the first chunk that holds a quote, a record may span lines, and ``csv.reader`` reads the rest
of the file, tracking where each record starts. Both give the same rows: values stripped, an
empty cell missing, a line whose cells are all blank no row (its number still counts), a line
with the wrong number of fields kept aside (``malformed``) to be rejected, never dropped.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from inflamrx.errors import InputError

CHUNK_ROWS = 100_000  # about 15 MB of a typical site file per chunk
_TEXT = pd.StringDtype("pyarrow", na_value=np.nan)  # pandas' "str" dtype


class CsvChunk:
    """One chunk: the values as text (original column names), line numbers, malformed lines."""

    def __init__(
        self, raw: pd.DataFrame, lines: np.ndarray, malformed: list[tuple[int, str]]
    ) -> None:
        self.raw = raw
        self.lines = lines
        self.malformed = malformed


def _binary(path: Path) -> InputError:
    return InputError(f"{path}: not a text CSV file (it contains binary data)")


def read_header(path: Path, first: bytes) -> list[str]:
    """The header's column names from its line (without quotes), checked."""
    try:
        line = first.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise _binary(path) from None
    if "\x00" in line:
        raise _binary(path)
    try:
        return _checked_header(path, next(csv.reader(io.StringIO(line, newline=""))))
    except StopIteration:
        raise InputError(f"{path}: the file is empty (no header, no rows)") from None


def _checked_header(path: Path, names: list[str]) -> list[str]:
    """One unique name per column, commas between them."""
    header = [h.strip() for h in names]
    if len(header) == 1:
        for sep, name in ((";", "semicolons"), ("\t", "tabs"), ("|", "vertical bars")):
            if sep in header[0]:
                raise InputError(
                    f"{path}: the header has a single column {header[0][:60]!r}: the file seems "
                    f"to be separated by {name}. inflamrx reads comma-separated CSV; "
                    "save the file with commas between columns."
                )
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes or "" in header:
        what = f"repeated column names {dupes}" if dupes else "an empty column name"
        raise InputError(f"{path}: the header has {what}; every column needs one unique name")
    return header


def csv_chunks(path: Path, chunk_rows: int = CHUNK_ROWS) -> Iterator[CsvChunk]:
    """The rows of a CSV file, ``chunk_rows`` lines (or records) at a time; at least one chunk
    (empty when the file has a header only)."""
    with path.open("rb") as f:
        first = f.readline()
        # A quoted header (records may span lines from the start), or lines ended by a lone
        # carriage return (old Mac files: the whole file reads as one "line"): csv.reader.
        if b'"' in first or b"\r" in first.rstrip(b"\r\n"):
            f.seek(0)
            yield from _quoted_chunks(path, f, None, 1, chunk_rows)
            return
        header = read_header(path, first)
        line = 2  # the number of the next line
        yielded = False
        for start, block in _line_blocks(f, chunk_rows):
            if b"\x00" in block:
                raise _binary(path)
            ends = np.flatnonzero(np.frombuffer(block, dtype=np.uint8) == _NEWLINE)
            if block and not block.endswith(b"\n"):
                ends = np.append(ends, len(block) - 1)  # the last line, without its newline
            starts = np.concatenate([[0], ends[:-1] + 1])
            if (
                b'"' in block
                or block.count(b"\r") != block.count(b"\r\n")
                or int((ends - starts).max(initial=0)) >= csv.field_size_limit()
            ):  # a quote, a lone carriage return, a value too long: csv.reader from here on
                f.seek(start)
                yield from _quoted_chunks(path, f, header, line, chunk_rows)
                return
            yield _plain_chunk(path, header, block, starts, ends, line)
            yielded = True
            line += len(ends)
        if not yielded:
            yield CsvChunk(_frame([], header), np.zeros(0, dtype=np.int64), [])


_NEWLINE, _COMMA = ord("\n"), ord(",")
# What arrow's utf8_trim_whitespace (pandas' str.strip) trims in ASCII, beside line ends.
_ASCII_SPACES = (b" ", b"\t", b"\x0b", b"\x0c", b"\x1c", b"\x1d", b"\x1e", b"\x1f")
_READ = 8 * 1024 * 1024


def _line_blocks(f: BinaryIO, lines: int) -> Iterator[tuple[int, bytes]]:
    """(file offset, bytes) of ``lines`` whole lines at a time, read 8 MB at a time."""
    offset = f.tell()
    pending = b""
    while True:
        more = f.read(_READ)
        pending += more
        newlines = np.flatnonzero(np.frombuffer(pending, dtype=np.uint8) == _NEWLINE)
        done = 0  # bytes of pending already yielded
        while len(newlines) >= lines:
            cut = int(newlines[lines - 1]) + 1
            yield offset, pending[done:cut]
            offset += cut - done
            done, newlines = cut, newlines[lines:]
        pending = pending[done:]
        if not more:
            if pending:
                yield offset, pending
            return


def _plain_chunk(
    path: Path,
    header: list[str],
    block: bytes,
    starts: np.ndarray,
    ends: np.ndarray,
    first: int,
) -> CsvChunk:
    """Lines without quotes: one record each, split at every comma. ``starts``/``ends``: where
    each line starts and where its newline is (or its last byte)."""
    commas = np.flatnonzero(np.frombuffer(block, dtype=np.uint8) == _COMMA)
    before = np.searchsorted(commas, starts)  # commas before each line's start
    counts = np.diff(before, append=len(commas))
    good = counts == len(header) - 1
    malformed: list[tuple[int, str]] = []
    if not good.all():
        for i in np.flatnonzero(~good):
            try:
                text = block[starts[i] : ends[i] + 1].decode("utf-8")
            except UnicodeDecodeError:
                raise _binary(path) from None
            fields = text.rstrip("\r\n").split(",")
            if any(f.strip() for f in fields):  # a blank line is not a row
                malformed.append((first + int(i), _wrong_fields(fields, header)))
        block = b"".join(block[s : e + 1] for s, e in zip(starts[good], ends[good], strict=True))
    lines = np.flatnonzero(good).astype(np.int64) + first
    if not len(lines):
        return CsvChunk(_frame([], header), lines, malformed)
    options = pacsv.ConvertOptions(
        column_types=dict.fromkeys(header, pa.large_string()),
        strings_can_be_null=True,
        null_values=[""],  # an empty cell is missing
    )
    try:
        table = pacsv.read_csv(
            io.BytesIO(block),
            read_options=pacsv.ReadOptions(column_names=header, use_threads=False),
            parse_options=pacsv.ParseOptions(quote_char=False, ignore_empty_lines=False),
            convert_options=options,
        )
    except pa.ArrowInvalid:  # the one remaining failure: bytes that are not UTF-8
        raise _binary(path) from None
    # Without a non-ASCII byte or one of these, no value has whitespace to strip.
    spaced = not block.isascii() or any(c in block for c in _ASCII_SPACES)
    columns = {}
    for name, column in zip(header, table.columns, strict=True):
        if spaced:
            column = pc.utf8_trim_whitespace(column)  # what pandas' str.strip runs
            column = pc.if_else(pc.equal(column, ""), None, column)
        columns[name] = pd.Series(pd.array(column, dtype=_TEXT))
    raw = pd.DataFrame(columns, copy=False)
    return _without_blank_rows(raw, lines, malformed)


def _wrong_fields(fields: list[str], header: list[str]) -> str:
    return (
        f"the line has {len(fields)} fields but the header has {len(header)}: "
        f"{','.join(fields)[:200]!r}"
    )


def _frame(records: list[list[str]], header: list[str]) -> pd.DataFrame:
    raw = pd.DataFrame(records, columns=header, dtype="str")
    return raw.apply(lambda s: s.str.strip()).replace("", np.nan)


def _without_blank_rows(
    raw: pd.DataFrame, lines: np.ndarray, malformed: list[tuple[int, str]]
) -> CsvChunk:
    """A row whose cells are all blank is not a row (a line of commas, spaces)."""
    blank = raw.isna().all(axis=1).to_numpy() if len(raw.columns) else np.zeros(0, bool)
    if blank.any():
        raw, lines = raw[~blank].reset_index(drop=True), lines[~blank]
    return CsvChunk(raw, lines, malformed)


def _quoted_chunks(
    path: Path, f: BinaryIO, header: list[str] | None, line: int, chunk_rows: int
) -> Iterator[CsvChunk]:
    """``csv.reader`` from the current position to the end (``line``); ``header`` None: the
    file's start, header included."""
    text = io.TextIOWrapper(f, encoding="utf-8-sig" if header is None else "utf-8", newline="")
    record: list[str] = []  # the physical lines of the record being read

    def physical() -> Iterator[str]:
        for part in text:
            if "\x00" in part:
                raise _binary(path)
            record.append(part)
            yield part

    reader = csv.reader(physical())
    offset = line - 1  # reader.line_num counts the lines from where it starts
    try:
        if header is None:
            try:
                header = _checked_header(path, next(reader))
            except StopIteration:
                raise InputError(f"{path}: the file is empty (no header, no rows)") from None
            offset = 0
        yield from _records(path, reader, record, header, offset, chunk_rows)
    except UnicodeDecodeError:
        raise _binary(path) from None
    except csv.Error as err:
        raise InputError(f"{path}: line {offset + reader.line_num}: {err}") from None
    finally:
        text.detach()


def _records(
    path: Path,
    reader: Any,  # a csv.reader
    record: list[str],
    header: list[str],
    offset: int,
    chunk_rows: int,
) -> Iterator[CsvChunk]:
    records: list[list[str]] = []
    lines: list[int] = []
    malformed: list[tuple[int, str]] = []
    yielded = False
    line_num = reader.line_num
    while True:
        first_line = offset + line_num + 1
        record.clear()
        try:
            fields = next(reader)
        except StopIteration:
            break
        line_num = reader.line_num
        if len(record) > 1:
            _check_closed_quotes(path, record, first_line)
        if len(fields) == len(header):
            records.append(fields)
            lines.append(first_line)
        elif any(f.strip() for f in fields):  # a blank line is not a row
            malformed.append((first_line, _wrong_fields(fields, header)))
        if len(records) + len(malformed) >= chunk_rows:
            yield _without_blank_rows(_frame(records, header), np.array(lines, np.int64), malformed)
            yielded = True
            records, lines, malformed = [], [], []
    if records or malformed or not yielded:
        yield _without_blank_rows(_frame(records, header), np.array(lines, np.int64), malformed)


def _check_closed_quotes(path: Path, lines: list[str], first_line: int) -> None:
    """A record spanning lines must end with its quote closed.

    The lenient reader runs an unclosed quote to the end of the file, which would turn every
    following line into one value of one row: those rows would be lost, so the file is refused.
    """
    try:
        list(csv.reader(io.StringIO("".join(lines), newline=""), strict=True))
    except csv.Error:
        raise InputError(
            f'{path}: line {first_line}: a quote (") opens a value that is not closed properly '
            f"(the value runs over {len(lines)} lines); close the quote or remove it"
        ) from None
