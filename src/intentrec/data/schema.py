"""The data model every reader returns: an interaction log and an item catalogue.

Interactions (one row per event, in source-file order):

========== ========= =========================================================================
column     type      meaning
========== ========= =========================================================================
user       String    the source's user id
item       String    the source's item id
timestamp  Int64     seconds since the epoch; absent when the source has none (S3-Rec)
event      String    optional event/action type (Taobao: pv, cart, fav, buy)
weight     Float64   optional engagement weight (watch fraction, duration); 1 when absent
rating     Float64   optional explicit rating (MovieLens)
device     String    optional device
session    String    optional session id
========== ========= =========================================================================

Items (one row per catalogue entry):

============= ============= ================================================================
column        type          meaning
============= ============= ================================================================
item          String        the source's item id
title         String        optional
genres        List[String]  optional genres or attributes (multi-valued)
format        String        optional: "film" or "series"
series        String        optional series id (episodes of one series share it)
release_date  Date          optional
duration      Float64       optional running time in minutes
============= ============= ================================================================

Ids are kept as strings so that token ids (RecBole, CSV) and integer ids (MovieLens, Taobao) share
one model; readers of integer-id formats check that ids are integers before they become strings.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from intentrec.data.textio import BadRows

__all__ = ["INTERACTION_SCHEMA", "ITEM_SCHEMA", "Dataset", "make_dataset"]

INTERACTION_SCHEMA: Mapping[str, pl.DataType] = {
    "user": pl.String(),
    "item": pl.String(),
    "timestamp": pl.Int64(),
    "event": pl.String(),
    "weight": pl.Float64(),
    "rating": pl.Float64(),
    "device": pl.String(),
    "session": pl.String(),
}
ITEM_SCHEMA: Mapping[str, pl.DataType] = {
    "item": pl.String(),
    "title": pl.String(),
    "genres": pl.List(pl.String()),
    "format": pl.String(),
    "series": pl.String(),
    "release_date": pl.Date(),
    "duration": pl.Float64(),
}
FORMATS = ("film", "series")


@dataclass(frozen=True)
class Dataset:
    """An interaction log and its item catalogue, as read from one source."""

    name: str
    interactions: pl.DataFrame
    items: pl.DataFrame
    bad_rows: BadRows = field(default_factory=BadRows)
    sources: tuple[Path, ...] = ()
    options: Mapping[str, object] = field(default_factory=dict)

    @property
    def has_timestamps(self) -> bool:
        return "timestamp" in self.interactions.columns

    def has(self, column: str) -> bool:
        """Whether the log or the catalogue has this optional column with at least one value."""
        for frame in (self.interactions, self.items):
            if column in frame.columns and frame[column].null_count() < frame.height:
                return True
        return False


def _conform(
    frame: pl.DataFrame, schema: Mapping[str, pl.DataType], required: tuple[str, ...], what: str
) -> pl.DataFrame:
    unknown = [c for c in frame.columns if c not in schema]
    if unknown:
        raise ValueError(f"{what}: unknown column(s) {unknown}; allowed: {list(schema)}")
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ValueError(f"{what}: missing required column(s) {missing}")
    return frame.select([pl.col(c).cast(schema[c]) for c in schema if c in frame.columns])


def make_dataset(
    name: str,
    interactions: pl.DataFrame,
    items: pl.DataFrame | None = None,
    *,
    bad_rows: BadRows | None = None,
    sources: tuple[Path, ...] = (),
    options: Mapping[str, object] | None = None,
) -> Dataset:
    """Build a `Dataset`, casting to the canonical types and adding catalogue rows for items
    that appear only in the log (so every interacted item has a catalogue row)."""
    interactions = _conform(
        interactions.drop("line", strict=False), INTERACTION_SCHEMA, ("user", "item"), "interactions"
    )
    if items is None:
        items = pl.DataFrame({"item": []}, schema={"item": pl.String()})
    items = _conform(items.drop("line", strict=False), ITEM_SCHEMA, ("item",), "items")
    if "format" in items.columns:
        wrong = items.filter(pl.col("format").is_not_null() & ~pl.col("format").is_in(FORMATS))
        if wrong.height:
            raise ValueError(f"items: column 'format' must be one of {FORMATS}, got {wrong['format'][0]!r}")
    items = items.unique("item", keep="first", maintain_order=True)
    log_only = interactions.select("item").unique(maintain_order=True).join(items.select("item"), on="item", how="anti")
    if log_only.height:
        items = pl.concat([items, log_only], how="diagonal_relaxed")
    return Dataset(
        name=name,
        interactions=interactions,
        items=items,
        bad_rows=bad_rows if bad_rows is not None else BadRows(),
        sources=sources,
        options=dict(options or {}),
    )
