"""RecBole atomic files (``Name.inter`` and optionally ``Name.item``), so RecBole users can bring data.

Atomic files are tab-separated with a typed header, ``user_id:token  item_id:token  rating:float
timestamp:float``. Columns are found by field name without the type suffix; the catalogue's genres
come from the first ``token_seq`` field among ``genre``, ``class``, ``categories``, ``category``
(space-separated), and the title from ``movie_title`` or ``title``. Ids are tokens (any text).
"""

from __future__ import annotations

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
    lines, unterminated = read_lines(inter, on_bad_rows=on_bad_rows, bad=bad)
    names, _ = _header(inter, lines)
    fields = [
        Field(canon, kind, required=canon in ("user", "item"), source=source)
        for source, (canon, kind) in INTER_FIELDS.items()
    ]
    frame = parse_fields(
        inter,
        lines.slice(1),
        fields,
        separator="\t",
        unterminated=unterminated,
        on_bad_rows=on_bad_rows,
        bad=bad,
        header=names,
    )
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


def _only(folder: Path, suffix: str) -> Path:
    named = folder / f"{folder.name}{suffix}"
    if named.exists():
        return named
    found = sorted(folder.glob(f"*{suffix}"))
    if len(found) != 1:
        raise DataFormatError(folder, f"expected one {suffix} file, found {len(found)}")
    return found[0]


def _read_items(path: Path, on_bad_rows: OnBadRows, bad: BadRows) -> pl.DataFrame:
    lines, unterminated = read_lines(path, on_bad_rows=on_bad_rows, bad=bad)
    names, _ = _header(path, lines)
    fields = [Field("item", source="item_id")]
    title = next((n for n in TITLE_FIELDS if n in names), None)
    genre = next((n for n in GENRE_FIELDS if n in names), None)
    if title:
        fields.append(Field("title", required=False, source=title))
    if genre:
        fields.append(Field("genres", required=False, source=genre))
    frame = parse_fields(
        path,
        lines.slice(1),
        fields,
        separator="\t",
        unterminated=unterminated,
        on_bad_rows=on_bad_rows,
        bad=bad,
        header=names,
    )
    if genre:
        frame = frame.with_columns(pl.col("genres").str.split(" ").list.eval(pl.element().filter(pl.element() != "")))
    return frame
