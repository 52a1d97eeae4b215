from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from intentrec.data.readers import taobao
from intentrec.data.textio import BadRows, DataFormatError, Field, read_delimited
from tests.conftest import write

FIELDS = [
    Field("user", "int"),
    Field("item", "int"),
    Field("rating", "float"),
    Field("timestamp", "timestamp"),
]


def read(path: Path, mode: str = "error") -> tuple[pl.DataFrame, BadRows]:
    bad = BadRows()
    return read_delimited(path, FIELDS, separator="\t", on_bad_rows=mode, bad=bad), bad  # type: ignore[arg-type]


def test_good_file_is_typed_with_line_numbers(tmp_path: Path) -> None:
    frame, bad = read(write(tmp_path / "r.tsv", "1\t10\t4\t100\n2\t20\t3.5\t200\n"))
    assert frame.rows() == [(1, 1, 10, 4.0, 100), (2, 2, 20, 3.5, 200)]
    assert frame.schema["user"] == pl.Int64 and frame.schema["timestamp"] == pl.Int64
    assert bad.count == 0


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        (
            "1\t10\t4\t100\n2\t20\t3\n",
            2,
            "expected 4 fields (user, item, rating, timestamp) separated by '\\t', found 3",
        ),
        ("1\t10\t4\t100\t9\n", 1, "expected 4 fields"),
        ("1\t10\t4\t100\nx7\t20\t3\t200\n", 2, "column 'user': 'x7' is not an integer"),
        ("1\t1.5\t4\t100\n", 1, "column 'item': '1.5' is not an integer"),
        ("1\t10\t4\tyesterday\n", 1, "column 'timestamp': 'yesterday' is not a timestamp in seconds"),
        ("1\t10\t4\t-5\n", 1, "column 'timestamp': '-5' is a negative timestamp"),
        ("1\t10\tnan\t5\n", 1, "column 'rating': 'nan' is not a finite number"),
        ("1\t\t4\t5\n", 1, "column 'item': missing value"),
    ],
)
def test_strict_mode_names_file_line_column_and_value(tmp_path: Path, text: str, line: int, message: str) -> None:
    path = write(tmp_path / "r.tsv", text)
    with pytest.raises(DataFormatError) as info:
        read(path)
    assert info.value.line == line
    assert message in str(info.value)
    assert str(info.value).startswith(f"{path}:{line}: ")


def test_blank_lines_keep_line_numbers_exact(tmp_path: Path) -> None:
    path = write(tmp_path / "r.tsv", "1\t10\t4\t100\n\n\n2\tbad\t3\t200\n")
    with pytest.raises(DataFormatError, match=r"r\.tsv:4: column 'item': 'bad'"):
        read(path)


def test_skip_mode_reports_count_and_first_ten_lines(tmp_path: Path) -> None:
    lines = [f"{u}\t{u * 10}\t4\t{u}" if u % 3 else f"{u}\tbad\t4\t{u}" for u in range(1, 40)]
    frame, bad = read(write(tmp_path / "r.tsv", "\n".join(lines) + "\n"), "skip")
    assert bad.count == 13
    assert [b.line for b in bad.first] == [3, 6, 9, 12, 15, 18, 21, 24, 27, 30]
    assert frame.height == 39 - 13
    assert all(b.reason == "column 'item': 'bad' is not an integer" for b in bad.first)


def test_truncated_last_line_is_named(tmp_path: Path) -> None:
    path = write(tmp_path / "r.tsv", "1\t10\t4\t100\n2\t20\t3")
    with pytest.raises(DataFormatError, match=r":2: .*truncated record"):
        read(path)
    frame, bad = read(path, "skip")
    assert frame.height == 1 and bad.count == 1


def test_wrong_encoding_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "r.tsv"
    path.write_bytes(b"1\t10\t4\t100\n2\t20\t3\t200\xe9\n3\t30\t1\t300\n")
    with pytest.raises(DataFormatError, match=r"r\.tsv:2: not valid utf-8: byte 0xe9 at column 11"):
        read(path)
    frame, bad = read(path, "skip")
    assert frame["user"].to_list() == [1, 3]
    assert bad.count == 1 and bad.first[0].line == 2


def test_empty_file_is_an_error_in_both_modes(tmp_path: Path) -> None:
    path = write(tmp_path / "r.tsv", "\n  \n")
    for mode in ("error", "skip"):
        with pytest.raises(DataFormatError, match="the file is empty"):
            read(path, mode)


def test_duplicate_events_are_bad_records(tmp_path: Path) -> None:
    text = "1,5,100,pv,1511544070\n1,6,100,pv,1511544071\n1,5,100,pv,1511544070\n"
    path = write(tmp_path / "UserBehavior.csv", text)
    with pytest.raises(DataFormatError, match=r":3: duplicate event: same user, item, event, timestamp as line 1"):
        taobao.read(path)
    dataset = taobao.read(path, on_bad_rows="skip")
    assert dataset.interactions.height == 2 and dataset.bad_rows.count == 1


def test_unknown_behaviour_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path / "UserBehavior.csv", "1,5,100,click,1511544070\n")
    with pytest.raises(DataFormatError, match="column 'event': 'click' is not one of pv, cart, fav, buy"):
        taobao.read(path)
