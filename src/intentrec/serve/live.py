"""Model input for a user's live history: the trained history plus events posted since.

A user's history is the run's prepared interactions for that user (unless the user was deleted)
followed by the events the service has stored for them. Posted events get exactly the per-interaction
features that preparation gives the training log (`intentrec.data.sequences`,
`intentrec.data.intents`, `intentrec.data.batching`): the interaction's own intent labels (action,
format, recency) as categorical features, event and device codes, hour of day, the bucketed time gap,
and the short-term window size. A test checks that re-posting a user's logged events reproduces the
prepared features exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
import torch

from intentrec.data.batching import Batch, SequenceStore, gap_bucket
from intentrec.data.intents import DAY
from intentrec.data.sequences import Prepared
from intentrec.serve.events import Event

__all__ = ["Catalogue", "History", "LiveFeatures", "batch_of_histories"]


@dataclass
class History:
    """One user's interactions as model features, oldest first."""

    items: np.ndarray  # (n,) item_idx
    categorical: np.ndarray  # (n, C)
    gaps: np.ndarray  # (n,) gap bucket
    window: np.ndarray  # (n,) short-term window size
    timestamps: np.ndarray | None  # (n,) seconds, None when the data set has no timestamps
    unknown_items: int = 0  # posted events whose item the model does not know (kept in the store, not used)

    def __len__(self) -> int:
        return len(self.items)


class Catalogue:
    """The run's items as arrays indexed by item_idx (0 = padding): ids, titles, genres, series, release
    dates, format codes and training popularity."""

    def __init__(self, prepared: Prepared, popularity: np.ndarray, genre_hot: np.ndarray | None) -> None:
        items = prepared.items.sort("item_idx")
        self.n_items = items.height
        self.ids: list[str] = ["", *items["item"].to_list()]
        self.index = {item: i for i, item in enumerate(self.ids) if i}
        self.titles: list[str | None] = [None, *items["title"].to_list()] if "title" in items.columns else []
        self.popularity = popularity.astype(np.float64)
        self.genre_hot = genre_hot  # (I + 1, G) or None
        self.genre_classes: list[str] = []
        self.series: np.ndarray | None = None
        if "series" in items.columns and items["series"].null_count() < items.height:
            codes = items["series"].cast(pl.Categorical).to_physical().fill_null(-1).to_numpy().astype(np.int64)
            self.series = np.r_[-1, codes]
        self.release: np.ndarray | None = None  # seconds since the epoch, or -1 where unknown
        if "release_date" in items.columns:
            seconds = items["release_date"].cast(pl.Datetime("ms")).dt.epoch("s").fill_null(-1).to_numpy()
            self.release = np.r_[-1, seconds].astype(np.int64)
        self.format_code = (
            np.r_[0, items["format_code"].to_numpy()].astype(np.int64) if "format_code" in items.columns else None
        )
        genres = items["genre_codes"].to_list() if "genre_codes" in items.columns else [None] * items.height
        self.genre_sets: list[frozenset[int]] = [frozenset(), *(frozenset(g or ()) for g in genres)]
        raw = items["genres"].to_list() if "genres" in items.columns else [None] * items.height
        self.raw_genres: list[frozenset[str]] = [frozenset(), *(frozenset(g or ()) for g in raw)]

    def title(self, idx: int) -> str | None:
        return self.titles[idx] if self.titles else None


class LiveFeatures:
    """Features of posted events, computed the way preparation computes them for the training log."""

    def __init__(self, prepared: Prepared, store: SequenceStore, catalogue: Catalogue) -> None:
        self.store = store
        self.catalogue = catalogue
        self.has_timestamps = prepared.has_timestamps
        self.window_seconds = int(prepared.config.window_hours * 3600)
        self.window_items = prepared.config.window_items
        self.new_days = prepared.config.intents.new_days
        self.recent_days = prepared.config.intents.recent_days
        self.heads = {h.name: h for h in prepared.heads}
        self.vocabularies = {
            name: {v: i + 1 for i, v in enumerate(values)} for name, values in prepared.vocabularies.items()
        }
        self.fields = list(store.categorical_fields)
        self.cardinalities = np.array(store.cardinalities, dtype=np.int64)  # embedding rows per field
        action = self.heads.get("action")
        self.action_rule = ""
        if action is not None:
            source = action.source  # written by derive_intents: "event type" or "derived: ... (rule) ..."
            self.action_rule = (
                "event" if source == "event type"
                else "series" if "(series)" in source
                else "genre" if "(previous genre)" in source
                else "repeat"
            )  # fmt: skip
        frame = prepared.interactions
        self.base_timestamps = frame["timestamp"].to_numpy().astype(np.int64) if prepared.has_timestamps else None

    def base(self, row: int) -> History:
        """The user's prepared history (row into the run's users), as stored at training time."""
        s = self.store
        start, stop = int(s.offsets[row]), int(s.offsets[row] + s.n[row])
        ts = self.base_timestamps[start:stop] if self.base_timestamps is not None else None
        return History(s.items[start:stop], s.categorical[start:stop], s.gaps[start:stop], s.window_len[start:stop], ts)

    def empty(self) -> History:
        c = len(self.fields)
        ts = np.zeros(0, dtype=np.int64) if self.has_timestamps else None
        none = np.zeros(0, dtype=np.int64)
        return History(none, np.zeros((0, c), dtype=np.int64), none, none, ts)

    def extend(self, base: History, events: Sequence[Event]) -> History:
        """``base`` followed by ``events`` (in time order; ties keep arrival order)."""
        known = [e for e in events if e.item in self.catalogue.index]
        unknown = len(events) - len(known)
        if self.has_timestamps:
            known = sorted(known, key=lambda e: e.timestamp)
        if not known:
            return History(base.items, base.categorical, base.gaps, base.window, base.timestamps, unknown)
        cat = self.catalogue
        items = np.array([cat.index[e.item] for e in known], dtype=np.int64)
        all_items = np.r_[base.items, items]
        n_base, m = len(base.items), len(items)
        ts_all: np.ndarray | None = None
        if self.has_timestamps and base.timestamps is not None:
            ts = np.array([e.timestamp for e in known], dtype=np.int64)
            ts_all = np.r_[base.timestamps, ts]
            previous = np.r_[ts_all[n_base - 1] if n_base else -1, ts[:-1]]
            gaps = np.where(np.arange(m) + n_base > 0, ts - previous, -1).astype(np.float64)
            monotone = np.maximum.accumulate(ts_all)
            first = np.searchsorted(monotone, monotone[n_base:] - self.window_seconds, side="left")
            window = np.arange(n_base, n_base + m) - first + 1
        else:
            ts = np.zeros(m, dtype=np.int64)
            gaps = np.full(m, -1.0)
            window = np.minimum(np.arange(n_base, n_base + m) + 1, self.window_items)
        columns = []
        for name in self.fields:
            if name in self.heads:
                columns.append(self._label(name, all_items, n_base, known, ts) + 1)
            elif name in self.vocabularies:
                codes = self.vocabularies[name]
                columns.append(np.array([codes.get(getattr(e, name) or "", 0) for e in known], dtype=np.int64))
            elif name == "hour":
                columns.append((ts % 86_400) // 3600 + 1)
            else:  # pragma: no cover - the store names no other fields
                raise ValueError(f"unknown categorical field {name!r}")
        categorical = np.stack(columns, axis=1) if columns else np.zeros((m, 0), dtype=np.int64)
        # A value the training log never had (a rewatch in a log without repeats, a new hour) has no
        # embedding: it becomes 0, "unknown", as an unknown event type does.
        categorical = np.where(categorical < self.cardinalities, categorical, 0)
        return History(
            items=all_items,
            categorical=np.r_[base.categorical, categorical],
            gaps=np.r_[base.gaps, gap_bucket(gaps)],
            window=np.r_[base.window, window.astype(np.int64)],
            timestamps=ts_all,
            unknown_items=unknown,
        )

    def _label(self, head: str, items: np.ndarray, n_base: int, events: Sequence[Event], ts: np.ndarray) -> np.ndarray:
        """The head's label of each new interaction (-1 where unknown), as `derive_intents` gives it."""
        cat = self.catalogue
        new = items[n_base:]
        if head == "format":
            assert cat.format_code is not None
            return cat.format_code[new] - 1
        if head == "recency":
            assert cat.release is not None
            release = cat.release[new]
            age = ts - release
            label = np.where(age <= self.new_days * DAY, 0, np.where(age <= self.recent_days * DAY, 1, 2))
            return np.where(release < 0, -1, label)
        if head == "action":
            if self.action_rule == "event":
                classes = {c: i for i, c in enumerate(self.heads["action"].classes)}
                return np.array([classes.get(e.event or "", -1) for e in events], dtype=np.int64)
            out = np.empty(len(new), dtype=np.int64)
            for j, position in enumerate(range(n_base, len(items))):
                item, before = items[position], items[:position]
                if (before == item).any():
                    out[j] = 2  # rewatch
                elif self.action_rule == "series" and cat.series is not None:
                    series = cat.series[item]
                    out[j] = 0 if series >= 0 and (cat.series[before] == series).any() else 1
                elif self.action_rule == "genre" and position > 0:
                    out[j] = 0 if cat.raw_genres[item] & cat.raw_genres[items[position - 1]] else 1
                else:
                    out[j] = 1  # discover
            return out
        raise ValueError(f"head {head!r} is not a categorical feature")


def batch_of_histories(histories: Sequence[History], max_len: int) -> Batch:
    """A left-padded inference batch of each history's latest ``max_len`` interactions."""
    b = len(histories)
    c = histories[0].categorical.shape[1] if b else 0
    items = np.zeros((b, max_len), dtype=np.int64)
    categorical = np.zeros((b, max_len, c), dtype=np.int64)
    gaps = np.zeros((b, max_len), dtype=np.int64)
    window = np.zeros((b, max_len), dtype=np.int64)
    mask = np.zeros((b, max_len), dtype=bool)
    for r, h in enumerate(histories):
        n = min(len(h), max_len)
        if n == 0:
            continue
        items[r, -n:] = h.items[-n:]
        categorical[r, -n:] = h.categorical[-n:]
        gaps[r, -n:] = h.gaps[-n:]
        window[r, -n:] = np.minimum(h.window[-n:], np.arange(1, n + 1))  # cannot reach before the kept window
        mask[r, -n:] = True
    zeros = torch.zeros((b, max_len), dtype=torch.int64)
    return Batch(
        users=torch.zeros(b, dtype=torch.int64),
        items=torch.from_numpy(items),
        categorical=torch.from_numpy(categorical),
        time_gaps=torch.from_numpy(gaps),
        window_len=torch.from_numpy(window),
        mask=torch.from_numpy(mask),
        target_items=zeros,
        target_weights=torch.zeros((b, max_len)),
        intent_targets={},
        intent_target_mask={},
    )
