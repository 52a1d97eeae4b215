"""Exact counts on the real files in ../shared/data."""

from __future__ import annotations

from pathlib import Path

import pytest

from intentrec.data import DataFormatError, read_dataset


def test_movielens_100k_counts(shared_data: Path) -> None:
    ds = read_dataset(shared_data / "movielens-100k", "movielens")
    assert ds.interactions.height == 100_000
    assert ds.interactions["user"].n_unique() == 943
    assert ds.interactions["item"].n_unique() == 1682
    assert ds.items.height == 1682
    toy_story = ds.items.filter(ds.items["item"] == "1").row(0, named=True)
    assert toy_story["title"] == "Toy Story (1995)"
    assert toy_story["genres"] == ["Animation", "Children's", "Comedy"]
    assert str(toy_story["release_date"]) == "1995-01-01"
    # ISO-8859-1 titles decode correctly
    assert ds.items.filter(ds.items["title"].str.contains("Misérables")).height >= 1


def test_beauty_counts(shared_data: Path) -> None:
    ds = read_dataset(shared_data / "s3rec" / "Beauty.txt", "s3rec")
    assert ds.interactions.height == 198_502
    assert ds.interactions["user"].n_unique() == 22_363
    assert ds.interactions["item"].n_unique() == 12_101
    assert not ds.has_timestamps
    first_user = ds.interactions.filter(ds.interactions["user"] == "1")["item"].to_list()
    assert first_user == ["1", "2", "3", "4", "5"]


def test_taobao_strict_fails_on_the_truncated_last_line(shared_data: Path) -> None:
    path = shared_data / "taobao-userbehavior-prefix" / "UserBehavior.csv"
    with pytest.raises(DataFormatError) as info:
        read_dataset(path, "taobao")
    assert info.value.line == 84476
    assert "UserBehavior.csv:84476:" in str(info.value)


def test_taobao_skip_keeps_every_complete_record(shared_data: Path) -> None:
    path = shared_data / "taobao-userbehavior-prefix" / "UserBehavior.csv"
    ds = read_dataset(path, "taobao", on_bad_rows="skip")
    assert ds.interactions.height == 84_475
    assert ds.interactions["user"].n_unique() == 815
    assert ds.bad_rows.count == 1
    assert [b.line for b in ds.bad_rows.first] == [84476]
    counts = dict(ds.interactions.group_by("event").len().iter_rows())
    assert sum(counts.values()) == 84_475 and set(counts) == {"pv", "cart", "fav", "buy"}
