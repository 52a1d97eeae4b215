"""S3-Rec preprocessed sequences (Zhou et al., CIKM 2020): Amazon Beauty, Toys_and_Games, LastFM, ...

``Name.txt`` has one user per line, ``user item item ...`` in time order with integer ids and no
timestamps; ``Name_item2attributes.json`` beside it maps item ids to attribute ids (Amazon: category
path entries and brand; LastFM: tags), which become the catalogue's ``genres``.

With no timestamps, order within a user is the line's order, and the short-term window falls back to
the last w items (see `intentrec.data.sequences`).
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from intentrec.data.schema import Dataset, make_dataset
from intentrec.data.textio import BadRows, DataFormatError, OnBadRows, read_lines

__all__ = ["read"]


def read(path: Path, *, on_bad_rows: OnBadRows = "error") -> Dataset:
    """Read ``Name.txt`` (PATH) and, when present, ``Name_item2attributes.json`` beside it."""
    path = Path(path)
    if path.is_dir():
        raise DataFormatError(path, "give the sequence file itself (for example Beauty.txt), not its folder")
    bad = BadRows()
    lines, unterminated = read_lines(path, on_bad_rows=on_bad_rows, bad=bad)
    tokens = pl.col("text").str.strip_chars().str.split(" ").list.eval(pl.element().filter(pl.element() != ""))
    parsed = lines.with_columns(tokens.alias("tokens")).with_columns(
        pl.col("tokens").list.eval(pl.element().cast(pl.Int64, strict=False).is_null()).alias("not_int")
    )
    first_bad = pl.col("not_int").list.arg_max()
    reason = pl.coalesce(
        pl.when(pl.col("tokens").list.len() < 2).then(
            pl.format(
                "expected a user id followed by at least one item id, found {} value(s)",
                pl.col("tokens").list.len(),
            )
        ),
        pl.when(pl.col("not_int").list.any()).then(
            pl.format(
                "column '{}': '{}' is not an integer",
                pl.when(first_bad == 0).then(pl.lit("user")).otherwise(pl.format("item {}", first_bad)),
                pl.col("tokens").list.get(first_bad),
            )
        ),
    )
    if unterminated:
        last = parsed["line"].max()
        reason = (
            pl.when((pl.col("line") == last) & reason.is_not_null())
            .then(pl.format("{} (the last line has no newline: truncated record?)", reason))
            .otherwise(reason)
        )
    parsed = parsed.with_columns(reason.alias("reason"))
    problems = parsed.filter(pl.col("reason").is_not_null()).select("line", "reason")
    if problems.height:
        if on_bad_rows == "error":
            line, message = problems.sort("line").row(0)
            raise DataFormatError(path, message, line=int(line))
        bad.add(path, problems)
    good = parsed.filter(pl.col("reason").is_null())
    users = good.select("line", pl.col("tokens").list.first().alias("user"))
    duplicated = users.filter(pl.col("user").is_duplicated())
    if duplicated.height:
        second = duplicated.sort("line").filter(pl.col("user").is_first_distinct().not_()).row(0, named=True)
        raise DataFormatError(path, f"user {second['user']} appears on more than one line", line=int(second["line"]))
    interactions = good.select(
        pl.col("tokens").list.first().alias("user"),
        pl.col("tokens").list.slice(1).alias("item"),
    ).explode("item")
    items = _read_attributes(path.with_name(path.stem + "_item2attributes.json"))
    return make_dataset(
        path.stem,
        interactions,
        items,
        bad_rows=bad,
        sources=tuple(p for p in (path, path.with_name(path.stem + "_item2attributes.json")) if p.exists()),
        options={"format": "s3rec"},
    )


def _read_attributes(path: Path) -> pl.DataFrame | None:
    if not path.exists():
        return None
    try:
        mapping = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataFormatError(path, f"not valid JSON: {exc.msg} (column {exc.colno})", line=exc.lineno) from None
    if not isinstance(mapping, dict):
        raise DataFormatError(path, "expected a JSON object mapping item ids to lists of attribute ids")
    items, genres = [], []
    for key, values in mapping.items():
        if not str(key).isdigit():
            raise DataFormatError(path, f"item id {key!r} is not an integer")
        if not isinstance(values, list) or not all(isinstance(v, int) for v in values):
            raise DataFormatError(path, f"item {key}: attributes must be a list of integers, got {values!r}")
        items.append(str(int(key)))
        genres.append([str(v) for v in values])
    return pl.DataFrame({"item": items, "genres": genres}, schema={"item": pl.String, "genres": pl.List(pl.String)})
