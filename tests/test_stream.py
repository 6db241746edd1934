"""A CSV file checked chunk by chunk gives what the whole table in memory gives."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from inflamrx.config import DataConfig
from inflamrx.data.csvfile import csv_chunks
from inflamrx.data.simulate import simulate_cohort
from inflamrx.data.stream import ValidatedFiles, streams, write_stream
from inflamrx.data.validate import validate_cohort
from inflamrx.errors import InputError


def _site_file(tmp_path: Path, quoted: bool = False) -> Path:
    """A simulated cohort of 300 rows with every kind of bad row spread over the file."""
    frame = simulate_cohort(300, seed=3).cohort.astype("str").fillna("")
    frame.loc[5, "crp_mg_l"] = "high"  # not a number
    frame.loc[17, "age"] = "150"  # out of range
    frame.loc[40, "sex"] = ""  # a required value missing
    frame.loc[41, "sex"] = "NA"  # a missing marker
    frame.loc[60, "patient_id"] = frame.loc[250, "patient_id"]  # repeated across chunks
    frame.loc[61, "patient_id"] = frame.loc[250, "patient_id"]
    frame.loc[61, "crp_mg_l"] = "-1"  # repeated, and another problem on the row
    frame.loc[90, "patient_id"] = frame.loc[91, "patient_id"]  # repeated within a chunk
    frame.loc[120, "site"] = "jane@example.org"  # patient information: never quoted
    frame.loc[130, "il6_pg_ml"] = "<0.5"  # below the detection limit: accepted
    frame.loc[140, "madrs_total"] = "61"
    frame.loc[150, "autoimmune_disease"] = "maybe"
    lines = [",".join(frame.columns)]
    for i, row in enumerate(frame.itertuples(index=False)):
        cells = [f'"{c}"' if quoted and j % 3 == 0 else c for j, c in enumerate(row)]
        lines.append(",".join(cells))
        if i == 33:
            lines.append("")  # a blank line: no row, but it counts for line numbers
        if i == 77:
            lines.append("1,2,3")  # the wrong number of fields: rejected
        if i == 200:
            lines.append("," * (len(frame.columns) - 1))  # only blank cells: no row
    path = tmp_path / "site.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def _both(tmp_path: Path, path: Path, chunk_rows: int, data: DataConfig) -> None:
    whole = validate_cohort(data)
    whole.accepted.to_parquet(tmp_path / "whole.parquet", index=False)
    whole.rejected.to_csv(tmp_path / "whole.csv", index=False, quoting=1)
    files = ValidatedFiles(tmp_path / "chunked.parquet", tmp_path / "chunked.csv")
    summary = write_stream(data, files, chunk_rows)

    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "chunked.parquet"), pd.read_parquet(tmp_path / "whole.parquet")
    )
    assert (tmp_path / "chunked.csv").read_bytes() == (tmp_path / "whole.csv").read_bytes()
    assert summary.n_accepted == len(whole.accepted)
    assert summary.n_rejected == len(whole.rejected)
    assert summary.rows_in == len(whole.accepted) + len(whole.rejected)
    expected = whole.summary()
    assert [str(p) for p in summary.problems] == [str(p) for p in expected.problems]
    assert summary.n_problems == expected.n_problems
    pd.testing.assert_series_equal(summary.reasons, expected.reasons, check_names=False)
    pd.testing.assert_series_equal(summary.missing, expected.missing)
    pd.testing.assert_frame_equal(summary.markers, expected.markers.reset_index(drop=True))
    assert summary.warnings == expected.warnings
    assert summary.near_misses == expected.near_misses
    assert summary.synthetic == expected.synthetic
    assert summary.exit_code == 1
    assert not list(tmp_path.glob("*.partial"))


@pytest.mark.parametrize("quoted", [False, True], ids=["plain", "quoted"])
@pytest.mark.parametrize("chunk_rows", [7, 64, 100_000])
def test_chunked_and_whole_give_the_same_rows_and_reasons(
    tmp_path: Path, quoted: bool, chunk_rows: int
) -> None:
    path = _site_file(tmp_path, quoted)
    _both(tmp_path, path, chunk_rows, DataConfig(path=str(path)))
    rejected = pd.read_csv(tmp_path / "chunked.csv", dtype="str")
    reason = dict(zip(rejected["row"].astype(int), rejected["reason"], strict=True))
    # Line numbers count the header, the blank line and the malformed line.
    assert reason[63].startswith("patient_id = ")
    assert "it appears on rows [63, 64, 255]" in reason[63]
    assert "it appears on rows [63, 64, 255]" in reason[255]
    assert "crp_mg_l = '-1'" in reason[64]
    assert "it appears on rows [94, 95]" in reason[94]
    assert "the line has 3 fields" in reason[81]
    assert "jane" not in (tmp_path / "chunked.csv").read_text()


def test_chunked_mapping_units_and_missing_codes_as_whole(tmp_path: Path) -> None:
    frame = simulate_cohort(120, seed=4).cohort
    crp = pd.to_numeric(frame["crp_mg_l"], errors="coerce")  # '<0.15' left out (missing)
    frame["crp_mg_l"] = crp / 10  # in mg/dL, said so by data.units
    frame["smoking"] = frame["smoking"].where(frame.index % 7 != 0, "-9")
    frame = frame.rename(columns={"age": "AGE_YRS", "il6_pg_ml": "il6"})
    path = tmp_path / "site.csv"
    frame.to_csv(path, index=False)
    data = DataConfig(
        path=str(path),
        columns={"age": "AGE_YRS"},
        units={"crp_mg_l": "mg/dL"},
        missing_codes={"smoking": ["-9"]},
    )
    _both(tmp_path, path, 16, data)
    summary = write_stream(data, ValidatedFiles(None, None), 16)
    assert summary.near_misses == {"il6": "il6_pg_ml"}  # a near miss is still reported


def test_the_unit_check_sees_the_whole_column_before_any_output(tmp_path: Path) -> None:
    frame = simulate_cohort(200, seed=5).cohort
    # The first chunks look right; the column as a whole is in mg/dL.
    crp = pd.to_numeric(frame["crp_mg_l"], errors="coerce")  # '<0.15' left out (missing)
    frame["crp_mg_l"] = crp.where(frame.index < 20, crp / 10)
    path = tmp_path / "site.csv"
    frame.to_csv(path, index=False)
    data = DataConfig(path=str(path))
    with pytest.raises(InputError, match="crp_mg_l: the median of") as whole:
        validate_cohort(data)
    files = ValidatedFiles(tmp_path / "out.parquet", tmp_path / "rejected.csv")
    with pytest.raises(InputError, match="crp_mg_l: the median of") as chunked:
        write_stream(data, files, 20)
    assert str(chunked.value) == str(whole.value)
    assert list(tmp_path.iterdir()) == [path]  # no output, not even a partial one


def test_a_header_only_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "site.csv"
    path.write_text("patient_id,age,sex,crp_mg_l\n\n")
    with pytest.raises(InputError, match="the input has a header but no data rows"):
        write_stream(DataConfig(path=str(path)), ValidatedFiles(None, None), 10)


def test_chunks_number_every_line(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text('id,x\n1,a\n\n2,b\n3\n4,"c\nd"\n5,e\n')
    chunks = list(csv_chunks(path, 2))
    assert np.concatenate([c.lines for c in chunks]).tolist() == [2, 4, 6, 8]
    assert [m for c in chunks for m in c.malformed] == [
        (5, "the line has 1 fields but the header has 2: '3'")
    ]
    assert pd.concat([c.raw for c in chunks])["x"].tolist() == ["a", "b", "c\nd", "e"]


@pytest.mark.parametrize("end", ["\r", "\n", "\r\n"])
def test_lines_ended_by_a_lone_carriage_return_are_rows(tmp_path: Path, end: str) -> None:
    """Old Mac files end lines with a lone CR: read as rows, not as one long header line."""
    path = tmp_path / "a.csv"
    path.write_text(end.join(["id,x", "1,a", "", "2,b", "3", "4,c", ""]), newline="")
    chunks = list(csv_chunks(path, 2))
    assert np.concatenate([c.lines for c in chunks]).tolist() == [2, 4, 6]
    assert [m[0] for c in chunks for m in c.malformed] == [5]
    assert pd.concat([c.raw for c in chunks])["x"].tolist() == ["a", "b", "c"]


def test_only_a_single_csv_file_streams() -> None:
    assert streams(DataConfig(path="a.csv"))
    assert not streams(DataConfig(path="a.parquet"))
    assert not streams(DataConfig(path=["a.csv", "b.csv"], join_on="id"))


@pytest.mark.parametrize("space", [" ", "\t", "\x1c", "\xa0"], ids=["space", "tab", "fs", "nbsp"])
def test_cells_are_stripped_without_quotes_too(tmp_path: Path, space: str) -> None:
    path = tmp_path / "a.csv"
    path.write_text(f"id,x\n1,{space}a{space}\n2,{space}\n3,b\n", encoding="utf-8")
    (chunk,) = csv_chunks(path)
    assert chunk.raw["x"].tolist()[0] == "a"
    assert pd.isna(chunk.raw["x"].iloc[1])  # blank once stripped: missing
    assert chunk.lines.tolist() == [2, 3, 4]


def test_an_empty_cell_is_missing_without_quotes_too(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text("id,x,y\n1,,a\n2,b,\n")
    (chunk,) = csv_chunks(path)
    assert chunk.raw["x"].isna().tolist() == [True, False]
    assert chunk.raw["y"].isna().tolist() == [False, True]
