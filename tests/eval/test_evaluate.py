"""Full evaluation on a three-user log, every number worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
import torch

from intentrec.data.batching import SequenceStore
from intentrec.data.schema import make_dataset
from intentrec.data.sequences import build_sequences
from intentrec.eval.evaluate import earlier_items, evaluate, history_hits
from intentrec.models import Popularity, Recent

#   user 1: 1 2 3 | valid 1 | test 4      training counts: item 1: 2, item 2: 2, item 3: 3, items 4, 5: 0
#   user 2: 2 3   | valid 2 | test 5      popularity order: 3 > 1 = 2 > 4 = 5
#   user 3: 3 1   | valid 3 | test 2
SEQUENCES = {"1": [1, 2, 3, 1, 4], "2": [2, 3, 2, 5], "3": [3, 1, 3, 2]}


def store() -> SequenceStore:
    rows = [(u, str(i), t) for u, items in SEQUENCES.items() for t, i in enumerate(items)]
    log = pl.DataFrame(rows, schema=["user", "item", "timestamp"], orient="row")
    return SequenceStore(build_sequences(make_dataset("hand", log)))


def test_popularity_on_the_test_split_by_hand() -> None:
    s = store()
    assert s.item_popularity.tolist() == [0, 2, 2, 3, 0, 0]
    result = evaluate(Popularity(s.item_popularity), s, "test", k=1)
    # ranks (ties count in the target's favour): user 1 -> item 4 behind 3, 1, 2: 4; user 2 -> 5: 4;
    # user 3 -> item 2 behind item 3 only: 2
    assert result["targets"] == 3
    assert result["hr@1"] == 0.0
    assert result["hr@5"] == 1.0
    assert result["mrr"] == pytest.approx((1 / 4 + 1 / 4 + 1 / 2) / 3)
    assert result["ndcg@5"] == pytest.approx((2 / math.log2(5) + 1 / math.log2(3)) / 3)
    # every top-1 list is item 3: one item of five, at the 90th popularity percentile
    # (counts sorted 0 0 2 2 3: four items below it, none tied: (4 + 5) / 2 / 5)
    assert result["coverage@1"] == pytest.approx(1 / 5)
    assert result["popularity_percentile@1"] == pytest.approx(90.0)
    assert result["intents"] == {}


def test_recently_viewed_by_hand() -> None:
    s = store()
    m = Recent(s.item_popularity, max_len=50)
    # valid: user 1 saw 1 2 3, so 3, 2, 1 lead: target 1 ranks 3; user 2 (2 3): 3, 2: rank 2; user 3 (3 1): rank 2
    assert evaluate(m, s, "valid")["mrr"] == pytest.approx((1 / 3 + 1 / 2 + 1 / 2) / 3)
    # test: user 1 (1 2 3 1): 1, 3, 2, then 4 ties with 5: rank 4; user 2 (2 3 2): 2, 3, then 1 (popular), then
    # 5 ties with 4: rank 4; user 3 (3 1 3): 3, 1, then 2, the most popular unseen item: rank 3
    result = evaluate(m, s, "test", k=3)
    assert result["mrr"] == pytest.approx((1 / 4 + 1 / 4 + 1 / 3) / 3)
    assert result["hr@1"] == 0.0 and result["hr@5"] == 1.0
    # with seen items excluded only the popularity order is left
    assert evaluate(m, s, "test", exclude_seen=True)["mrr"] == pytest.approx(
        evaluate(Popularity(s.item_popularity), s, "test", exclude_seen=True)["mrr"]
    )
    # a window of one interaction keeps only the last item ahead of the popular ones
    short = Recent(s.item_popularity, max_len=1)
    # user 1: 1, then 3 (3 interactions), 2 (2), then 4: rank 4; user 2: 2, 3, 1, 5: rank 4; user 3: 3, then
    # 2 ties with 1 (2 interactions each): rank 2
    assert evaluate(short, s, "test")["mrr"] == pytest.approx((1 / 4 + 1 / 4 + 1 / 2) / 3)


def test_activity_slices_by_hand() -> None:
    s = store()
    result = evaluate(Popularity(s.item_popularity), s, "test", k=1)
    # training lengths 3, 2, 2: tertile cuts 2 and 2.33, so users 2 and 3 are light, user 1 heavy
    assert result["activity_cuts"] == {"light": "<= 2", "medium": "<= 2.33333", "heavy": "> 2.33333"}
    light, medium, heavy = (result["by_activity"][k] for k in ("light", "medium", "heavy"))
    assert (light["targets"], medium["targets"], heavy["targets"]) == (2, 0, 1)
    assert light["mrr"] == pytest.approx((1 / 4 + 1 / 2) / 2)
    assert heavy["mrr"] == pytest.approx(1 / 4)
    assert light["hr@1"] == heavy["hr@1"] == 0.0


def test_popularity_slices_by_hand() -> None:
    s = store()
    result = evaluate(Popularity(s.item_popularity), s, "test", k=1)
    # test targets 4, 5, 2 have 0, 0 and 2 training interactions: tertile cuts 0 and 0.667, so the
    # targets of users 1 and 2 are tail and user 3's is head
    assert result["item_popularity_cuts"] == {"tail": "<= 0", "torso": "<= 0.666667", "head": "> 0.666667"}
    tail, torso, head = (result["by_item_popularity"][k] for k in ("tail", "torso", "head"))
    assert (tail["targets"], torso["targets"], head["targets"]) == (2, 0, 1)
    assert tail["mrr"] == pytest.approx(1 / 4)
    assert head["mrr"] == pytest.approx(1 / 2)
    assert head["hr@5"] == tail["hr@5"] == 1.0


def test_validation_split_and_excluding_seen_items() -> None:
    s = store()
    m = Popularity(s.item_popularity)
    # valid targets: user 1 -> item 1 (behind 3 only: 2), user 2 -> 2 (2), user 3 -> 3 (1)
    assert evaluate(m, s, "valid")["mrr"] == pytest.approx((1 / 2 + 1 / 2 + 1) / 3)
    # excluding seen items (never the target itself): user 1's history 1 2 3 removes items 2 and 3, so
    # target 1 ranks first; user 2 loses 3 (target 2 ties with 1: first); user 3's target 3 was already first
    excluded = evaluate(m, s, "valid", exclude_seen=True)
    assert excluded["hr@1"] == 1.0


def test_excluding_seen_items_drops_the_whole_history_not_only_what_the_model_reads() -> None:
    s = store()
    m = Popularity(s.item_popularity)  # reads one interaction (max_len 1)
    assert earlier_items(s, s.targets("test"), s.n_items + 1).tolist() == [
        [True, True, True, True, False, False],  # user 1 saw 1 2 3 1 before its test item
        [True, False, True, True, False, False],  # user 2: 2 3 2
        [True, True, False, True, False, False],  # user 3: 3 1 3
    ]
    # test targets 4, 5, 2 among the unseen items by popularity (ties in the target's favour):
    # user 1: 4 ties with 5, rank 1; user 2: 5 behind item 1, rank 2; user 3: 2 first, rank 1
    result = evaluate(m, s, "test", exclude_seen=True)
    assert result["mrr"] == pytest.approx((1 + 1 / 2 + 1) / 3)


def test_how_much_of_each_list_repeats_the_history_by_hand() -> None:
    s = store()
    # popularity's top 1 is item 3 for everyone; every user saw it before the test item, and it is
    # user 3's latest interaction (3 1 3) but not user 1's (... 1) or user 2's (... 2)
    result = evaluate(Popularity(s.item_popularity), s, "test", k=1)
    assert result["history_share@1"] == pytest.approx(1.0)
    assert result["latest_item_first"] == pytest.approx(1 / 3)
    # the recently viewed list's top 3: user 1 (1 2 3 1) 1, 3, 2: all seen; user 2 (2 3 2) 2, 3, then
    # item 1, unseen; user 3 (3 1 3) 3, 1, then item 2, unseen; each list opens with the latest item
    result = evaluate(Recent(s.item_popularity, max_len=50), s, "test", k=3)
    assert result["history_share@3"] == pytest.approx((3 + 2 + 2) / 9)
    assert result["latest_item_first"] == 1.0
    # per slice too: users 2 and 3 are the light ones
    assert result["by_activity"]["light"]["history_share@3"] == pytest.approx(4 / 6)
    # with earlier items excluded no list holds any (top 2: user 1 has only items 4 and 5 left unseen)
    excluded = evaluate(Recent(s.item_popularity, max_len=50), s, "test", k=2, exclude_seen=True)
    assert excluded["history_share@2"] == 0.0 and excluded["latest_item_first"] == 0.0


def test_a_target_without_history_repeats_nothing() -> None:
    s = store()
    first = np.array([s.offsets[0], s.offsets[1]])  # users 1 and 2's first interactions (items 1 and 2)
    # the flat log's entries just before them are its very first (item 1) and user 1's last (item 4):
    # lists opening with those must not count as opening with the user's latest item
    hits, latest_first = history_hits(s, first, torch.tensor([[1, 2], [4, 2]]))
    assert hits.tolist() == [0, 0]
    assert latest_first.tolist() == [False, False]
    # user 1's test target (its 5th interaction): 1 and 3 are earlier items, 4 is the target itself
    hits, latest_first = history_hits(s, s.targets("test")[:1], torch.tensor([[1, 4, 3]]))
    assert hits.tolist() == [2] and latest_first.tolist() == [True]


@pytest.mark.parametrize("kind", ["sasrec", "intentrec", "gru4rec", "bert4rec"])
def test_narrow_length_sorted_batches_rank_as_full_width_ones(kind: str) -> None:
    """predict() batches targets by history length, each batch only as wide as its longest row; every
    rank and top-10 list must equal one target at a time at the full max_len width."""
    import numpy as np
    import torch

    from intentrec.config import ModelConfig
    from intentrec.data.synthetic import WorldConfig, generate
    from intentrec.eval.evaluate import predict
    from intentrec.eval.metrics import rank_of_target
    from intentrec.runs import build_model

    world = generate(WorldConfig(users=40, seed=2, titles=30))
    s = SequenceStore(build_sequences(make_dataset("w", world.interactions, world.items)))
    torch.manual_seed(0)
    model = build_model(ModelConfig(kind=kind, d=16, max_len=30, dropout=0.0), s).eval()  # type: ignore[arg-type]
    p = predict(model, s, "test", batch_size=8)
    assert len({b.items.shape[1] for b in s.eval_batches("test", 8, 30, order=s.length_order("test", 30))}) > 1
    rows = np.searchsorted(s.offsets, p.targets, side="right") - 1
    with torch.no_grad():
        for n, (target, row) in enumerate(zip(p.targets, rows, strict=True)):
            batch = s.history(int(row), 30, end=int(target - s.offsets[row]))
            assert batch.items.shape[1] == 30
            scores = model.item_logits(model(batch).hidden[:, -1])  # (1, I + 1)
            assert p.ranks[n] == rank_of_target(scores, torch.tensor([s.items[target]]), None)[0]
            assert p.top[n].tolist() == scores.topk(10, dim=1).indices[0].tolist()


def test_single_label_head_scores_against_the_majority_answer_by_hand() -> None:
    from types import SimpleNamespace

    import numpy as np
    import torch

    from intentrec.eval.evaluate import Predictions, _intent_metrics

    head = SimpleNamespace(name="action", multi_label=False, n_classes=3)
    model = SimpleNamespace(heads=[head])
    # five targets, classes 0 0 0 1 2; the head answers 0 0 1 1 0; the last target's label is unknown
    truth = torch.tensor([0, 0, 0, 1, 2, 2])
    scores = torch.eye(3)[torch.tensor([0, 0, 1, 1, 0, 2])]
    known = torch.tensor([True, True, True, True, True, False])
    p = Predictions(np.arange(6), np.arange(6), torch.ones(6), torch.zeros(6, 1, dtype=torch.long),
                    {"action": scores}, {"action": truth}, {"action": known})  # fmt: skip
    m = _intent_metrics(model, p, torch.ones(6, dtype=torch.bool))["action"]  # type: ignore[arg-type]
    assert m["targets"] == 5
    assert m["accuracy"] == pytest.approx(3 / 5)
    # always answering class 0, the most frequent of the five known labels: 3 of 5 right
    assert m["majority_accuracy"] == pytest.approx(3 / 5)
    # per class F1: 0: tp 2, fp 1, fn 1 -> 4/6; 1: tp 1, fp 1, fn 0 -> 2/3; 2: tp 0, fn 1 -> 0
    assert m["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)
