"""Ranking and classification metrics as pure tensor functions.

Beyond accuracy, over top-K lists (one row per recommendation list, item ids 1..I): catalogue
coverage, intra-list genre entropy and the mean popularity percentile of what is recommended.

Full ranking: a target's rank is 1 + the number of items scored strictly higher (ties count in the
target's favour, the convention of RecBole and RePlay). For a single target, HR@K equals Recall@K.
"""

from __future__ import annotations

import torch

__all__ = [
    "KS",
    "catalogue_coverage",
    "genre_entropy",
    "macro_auc",
    "macro_f1",
    "popularity_percentile",
    "rank_of_target",
    "ranking_metrics",
    "recall_at_k_multilabel",
    "roc_auc",
]

KS = (1, 5, 10, 20)


def rank_of_target(scores: torch.Tensor, target: torch.Tensor, exclude: torch.Tensor | None = None) -> torch.Tensor:
    """1-based rank of ``target`` (B,) among ``scores`` (B, I). ``exclude`` (B, I) bool marks items
    that cannot be recommended (already seen, padding); the target itself is never excluded."""
    target_score = scores.gather(1, target[:, None])  # (B, 1)
    higher = scores > target_score  # (B, I)
    if exclude is not None:
        keep_target = torch.zeros_like(exclude)
        keep_target.scatter_(1, target[:, None], True)
        higher &= ~(exclude & ~keep_target)
    return higher.sum(dim=1) + 1


def ranking_metrics(ranks: torch.Tensor, ks: tuple[int, ...] = KS) -> dict[str, float]:
    """Mean HR@K, NDCG@K (one relevant item: 1 / log2(rank + 1) within K) and MRR over targets."""
    ranks = ranks.double()
    out: dict[str, float] = {}
    for k in ks:
        hit = ranks <= k
        out[f"hr@{k}"] = hit.double().mean().item()
        out[f"ndcg@{k}"] = torch.where(hit, 1.0 / torch.log2(ranks + 1.0), torch.zeros_like(ranks)).mean().item()
    out["mrr"] = (1.0 / ranks).mean().item()
    return out


def macro_f1(predicted: torch.Tensor, target: torch.Tensor, n_classes: int) -> float:
    """Unweighted mean of per-class F1 over classes that occur in ``target`` or ``predicted``."""
    scores = []
    for c in range(n_classes):
        tp = ((predicted == c) & (target == c)).sum().item()
        fp = ((predicted == c) & (target != c)).sum().item()
        fn = ((predicted != c) & (target == c)).sum().item()
        if tp + fp + fn == 0:
            continue
        scores.append(2 * tp / (2 * tp + fp + fn))
    return float(sum(scores) / len(scores)) if scores else 0.0


def roc_auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Area under the ROC curve of one binary problem (ties get half credit); NaN if one class is absent."""
    labels = labels.bool()
    pos, neg = scores[labels], scores[~labels]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    order = torch.cat([pos, neg]).argsort()
    ranks = torch.empty(len(order), dtype=torch.float64)
    sorted_scores = torch.cat([pos, neg])[order].double()
    # average ranks for ties
    _, inverse, counts = torch.unique_consecutive(sorted_scores, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).double()
    average = ends - (counts.double() - 1) / 2
    ranks[order] = average[inverse]
    pos_rank_sum = ranks[: len(pos)].sum().item()
    return (pos_rank_sum - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg))


def recall_at_k_multilabel(scores: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    """Mean over rows with a positive label of |top-k predicted ∩ true| / min(k, |true|)."""
    labels = labels.bool()
    has = labels.any(dim=1)
    if not has.any():
        return float("nan")
    top = scores.topk(min(k, scores.shape[1]), dim=1).indices
    hits = labels.gather(1, top).sum(dim=1).double()
    denom = labels.sum(dim=1).clamp(max=k).double()
    return (hits[has] / denom[has]).mean().item()


def macro_auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean per-class ROC AUC over the classes (columns) that have both positives and negatives."""
    aucs = [roc_auc(scores[:, c], labels[:, c]) for c in range(scores.shape[1])]
    defined = [a for a in aucs if a == a]
    return float(sum(defined) / len(defined)) if defined else float("nan")


def catalogue_coverage(top: torch.Tensor, n_items: int) -> float:
    """Share of the catalogue's ``n_items`` items that appear in at least one of the lists ``top`` (N, K)."""
    return len(torch.unique(top[top > 0])) / n_items if n_items else 0.0


def genre_entropy(top: torch.Tensor, item_genres: torch.Tensor, chunk_elements: int = 1 << 22) -> float:
    """Mean over lists of the entropy (bits) of the list's genre mix. Each item spreads one unit of mass
    evenly over its genres; items without genres are left out, and lists with none of them skipped.

    Computed a chunk of lists at a time (at most ``chunk_elements`` list x item x genre values, 32 MB):
    with Amazon Beauty's 1,000 categories, all 22,363 validation lists at once took 1.8 GB a copy."""
    n, k = top.shape
    g = item_genres.shape[1]
    rows = max(1, chunk_elements // max(k * g, 1))
    entropies = []
    for start in range(0, n, rows):
        hot = item_genres[top[start : start + rows]].double()  # (C, K, G)
        mass = (hot / hot.sum(-1, keepdim=True).clamp(min=1)).sum(1)  # (C, G)
        total = mass.sum(-1)  # (C,)
        has = total > 0
        p = mass[has] / total[has, None]
        entropies.append(-(torch.where(p > 0, p * torch.log2(p), torch.zeros_like(p))).sum(-1))  # (C',)
    entropy = torch.cat(entropies) if entropies else torch.zeros(0, dtype=torch.float64)
    return entropy.mean().item() if len(entropy) else float("nan")


def popularity_percentile(top: torch.Tensor, popularity: torch.Tensor) -> float:
    """Mean popularity percentile (0-100) of the recommended items. An item's percentile is the share
    of catalogue items (ids 1..I) less popular than it, counting ties as half: the most popular of
    four distinct items is at 87.5, the least at 12.5."""
    counts = popularity[1:].double()
    ordered = counts.sort().values
    lower = torch.searchsorted(ordered, counts, right=False).double()
    not_higher = torch.searchsorted(ordered, counts, right=True).double()
    percentile = torch.cat([torch.zeros(1, dtype=torch.float64), 100 * (lower + not_higher) / 2 / len(counts)])
    return percentile[top[top > 0]].mean().item()
