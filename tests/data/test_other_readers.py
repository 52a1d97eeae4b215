from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from intentrec.data import DataFormatError, read_dataset
from tests.conftest import write


def test_s3rec_sequences_and_attributes(tmp_path: Path) -> None:
    path = write(tmp_path / "Tiny.txt", "1 3 4 3\n2 4 5\n")
    write(tmp_path / "Tiny_item2attributes.json", '{"3": [1, 2], "4": [2], "5": []}')
    ds = read_dataset(path, "s3rec")
    assert ds.interactions.rows() == [("1", "3"), ("1", "4"), ("1", "3"), ("2", "4"), ("2", "5")]
    genres = dict(ds.items.select("item", "genres").iter_rows())
    assert genres == {"3": ["1", "2"], "4": ["2"], "5": []}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1 3 4\n2 4 x5\n", r"Tiny\.txt:2: column 'item 2': 'x5' is not an integer"),
        ("1 3 4\n2\n", r"Tiny\.txt:2: expected a user id followed by at least one item id"),
        ("1 3 4\n1 5\n", r"Tiny\.txt:2: user 1 appears on more than one line"),
    ],
)
def test_s3rec_bad_lines(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(DataFormatError, match=message):
        read_dataset(write(tmp_path / "Tiny.txt", text), "s3rec")


def test_s3rec_bad_json(tmp_path: Path) -> None:
    path = write(tmp_path / "Tiny.txt", "1 3\n")
    write(tmp_path / "Tiny_item2attributes.json", '{"3": [1,\n 2')
    with pytest.raises(DataFormatError, match=r"Tiny_item2attributes\.json:2: not valid JSON"):
        read_dataset(path, "s3rec")


def test_recbole_atomic_files(tmp_path: Path) -> None:
    folder = tmp_path / "toy"
    write(
        folder / "toy.inter",
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\nu1\ti1\t4\t100.0\nu1\ti2\t5\t200\n",
    )
    write(
        folder / "toy.item",
        "item_id:token\tmovie_title:token_seq\tgenre:token_seq\ni1\tA Film\tDrama Comedy\ni2\tB Film\tHorror\n",
    )
    ds = read_dataset(folder, "recbole")
    assert ds.interactions.select("user", "item", "timestamp").rows() == [
        ("u1", "i1", 100),
        ("u1", "i2", 200),
    ]
    assert dict(ds.items.select("item", "genres").iter_rows()) == {
        "i1": ["Drama", "Comedy"],
        "i2": ["Horror"],
    }


def test_recbole_header_needs_types(tmp_path: Path) -> None:
    write(tmp_path / "t" / "t.inter", "user_id\titem_id\nu1\ti1\n")
    with pytest.raises(DataFormatError, match=r"t\.inter:1: header field 'user_id' has no ':type' suffix"):
        read_dataset(tmp_path / "t", "recbole")


def test_csv_with_mapping_quotes_and_datetimes(tmp_path: Path) -> None:
    path = write(
        tmp_path / "log.csv",
        'uid,sku,when,kind\n"a, b",10,2024-01-02 03:04:05,view\nc,11,2024-01-02 03:05:05,buy\n',
    )
    ds = read_dataset(
        path,
        "csv",
        options={
            "columns": {"user": "uid", "item": "sku", "timestamp": "when", "event": "kind"},
            "timestamp_format": "%Y-%m-%d %H:%M:%S",
        },
    )
    assert ds.interactions.rows() == [("a, b", "10", 1704164645, "view"), ("c", "11", 1704164705, "buy")]


def test_csv_missing_mapped_column_is_named(tmp_path: Path) -> None:
    path = write(tmp_path / "log.csv", "uid,sku\n1,2\n")
    with pytest.raises(DataFormatError, match=r"log\.csv:1: missing column\(s\) 'user'"):
        read_dataset(path, "csv", options={"columns": {"item": "sku"}})


def test_csv_unknown_canonical_column(tmp_path: Path) -> None:
    path = write(tmp_path / "log.csv", "user,item\n1,2\n")
    with pytest.raises(ValueError, match=r"unknown canonical column\(s\) \['usr'\]"):
        read_dataset(path, "csv", options={"columns": {"usr": "user"}})


def test_parquet_with_datetime_timestamps_and_row_numbers(tmp_path: Path) -> None:
    frame = pl.DataFrame(
        {
            "u": [1, 2, 3],
            "i": [5, 6, 7],
            "t": pl.Series(["2024-01-01", "2024-01-02", "2024-01-03"]).str.to_datetime(),
        }
    )
    path = tmp_path / "log.parquet"
    frame.write_parquet(path)
    ds = read_dataset(path, "parquet", options={"columns": {"user": "u", "item": "i", "timestamp": "t"}})
    assert ds.interactions["timestamp"].to_list() == [1704067200, 1704153600, 1704240000]
    frame.with_columns(pl.Series("i", [5, None, 7])).write_parquet(path)
    with pytest.raises(DataFormatError, match=r"log\.parquet:2: column 'item': missing value"):
        read_dataset(path, "parquet", options={"columns": {"user": "u", "item": "i", "timestamp": "t"}})


def test_unknown_format() -> None:
    with pytest.raises(ValueError, match="unknown format 'xml'"):
        read_dataset("x", "xml")
