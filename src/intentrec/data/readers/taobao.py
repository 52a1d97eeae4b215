"""Taobao UserBehavior (Alibaba, Tianchi data set 649).

``UserBehavior.csv`` has no header: ``user,item,category,behavior,timestamp`` with integer ids and
behaviours ``pv`` (item page view), ``cart``, ``fav`` and ``buy``. The behaviour becomes the log's
``event`` (and so the action-type intent); the category becomes the item's single ``genres`` entry.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from intentrec.data.schema import Dataset, make_dataset
from intentrec.data.textio import BadRows, Field, OnBadRows, drop_duplicate_events, read_delimited

__all__ = ["BEHAVIORS", "read"]

BEHAVIORS = ("pv", "cart", "fav", "buy")
FIELDS = (
    Field("user", "int"),
    Field("item", "int"),
    Field("category", "int"),
    Field("event", choices=BEHAVIORS),
    Field("timestamp", "timestamp"),
)


def read(path: Path, *, on_bad_rows: OnBadRows = "error") -> Dataset:
    path = Path(path)
    bad = BadRows()
    frame = read_delimited(path, FIELDS, separator=",", on_bad_rows=on_bad_rows, bad=bad)
    frame = drop_duplicate_events(path, frame, ["user", "item", "event", "timestamp"], on_bad_rows=on_bad_rows, bad=bad)
    frame = frame.with_columns(pl.col("user", "item", "category").cast(pl.String))
    items = frame.group_by("item", maintain_order=True).agg(
        pl.col("category").unique(maintain_order=True).alias("genres")
    )
    return make_dataset(
        path.stem,
        frame.select("line", "user", "item", "event", "timestamp"),
        items,
        bad_rows=bad,
        sources=(path,),
        options={"format": "taobao"},
    )
