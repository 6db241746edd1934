"""Turn a mapped source table into the canonical cohort, or a list of what is wrong with it.

Nothing is lost: every input row ends up either accepted or rejected with its reasons, and
``rows_in == accepted + rejected`` always holds.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from inflamrx.config import DataConfig
from inflamrx.data.crp import CRP_ACUTE_INFECTION
from inflamrx.data.ingest import (
    ROW,
    SourceTable,
    identifier_in_value,
    is_typed,
    map_columns,
    read_sources,
    table_from_frame,
    text_column,
)
from inflamrx.data.names import closest_canonical
from inflamrx.data.reference import MIN_VALUES, REFERENCES, MedianSketch, unit_problem
from inflamrx.data.results import Problem, ValidationResult
from inflamrx.data.scales import score_scales
from inflamrx.data.schema import (
    COLUMNS,
    REQUIRED,
    UNIT_FACTORS,
    ColumnSpec,
    Kind,
    contract_failures,
    rule_text,
)
from inflamrx.data.simulate import says_synthetic
from inflamrx.errors import InputError

FloatArray = npt.NDArray[np.float64]
# Which rows of a chunk hold a patient_id repeated in the file, each with every row holding it.
RepeatsOf = Callable[[pd.Series, npt.NDArray[np.int64]], Mapping[int, list[int]]]
_TEXT = pd.api.types.pandas_dtype("str")

_LOD = re.compile(r"^<\s*=?\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)$")
_TRUE = {"true", "t", "yes", "y", "1"}
_FALSE = {"false", "f", "no", "n", "0"}
# Written for "no value" (pandas' default na_values for read_csv), minus "None": an ordinary
# answer ("None" smoked, no drug), not an unknown one. Matched exactly, as pandas does.
MISSING_MARKERS = frozenset(
    {"", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
     "<NA>", "N/A", "NA", "NULL", "NaN", "n/a", "nan", "null"}
)  # fmt: skip
# Values that are valid but unusual enough to say so (CDC/AHA: CRP > 10 mg/L, acute infection).
UNUSUAL = {
    "crp_mg_l": (
        CRP_ACUTE_INFECTION,
        "CRP above 10 mg/L: possible acute infection; consider repeating",
    )
}


def _convert_units(values: FloatArray, spec: ColumnSpec, unit: str) -> FloatArray:
    factors = UNIT_FACTORS.get(spec.unit, {spec.unit: 1.0})
    factor = {u.lower(): f for u, f in factors.items()}.get(unit.strip().lower())
    if factor is None:
        allowed = sorted(factors, key=str.lower)
        raise InputError(
            f"data.units: unknown unit {unit!r} for {spec.name}. Allowed units: "
            f"{', '.join(allowed)} (converted to {spec.unit})."
        )
    return values * factor


class _Checker:
    """Parses text columns into canonical dtypes, recording a Problem per bad cell."""

    def __init__(self, frame: pd.DataFrame, rows: pd.Series) -> None:
        self.text = frame  # the values as written, to quote them back in messages
        self.rows = rows.to_numpy()
        # Read only when a problem names it: every id as text cost 0.4 s at 100,000 rows.
        self.ids = frame.get("patient_id")
        self.problems: dict[int, list[Problem]] = {}
        self.bad_cells: set[tuple[int, str]] = set()

    def add(
        self, pos: int, column: str, value: object, rule: str, check: str, withheld: bool = False
    ) -> None:
        if withheld:
            value = None
        elif column in self.text and isinstance(self.text[column].iloc[pos], str):
            value = self.text[column].iloc[pos]
        text = "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)
        if isinstance(value, float) and value.is_integer():
            text = str(int(value))  # a typed 75.0 is quoted as a site would write it: '75'
        pid = None if self.ids is None else self.ids.iloc[pos]
        pid = None if pd.isna(pid) else str(pid)
        problem = Problem(int(self.rows[pos]), pid, column, text, rule, check, withheld)
        self.problems.setdefault(pos, []).append(problem)
        self.bad_cells.add((pos, column))

    def site(self, text: pd.Series) -> pd.Series:
        """Site codes; one that looks like patient information rejects its row, unquoted."""
        codes, values = pd.factorize(text)  # decided once per distinct code
        looks = [identifier_in_value(v) for v in values]
        for pos in np.flatnonzero(_by_code([w is not None for w in looks], codes, False, bool)):
            rule = (
                "site must be a site code, not patient information "
                f"(it looks like {looks[codes[pos]]}); the value is not shown"
            )
            self.add(int(pos), "site", None, rule, "looks like patient information", True)
        return text

    def number(self, text: pd.Series, spec: ColumnSpec) -> FloatArray:
        """float64 values; NaN where missing, and where not a number (with a Problem)."""
        if isinstance(text.dtype, np.dtype) and text.dtype.kind == "f":
            # A typed float column (a served record): only an infinity is not a number.
            values = text.to_numpy(dtype=np.float64)
            bad = np.isinf(values)
        else:
            values = _to_float(text)
            bad = text.notna().to_numpy() & ~np.isfinite(values)  # unreadable, or infinite
        for pos in np.flatnonzero(bad):
            hint = " (or '<LOD' when below the detection limit)" if spec.lod else ""
            self.add(
                int(pos),
                spec.name,
                text.iloc[pos],
                f"not a number; {spec.label} {rule_text(spec)}{hint}",
                "not a number",
            )
        return np.where(bad, np.nan, values)

    def yes_no(self, column: pd.Series, spec: ColumnSpec) -> pd.arrays.BooleanArray:
        """A yes/no column: typed booleans (a served record's, a frame in memory) as they are,
        else parsed text."""
        if column.dtype == bool:  # numpy booleans hold no missing value
            return pd.arrays.BooleanArray(column.to_numpy(), np.zeros(len(column), dtype=bool))
        if pd.api.types.is_bool_dtype(column):  # pandas' nullable boolean
            return pd.array(column, dtype="boolean")
        return self.boolean(text_column(column), spec)

    def boolean(self, text: pd.Series, spec: ColumnSpec) -> pd.arrays.BooleanArray:
        # Decided once per distinct answer: a column repeats a few, however many rows it has
        # (stripped and lower-cased in Python: a pandas string operation per column costs
        # more than a served record's whole check).
        codes, answers = pd.factorize(text)
        decided = [_yes_no(answer.strip().lower()) for answer in answers]
        yes = _by_code([d is True for d in decided], codes, missing=False, dtype=bool)
        unknown = _by_code([d is None for d in decided], codes, missing=True, dtype=bool)
        for pos in np.flatnonzero(unknown & (codes >= 0)):  # written, but not yes/no
            self.add(
                int(pos), spec.name, text.iloc[pos], f"{spec.label} {rule_text(spec)}", "not yes/no"
            )
        return pd.arrays.BooleanArray(yes, unknown)

    @staticmethod
    def category(text: pd.Series, spec: ColumnSpec) -> pd.Series:
        # Match case-insensitively ("female" is not guessed, "f" becomes "F").
        by_lower = {a.lower(): a for a in spec.allowed}
        codes, written = pd.factorize(text)
        stripped = [value.strip() for value in written]  # as str.strip, once per distinct value
        # Unknown values stay as written (stripped), for the contract to reject and quote back.
        canonical = [by_lower.get(v.lower(), v) for v in stripped]
        # Spread over the rows as text ("take"): no per-row conversion of Python strings.
        values_by_row = pd.array(canonical, dtype="str").take(codes, allow_fill=True)
        return pd.Series(values_by_row, index=text.index, name=text.name)


def _to_float(text: pd.Series) -> FloatArray:
    """Text as float64, NaN where missing or not a number, as ``pd.to_numeric`` reads it.
    Arrow's parser reads plain decimal numbers some 30x faster and to the same float; pandas
    reads whatever else a column holds ('high', ' 3', '1_000'), and the whole column when arrow
    reads a negative zero (pandas reads '-0' as 0 in a column of integers)."""
    if not (isinstance(text.dtype, pd.StringDtype) and text.dtype.storage == "pyarrow"):
        return _pandas_float(text)
    values = pa.array(text.array)
    try:  # a column of numbers only (the usual case): arrow reads it whole
        out = np.asarray(pc.cast(values, pa.float64()).to_numpy(zero_copy_only=False))
        other = None
    except pa.ArrowInvalid:  # arrow the plain decimal values, pandas the rest
        plain = pc.match_substring_regex(values, _PLAIN_NUMBER).to_numpy(zero_copy_only=False)
        plain = np.asarray(plain == True)  # noqa: E712 (missing values: None, not plain)
        out = np.full(len(text), np.nan)
        out[plain] = pc.cast(values.filter(pa.array(plain)), pa.float64()).to_numpy()
        other = ~plain & text.notna().to_numpy()
    if np.signbit(out[out == 0]).any():
        return _pandas_float(text)
    if other is not None and other.any():
        out[other] = _pandas_float(text[other])
    return out


_PLAIN_NUMBER = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$"


def _pandas_float(text: pd.Series) -> FloatArray:
    return pd.to_numeric(text, errors="coerce").astype("float64").to_numpy()


def _below_lod(text: pd.Series) -> pd.Series:
    """The limit written in a '<LOD' value (NaN elsewhere); the pattern only where a value
    starts with '<' (a regular expression over every value is most of the parsing time)."""
    stripped = text.str.strip()
    maybe = stripped.str.startswith("<").to_numpy(dtype=bool, na_value=False)
    below = pd.Series(np.nan, index=text.index, dtype=_TEXT)
    if maybe.any():
        below[maybe] = stripped[maybe].str.extract(_LOD, expand=False)
    return below


def _yes_no(answer: str) -> bool | None:
    """A stripped, lower-case answer as True/False; None when it is not a yes/no."""
    if answer in ("1.0", "0.0"):
        answer = answer[0]
    return True if answer in _TRUE else False if answer in _FALSE else None


def _by_code(
    per_value: list[Any], codes: npt.NDArray[np.intp], missing: object, dtype: type
) -> npt.NDArray[Any]:
    """Spread one result per distinct value (``pd.factorize``'s uniques) back over the rows."""
    table: npt.NDArray[Any] = np.array([*per_value, missing], dtype=dtype)
    return table[codes]  # code -1 (a missing value) picks the last entry: ``missing``


def _check_keyed_options(data: DataConfig) -> None:
    """data.units / recode / missing_codes are keyed by canonical names: a typo must not pass.

    Silently skipping ``units: {crp_mg_L: mg/dL}`` would leave CRP ten times too small.
    """
    for option in ("units", "recode", "missing_codes"):
        unknown = sorted(set(getattr(data, option)) - set(COLUMNS))
        if unknown:
            raise InputError(
                f"data.{option} names unknown canonical columns {unknown}; data.{option} is "
                "keyed by canonical names (for example crp_mg_l, sex, phq9_1), not source names"
            )
    unitless = sorted(c for c in data.units if COLUMNS[c].kind not in (Kind.NUMBER, Kind.INTEGER))
    if unitless:
        raise InputError(f"data.units names columns that have no unit: {unitless}")


def _apply_missing(frame: pd.DataFrame, data: DataConfig) -> pd.DataFrame:
    """MISSING_MARKERS in any text column, and a site's data.missing_codes, become missing."""
    out = frame
    for col, values in frame.items():
        # A typed float column (a served record) says missing with NaN: no marker to look for.
        hit = None if is_typed(values) else _markers(values)
        codes = data.missing_codes.get(str(col))
        if codes:
            if pd.api.types.is_bool_dtype(values):
                values = text_column(values)  # codes are matched as text: True as 'True'
            as_number = pd.to_numeric(values, errors="coerce")
            numeric_codes = [float(c) for c in codes if isinstance(c, int | float)]
            coded = (
                as_number.isin(numeric_codes) | values.isin([str(c) for c in codes])
            ).to_numpy()
            hit = coded if hit is None else hit | coded
        if hit is not None and hit.any():
            if out is frame:  # copy-on-write: replacing a column leaves `frame` as it was
                out = frame.copy(deep=False)
            out[col] = values.where(~hit)
    return out


def _markers(values: pd.Series) -> npt.NDArray[np.bool_]:
    """Where ``values`` holds a MISSING_MARKER. ``isin`` costs about 0.1 ms per column
    whatever its length, most of a served record's validation: few rows are looked up."""
    if len(values) > 256:
        return values.isin(MISSING_MARKERS).to_numpy()
    return np.fromiter((v in MISSING_MARKERS for v in values.to_numpy()), bool, len(values))


def _apply_recode(frame: pd.DataFrame, data: DataConfig) -> pd.DataFrame:
    if not data.recode:
        return frame
    out = frame.copy(deep=False)  # copy-on-write: replacing a column leaves `frame` as it was
    for col, mapping in data.recode.items():
        if col in out:
            out[col] = text_column(out[col]).map(lambda v, m=mapping: str(m[v]) if v in m else v)
    return out


def _parse(frame: pd.DataFrame, checker: _Checker, data: DataConfig) -> pd.DataFrame:
    # Columns are built as arrays and become one frame at the end: each pandas Series
    # operation costs tens of microseconds, which is most of the cost of a single record.
    out: dict[str, pd.Series | FloatArray | pd.arrays.BooleanArray] = {}
    for name, column in frame.items():
        spec = COLUMNS[name]
        numeric = spec.kind in (Kind.NUMBER, Kind.INTEGER)
        typed = numeric and pd.api.types.is_float_dtype(column)
        if spec.kind is Kind.BOOLEAN:
            if name not in out:  # a below-LOD flag may already have been merged below
                out[name] = checker.yes_no(column, spec)
            continue
        # Text, except typed numbers; a float where text is expected reads '1.0' as '1'.
        text = column if typed else text_column(column)
        if numeric:
            below = None  # a typed number cannot say '<LOD': its flag column says it
            if spec.lod and not typed:
                below = _below_lod(text)
            if below is not None and below.notna().any():
                # Below the limit of detection: LOD/sqrt(2), with a flag (a common convention).
                text = text.where(below.isna(), (below.astype(float) / np.sqrt(2)).astype("str"))
            values = checker.number(text, spec)
            if name in data.units:
                values = _convert_units(values, spec, data.units[name])
            out[name] = values
            if spec.lod:
                flag = f"{name}_below_lod"
                flagged = np.zeros(len(values), dtype=bool)
                if below is not None:
                    flagged = below.notna().to_numpy()
                if flag in out:  # the flag column came first and is already parsed (and checked)
                    flagged = flagged | _true(out[flag])
                elif flag in frame:  # parsed here as when the flag comes first
                    flagged = flagged | _true(checker.yes_no(frame[flag], COLUMNS[flag]))
                # Missing only where the value is missing and nothing says it was below the LOD.
                out[flag] = pd.arrays.BooleanArray(flagged, np.isnan(values) & ~flagged)
        elif spec.kind is Kind.CATEGORY:
            out[name] = checker.category(text, spec)
        else:
            out[name] = text.str.strip()
            if name == "site":
                out[name] = checker.site(out[name])
    return pd.DataFrame(out, index=frame.index, copy=False)


def _check_units(
    parsed: pd.DataFrame, data: DataConfig, sketches: dict[str, MedianSketch] | None
) -> None:
    """Refuse a marker whose cohort median says its unit is wrong, unless data.units states it.
    With ``sketches`` (a chunk of a file) the values are only added, for ``check_sketches``
    to judge once the whole column has been seen."""
    for col in REFERENCES:
        if col not in parsed or col in data.units:
            continue
        values = parsed[col].to_numpy(dtype=np.float64)
        if sketches is not None:
            sketches.setdefault(col, MedianSketch()).add(values)
            continue
        if np.count_nonzero(~np.isnan(values)) < MIN_VALUES:
            continue  # a single served record costs no histogram
        sketch = MedianSketch()
        sketch.add(values)
        check_sketches({col: sketch})


def check_sketches(sketches: Mapping[str, MedianSketch]) -> None:
    """The unit check on each marker's whole column (``REFERENCES`` order)."""
    for col in REFERENCES:
        if col in sketches and (problem := unit_problem(col, sketches[col])):
            raise InputError(problem)


def _true(flags: pd.Series | FloatArray | pd.arrays.BooleanArray) -> npt.NDArray[np.bool_]:
    """Yes/no values as a numpy mask: True where yes, False where no or missing."""
    if isinstance(flags, pd.arrays.BooleanArray):
        return flags.to_numpy(dtype=bool, na_value=False)
    return pd.array(flags, dtype="boolean").to_numpy(dtype=bool, na_value=False)


def _contract_problems(
    frame: pd.DataFrame, checker: _Checker, repeats: RepeatsOf | None = None
) -> None:
    """A Problem per cell that breaks the contract and was not already reported when parsed
    (tests/test_contract_paths.py swaps ``contract_failures`` for pandera's schema here).
    ``repeats``: patient_id uniqueness is decided over the whole file, not within ``frame``."""
    failures = contract_failures(frame)
    if repeats is not None and "patient_id" in frame:
        failures = [f for f in failures if f.check != "field_uniqueness"]
        ids = frame["patient_id"]
        # patient_id comes first in the contract: its problems come first on their rows.
        for pos, rows in sorted(repeats(ids, checker.rows).items()):
            rule = f"patient_id must be unique; it appears on rows {rows}"
            checker.add(pos, "patient_id", ids.iloc[pos], rule, "unique")
    for failure in failures:
        col = failure.column
        if failure.pos < 0 or col not in COLUMNS:
            raise InputError(f"the table does not fit the cohort contract: {failure.check} ({col})")
        pos = failure.pos
        if (pos, col) in checker.bad_cells:
            continue  # already reported when parsing this cell
        spec = COLUMNS[col]
        if failure.check == "not_nullable":
            rule, short = f"{spec.label} is required and is missing", "required"
        elif failure.check == "field_uniqueness":
            same = frame[col] == failure.value
            rows = [int(checker.rows[i]) for i in np.flatnonzero(same.to_numpy())]
            rule, short = f"patient_id must be unique; it appears on rows {rows}", "unique"
        else:
            rule, short = f"{spec.label} {rule_text(spec)}", rule_text(spec)
        checker.add(pos, col, failure.value, rule, short)


_DTYPES = {
    kind: pd.api.types.pandas_dtype(name)
    for kind, name in {
        Kind.NUMBER: "float64",
        Kind.INTEGER: "float64",
        Kind.BOOLEAN: "boolean",
        Kind.CATEGORY: "str",
        Kind.STRING: "str",
    }.items()
}


def _cast(frame: pd.DataFrame) -> pd.DataFrame:
    # Parsing already gives the canonical dtypes: only cast what differs (astype is per column).
    changed = {
        c: _DTYPES[COLUMNS[c].kind]
        for c, dtype in frame.dtypes.items()
        if dtype != _DTYPES[COLUMNS[c].kind]
    }
    return frame.astype(changed) if changed else frame


def validate_source(
    source: SourceTable, data: DataConfig, require: Mapping[str, str] | None = None
) -> ValidationResult:
    """Validate an already-read source table against the cohort contract. ``require``: columns
    the job needs beyond the contract's required ones, each with why (its rows without a
    value are rejected, like a missing required column's)."""
    if source.raw.empty and not source.malformed:
        raise InputError("the input has a header but no data rows")
    return check_rows(source, data, require)


def check_rows(
    source: SourceTable,
    data: DataConfig,
    require: Mapping[str, str] | None = None,
    sketches: dict[str, MedianSketch] | None = None,
    repeats: RepeatsOf | None = None,
) -> ValidationResult:
    """``validate_source`` on a table that may be one chunk of a file: with ``sketches`` the
    unit check is left to ``check_sketches`` on the whole file, with ``repeats`` the
    uniqueness of patient_id is the file's (``data.stream``)."""
    _check_keyed_options(data)
    mapped, ignored = map_columns(source, data)
    # A near miss of a column already read is an extra column, not a lost one.
    near = {c: to for c in ignored if (to := closest_canonical(c)) and to not in mapped.columns}
    ignored = [c for c in ignored if c not in near]
    absent = [c for c in REQUIRED if c not in mapped.columns]
    if absent:
        hints = "".join(f" {_near_miss_text(c, to)}." for c, to in near.items() if to in absent)
        raise InputError(
            f"required columns are missing: {absent}. Map them with data.columns "
            f"(canonical name: source column). Columns found: {sorted(source.raw.columns)[:40]}."
            + hints
        )
    checker = _Checker(mapped, source.rows)
    text = _apply_recode(_apply_missing(mapped, data), data)
    parsed = _parse(text, checker, data)
    _check_units(parsed, data, sketches)
    scored, clashes = score_scales(parsed)
    for pos, clashing in clashes.items():
        for column, message in clashing:
            checker.add(pos, column, scored[column].iloc[pos], message, "items vs total")
    _contract_problems(scored, checker, repeats)
    _require(scored, checker, require or {})

    bad = np.zeros(len(scored), dtype=bool)
    bad[list(checker.problems)] = True
    accepted = _cast(scored[~bad]).reset_index(drop=True)
    # Source values as written, minus data.drop (identifiers must not reappear in this file).
    # Each step only when needed: on a single record these frame operations add up.
    dropped = [c for c in data.drop if c in source.raw]
    rejected = source.raw.drop(columns=dropped) if dropped else source.raw
    rejected = rejected[bad] if bad.any() else rejected.iloc[:0]
    withheld = [pos for pos, found in checker.problems.items() if any(p.withheld for p in found)]
    if withheld:  # the source value may be patient information: not in this file either
        site = data.columns.get("site", "site")
        rejected.loc[rejected.index.isin(withheld), site] = "(not shown)"
    renames = _renames_for_output(list(rejected.columns))
    if renames:
        rejected = rejected.rename(columns=renames)
    rejected.insert(0, ROW, source.rows[bad].to_numpy())
    rejected["reason"] = [
        "; ".join(p.reason() for p in checker.problems[int(pos)]) for pos in np.flatnonzero(bad)
    ]
    problems = [p for pos in sorted(checker.problems) for p in checker.problems[pos]]
    if source.malformed:
        shaped = pd.DataFrame(
            {ROW: [r for r, _ in source.malformed], "reason": [w for _, w in source.malformed]}
        )
        rejected = pd.concat([rejected, shaped], ignore_index=True).sort_values(ROW, kind="stable")
        problems += [
            Problem(r, None, "", "", w, "wrong number of fields") for r, w in source.malformed
        ]
    warnings = warning_texts(near, count_unusual(accepted))
    return ValidationResult(
        accepted, rejected.reset_index(drop=True), problems, ignored, warnings, near
    )


def count_unusual(accepted: pd.DataFrame) -> dict[str, int]:
    """Accepted rows with an UNUSUAL value, per column."""
    return {
        c: int((accepted[c] > limit).sum()) for c, (limit, _) in UNUSUAL.items() if c in accepted
    }


def warning_texts(near: Mapping[str, str], unusual: Mapping[str, int]) -> list[str]:
    warnings = [
        f"source column {_near_miss_text(c, to)}, rename it, or list it under data.drop; "
        "until then it is not read"
        for c, to in near.items()
    ]
    for col, (_, what) in UNUSUAL.items():
        if unusual.get(col):
            warnings.append(f"{unusual[col]} accepted rows with {what}")
    return warnings


def _require(frame: pd.DataFrame, checker: _Checker, require: Mapping[str, str]) -> None:
    for column, why in require.items():
        if column not in frame:
            raise InputError(f"the data have no {column} column; {why}")
        for pos in np.flatnonzero(frame[column].isna().to_numpy()):
            if (int(pos), column) not in checker.bad_cells:
                rule = f"{COLUMNS[column].label} is missing; {why}"
                checker.add(int(pos), column, None, rule, "required")


def _near_miss_text(source: str, canonical: str) -> str:
    return f"{source!r} looks like {canonical}: map it with data.columns: {{{canonical}: {source}}}"


def _renames_for_output(columns: list[str]) -> dict[str, str]:
    """Source columns called 'row' or 'reason' become 'source_row' ... (ours are added)."""
    renames: dict[str, str] = {}
    for name in (ROW, "reason"):
        if name in columns:
            new = f"source_{name}"
            while new in columns or new in renames.values():
                new = f"source_{new}"
            renames[name] = new
    return renames


def validate_cohort(data: DataConfig, require: Mapping[str, str] | None = None) -> ValidationResult:
    """Read, map and validate the cohort described by ``data`` (paths relative to the cwd)."""
    result = validate_source(read_sources(data), data, require)
    result.synthetic = says_synthetic(data)
    return result


def validate_frame(frame: pd.DataFrame, data: DataConfig | None = None) -> ValidationResult:
    """Validate an in-memory table (for example records sent to a served model). Float
    columns are checked as numbers as they are; everything else is parsed from text."""
    return validate_source(table_from_frame(frame, keep_numbers=True), data or DataConfig())
