"""RecBole atomic files (``Name.inter`` and optionally ``Name.item``), so RecBole users can bring data.

Atomic files are tab-separated with a typed header, ``user_id:token  item_id:token  rating:float
timestamp:float``. Columns are found by field name without the type suffix; the catalogue's genres
come from the first ``token_seq`` field among ``genre``, ``class``, ``categories``, ``category``
(space-separated), and the title from ``movie_title`` or ``title``. Ids are tokens (any text).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import polars as pl

from intentrec.data.schema import Dataset, make_dataset
from intentrec.data.textio import (
    BadRows,
    DataFormatError,
    Field,
    FieldType,
    OnBadRows,
    drop_duplicate_events,
    parse_fields,
    read_lines,
)

__all__ = ["read"]

INTER_FIELDS: dict[str, tuple[str, FieldType]] = {
    "user_id": ("user", "str"),
    "item_id": ("item", "str"),
    "rating": ("rating", "float"),
    "timestamp": ("timestamp", "timestamp"),
}
GENRE_FIELDS = ("genre", "class", "categories", "category")
TITLE_FIELDS = ("movie_title", "title")


def _header(path: Path, lines: pl.DataFrame) -> tuple[list[str], list[str]]:
    raw = lines["text"][0].split("\t")
    names, types = [], []
    for column in raw:
        name, _, kind = column.strip().partition(":")
        if not kind:
            raise DataFormatError(
                path,
                f"header field {column!r} has no ':type' suffix (RecBole atomic files name types)",
                line=1,
            )
        names.append(name)
        types.append(kind)
    return names, types


def read(path: Path, *, on_bad_rows: OnBadRows = "error") -> Dataset:
    """PATH is the folder holding ``<folder name>.inter`` (or any single ``.inter`` file)."""
    path = Path(path)
    inter = path if path.suffix == ".inter" else _only(path, ".inter")
    bad = BadRows()
    fields = [
        Field(canon, kind, required=canon in ("user", "item"), source=source)
        for source, (canon, kind) in INTER_FIELDS.items()
    ]
    frame = _read_atomic(inter, lambda names: fields, on_bad_rows, bad)
    if "timestamp" in frame.columns:
        frame = drop_duplicate_events(inter, frame, ["user", "item", "timestamp"], on_bad_rows=on_bad_rows, bad=bad)
    item_file = inter.with_suffix(".item")
    items = _read_items(item_file, on_bad_rows, bad) if item_file.exists() else None
    return make_dataset(
        inter.stem,
        frame,
        items,
        bad_rows=bad,
        sources=tuple(p for p in (inter, item_file) if p.exists()),
        options={"format": "recbole"},
    )


def _read_atomic(
    path: Path, fields_for: Callable[[list[str]], list[Field]], on_bad_rows: OnBadRows, bad: BadRows
) -> pl.DataFrame:
    """Read one atomic file: its typed header decides which ``fields_for(header names)`` are read."""
    lines, unterminated = read_lines(path, on_bad_rows=on_bad_rows, bad=bad)
    names, _ = _header(path, lines)
    return parse_fields(
        path,
        lines.slice(1),
        fields_for(names),
        separator="\t",
        unterminated=unterminated,
        on_bad_rows=on_bad_rows,
        bad=bad,
        header=names,
    )


def _only(folder: Path, suffix: str) -> Path:
    named = folder / f"{folder.name}{suffix}"
    if named.exists():
        return named
    found = sorted(folder.glob(f"*{suffix}"))
    if len(found) != 1:
        raise DataFormatError(folder, f"expected one {suffix} file, found {len(found)}")
    return found[0]


def _item_fields(names: list[str]) -> list[Field]:
    fields = [Field("item", source="item_id")]
    title = next((n for n in TITLE_FIELDS if n in names), None)
    genre = next((n for n in GENRE_FIELDS if n in names), None)
    if title:
        fields.append(Field("title", required=False, source=title))
    if genre:
        fields.append(Field("genres", required=False, source=genre))
    return fields


def _read_items(path: Path, on_bad_rows: OnBadRows, bad: BadRows) -> pl.DataFrame:
    frame = _read_atomic(path, _item_fields, on_bad_rows, bad)
    if "genres" in frame.columns:
        frame = frame.with_columns(pl.col("genres").str.split(" ").list.eval(pl.element().filter(pl.element() != "")))
    return frame
