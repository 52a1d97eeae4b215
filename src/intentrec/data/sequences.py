"""From a `Dataset` to id-mapped, ordered, labelled user sequences with a split.

* Order: per user by timestamp; ties, and data sets without timestamps, keep file order.
* Optional k-core filter (users and items with at least k interactions, iterated to a fixed point).
* Id maps: users and items become 1..N (0 is padding), in the natural order of their source ids
  (numeric where every id is an integer); the maps are saved with the prepared data.
* Splits, both expressed per user as ``train_end <= valid_end <= n``: interactions
  ``[0, train_end)`` train, ``[train_end, valid_end)`` are validation targets and ``[valid_end, n)`` test
  targets, each predicted from everything before it.

  - ``leave_one_out``: the last interaction is the test target, the one before it the validation
    target (users with fewer than 3 interactions only train);
  - ``temporal``: two global cut times at the (1 - valid - test) and (1 - test) quantiles of all
    timestamps; so valid precedes test in time for every user.
* The short-term window of position k: the number of interactions p..k with T_k - T_p <= H
  (``window_hours``), or the last ``window_items`` when there are no timestamps; one vectorised
  ``searchsorted`` over the whole log.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import polars as pl

from intentrec.data.intents import IntentConfig, IntentHead, derive_intents
from intentrec.data.schema import Dataset

__all__ = ["CATEGORICAL_FEATURES", "Prepared", "SequenceConfig", "build_sequences", "kcore", "window_lengths"]

# Per-interaction categorical side features taken from the log when present (codes 1..V; 0 = padding).
CATEGORICAL_FEATURES = ("event", "device")


@dataclass(frozen=True)
class SequenceConfig:
    """How sequences are built and split; every field has a working default."""

    split: Literal["leave_one_out", "temporal"] = "leave_one_out"
    temporal_valid: float = 0.1  # temporal split: share of events (by time) in validation
    temporal_test: float = 0.1  # temporal split: share of events (by time) in test
    min_user_interactions: int = 0  # k-core: 0 turns the filter off
    min_item_interactions: int = 0
    window_hours: float = 168.0  # short-term window H (the paper's one week)
    window_items: int = 10  # short-term window w when there are no timestamps
    intents: IntentConfig = field(default_factory=IntentConfig)
    exclude_users: tuple[str, ...] = ()  # source user ids left out entirely (deleted users)

    def __post_init__(self) -> None:
        if self.split not in ("leave_one_out", "temporal"):
            raise ValueError(f"split must be leave_one_out or temporal, got {self.split!r}")
        if not (self.temporal_valid > 0 and self.temporal_test > 0 and self.temporal_valid + self.temporal_test < 1):
            raise ValueError("temporal_valid and temporal_test must be positive and add up to less than 1")
        if self.window_hours <= 0 or self.window_items < 1:
            raise ValueError("window_hours must be positive and window_items at least 1")
        if self.min_user_interactions < 0 or self.min_item_interactions < 0:
            raise ValueError("k-core thresholds cannot be negative")


@dataclass(frozen=True)
class Prepared:
    """Ordered, id-mapped, labelled sequences and their split; what `data prepare` writes."""

    interactions: pl.DataFrame  # user_idx, item_idx, position, [timestamp], weight, window_len, features, intent_*
    users: pl.DataFrame  # user_idx, user, n, train_end, valid_end
    items: pl.DataFrame  # item_idx, item, catalogue columns, genre_codes
    heads: tuple[IntentHead, ...]
    disabled_heads: dict[str, str]
    vocabularies: dict[str, list[str]]  # categorical feature -> values (code = index + 1)
    config: SequenceConfig
    has_timestamps: bool

    @property
    def n_users(self) -> int:
        return self.users.height

    @property
    def n_items(self) -> int:
        return self.items.height


def _natural_order(ids: pl.Series) -> pl.Series:
    """Unique ids sorted numerically when all are integers, else as text."""
    unique = ids.unique()
    as_int = unique.cast(pl.Int64, strict=False)
    if as_int.null_count() == 0:
        return unique.gather(as_int.arg_sort())
    return unique.sort()


def kcore(frame: pl.DataFrame, min_user: int, min_item: int) -> pl.DataFrame:
    """Keep users and items with at least the given counts, repeating until nothing changes."""
    if min_user <= 1 and min_item <= 1:
        return frame
    while True:
        before = frame.height
        if min_item > 1:
            frame = frame.filter(pl.len().over("item") >= min_item)
        if min_user > 1:
            frame = frame.filter(pl.len().over("user") >= min_user)
        if frame.height == before:
            return frame


def window_lengths(user_idx: np.ndarray, timestamps: np.ndarray | None, hours: float, items: int) -> np.ndarray:
    """For each interaction (sorted by user, then time) the size of its short-term window, itself included."""
    n = len(user_idx)
    if n == 0:
        return np.zeros(0, dtype=np.int32)
    starts = np.r_[0, np.flatnonzero(np.diff(user_idx)) + 1]
    position = np.arange(n) - np.repeat(starts, np.diff(np.r_[starts, n]))
    if timestamps is None:
        return np.minimum(position + 1, items).astype(np.int32)
    horizon = int(hours * 3600)
    span = int(timestamps.max() - timestamps.min()) + horizon + 1
    # Offsetting each user's timestamps by rank * span makes one array sorted across users, so a
    # single searchsorted finds every window start without crossing into the previous user.
    rank = np.cumsum(np.r_[0, np.diff(user_idx) != 0])
    key = rank.astype(np.int64) * span + (timestamps - timestamps.min())
    first = np.searchsorted(key, key - horizon, side="left")
    return (np.arange(n) - first + 1).astype(np.int32)


def build_sequences(dataset: Dataset, config: SequenceConfig | None = None) -> Prepared:
    cfg = config or SequenceConfig()
    frame = dataset.interactions.with_row_index("__order")
    if cfg.exclude_users:
        frame = frame.filter(~pl.col("user").is_in(list(cfg.exclude_users)))
    frame = kcore(frame, cfg.min_user_interactions, cfg.min_item_interactions)
    if frame.height == 0:
        raise ValueError(f"{dataset.name}: no interactions left after filtering")
    users = _natural_order(frame["user"])
    items_order = _natural_order(frame["item"])
    user_map = pl.DataFrame({"user": users, "user_idx": pl.int_range(1, users.len() + 1, dtype=pl.Int32, eager=True)})
    item_map = pl.DataFrame(
        {"item": items_order, "item_idx": pl.int_range(1, items_order.len() + 1, dtype=pl.Int32, eager=True)}
    )
    frame = frame.join(user_map, on="user").join(item_map, on="item")
    order = ["user_idx", "timestamp", "__order"] if dataset.has_timestamps else ["user_idx", "__order"]
    frame = frame.sort(order)

    catalogue = item_map.join(dataset.items, on="item", how="left").sort("item_idx")
    precision = str(dataset.options.get("release_precision", "day"))
    labels = derive_intents(frame, catalogue.drop("item_idx"), cfg.intents, release_precision=precision)
    frame = labels.frame

    ts = frame["timestamp"].to_numpy() if dataset.has_timestamps else None
    user_idx = frame["user_idx"].to_numpy()
    extra: list[pl.Series | pl.Expr] = [
        pl.int_range(pl.len()).over("user_idx").cast(pl.Int32).alias("position"),
        pl.Series("window_len", window_lengths(user_idx, ts, cfg.window_hours, cfg.window_items)),
    ]
    if "weight" in frame.columns:
        extra.append(pl.col("weight").fill_null(1.0).cast(pl.Float32))
    else:
        extra.append(pl.lit(1.0, dtype=pl.Float32).alias("weight"))
    if dataset.has_timestamps:
        extra.append((pl.col("timestamp") - pl.col("timestamp").shift(1).over("user_idx")).alias("time_gap"))
        extra.append(((pl.col("timestamp") % 86_400) // 3600).cast(pl.Int8).alias("hour"))
    frame = frame.with_columns(extra)

    vocabularies: dict[str, list[str]] = {}
    for name in CATEGORICAL_FEATURES:
        if name in frame.columns and frame[name].null_count() < frame.height:
            values = frame[name].drop_nulls().unique().sort().to_list()
            vocabularies[name] = values
            frame = frame.with_columns(
                pl.col(name)
                .replace_strict(values, list(range(1, len(values) + 1)), default=0, return_dtype=pl.Int16)
                .alias(f"feat_{name}")
            )
    keep = ["user_idx", "item_idx", "position", "weight", "window_len"]
    keep += [c for c in ("timestamp", "time_gap", "hour") if c in frame.columns]
    keep += [f"feat_{n}" for n in vocabularies]
    keep += [h.column for h in labels.heads]
    frame = frame.select(keep)

    users_frame = _split(frame, user_map, cfg, dataset.has_timestamps)
    items_frame = _catalogue(catalogue, labels.heads)
    return Prepared(
        interactions=frame,
        users=users_frame,
        items=items_frame,
        heads=labels.heads,
        disabled_heads=labels.disabled,
        vocabularies=vocabularies,
        config=cfg,
        has_timestamps=dataset.has_timestamps,
    )


def _split(frame: pl.DataFrame, user_map: pl.DataFrame, cfg: SequenceConfig, has_timestamps: bool) -> pl.DataFrame:
    counts = frame.group_by("user_idx").agg(pl.len().cast(pl.Int32).alias("n"))
    if cfg.split == "leave_one_out":
        ends = counts.with_columns(
            pl.when(pl.col("n") >= 3).then(pl.col("n") - 2).otherwise(pl.col("n")).alias("train_end"),
            pl.when(pl.col("n") >= 3).then(pl.col("n") - 1).otherwise(pl.col("n")).alias("valid_end"),
        )
    else:
        if not has_timestamps:
            raise ValueError("the temporal split needs timestamps; this data set has none (use leave_one_out)")
        ts = frame["timestamp"]
        t_valid = ts.quantile(1 - cfg.temporal_valid - cfg.temporal_test, "lower")
        t_test = ts.quantile(1 - cfg.temporal_test, "lower")
        ends = frame.group_by("user_idx").agg(
            pl.len().cast(pl.Int32).alias("n"),
            (pl.col("timestamp") <= t_valid).sum().cast(pl.Int32).alias("train_end"),
            (pl.col("timestamp") <= t_test).sum().cast(pl.Int32).alias("valid_end"),
        )
    return (
        user_map.join(ends, on="user_idx")
        .sort("user_idx")
        .select("user_idx", "user", "n", pl.col("train_end").cast(pl.Int32), pl.col("valid_end").cast(pl.Int32))
    )


def _catalogue(catalogue: pl.DataFrame, heads: tuple[IntentHead, ...]) -> pl.DataFrame:
    out = catalogue
    genre = next((h for h in heads if h.name == "genre"), None)
    if genre is not None:
        kept = [c for c in genre.classes if c != "other"]
        other = len(kept) if "other" in genre.classes else None
        out = out.with_columns(
            pl.col("genres")
            .list.eval(pl.element().replace_strict(kept, list(range(len(kept))), default=other, return_dtype=pl.Int16))
            .list.unique()
            .list.sort()
            .alias("genre_codes")
        )
    if "format" in out.columns:
        out = out.with_columns(
            pl.col("format")
            .replace_strict(["film", "series"], [1, 2], default=0, return_dtype=pl.Int8)
            .alias("format_code")
        )
    return out
