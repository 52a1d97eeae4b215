"""Metrics against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from intentrec.eval.metrics import (
    catalogue_coverage,
    genre_entropy,
    macro_auc,
    macro_f1,
    popularity_percentile,
    rank_of_target,
    ranking_metrics,
    recall_at_k_multilabel,
    roc_auc,
)


def test_ranks_by_hand() -> None:
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.3], [0.4, 0.4, 0.2, 0.8], [0.7, 0.1, 0.6, 0.0]])
    target = torch.tensor([2, 1, 0])
    # user 0: 0.9 beats 0.5 -> rank 2; user 1: 0.8 beats 0.4, the tie with item 0 does not -> 2; user 2: top -> 1
    assert rank_of_target(scores, target).tolist() == [2, 2, 1]
    seen = torch.tensor([[False, True, False, False], [False, False, False, True], [True, False, False, False]])
    # excluding seen items: user 0 drops item 1 -> rank 1; user 1 drops item 3 -> 1; user 2's target stays
    assert rank_of_target(scores, target, exclude=seen).tolist() == [1, 1, 1]


def test_ranking_metrics_by_hand() -> None:
    m = ranking_metrics(torch.tensor([1, 3, 12]), ks=(1, 5, 10, 20))
    assert m["hr@1"] == pytest.approx(1 / 3)
    assert m["hr@5"] == pytest.approx(2 / 3)
    assert m["hr@10"] == pytest.approx(2 / 3)
    assert m["hr@20"] == pytest.approx(1.0)
    assert m["ndcg@5"] == pytest.approx((1.0 + 1 / math.log2(4)) / 3)  # (1 + 0.5) / 3
    assert m["ndcg@20"] == pytest.approx((1.0 + 0.5 + 1 / math.log2(13)) / 3)
    assert m["mrr"] == pytest.approx((1 + 1 / 3 + 1 / 12) / 3)


def test_macro_f1_by_hand() -> None:
    predicted = torch.tensor([0, 0, 1, 2, 2])
    target = torch.tensor([0, 1, 1, 2, 0])
    # class 0: tp1 fp1 fn1 -> 0.5; class 1: tp1 fp0 fn1 -> 2/3; class 2: tp1 fp1 fn0 -> 2/3
    assert macro_f1(predicted, target, 3) == pytest.approx((0.5 + 2 / 3 + 2 / 3) / 3)


def test_auc_by_hand() -> None:
    # positives 0.8, 0.4; negatives 0.4, 0.1: pairs (0.8>0.4) (0.8>0.1) (0.4=0.4 half) (0.4>0.1) -> 3.5 / 4
    assert roc_auc(torch.tensor([0.8, 0.4, 0.4, 0.1]), torch.tensor([1, 1, 0, 0])) == pytest.approx(0.875)
    assert math.isnan(roc_auc(torch.tensor([0.1, 0.2]), torch.tensor([1, 1])))


def test_multilabel_recall_by_hand() -> None:
    scores = torch.tensor([[0.9, 0.1, 0.8, 0.0], [0.1, 0.2, 0.3, 0.4], [0.5, 0.5, 0.5, 0.5]])
    labels = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 1], [0, 0, 0, 0]])
    # row 0: top-2 {0, 2} has 1 of 2 true -> 0.5; row 1: top-2 {3, 2} has 1 of min(2, 1) -> 1; row 2 has no positives
    assert recall_at_k_multilabel(scores, labels, 2) == pytest.approx(0.75)


def test_catalogue_coverage_by_hand() -> None:
    top = torch.tensor([[1, 2, 3], [2, 3, 4], [1, 4, 0]])  # 0 = no item (a short list)
    assert catalogue_coverage(top, n_items=8) == pytest.approx(4 / 8)


def test_genre_entropy_by_hand() -> None:
    # items 1, 2: genre A; item 3: genres A and B; item 4: genre B; item 5: no genre
    genres = torch.tensor([[0, 0], [1, 0], [1, 0], [1, 1], [0, 1], [0, 0]], dtype=torch.float32)
    top = torch.tensor([[1, 2], [1, 4], [3, 5], [5, 5]])
    # list 0: all A -> 0 bits; list 1: A, B -> 1 bit; list 2: item 3 splits A/B -> 1 bit; list 3: no genres, skipped
    assert genre_entropy(top, genres) == pytest.approx((0 + 1 + 1) / 3)
    # A, A, B: -(2/3 log2 2/3 + 1/3 log2 1/3)
    expected = -(2 / 3 * math.log2(2 / 3) + 1 / 3 * math.log2(1 / 3))
    assert genre_entropy(torch.tensor([[1, 2, 4]]), genres) == pytest.approx(expected)
    # a chunk of one list (2 items x 2 genres) at a time: the same mean, the skipped list still skipped
    assert genre_entropy(top, genres, chunk_elements=4) == pytest.approx((0 + 1 + 1) / 3)
    assert math.isnan(genre_entropy(top[3:], genres, chunk_elements=4))


def test_popularity_percentile_by_hand() -> None:
    popularity = torch.tensor([0, 10, 40, 20, 30])  # padding, then items 1..4
    # percentiles: item 2 (most popular) 87.5, item 4 62.5, item 3 37.5, item 1 12.5
    assert popularity_percentile(torch.tensor([[2]]), popularity) == pytest.approx(87.5)
    assert popularity_percentile(torch.tensor([[2, 1], [4, 3]]), popularity) == pytest.approx(50.0)
    ties = torch.tensor([0, 5, 5, 1, 1])  # two items tied at the top, two at the bottom
    assert popularity_percentile(torch.tensor([[1]]), ties) == pytest.approx(75.0)
    assert popularity_percentile(torch.tensor([[3]]), ties) == pytest.approx(25.0)


def test_macro_auc_skips_classes_without_both_labels() -> None:
    scores = torch.tensor([[0.9, 0.1, 0.5], [0.2, 0.8, 0.5], [0.6, 0.3, 0.5]])
    labels = torch.tensor([[1, 0, 1], [0, 1, 1], [0, 1, 1]])
    # class 0: positive 0.9 above both negatives -> 1.0; class 1: positives 0.8, 0.3 vs negative 0.1 -> 1.0;
    # class 2: all positive -> undefined, skipped
    assert macro_auc(scores, labels) == pytest.approx(1.0)
    labels = torch.tensor([[0, 0, 1], [1, 1, 1], [0, 1, 1]])
    # class 0: positive 0.2 below 0.9 and 0.6 -> 0.0; class 1 as before -> 1.0
    assert macro_auc(scores, labels) == pytest.approx(0.5)
