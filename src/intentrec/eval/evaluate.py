"""Full-catalogue evaluation of a model on a split (never sampled negatives).

`predict` scores every target of a split against the whole catalogue in batches and keeps, per
target, the rank of the true item, the top-K list and the intent predictions. `evaluate` summarises
them: HR@K, NDCG@K and MRR; per intent head accuracy and macro-F1 (single-label) or AUC and recall@k
(multi-label genre); catalogue coverage, intra-list genre entropy and popularity percentile of the
top-K lists; how much of each list repeats the user's history (``history_share@K``: the share of its
K slots held by items the user engaged with before the target; ``latest_item_first``: the share of
lists that open with the item the user engaged with last); and all of it again per user-activity
slice (light, medium, heavy: tertiles of the users' training lengths) and per target-popularity
slice (tail, torso, head: tertiles, over the targets, of the true item's training interactions),
which shows whether a model's gain comes from rarely seen items or from popular ones.

Protocol defaults: items the user has already seen stay rankable (``exclude_seen=False``), as in
RePlay's published leave-one-out tables; pass ``exclude_seen=True`` for the "new items only"
protocol, which S3-Rec's full-sort evaluation (and BSARec's and WEARec's, on the same files) uses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from intentrec.data.batching import SequenceStore, Split, flat_ranges
from intentrec.eval.metrics import (
    KS,
    catalogue_coverage,
    genre_entropy,
    macro_auc,
    macro_f1,
    popularity_percentile,
    rank_of_target,
    ranking_metrics,
    recall_at_k_multilabel,
)
from intentrec.heap import shared_trimmer
from intentrec.models.base import SequentialModel

__all__ = ["ACTIVITY_SLICES", "POPULARITY_SLICES", "Predictions", "evaluate", "history_hits", "predict", "summarise"]

ACTIVITY_SLICES = ("light", "medium", "heavy")
POPULARITY_SLICES = ("tail", "torso", "head")
GENRE_RECALL_K = 3


@dataclass
class Predictions:
    """Per target of a split (N targets): what the model predicted."""

    targets: np.ndarray  # (N,) flat interaction indices into the store
    rows: np.ndarray  # (N,) user rows
    ranks: torch.Tensor  # (N,) 1-based rank of the true item
    top: torch.Tensor  # (N, K) recommended items
    intent_scores: dict[str, torch.Tensor] = field(default_factory=dict)  # head -> (N, K_f) probabilities
    intent_truth: dict[str, torch.Tensor] = field(default_factory=dict)  # head -> (N,) class or (N, K_f) multi-hot
    intent_known: dict[str, torch.Tensor] = field(default_factory=dict)  # head -> (N,) label known
    history_hits: torch.Tensor | None = None  # (N,) how many of each top-K list the user saw before
    latest_first: torch.Tensor | None = None  # (N,) the list opens with the user's latest item


def _earlier_interactions(store: SequenceStore, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every interaction before each target (N,) in its user's sequence: the target's index (0..N-1)
    and the item of each, flat, and each target's count of them (N,)."""
    rows = np.searchsorted(store.offsets, targets, side="right") - 1
    lengths = targets - store.offsets[rows]
    which = np.repeat(np.arange(len(targets), dtype=np.int64), lengths)
    return which, store.items[flat_ranges(store.offsets[rows], lengths)], lengths


def earlier_items(store: SequenceStore, targets: np.ndarray, n_columns: int) -> torch.Tensor:
    """(N, n_columns) True at every item each target's user engaged with before it, and at padding."""
    which, items, _ = _earlier_interactions(store, targets)
    mask = torch.zeros(len(targets), n_columns, dtype=torch.bool)
    mask[torch.from_numpy(which), torch.from_numpy(items)] = True
    mask[:, 0] = True
    return mask


def history_hits(store: SequenceStore, targets: np.ndarray, top: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For each target (N,) and its recommended items ``top`` (N, K): how many of them its user engaged
    with before it, and whether the first is the item the user engaged with last (never for a user
    with no history). Sparse: one key per earlier interaction, never a catalogue-wide mask."""
    which, items, lengths = _earlier_interactions(store, targets)
    width = store.n_items + 1
    seen = np.unique(which * width + items)
    listed = top.cpu().numpy().astype(np.int64)
    hits = np.isin(np.arange(len(targets), dtype=np.int64)[:, None] * width + listed, seen).sum(axis=1)
    latest = np.where(lengths > 0, store.items[np.maximum(targets - 1, 0)], 0)
    first = (listed[:, 0] == latest) & (lengths > 0)
    return torch.from_numpy(hits), torch.from_numpy(first)


@torch.no_grad()
def predict(
    model: SequentialModel,
    store: SequenceStore,
    split: Split,
    *,
    batch_size: int = 256,
    exclude_seen: bool = False,
    k: int = 10,
) -> Predictions:
    was_training = model.training
    model.eval()
    device = model.device
    ranks, tops, hits, firsts = [], [], [], []
    scores: dict[str, list[torch.Tensor]] = {h.name: [] for h in model.heads}
    truth: dict[str, list[torch.Tensor]] = {h.name: [] for h in model.heads}
    known: dict[str, list[torch.Tensor]] = {h.name: [] for h in model.heads}
    # shortest histories first, so each batch is only as wide as its rows need; undone below
    order = store.length_order(split, model.max_len)
    ordered = store.targets(split)[order]
    trim_heap = shared_trimmer()  # as in training: glibc's heap fragments over many batches
    for start, batch in zip(
        range(0, len(ordered), batch_size),
        store.eval_batches(split, batch_size, model.max_len, order=order),
        strict=True,
    ):
        batch = batch.to(device)
        output = model(batch)
        item_scores = model.next_item_scores(batch, output)  # (B, I + 1)
        exclude = None
        if exclude_seen:  # every earlier item of the user, not only the max_len the model reads
            exclude = earlier_items(store, ordered[start : start + batch_size], item_scores.shape[1]).to(device)
        ranks.append(rank_of_target(item_scores, batch.target_items[:, -1], exclude).cpu())
        if exclude is not None:
            item_scores = item_scores.masked_fill(exclude, float("-inf"))
        tops.append(item_scores.topk(min(k, store.n_items), dim=1).indices.cpu())
        batch_hits, batch_first = history_hits(store, ordered[start : start + batch_size], tops[-1])
        hits.append(batch_hits)
        firsts.append(batch_first)
        for head in model.heads:
            if head.name not in output.intent_logits:
                continue
            logits = output.intent_logits[head.name][:, -1]  # (B, K_f)
            scores[head.name].append((logits.softmax(-1)).cpu())
            truth[head.name].append(batch.intent_targets[head.name][:, -1].cpu())
            known[head.name].append(batch.intent_target_mask[head.name][:, -1].cpu())
        trim_heap()
    model.train(was_training)
    targets = store.targets(split)
    back = torch.from_numpy(np.argsort(order))  # position of each target (in targets order) in `order`

    def restored(parts: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(parts)[back]

    return Predictions(
        targets=targets,
        rows=np.searchsorted(store.offsets, targets, side="right") - 1,
        ranks=restored(ranks) if ranks else torch.zeros(0, dtype=torch.long),
        top=restored(tops) if tops else torch.zeros(0, k, dtype=torch.long),
        history_hits=restored(hits) if hits else torch.zeros(0, dtype=torch.long),
        latest_first=restored(firsts) if firsts else torch.zeros(0, dtype=torch.bool),
        intent_scores={name: restored(v) for name, v in scores.items() if v},
        intent_truth={name: restored(v) for name, v in truth.items() if v},
        intent_known={name: restored(v) for name, v in known.items() if v},
    )


def _intent_metrics(model: SequentialModel, p: Predictions, sel: torch.Tensor) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for head in model.heads:
        if head.name not in p.intent_scores:
            continue
        keep = sel & p.intent_known[head.name]
        scores, truth = p.intent_scores[head.name][keep], p.intent_truth[head.name][keep]
        if head.multi_label:
            out[head.name] = {
                "auc": macro_auc(scores, truth),
                f"recall@{GENRE_RECALL_K}": recall_at_k_multilabel(scores, truth, GENRE_RECALL_K),
                "top1_accuracy": truth.gather(1, scores.argmax(-1, keepdim=True)).mean().item()
                if len(truth)
                else float("nan"),
                "targets": len(truth),
            }
        else:
            predicted = scores.argmax(-1)
            out[head.name] = {
                "accuracy": (predicted == truth).double().mean().item() if len(truth) else float("nan"),
                "macro_f1": macro_f1(predicted, truth, head.n_classes),
                # the floor a head must beat: always answering the targets' most frequent class
                "majority_accuracy": truth.bincount(minlength=head.n_classes).max().item() / len(truth)
                if len(truth)
                else float("nan"),
                "targets": len(truth),
            }
    return out


def summarise(model: SequentialModel, store: SequenceStore, p: Predictions, sel: torch.Tensor) -> dict[str, Any]:
    """Every metric over the targets selected by the boolean mask ``sel`` (N,)."""
    top, k = p.top[sel], p.top.shape[1]
    result: dict[str, Any] = {"targets": int(sel.sum()), **ranking_metrics(p.ranks[sel], KS)}
    result[f"coverage@{k}"] = catalogue_coverage(top, store.n_items)
    if store.item_genres is not None:
        result[f"genre_entropy@{k}"] = genre_entropy(top, torch.from_numpy(store.item_genres))
    result[f"popularity_percentile@{k}"] = popularity_percentile(top, torch.from_numpy(store.item_popularity))
    chosen = int(sel.sum())
    if p.history_hits is not None and p.latest_first is not None:
        result[f"history_share@{k}"] = p.history_hits[sel].sum().item() / (chosen * k) if chosen and k else float("nan")
        result["latest_item_first"] = p.latest_first[sel].double().mean().item() if chosen else float("nan")
    result["intents"] = _intent_metrics(model, p, sel)
    return result


def tertiles(values: np.ndarray, over: np.ndarray) -> tuple[np.ndarray, list[float]]:
    """Slice (0, 1, 2) of each of ``values``, cut at the tertiles of ``over`` (ties go to the lower slice)."""
    cuts = [float(c) for c in np.quantile(over, [1 / 3, 2 / 3])] if len(over) else [0.0, 0.0]
    return np.searchsorted(cuts, values, side="left"), cuts


def evaluate(
    model: SequentialModel,
    store: SequenceStore,
    split: Split,
    *,
    batch_size: int = 256,
    exclude_seen: bool = False,
    k: int = 10,
) -> dict[str, Any]:
    """Every metric on ``split``, overall, per user-activity slice (``by_activity``: the user's training
    length, cut at the tertiles over the distinct users evaluated) and per target-popularity slice
    (``by_item_popularity``: the true item's training interactions, cut at the tertiles over the
    targets, so each holds about a third of them)."""
    p = predict(model, store, split, batch_size=batch_size, exclude_seen=exclude_seen, k=k)
    everything = torch.ones(len(p.ranks), dtype=torch.bool)
    result = summarise(model, store, p, everything)
    popularity = store.item_popularity[store.items[p.targets]]
    slicings = {
        "activity": (ACTIVITY_SLICES, store.train_end[p.rows], store.train_end[np.unique(p.rows)]),
        "item_popularity": (POPULARITY_SLICES, popularity, popularity),
    }
    for kind, (names, values, over) in slicings.items():
        groups, cuts = tertiles(values, over)
        result[f"{kind}_cuts"] = {names[0]: f"<= {cuts[0]:g}", names[1]: f"<= {cuts[1]:g}", names[2]: f"> {cuts[1]:g}"}
        result[f"by_{kind}"] = {
            name: summarise(model, store, p, torch.from_numpy(groups == g)) for g, name in enumerate(names)
        }
    return result
