"""Reading CSV / Parquet / XPT as text with line numbers, joining files, mapping columns."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import NHANES, TINY_HEADER, TINY_ROWS, csv_text
from inflamrx.config import DataConfig
from inflamrx.data.ingest import (
    _identifier_reason,
    _read_one,
    as_text,
    check_identifiers,
    map_columns,
    read_sources,
)
from inflamrx.errors import InputError

Writer = Callable[..., Path]


# --- CSV -------------------------------------------------------------------------------------


def test_csv_values_stay_text_with_their_line_numbers(write_file: Writer) -> None:
    text = (
        "patient_id, age ,crp_mg_l\n"
        "p1, 34 ,<0.15\n"
        "\n"  # a blank line is not a row, but it still counts for line numbers
        'p2,51,"4,5"\n'
        " , ,  \n"  # only blanks: not a row
        'p3,"4\n6",high\n'  # a quoted value over two lines: the row starts on line 6
        "p4,,1.0\n"
    )
    source = _read_one(write_file(text))
    assert list(source.raw.columns) == ["patient_id", "age", "crp_mg_l"]  # header stripped
    assert source.rows.tolist() == [2, 4, 6, 8]
    assert source.raw["patient_id"].tolist() == ["p1", "p2", "p3", "p4"]
    assert source.raw["crp_mg_l"].tolist() == ["<0.15", "4,5", "high", "1.0"]
    assert source.raw["age"].iloc[0] == "34"  # cells stripped, kept as written
    assert pd.isna(source.raw["age"].iloc[3])  # an empty cell is missing, not ""
    assert source.malformed == ()


def test_csv_crlf_and_byte_order_mark(write_file: Writer) -> None:
    text = csv_text(TINY_HEADER, TINY_ROWS, newline="\r\n")
    source = _read_one(write_file("\ufeff" + text))
    assert source.raw.columns[0] == "patient_id"
    assert source.rows.tolist() == [2, 3, 4]
    assert source.raw["madrs_total"].tolist() == ["28", "31", "22"]


def test_csv_lines_with_the_wrong_number_of_fields_are_kept_as_malformed(
    write_file: Writer,
) -> None:
    source = _read_one(write_file("a,b,c\n1,2,3\n1,2\n1,2,3,4\n4,5,6\n"))
    assert source.rows.tolist() == [2, 5]
    assert source.malformed == (
        (3, "the line has 2 fields but the header has 3: '1,2'"),
        (4, "the line has 4 fields but the header has 3: '1,2,3,4'"),
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "the file is empty (no header, no rows)"),
        (b"\x00\x01patient_id\n", "not a text CSV file (it contains binary data)"),
        (b"patient_id,age\n\xff\xfe\x80,1\n", "not a text CSV file (it contains binary data)"),
        ("patient_id;age;sex\np1;30;F\n", "the file seems to be separated by semicolons"),
        ("patient_id\tage\tsex\np1\t30\tF\n", "the file seems to be separated by tabs"),
        ("patient_id|age|sex\np1|30|F\n", "the file seems to be separated by vertical bars"),
        ("patient_id,age,age\np1,1,2\n", "the header has repeated column names ['age']"),
        ("patient_id,,sex\np1,1,F\n", "the header has an empty column name"),
        ('patient_id,age\np1,"30\np2,40\n', 'line 2: a quote (") opens a value that is not closed'),
        ("patient_id,age\np1," + "9" * 200_000 + "\n", "line 2: field larger than field limit"),
    ],
    ids=[
        "empty",
        "nul-bytes",
        "not-utf8",
        "semicolons",
        "tabs",
        "bars",
        "repeated-column",
        "empty-column-name",
        "unclosed-quote",
        "huge-field",
    ],
)
def test_unusable_csv_is_an_input_error(
    write_file: Writer, content: str | bytes, message: str
) -> None:
    path = write_file(content)
    with pytest.raises(InputError, match=re.escape(message)) as e:
        _read_one(path)
    assert str(path) in str(e.value)


def test_semicolon_message_says_what_to_do(write_file: Writer) -> None:
    with pytest.raises(InputError, match="save the file with commas between columns"):
        _read_one(write_file("patient_id;age\np1;30\n"))


def test_closed_quotes_over_several_lines_are_fine(write_file: Writer) -> None:
    source = _read_one(write_file('id,note\n1,"two\nlines"\n2,"""quoted"""\n'))
    assert source.raw["note"].tolist() == ["two\nlines", '"quoted"']
    assert source.rows.tolist() == [2, 4]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("cohort.json", "unknown file type '.json'; use .csv, .parquet or .xpt"),
        ("cohort.parquet", "cannot be read as parquet"),
        ("cohort.xpt", "cannot be read as xpt"),
    ],
)
def test_unreadable_file_types(write_file: Writer, name: str, message: str) -> None:
    with pytest.raises(InputError, match=re.escape(message)):
        _read_one(write_file(b"this is not what the suffix says", name))


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"data file not found: .*nope\.csv"):
        _read_one(tmp_path / "nope.csv")
    with pytest.raises(InputError, match="is a folder; give the path of a CSV, Parquet or XPT"):
        _read_one(tmp_path)


# --- Parquet and XPT -------------------------------------------------------------------------


def test_parquet_values_become_text_like_a_csv(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "patient_id": ["a", "b", "c"],
            "age": [34.0, 51.5, np.nan],  # integral floats without '.0', missing stays missing
            "phq9_1": pd.array([0, 3, None], dtype="Int64"),
            "autoimmune_disease": [True, False, True],
            "sex": pd.Categorical(["F", "M", None]),
        }
    )
    path = tmp_path / "cohort.parquet"
    frame.to_parquet(path)
    source = _read_one(path)
    assert source.rows.tolist() == [1, 2, 3]  # record numbers
    assert source.raw["age"].tolist()[:2] == ["34", "51.5"]
    assert source.raw["phq9_1"].tolist()[:2] == ["0", "3"]
    assert source.raw["autoimmune_disease"].tolist() == ["True", "False", "True"]
    assert source.raw["sex"].tolist()[:2] == ["F", "M"]
    for col in ("age", "phq9_1", "sex"):
        assert pd.isna(source.raw[col].iloc[2])


def test_parquet_integer_ids_keep_every_digit(tmp_path: Path) -> None:
    # Through float64 both would read '1.2345678901234568e+16' (and clash as duplicates).
    path = tmp_path / "ids.parquet"
    pd.DataFrame({"patient_id": [12345678901234567, 12345678901234568]}).to_parquet(path)
    assert _read_one(path).raw["patient_id"].tolist() == ["12345678901234567", "12345678901234568"]


def test_xpt_tiny_zero_artifact_is_read_as_zero() -> None:
    path = NHANES / "DPQ_J.xpt"
    raw = pd.read_sas(path, format="xport")["DPQ010"].to_numpy()
    assert ((raw > 0) & (raw < 1e-70)).sum() > 1000  # the artifact is really in the file
    source = _read_one(path)
    assert len(source.raw) == 5533
    assert source.rows.iloc[-1] == 5533
    values = set(source.raw["DPQ010"].dropna())
    assert values == {"0", "1", "2", "3", "7", "9"}  # codes as written, no '5.39...e-79'
    assert source.raw["SEQN"].iloc[0] == "93705"


def test_truncated_xpt_is_refused(tmp_path: Path) -> None:
    # pandas only warns and reads the records up to the cut: rows would be lost silently.
    path = tmp_path / "cut.xpt"
    path.write_bytes((NHANES / "HSCRP_J.xpt").read_bytes()[:5000])
    with pytest.raises(InputError, match=r"cut\.xpt: cannot be read as xpt: xport file may be"):
        _read_one(path)


# (file, first observation's offset, bytes per observation): the NHANES files' layout.
XPT_LAYOUTS = [("HSCRP_J", 1200, 24), ("DPQ_J", 2320, 88), ("CBC_J", 3840, 176)]


def test_xpt_cut_at_an_80_byte_boundary_inside_an_observation_is_refused(
    tmp_path: Path,
) -> None:
    # The cut that pandas read as 4,156 of 8,366 rows without a word.
    path = tmp_path / "HSCRP_J.xpt"
    path.write_bytes((NHANES / "HSCRP_J.xpt").read_bytes()[:100_960])
    assert len(pd.read_sas(path, format="xport")) == 4156
    with pytest.raises(InputError, match=r"HSCRP_J\.xpt: the XPT file is truncated") as refused:
        _read_one(path)
    assert "after 4156 complete observations" in str(refused.value)


@pytest.mark.parametrize(("name", "start", "width"), XPT_LAYOUTS)
def test_which_80_byte_cuts_are_detected(tmp_path: Path, name: str, start: int, width: int) -> None:
    """XPORT v5 records no observation count: a cut that falls exactly between two
    observations leaves a file that is a complete file with fewer rows (the documented
    limit). Every other 80-byte cut ends inside an observation and is refused."""
    whole = (NHANES / f"{name}.xpt").read_bytes()
    path = tmp_path / f"{name}.xpt"
    cuts = range(start + 80, len(whole) - 80, 80 * 97)  # about 20-190 cuts through the data
    detected = undetectable = 0
    for cut in cuts:
        path.write_bytes(whole[:cut])
        if (cut - start) % width == 0:  # between two observations
            assert len(_read_one(path).raw) == (cut - start) // width
            undetectable += 1
        else:
            with pytest.raises(InputError, match="the XPT file is truncated"):
                _read_one(path)
            detected += 1
    assert detected > 10
    assert undetectable == sum((c - start) % width == 0 for c in cuts)


@pytest.mark.parametrize("cut", [200, 600, 1120])
def test_xpt_cut_in_its_header_is_refused(tmp_path: Path, cut: int) -> None:
    path = tmp_path / "cut.xpt"
    path.write_bytes((NHANES / "HSCRP_J.xpt").read_bytes()[:cut])
    with pytest.raises(InputError, match=r"cut\.xpt: "):
        _read_one(path)


@pytest.mark.parametrize("name", ["BMX_J", "CBC_J", "DEMO_J", "DPQ_J", "HSCRP_J"])
def test_complete_xpt_files_are_read_whole(name: str) -> None:
    expected = len(pd.read_sas(NHANES / f"{name}.xpt", format="xport"))
    assert len(_read_one(NHANES / f"{name}.xpt").raw) == expected


def test_tiny_floats_in_memory_are_zero_but_missing_stays_missing() -> None:
    frame = pd.DataFrame({"x": [5.397605346934028e-79, -5.4e-79, np.nan, 0.11, 1e20]})
    assert as_text(frame)["x"].tolist()[:2] == ["0", "0"]
    text = as_text(frame)["x"]
    assert pd.isna(text.iloc[2])
    assert text.iloc[3] == "0.11"
    assert float(text.iloc[4]) == 1e20


# --- Several files joined on a key -----------------------------------------------------------


def test_join_first_file_defines_the_rows(write_file: Writer) -> None:
    first = write_file("id,age,sex\n1,30,F\n2,40,M\n3,50,F\n", "a.csv")
    second = write_file("id,crp,age\n3,0.5,99\n1,2.5,99\n4,9.9,99\n", "b.csv")
    source = read_sources(DataConfig(path=[str(first), str(second)], join_on="id"))
    assert source.raw["id"].tolist() == ["1", "2", "3"]  # order and rows of the first file
    assert source.raw["crp"].tolist()[0] == "2.5"
    assert pd.isna(source.raw["crp"].iloc[1])  # no match: missing, row kept
    assert source.raw["age"].tolist() == ["30", "40", "50"]  # shared column: first file wins
    assert source.rows.tolist() == [2, 3, 4]


def test_join_ignores_rows_without_a_key(write_file: Writer) -> None:
    # pandas joins a missing key to a missing key: p2 would get another row's CRP, and two
    # rows without a key in the second file used to end in a MergeError traceback.
    first = write_file("id,age\n1,30\n,40\n", "a.csv")
    second = write_file("id,crp\n,7.7\n,8.8\n1,2.5\n", "b.csv")
    source = read_sources(DataConfig(path=[str(first), str(second)], join_on="id"))
    assert source.raw["crp"].tolist()[0] == "2.5"
    assert pd.isna(source.raw["crp"].iloc[1])


@pytest.mark.parametrize(
    ("second", "join_on", "message"),
    [
        ("id,crp\n1,1\n1,2\n", "id", "the join key id repeats (e.g. '1')"),
        ("key,crp\n1,1\n", "id", "the join key 'id' is not a column of this file"),
        ("id,crp\n1,1\n2\n", "id", "line 3: the line has 1 fields but the header has 2"),
        ("id,crp\n1,1\n", None, "data.path lists several files: set data.join_on"),
    ],
    ids=["repeated-key", "no-key", "malformed-line", "no-join-on"],
)
def test_join_errors(write_file: Writer, second: str, join_on: str | None, message: str) -> None:
    a = write_file("id,age\n1,30\n2,40\n", "a.csv")
    b = write_file(second, "b.csv")
    with pytest.raises(InputError, match=re.escape(message)):
        read_sources(DataConfig(path=[str(a), str(b)], join_on=join_on))


def test_join_key_missing_in_the_first_file(write_file: Writer) -> None:
    a = write_file("pid,age\n1,30\n", "a.csv")
    b = write_file("id,crp\n1,1\n", "b.csv")
    with pytest.raises(InputError, match=r"a\.csv: the join key 'id' is not a column"):
        read_sources(DataConfig(path=[str(a), str(b)], join_on="id"))


def test_empty_path_list() -> None:
    with pytest.raises(InputError, match=r"data\.path is empty"):
        read_sources(DataConfig(path=[]))


# --- Direct identifiers ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("column", "looks_like"),
    [
        ("name", "name"),
        ("Patient Name", "name"),
        ("PatientName", "name"),
        ("first_name", "name"),
        ("surname", "surname"),
        ("dob", "dob"),
        ("DOB", "dob"),
        ("date_of_birth", "dateofbirth"),
        ("DateOfBirth", "dateofbirth"),
        ("birth_date", "birthdate"),
        ("address", "address"),
        ("home_address", "address"),
        ("post_code", "postcode"),
        ("MRN", "mrn"),
        ("medical_record_number", "medicalrecord"),
        ("phone", "phone"),
        ("phone_number", "phone"),
        ("Telephone", "telephone"),
        ("email", "email"),
        ("e-mail", "email"),
        ("E_Mail", "email"),
        ("ssn", "ssn"),
    ],
)
def test_identifier_columns_are_recognised(column: str, looks_like: str) -> None:
    assert _identifier_reason(column) == looks_like


@pytest.mark.parametrize(
    "column", ["patient_id", "site", "SEQN", "RIDAGEYR", "crp_mg_l", "n_failed_antidepressants"]
)
def test_ordinary_columns_are_not_identifiers(column: str) -> None:
    assert _identifier_reason(column) is None


def test_identifier_refused_unless_dropped() -> None:
    with pytest.raises(InputError) as e:
        check_identifiers(["patient_id", "full_name", "DOB"], drop=[])
    message = str(e.value)
    assert "refusing columns that look like direct identifiers" in message
    assert "'full_name' (looks like name), 'DOB' (looks like dob)" in message
    assert "remove them from the file or list them under data.drop" in message
    check_identifiers(["patient_id", "full_name", "DOB"], drop=["full_name", "DOB"])


# --- Mapping onto canonical names ------------------------------------------------------------


def test_map_columns_renames_passes_through_and_lists_ignored(write_file: Writer) -> None:
    path = write_file("ID,AGE,sex,crp_mg_l,hobby,name\n1,30,F,1,chess,Ann\n")
    data = DataConfig(path=str(path), columns={"patient_id": "ID", "age": "AGE"}, drop=["name"])
    frame, ignored = map_columns(read_sources(data), data)
    assert list(frame.columns) == ["patient_id", "age", "sex", "crp_mg_l"]
    assert frame.iloc[0].tolist() == ["1", "30", "F", "1"]
    assert ignored == ["hobby"]  # dropped columns are not even listed


def test_a_mapped_column_wins_over_a_same_named_one(write_file: Writer) -> None:
    path = write_file("patient_id,age,sex,crp_mg_l,hsCRP\n1,30,F,99,1.5\n")
    data = DataConfig(path=str(path), columns={"crp_mg_l": "hsCRP"})
    frame, ignored = map_columns(read_sources(data), data)
    assert frame["crp_mg_l"].tolist() == ["1.5"]
    assert ignored == ["crp_mg_l"]


def test_a_column_cannot_be_both_mapped_and_dropped(write_file: Writer) -> None:
    # Used to be a KeyError traceback.
    path = write_file("MRN,age,sex,crp_mg_l\n1,30,F,1\n")
    data = DataConfig(path=str(path), columns={"patient_id": "MRN"}, drop=["MRN"])
    with pytest.raises(InputError, match=re.escape("data.drop lists columns that data.columns")):
        map_columns(read_sources(data), data)
