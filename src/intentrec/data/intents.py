"""Per-interaction intent labels, derived from the log and the catalogue.

Each enabled head labels every interaction; the model, reading interactions up to k, is trained to
predict the labels of interaction k+1 (see ../shared/INTENTREC.md). The heads:

``action`` (single-label)
    From the log's event type where it has one (Taobao: pv, cart, fav, buy; classes by frequency).
    Otherwise derived: **rewatch** when the user engaged with this very item before; **continue** when
    the catalogue has series and the user engaged with another item of the same series before, or,
    in a catalogue without series, when the item shares a genre/attribute with the user's previous
    interaction (continuing within a category or brand, as on Amazon); **discover** otherwise.
``genre`` (multi-label)
    Multi-hot over the item's genres/attributes, keeping the ``genre_top_n`` most frequent values (by
    interactions) and mapping the rest to ``other``.
``format`` (single-label)
    film or series, from the catalogue; disabled when every item has the same format.
``recency`` (single-label)
    Time since release at event time: **new** (<= ``new_days``, pre-release events included),
    **recent** (<= ``recent_days``), **evergreen**. Needs timestamps and day-precise release dates.

A head whose inputs the data set lacks is disabled, with the reason logged and recorded in the
manifest; it is never filled with made-up values. An interaction whose label is unknown (an item with
no genres, an unknown release date) gets a null label, which the loss ignores.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal

import polars as pl

__all__ = ["HEADS", "IntentConfig", "IntentHead", "IntentLabels", "derive_intents"]

log = logging.getLogger(__name__)

HEADS = ("action", "genre", "format", "recency")
DERIVED_ACTIONS = ("continue", "discover", "rewatch")
RECENCY_CLASSES = ("new", "recent", "evergreen")
DAY = 86_400


@dataclass(frozen=True)
class IntentConfig:
    """Which heads to derive and how. Every field has a default that suits most data sets."""

    heads: tuple[str, ...] = HEADS  # heads to try; those whose inputs are missing are disabled
    action_source: Literal["auto", "event", "derived"] = "auto"  # auto: event type where the log has one
    genre_top_n: int = 30  # genres kept by frequency; the rest become "other"
    new_days: int = 7  # recency "new": released at most this many days before the event
    recent_days: int = 30  # recency "recent": at most this many days

    def __post_init__(self) -> None:
        unknown = [h for h in self.heads if h not in HEADS]
        if unknown:
            raise ValueError(f"unknown intent head(s) {unknown}; choose from {HEADS}")
        if self.action_source not in ("auto", "event", "derived"):
            raise ValueError(f"action_source must be auto, event or derived, got {self.action_source!r}")
        if self.genre_top_n < 1:
            raise ValueError(f"genre_top_n must be at least 1, got {self.genre_top_n}")
        if not 0 <= self.new_days < self.recent_days:
            raise ValueError(f"need 0 <= new_days < recent_days, got {self.new_days} and {self.recent_days}")


@dataclass(frozen=True)
class IntentHead:
    name: str
    classes: tuple[str, ...]
    multi_label: bool = False
    source: str = ""  # how the label was derived, for the manifest

    @property
    def column(self) -> str:
        return f"intent_{self.name}"


@dataclass(frozen=True)
class IntentLabels:
    frame: pl.DataFrame  # the input frame plus one `intent_<head>` column per enabled head
    heads: tuple[IntentHead, ...]
    disabled: dict[str, str] = field(default_factory=dict)  # head -> reason

    def head(self, name: str) -> IntentHead:
        for h in self.heads:
            if h.name == name:
                return h
        raise KeyError(f"intent head {name!r} is not enabled (disabled: {self.disabled or 'none'})")


def _index_of(classes: tuple[str, ...], column: pl.Expr) -> pl.Expr:
    return column.replace_strict(list(classes), list(range(len(classes))), default=pl.lit(None), return_dtype=pl.Int16)


def derive_intents(
    interactions: pl.DataFrame,
    items: pl.DataFrame,
    config: IntentConfig | None = None,
    *,
    release_precision: str = "day",
) -> IntentLabels:
    """Label each interaction. ``interactions`` must be in per-user time order with columns ``user``
    and ``item`` (any id type matching ``items.item``) and optionally ``timestamp`` and ``event``."""
    cfg = config or IntentConfig()
    frame = interactions.join(items, on="item", how="left", maintain_order="left")
    heads: list[IntentHead] = []
    disabled: dict[str, str] = {}
    columns: list[pl.Expr] = []

    def has(column: str) -> bool:
        return column in frame.columns and frame[column].null_count() < frame.height

    for name in cfg.heads:
        reason = None
        if name == "action":
            use_event = has("event") and cfg.action_source in ("auto", "event")
            if cfg.action_source == "event" and not has("event"):
                reason = "action_source is 'event' but the log has no event types"
            elif use_event:
                counts = frame.group_by("event").len().sort(["len", "event"], descending=[True, False])
                classes = tuple(counts["event"].to_list())
                heads.append(IntentHead("action", classes, source="event type"))
                columns.append(_index_of(classes, pl.col("event")).alias("intent_action"))
            else:
                rule = "series" if has("series") else "previous genre" if has("genres") else "repeat only"
                heads.append(
                    IntentHead("action", DERIVED_ACTIONS, source=f"derived: rewatch / continue ({rule}) / discover")
                )
                columns.append(_derived_action(rule).alias("intent_action"))
        elif name == "genre":
            if not has("genres"):
                reason = "the catalogue has no genres or attributes"
            else:
                head, expr = _genre_head(frame, cfg.genre_top_n)
                heads.append(head)
                columns.append(expr.alias("intent_genre"))
        elif name == "format":
            if not has("format"):
                reason = "the catalogue has no format (film/series) column"
            elif frame["format"].drop_nulls().n_unique() < 2:
                reason = f"every item has the same format ({frame['format'].drop_nulls()[0]}): nothing to predict"
            else:
                classes = ("film", "series")
                heads.append(IntentHead("format", classes, source="catalogue format"))
                columns.append(_index_of(classes, pl.col("format")).alias("intent_format"))
        elif name == "recency":
            if "timestamp" not in frame.columns:
                reason = "the log has no timestamps"
            elif not has("release_date"):
                reason = "the catalogue has no release dates"
            elif release_precision != "day":
                reason = f"release dates are only known to the {release_precision}: new/recent cannot be told apart"
            else:
                heads.append(
                    IntentHead(
                        "recency",
                        RECENCY_CLASSES,
                        source=f"age at event: new <= {cfg.new_days} d, recent <= {cfg.recent_days} d",
                    )
                )
                columns.append(recency_bucket(cfg.new_days, cfg.recent_days).alias("intent_recency"))
        if reason is not None:
            disabled[name] = reason
            log.info("intent head %r disabled: %s", name, reason)

    labelled = frame.with_columns(columns) if columns else frame
    keep = [*interactions.columns, *[h.column for h in heads]]
    return IntentLabels(labelled.select(keep), tuple(heads), disabled)


def recency_bucket(new_days: int, recent_days: int) -> pl.Expr:
    """0 new / 1 recent / 2 evergreen from ``timestamp`` (seconds) and ``release_date``; null if unknown."""
    release = pl.col("release_date").cast(pl.Datetime("ms")).dt.epoch("s")
    age = pl.col("timestamp") - release
    return (
        pl.when(release.is_null())
        .then(None)
        .when(age <= new_days * DAY)
        .then(0)
        .when(age <= recent_days * DAY)
        .then(1)
        .otherwise(2)
        .cast(pl.Int16)
    )


def _derived_action(rule: str) -> pl.Expr:
    seen_item = pl.int_range(pl.len()).over("user", "item") > 0
    if rule == "series":
        seen_series = pl.int_range(pl.len()).over("user", "series") > 0
        continues = pl.col("series").is_not_null() & seen_series
    elif rule == "previous genre":
        previous = pl.col("genres").shift(1).over("user")
        continues = pl.col("genres").list.set_intersection(previous).list.len().fill_null(0) > 0
    else:
        continues = pl.lit(False)
    return pl.when(seen_item).then(2).when(continues).then(0).otherwise(1).cast(pl.Int16)


def _genre_head(frame: pl.DataFrame, top_n: int) -> tuple[IntentHead, pl.Expr]:
    counts = (
        frame.select(pl.col("genres").list.unique())
        .explode("genres")
        .drop_nulls()
        .group_by("genres")
        .len()
        .sort(["len", "genres"], descending=[True, False])
    )
    vocabulary = counts["genres"].to_list()
    kept = tuple(vocabulary[:top_n])
    classes = kept + (("other",) if len(vocabulary) > top_n else ())
    other = len(kept) if len(vocabulary) > top_n else None
    mapped = pl.col("genres").list.eval(
        pl.element().replace_strict(list(kept), list(range(len(kept))), default=other, return_dtype=pl.Int16)
    )
    labels = mapped.list.unique().list.sort()
    expr = pl.when(pl.col("genres").list.len().fill_null(0) > 0).then(labels).otherwise(None)
    source = f"top {len(kept)} of {len(vocabulary)} genres/attributes" + (" + other" if other is not None else "")
    return IntentHead("genre", classes, multi_label=True, source=source), expr
