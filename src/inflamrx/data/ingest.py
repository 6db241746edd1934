"""Read a site's cohort file(s) and map them onto canonical column names.

Everything is read as text (``str``) so that nothing is lost before validation: a value such
as ``<0.15`` or ``high`` must reach the validator as it was written, with its line number.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from inflamrx.config import DataConfig
from inflamrx.data.csvfile import CsvChunk, csv_chunks
from inflamrx.data.schema import COLUMNS
from inflamrx.errors import InputError

ROW = "row"  # line number in a CSV (header = line 1), record number in Parquet/XPT

# Column-name tokens that mark direct identifiers (HIPAA-style): refused unless dropped.
_IDENTIFIER_TOKENS = {
    "name", "firstname", "lastname", "surname", "forename", "fullname", "patientname",
    "dob", "birthdate", "birthday", "address", "street", "postcode", "zipcode", "zip",
    "mrn", "phone", "telephone", "mobile", "email", "ssn", "nhs",
}  # fmt: skip
_IDENTIFIER_PHRASES = (
    "dateofbirth", "birthdate", "email", "phone", "medicalrecord", "address", "socialsec",
    "postcode",
)  # fmt: skip
# In a value (a site code) only the words that cannot also name a place count: 'NHS
# Lothian', 'Harley Street' and 'Mobile unit' are sites.
_VALUE_LABELS = _IDENTIFIER_TOKENS - {
    "name", "address", "street", "postcode", "zipcode", "zip", "mobile", "nhs",
}  # fmt: skip
_VALUE_PATTERNS = (
    ("an e-mail address", re.compile(r"[^@\s]+@[^@\s]+\.[A-Za-z]{2,}")),
    ("a date", re.compile(r"\b(\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4})\b")),
    # 6+ digits written whole (record/ID number) or 8+ with separators (phone, NHS number)
    ("a phone or record number", re.compile(r"\d{6,}|\d(?:[\s().-]*\d){7,}")),
)
# Below this, an XPT float is SAS's rendering of an exact zero (about 5.4e-79).
_XPT_ZERO = 1e-70
# pandas' own text dtype (Arrow-backed, NaN when missing): what as_text produces.
_TEXT = pd.api.types.pandas_dtype("str")


@dataclass(frozen=True)
class SourceTable:
    """The joined source as text, with one line/record number per row."""

    raw: pd.DataFrame  # original column names, all values text or missing
    rows: pd.Series  # the ROW number of every row (same index as raw)
    malformed: tuple[tuple[int, str], ...] = ()  # (line, what is wrong): rejected, never dropped


@lru_cache(maxsize=4096)  # the same column names arrive with every request
def _identifier_reason(column: str) -> str | None:
    spaced = re.sub(r"([a-z])([A-Z])", r"\1 \2", column).lower()
    tokens = [t for t in re.split(r"[^a-z0-9]+", spaced) if t]
    squashed = "".join(tokens)  # in column order: 'date_of_birth' -> 'dateofbirth'
    hit = sorted(set(tokens) & _IDENTIFIER_TOKENS) or [
        p for p in _IDENTIFIER_PHRASES if p in squashed
    ]
    return hit[0] if hit else None


@lru_cache(maxsize=4096)  # a site column repeats a few codes
def identifier_in_value(value: str) -> str | None:
    """What patient information a value looks like it holds (for a site code), or None.

    A person's name alone cannot be told from a place name; with a date of birth it can.
    """
    for what, pattern in _VALUE_PATTERNS:
        if pattern.search(value):
            return what
    labels = sorted(set(re.findall(r"[a-z]+", value.lower())) & _VALUE_LABELS)
    return f"an identifier label ({labels[0]})" if labels else None


def as_text(frame: pd.DataFrame) -> pd.DataFrame:
    """Every column as text; integral floats as '7', not '7.0' (XPT/Parquet codes are floats)."""
    return pd.DataFrame({col: text_column(frame[col]) for col in frame.columns}, index=frame.index)


def text_column(s: pd.Series) -> pd.Series:
    """One column as text, missing values as NaN (see ``as_text``)."""
    if s.dtype == _TEXT:
        return s  # already text (CSV columns, a served record's strings): nothing to convert
    if s.dtype == bool or isinstance(s.dtype, pd.BooleanDtype):
        # Yes/no as astype("str") writes them, without its per-value conversion.
        yes = s.to_numpy(dtype=bool, na_value=False)
        text = pd.Series(np.where(yes, "True", "False"), index=s.index, name=s.name, dtype="str")
        return text.where(s.notna()) if s.hasnans else text
    if pd.api.types.is_integer_dtype(s):
        # Exact digits: through float, an id above 2**53 would change (and could collide).
        return s.astype("str").where(s.notna())
    if pd.api.types.is_numeric_dtype(s):  # (booleans returned above)
        v = s.to_numpy(dtype=float, na_value=np.nan)
        v = np.where(np.abs(v) < _XPT_ZERO, 0.0, v)
        integral = np.isfinite(v) & (v == np.round(v)) & (np.abs(v) < 1e15)
        whole = np.round(np.where(integral, v, 0.0)).astype("int64")  # no overflow on 1e20
        text = np.where(integral, whole.astype(str), v.astype(str))
        return pd.Series(text, index=s.index, name=s.name, dtype="str").where(~np.isnan(v))
    return s.astype("str").where(s.notna())


def _read_csv(path: Path) -> SourceTable:
    """The whole file in memory: its chunks (``csv_chunks``) put together."""
    chunks = list(csv_chunks(path))
    if len(chunks) == 1:
        return source_from_chunk(chunks[0])
    return SourceTable(
        pd.concat([c.raw for c in chunks], ignore_index=True),
        pd.Series(np.concatenate([c.lines for c in chunks]), dtype="int64"),
        tuple(m for c in chunks for m in c.malformed),
    )


def source_from_chunk(chunk: CsvChunk) -> SourceTable:
    return SourceTable(chunk.raw, pd.Series(chunk.lines, dtype="int64"), tuple(chunk.malformed))


def _read_one(path: Path) -> SourceTable:
    if not path.exists():
        raise InputError(f"data file not found: {path}")
    if path.is_dir():
        raise InputError(f"{path} is a folder; give the path of a CSV, Parquet or XPT file")
    suffix = path.suffix.lower()
    if suffix in (".csv", ".txt"):
        return _read_csv(path)
    try:
        if suffix in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
        elif suffix == ".xpt":
            with warnings.catch_warnings():
                # pandas reads a truncated file up to where it stops: rows would be lost.
                warnings.filterwarnings("error", message="xport file may be corrupted")
                try:
                    frame = pd.read_sas(path, format="xport")
                except StopIteration:  # pandas' way to say: not one whole observation
                    frame = pd.DataFrame()
            _check_xpt_complete(path, len(frame))
        else:
            raise InputError(f"{path}: unknown file type {suffix!r}; use .csv, .parquet or .xpt")
    except InputError:
        raise
    except Exception as err:  # any reader failure means the file cannot be used
        raise InputError(f"{path}: cannot be read as {suffix[1:]}: {err}") from None
    return table_from_frame(frame)


def _check_xpt_complete(path: Path, rows_read: int) -> None:
    """Refuse a SAS XPORT (v5) file cut short, which pandas reads in part without a word.

    The format: 80-byte records; a NAMESTR record per variable (their lengths make the
    observation length L); an OBS header; the observations back to back; blanks up to the
    next multiple of 80 bytes. A complete file therefore ends, for some number of rows n,
    with n * L bytes of observations plus fewer than 80 blanks. A file cut at a multiple of
    80 bytes that falls inside an observation has no such n and is refused (other cuts make
    pandas warn, refused above). The limit: XPORT v5 stores no observation count, so a cut
    exactly between two observations (after a multiple of lcm(80, L) / L rows, a share
    gcd(80, L) / L of the 80-byte cuts: every 10th row and 1 cut in 3 when L = 24 bytes)
    leaves a complete file with fewer rows, and cannot be detected.
    One dataset per file is assumed (pandas reads the first).
    """
    with path.open("rb") as f:
        head = f.read(2_000_000)  # the headers: at most 9,999 variables of 140 bytes
        size = f.seek(0, 2)
        member = head.find(b"HEADER RECORD*******MEMBER  HEADER RECORD")
        names = head.find(b"HEADER RECORD*******NAMESTR HEADER RECORD")
        obs = head.find(b"HEADER RECORD*******OBS     HEADER RECORD")
        data = size - (obs + 80)  # bytes after the OBS header
        if min(member, names, obs, data) < 0:
            raise InputError(f"{path}: the XPT file is truncated in its header")
        n_vars, namestr = int(head[names + 54 : names + 58]), int(head[member + 74 : member + 78])
        length = sum(
            int.from_bytes(head[at + 4 : at + 6], "big")
            for at in range(names + 80, names + 80 + n_vars * namestr, namestr)
        )
        f.seek(size - min(data, 80))
        last = f.read()
    if length == 0:
        return  # no variables: no rows to lose
    # Row counts the layout allows: fewer than 80 bytes left after n rows, all of them blank.
    fewest = max(0, -(-(data - 79) // length))
    counts = [
        n
        for n in range(data // length, fewest - 1, -1)
        if not last[len(last) - (data - n * length) :].strip(b" ")
    ]
    if rows_read not in counts:
        raise InputError(
            f"{path}: the XPT file is truncated: it ends inside an observation, after "
            f"{rows_read} complete observations of {length} bytes (a complete file ends with "
            "whole observations and blank padding). Copy or download the whole file again."
        )


def is_typed(s: pd.Series) -> bool:
    """Float or yes/no dtype: values the contract reads without parsing text."""
    return pd.api.types.is_float_dtype(s) or pd.api.types.is_bool_dtype(s)


def table_from_frame(frame: pd.DataFrame, keep_numbers: bool = False) -> SourceTable:
    """An in-memory table as a source, rows numbered from 1 (records). Values become text,
    except, with ``keep_numbers``, float and yes/no (bool, boolean) columns: typed records (a
    served model's input, a cohort in memory) are checked as they are, skipping a costly round
    trip through text."""
    names = [str(c).strip() for c in frame.columns]
    if not frame.index.equals(pd.RangeIndex(len(frame))) or names != list(frame.columns):
        frame = frame.reset_index(drop=True)
        frame.columns = names
    if not frame.columns.is_unique:
        repeated = sorted({c for c in frame.columns if list(frame.columns).count(c) > 1})
        raise ValueError(f"the table has repeated column names {repeated}")
    # One column at a time, in place: no concat/reorder (their cost dominates a single record).
    raw = pd.DataFrame(
        {c: s if keep_numbers and is_typed(s) else text_column(s) for c, s in frame.items()},
        index=frame.index,
        copy=False,
    )
    return SourceTable(raw, pd.Series(np.arange(1, len(frame) + 1), dtype="int64"))


def read_sources(data: DataConfig) -> SourceTable:
    """Read one file, or several joined on ``data.join_on`` (the first file defines the rows)."""
    paths = [Path(p) for p in data.paths]
    if not paths:
        raise InputError("data.path is empty: give a file to read")
    first = _read_one(paths[0])
    if len(paths) == 1:
        return first
    key = data.join_on
    if not key:
        raise InputError("data.path lists several files: set data.join_on to the key column")
    joined = first.raw
    for path in paths[1:]:
        table = _read_one(path)
        if table.malformed:
            line, what = table.malformed[0]
            raise InputError(
                f"{path}: line {line}: {what}; a file joined on {key} must be well-formed "
                "(its rows are not rows of the cohort, so they cannot be rejected one by one)"
            )
        other = table.raw
        for name, frame in ((paths[0], joined), (path, other)):
            if key not in frame.columns:
                raise InputError(f"{name}: the join key {key!r} is not a column of this file")
        # A missing key matches nothing: pandas would join missing to missing.
        other = other[other[key].notna()]
        repeated = other[key][other[key].duplicated()]
        if len(repeated):
            raise InputError(
                f"{path}: the join key {key} repeats (e.g. {repeated.iloc[0]!r}); "
                "a joined file must have one row per key"
            )
        clash = (set(other.columns) & set(joined.columns)) - {key}
        other = other.drop(columns=sorted(clash))  # first file wins for shared columns
        joined = joined.merge(other, on=key, how="left", validate="many_to_one")
    return SourceTable(joined, first.rows, first.malformed)


def check_identifiers(columns: list[str], drop: list[str]) -> None:
    """Refuse columns that look like direct identifiers unless ``data.drop`` lists them."""
    found = [(c, r) for c in columns if c not in drop and (r := _identifier_reason(c))]
    if found:
        listed = ", ".join(f"{c!r} (looks like {r})" for c, r in found)
        raise InputError(
            f"refusing columns that look like direct identifiers: {listed}. inflamrx never reads "
            "names, dates of birth, addresses, record numbers, phone numbers or e-mail "
            "addresses; remove them from the file or list them under data.drop."
        )


def map_columns(source: SourceTable, data: DataConfig) -> tuple[pd.DataFrame, list[str]]:
    """Rename source columns to canonical ones; return the frame and the columns ignored."""
    raw = source.raw
    check_identifiers(list(raw.columns), data.drop)
    if not data.columns and not data.drop and all(c in COLUMNS for c in raw.columns):
        return raw, []  # canonical names already (a served record): nothing to select
    unknown = sorted(set(data.columns) - set(COLUMNS))
    if unknown:
        raise InputError(
            f"data.columns maps unknown canonical names {unknown}; canonical names are listed "
            "in cohort-schema.md (for example crp_mg_l, age, sex, phq9_total)"
        )
    missing = sorted({s for s in data.columns.values() if s not in raw.columns})
    if missing:
        raise InputError(
            f"data.columns refers to source columns that are not in the file: {missing}. "
            f"The file has: {sorted(raw.columns)[:40]}"
        )
    both = sorted(set(data.columns.values()) & set(data.drop))
    if both:
        raise InputError(
            f"data.drop lists columns that data.columns maps: {both}; a column is either read "
            "(data.columns) or dropped (data.drop), not both"
        )
    dropped = [c for c in data.drop if c in raw.columns]
    kept = raw.drop(columns=dropped) if dropped else raw
    by_source = {src: canon for canon, src in data.columns.items()}
    mapped_sources = set(by_source)
    # A canonical column present under its own name, when nothing else maps onto it.
    passthrough = [
        c
        for c in kept.columns
        if c in COLUMNS and c not in mapped_sources and c not in data.columns
    ]
    # One selection and a rename, rather than a frame assembled column by column.
    sources = dict(data.columns) | {c: c for c in passthrough}
    frame = kept[list(sources.values())].set_axis(list(sources), axis="columns")
    ignored = [c for c in kept.columns if c not in mapped_sources and c not in passthrough]
    return frame, ignored
