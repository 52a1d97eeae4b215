"""Batches of left-padded tensors from prepared sequences.

`SequenceStore` holds the prepared interactions as flat NumPy columns with per-user offsets, so a
batch is gathered with one fancy index of shape (B, L): no Python loop over users or positions.

Training batches (``split="train"``) hold, per user, the last ``max_len + 1`` training interactions:
inputs are interactions ``0..n-2`` of that window and targets ``1..n-1`` (the next item and its intent
labels at every position). Evaluation batches hold, per target interaction, the ``max_len``
interactions before it, and the target at the last position. Training can take its batches that way
too (``samples="prefixes"``: one row per training target, shuffled across users), as the trainers of
S3-Rec's successors (FMLP-Rec, BSARec, WEARec) do: every prediction is then made from the last
position, as at inference, and an epoch has one step per ``batch_size`` targets instead of users.

A training or evaluation batch is as wide as its longest row (at most ``max_len``): columns that are
padding in every row are left out, which changes no model's output at a real position (every model
counts positions from the first real interaction). On data with short histories most of a
``max_len``-wide batch is still padding (Amazon Beauty: 87% at ``max_len`` 50), so a training batch
can be computed as groups of rows of similar length (`Batch.split_by_length`, the same update), and
evaluation takes its targets in order of history length (`length_order`).

Shapes: B batch, L max_len, C categorical fields, G genre classes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from intentrec.data.sequences import Prepared

__all__ = ["Batch", "Samples", "SequenceStore", "flat_ranges", "gap_bucket", "length_groups"]

Split = Literal["train", "valid", "test"]
Samples = Literal["sequences", "prefixes"]  # a training row: a user's whole window, or one target's history
GAP_BUCKETS = 16  # bucketed log2 time gaps; 0 = padding, 1 = first interaction / no timestamps


def gap_bucket(gaps: np.ndarray) -> np.ndarray:
    """Bucket time gaps in seconds: 1 unknown, 2 for < 1 minute, then one bucket per doubling."""
    out = np.ones(gaps.shape, dtype=np.int64)
    known = gaps >= 0
    minutes = np.maximum(gaps[known], 0) / 60.0
    out[known] = 2 + np.minimum(np.floor(np.log2(1.0 + minutes)), GAP_BUCKETS - 3).astype(np.int64)
    return out


def flat_ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The concatenation of ``arange(start, start + count)`` for each pair, without a Python loop."""
    within = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    return np.repeat(starts, counts) + within


@dataclass
class Batch:
    """One batch; every tensor is left-padded along L (padding where ``mask`` is False)."""

    users: torch.Tensor  # (B,) user_idx
    items: torch.Tensor  # (B, L) item_idx, 0 = padding
    categorical: torch.Tensor  # (B, L, C) codes, 0 = padding/unknown
    time_gaps: torch.Tensor  # (B, L) gap bucket, 0 = padding
    window_len: torch.Tensor  # (B, L) short-term window size at each position, 0 = padding
    mask: torch.Tensor  # (B, L) True where there is an interaction
    target_items: torch.Tensor  # (B, L) the next item, 0 where there is no target
    target_weights: torch.Tensor  # (B, L) engagement weight of the target, 0 where none
    intent_targets: dict[str, torch.Tensor]  # head -> (B, L) class (-100 = unknown) or (B, L, G) multi-hot
    intent_target_mask: dict[str, torch.Tensor]  # head -> (B, L) True where the label is known

    def select(self, rows: torch.Tensor) -> Batch:
        """The batch of ``rows`` alone, without the columns that are padding in every one of them."""
        mask = self.mask[rows]
        start = int(mask.any(dim=0).long().argmax()) if mask.shape[1] and bool(mask.any()) else 0

        def pick(t: torch.Tensor) -> torch.Tensor:
            return t[rows, start:]

        return Batch(
            users=self.users[rows],
            items=pick(self.items),
            categorical=pick(self.categorical),
            time_gaps=pick(self.time_gaps),
            window_len=pick(self.window_len),
            mask=mask[:, start:],
            target_items=pick(self.target_items),
            target_weights=pick(self.target_weights),
            intent_targets={k: pick(v) for k, v in self.intent_targets.items()},
            intent_target_mask={k: pick(v) for k, v in self.intent_target_mask.items()},
        )

    def split_by_length(self, groups: int) -> list[tuple[Batch, float]]:
        """This batch as at most ``groups`` batches of rows of similar length (`length_groups`), each
        with its share of the batch's targets: training on each and summing the losses weighted by
        those shares is the whole batch's update, with less padding to compute."""
        lengths = self.mask.sum(dim=1).cpu().numpy()
        targets = (self.target_items > 0).sum(dim=1).cpu().numpy()
        total = max(int(targets.sum()), 1)
        parts = []
        for rows in length_groups(lengths, groups):
            index = torch.from_numpy(rows).to(self.mask.device)
            parts.append((self.select(index), float(targets[rows].sum()) / total))
        return parts

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        def move(t: torch.Tensor) -> torch.Tensor:
            return t.to(device, non_blocking=non_blocking)

        return Batch(
            users=move(self.users),
            items=move(self.items),
            categorical=move(self.categorical),
            time_gaps=move(self.time_gaps),
            window_len=move(self.window_len),
            mask=move(self.mask),
            target_items=move(self.target_items),
            target_weights=move(self.target_weights),
            intent_targets={k: move(v) for k, v in self.intent_targets.items()},
            intent_target_mask={k: move(v) for k, v in self.intent_target_mask.items()},
        )


def length_groups(lengths: np.ndarray, groups: int) -> list[np.ndarray]:
    """Row indices cut into at most ``groups`` groups of similar length that need the fewest padded
    cells: each group is as wide as its longest row, so the cost is sum(rows x longest length). Rows
    are sorted by length and the cut points chosen by dynamic programming over the distinct lengths."""
    order = np.argsort(lengths, kind="stable")
    values, counts = np.unique(lengths[order], return_counts=True)
    m = len(values)
    if groups <= 1 or m <= 1:
        return [order]
    before = np.r_[0, np.cumsum(counts)]  # rows with a smaller length than values[j]: before[j]
    # cost[g, j]: cheapest way to cover the first j distinct lengths with g + 1 groups; cut[g, j]: where
    # the last of those groups starts
    cost = np.full((groups, m + 1), np.inf)
    cut = np.zeros((groups, m + 1), dtype=np.int64)
    cost[:, 0] = 0.0
    cost[0, 1:] = before[1:] * values
    for g in range(1, groups):
        for j in range(1, m + 1):
            starts = np.arange(j)  # the last group covers distinct lengths starts..j-1
            options = cost[g - 1, starts] + (before[j] - before[starts]) * values[j - 1]
            best = int(options.argmin())
            cost[g, j], cut[g, j] = options[best], best
    pieces, j, g = [], m, groups - 1
    while j > 0:
        start = cut[g, j] if g > 0 else 0
        pieces.append(order[before[start] : before[j]])
        j, g = start, g - 1
    return [p for p in reversed(pieces) if len(p)]


def _item_genres(prepared: Prepared) -> np.ndarray | None:
    """(I + 1, G) multi-hot of each item's genre classes, or None without a genre head."""
    genre = next((h for h in prepared.heads if h.name == "genre"), None)
    if genre is None or "genre_codes" not in prepared.items.columns:
        return None
    items = prepared.items.select("item_idx", "genre_codes")
    lengths = items["genre_codes"].list.len().fill_null(0).to_numpy()
    rows = np.repeat(items["item_idx"].to_numpy().astype(np.int64), lengths)
    cols = items["genre_codes"].explode().drop_nulls().to_numpy().astype(np.int64)
    hot = np.zeros((prepared.n_items + 1, len(genre.classes)), dtype=np.float32)
    hot[rows, cols] = 1.0
    return hot


class SequenceStore:
    """Flat columns of a `Prepared` data set, and batch iterators over its splits."""

    def __init__(self, prepared: Prepared) -> None:
        frame = prepared.interactions
        self.n_items = prepared.n_items
        self.heads = prepared.heads
        self.user_idx = frame["user_idx"].to_numpy().astype(np.int64)
        self.items = frame["item_idx"].to_numpy().astype(np.int64)
        self.weights = frame["weight"].to_numpy().astype(np.float32)
        self.window_len = frame["window_len"].to_numpy().astype(np.int64)
        gaps = frame["time_gap"].fill_null(-1).to_numpy() if "time_gap" in frame.columns else np.full(frame.height, -1)
        self.gaps = gap_bucket(np.asarray(gaps, dtype=np.float64))
        self.categorical_fields: list[str] = []
        columns = []
        for head in prepared.heads:  # an interaction's own labels are features of the history
            if not head.multi_label:
                self.categorical_fields.append(head.name)
                columns.append(frame[head.column].fill_null(-1).to_numpy().astype(np.int64) + 1)
        for name in prepared.vocabularies:
            self.categorical_fields.append(name)
            columns.append(frame[f"feat_{name}"].to_numpy().astype(np.int64))
        if "hour" in frame.columns:
            self.categorical_fields.append("hour")
            columns.append(frame["hour"].to_numpy().astype(np.int64) + 1)
        self.categorical = np.stack(columns, axis=1) if columns else np.zeros((frame.height, 0), dtype=np.int64)
        self.cardinalities = [int(c.max()) + 1 if len(c) else 1 for c in columns]
        self.item_genres = _item_genres(prepared)
        self.labels: dict[str, np.ndarray] = {}
        self.item_labels: set[str] = set()  # multi-label heads whose labels are the target item's genres
        for head in prepared.heads:
            if head.multi_label:
                lists = frame[head.column]
                lengths = lists.list.len().fill_null(0).to_numpy().astype(np.int64)
                cols = lists.explode().drop_nulls().to_numpy().astype(np.int64)
                if self._labels_are_item_genres(lengths, cols):
                    self.item_labels.add(head.name)  # gathered from the (I + 1, G) catalogue table per batch
                    continue
                hot = np.zeros((frame.height, len(head.classes)), dtype=np.float32)
                hot[np.repeat(np.arange(frame.height), lengths), cols] = 1.0
                self.labels[head.name] = hot
            else:
                self.labels[head.name] = frame[head.column].fill_null(-100).to_numpy().astype(np.int64)
        users = prepared.users
        self.n = users["n"].to_numpy().astype(np.int64)
        self.offsets = np.r_[0, np.cumsum(self.n)[:-1]]
        self.train_end = users["train_end"].to_numpy().astype(np.int64)
        self.valid_end = users["valid_end"].to_numpy().astype(np.int64)
        self.user_ids = users["user_idx"].to_numpy().astype(np.int64)
        position = np.arange(frame.height) - np.repeat(self.offsets, self.n)
        in_train = position < np.repeat(self.train_end, self.n)
        # training interactions per item (index 0 = padding), the popularity every model is compared with
        self.item_popularity = np.bincount(self.items[in_train], minlength=self.n_items + 1).astype(np.int64)

    def _labels_are_item_genres(self, lengths: np.ndarray, cols: np.ndarray) -> bool:
        """Whether every interaction's multi-label classes (sorted lists) are its item's genres, so that
        they need no (interactions x G) array of their own (500 MB for Beauty's 637 attributes)."""
        if self.item_genres is None:
            return False
        item_rows, item_cols = np.nonzero(self.item_genres)  # sorted by item, then class
        item_lengths = np.bincount(item_rows, minlength=len(self.item_genres))
        if not np.array_equal(lengths, item_lengths[self.items]):
            return False
        starts = np.repeat(np.r_[0, np.cumsum(item_lengths)[:-1]][self.items], lengths)
        within = np.arange(len(cols)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        return bool(np.array_equal(cols, item_cols[starts + within]))

    @property
    def genre_classes(self) -> list[str]:
        return next((list(h.classes) for h in self.heads if h.name == "genre"), [])

    # -- index helpers ---------------------------------------------------------------------------
    def targets(self, split: Split) -> np.ndarray:
        """Flat indices of the evaluation targets of a split (all positions in [start, end))."""
        if split == "train":
            raise ValueError("training uses every position; targets() is for valid and test")
        start = self.train_end if split == "valid" else self.valid_end
        end = self.valid_end if split == "valid" else self.n
        return flat_ranges(self.offsets + start, end - start)

    def train_users(self) -> np.ndarray:
        """Row numbers (into `users`) of users with at least two training interactions."""
        return np.flatnonzero(self.train_end >= 2)

    def train_targets(self, max_len: int) -> np.ndarray:
        """Flat indices of the training targets that `train_batches` holds: per user, the last ``max_len``
        training interactions after the first (those of the user's latest ``max_len + 1``)."""
        rows = self.train_users()
        count = np.minimum(self.train_end[rows] - 1, max_len)
        return flat_ranges(self.offsets[rows] + self.train_end[rows] - count, count)

    def train_steps(self, batch_size: int, max_len: int, samples: Samples = "sequences") -> int:
        """Batches in one training epoch: one per ``batch_size`` users, or targets with ``"prefixes"``."""
        rows = len(self.train_targets(max_len)) if samples == "prefixes" else len(self.train_users())
        return -(-rows // batch_size)

    def _gather(self, end: np.ndarray, length: np.ndarray, max_len: int) -> tuple[np.ndarray, np.ndarray]:
        """(B, L) flat indices of the ``length`` interactions ending before ``end``; -1 where padded."""
        cols = np.arange(max_len)[None, :]
        idx = end[:, None] - max_len + cols
        valid = cols >= (max_len - length)[:, None]
        return np.where(valid, idx, -1), valid

    @staticmethod
    def _width(length: np.ndarray, max_len: int) -> int:
        """Columns a batch needs: its longest row, at least one."""
        return int(min(max_len, max(1, int(length.max(initial=0)))))

    def _assemble(
        self,
        rows: np.ndarray,
        idx: np.ndarray,
        valid: np.ndarray,
        target_idx: np.ndarray,
        target_valid: np.ndarray,
    ) -> Batch:
        safe = np.where(valid, idx, 0)
        tsafe = np.where(target_valid, target_idx, 0)
        window = np.where(valid, self.window_len[safe], 0)
        # the window cannot reach before the batch's first kept interaction
        window = np.minimum(window, np.cumsum(valid, axis=1))
        intent_targets: dict[str, torch.Tensor] = {}
        intent_mask: dict[str, torch.Tensor] = {}
        for head in self.heads:
            if head.name in self.item_labels:
                assert self.item_genres is not None
                label = self.item_genres[self.items[tsafe]]
            else:
                label = self.labels[head.name][tsafe]
            if head.multi_label:
                known = target_valid & (label.sum(axis=-1) > 0)
                label = label * target_valid[..., None]
                intent_targets[head.name] = torch.from_numpy(np.ascontiguousarray(label))
            else:
                label = np.where(target_valid, label, -100)
                known = label >= 0
                intent_targets[head.name] = torch.from_numpy(label)
            intent_mask[head.name] = torch.from_numpy(known)
        return Batch(
            users=torch.from_numpy(self.user_ids[rows]),
            items=torch.from_numpy(np.where(valid, self.items[safe], 0)),
            categorical=torch.from_numpy(np.where(valid[..., None], self.categorical[safe], 0)),
            time_gaps=torch.from_numpy(np.where(valid, self.gaps[safe], 0)),
            window_len=torch.from_numpy(window),
            mask=torch.from_numpy(valid),
            target_items=torch.from_numpy(np.where(target_valid, self.items[tsafe], 0)),
            target_weights=torch.from_numpy(np.where(target_valid, self.weights[tsafe], 0.0).astype(np.float32)),
            intent_targets=intent_targets,
            intent_target_mask=intent_mask,
        )

    # -- iterators -------------------------------------------------------------------------------
    def train_batches(
        self, batch_size: int, max_len: int, *, shuffle: bool = True, seed: int = 0, samples: Samples = "sequences"
    ) -> Iterator[Batch]:
        """Every training user once, with next-item targets at every position; or, with
        ``samples="prefixes"``, each of those targets once, as the last position of its own row."""
        if samples == "prefixes":
            targets = self.train_targets(max_len)
            if shuffle:
                targets = np.random.default_rng(seed).permutation(targets)
            yield from self._target_batches(targets, batch_size, max_len)
            return
        rows = self.train_users()
        if shuffle:
            rows = np.random.default_rng(seed).permutation(rows)
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            end = self.offsets[chunk] + self.train_end[chunk]  # one past the last training interaction
            length = np.minimum(self.train_end[chunk], max_len + 1)
            width = self._width(length, max_len + 1)  # inputs and targets are each one narrower
            idx, valid = self._gather(end, length, width)
            inputs = valid[:, :-1]
            yield self._assemble(chunk, idx[:, :-1], inputs, idx[:, 1:], valid[:, 1:] & inputs)

    def length_order(self, split: Split, max_len: int) -> np.ndarray:
        """A permutation of the split's targets by the length of the history before them (stable), for
        `eval_batches` with little padding; results come back in this order."""
        targets = self.targets(split)
        owner = np.searchsorted(self.offsets, targets, side="right") - 1
        return np.argsort(np.minimum(targets - self.offsets[owner], max_len), kind="stable")

    def eval_batches(
        self, split: Split, batch_size: int, max_len: int, *, order: np.ndarray | None = None
    ) -> Iterator[Batch]:
        """One row per target of the split: the ``max_len`` interactions before it, target at the end.
        Targets come in their `targets` order, or in ``order`` (a permutation of it, see `length_order`)."""
        targets = self.targets(split)
        yield from self._target_batches(targets if order is None else targets[order], batch_size, max_len)

    def _target_batches(self, targets: np.ndarray, batch_size: int, max_len: int) -> Iterator[Batch]:
        """Batches of one row per target (flat index, in the order given): its ``max_len`` interactions
        before it, the target at the last position."""
        owner = np.searchsorted(self.offsets, targets, side="right") - 1
        for start in range(0, len(targets), batch_size):
            t = targets[start : start + batch_size]
            rows = owner[start : start + batch_size]
            length = np.minimum(t - self.offsets[rows], max_len)
            idx, valid = self._gather(t, length, self._width(length, max_len))
            target_idx = np.full_like(idx, -1)
            target_idx[:, -1] = t
            target_valid = np.zeros_like(valid)
            target_valid[:, -1] = True
            yield self._assemble(rows, idx, valid, target_idx, target_valid)

    def history(self, row: int, max_len: int, *, end: int | None = None) -> Batch:
        """The latest ``max_len`` interactions of one user (all of them by default), for inference."""
        stop = self.n[row] if end is None else end
        return self.histories(np.array([row]), np.array([stop]), max_len)

    def batch_of(self, rows: np.ndarray, idx: np.ndarray) -> Batch:
        """An inference batch from explicit flat interaction indices ``idx`` (B, L), -1 = padding (left)."""
        valid = idx >= 0
        return self._assemble(rows, idx, valid, np.full_like(idx, -1), np.zeros_like(valid))

    def histories(self, rows: np.ndarray, stop: np.ndarray, max_len: int) -> Batch:
        """Inference batch: for each of ``rows``, the ``max_len`` interactions before its ``stop`` (exclusive)."""
        idx, valid = self._gather(self.offsets[rows] + stop, np.minimum(stop, max_len), max_len)
        return self._assemble(rows, idx, valid, np.full_like(idx, -1), np.zeros_like(valid))
