"""GRU4Rec, BERT4Rec and popularity: shapes, causality (GRU4Rec), padding invariance, gradients, overfitting."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from intentrec.eval.metrics import rank_of_target
from intentrec.models import BERT4Rec, BERT4RecConfig, GRU4Rec, GRU4RecConfig, Popularity, SequentialModel
from tests.models.test_intentrec import B, D, I, L, make_batch


def gru(dropout: float = 0.0, **kw: object) -> GRU4Rec:
    torch.manual_seed(0)
    return GRU4Rec(GRU4RecConfig(n_items=I, d=D, dropout=dropout, max_len=12, **kw)).eval()  # type: ignore[arg-type]


def bert(dropout: float = 0.0) -> BERT4Rec:
    torch.manual_seed(0)
    return BERT4Rec(BERT4RecConfig(n_items=I, d=D, n_blocks=2, n_heads=2, dropout=dropout, max_len=12)).eval()


@pytest.mark.parametrize("make", [gru, bert])
def test_shapes(make: object) -> None:
    m: SequentialModel = make()  # type: ignore[operator]
    out = m(make_batch())
    assert out.hidden.shape == (B, L, D)
    assert m.item_logits(out.hidden).shape == (B, L, I + 1)
    assert out.intent_logits == {} and out.intent_weights is None


def test_gru4rec_is_causal() -> None:
    m, t = gru(), 4
    batch, changed = make_batch(), make_batch()
    changed.items[:, t:] = (changed.items[:, t:] % I) + 1
    before, after = m(batch).hidden, m(changed).hidden
    torch.testing.assert_close(before[:, :t], after[:, :t])
    assert not torch.allclose(before[0, t:], after[0, t:])


@pytest.mark.parametrize("make", [gru, bert])
def test_left_padding_changes_nothing(make: object) -> None:
    m: SequentialModel = make()  # type: ignore[operator]
    plain, padded = make_batch(seed=1), make_batch(seed=1, pad=3)
    padded.items[:, 3:] = plain.items
    a, b = m(plain).hidden, m(padded).hidden
    if isinstance(m, BERT4Rec):
        # only the appended [MASK] position is a prediction; [MASK] drops the oldest interaction only
        # when a row would exceed max_len, so the unpadded batch loses nothing either
        torch.testing.assert_close(a[:, -1], b[:, -1])
    else:
        torch.testing.assert_close(a[plain.mask], b[:, 3:][plain.mask])


def test_bert4rec_sees_the_whole_row_but_not_the_target() -> None:
    m, t = bert(), 4
    batch, changed = make_batch(), make_batch()
    changed.items[0, t] = changed.items[0, t] % I + 1
    torch.testing.assert_close(m(batch).hidden[1:], m(changed).hidden[1:])
    # bidirectional: an earlier position of row 0 sees the change
    assert not torch.allclose(m(batch).hidden[0, t - 2], m(changed).hidden[0, t - 2])
    changed = make_batch()
    changed.target_items[:] = changed.target_items % I + 1
    torch.testing.assert_close(m(batch).hidden, m(changed).hidden)


@pytest.mark.parametrize("make", [gru, bert])
def test_every_parameter_gets_a_finite_gradient(make: object) -> None:
    m: SequentialModel = make(dropout=0.1).train()  # type: ignore[operator]
    loss, parts = m.training_loss(make_batch())
    loss.backward()
    assert set(parts) == {"item", "total"}
    for name, p in m.named_parameters():
        if name == "position.weight" and isinstance(m, BERT4Rec):
            continue  # rows past the batch's length get no gradient; the others are checked below
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_gru4rec_overfits_a_small_batch() -> None:
    m = gru().train()
    batch = make_batch(seed=3)
    optimiser = torch.optim.Adam(m.parameters(), lr=1e-2)
    first = m.training_loss(batch)[0].item()
    for _ in range(150):
        optimiser.zero_grad()
        m.training_loss(batch)[0].backward()
        optimiser.step()
    m.eval()
    assert m.training_loss(batch)[0].item() < 0.1 * first
    has = batch.target_items > 0
    assert (rank_of_target(m.item_logits(m(batch).hidden[has]), batch.target_items[has]) == 1).all()


def test_bert4rec_overfits_next_item_prediction() -> None:
    m = bert().train()
    batch = make_batch(seed=3)
    optimiser = torch.optim.Adam(m.parameters(), lr=1e-2)
    m.eval()
    first = m.loss(batch, m(batch))[0].item()
    m.train()
    for _ in range(200):
        optimiser.zero_grad()
        m.training_loss(batch)[0].backward()
        optimiser.step()
    m.eval()
    assert m.loss(batch, m(batch))[0].item() < 0.1 * first
    ranks = rank_of_target(m.item_logits(m(batch).hidden[:, -1]), batch.target_items[:, -1])
    assert (ranks == 1).all()


def test_bert4rec_masks_at_least_one_interaction_per_row() -> None:
    m = bert().train()
    batch = make_batch()
    torch.manual_seed(0)
    loss, _ = m.training_loss(batch)
    assert torch.isfinite(loss)
    with pytest.raises(ValueError, match="mask_prob"):
        BERT4RecConfig(n_items=5, mask_prob=1.5)
    with pytest.raises(ValueError, match="mask_last"):
        BERT4RecConfig(n_items=5, mask_last=-0.1)


@pytest.mark.parametrize(("init", "item_std", "position_std"), [("scaled", 64**-0.5, 1.0), ("small", 0.02, 0.02)])
def test_bert4rec_initialisation(init: str, item_std: float, position_std: float) -> None:
    torch.manual_seed(0)
    m = BERT4Rec(BERT4RecConfig(n_items=2000, d=64, init=init))  # type: ignore[arg-type]
    assert m.item.weight[1:].std().item() == pytest.approx(item_std, rel=0.05)
    assert m.position.weight.std().item() == pytest.approx(position_std, rel=0.1)
    with pytest.raises(ValueError, match="init"):
        BERT4RecConfig(n_items=5, init="glorot")  # type: ignore[arg-type]


def test_bert4rec_mask_last_masks_only_the_latest_interaction_in_its_share_of_rows() -> None:
    window = torch.tensor([[0, 0, 3, 4, 5], [1, 2, 3, 4, 5], [0, 0, 0, 0, 2]] * 200)  # left-padded
    last_only = torch.zeros_like(window, dtype=torch.bool)
    last_only[:, -1] = True
    torch.manual_seed(0)
    every_row = BERT4Rec(BERT4RecConfig(n_items=5, mask_prob=0.5, mask_last=1.0)).cloze_mask(window)
    assert torch.equal(every_row, last_only)  # the inference task in every row
    torch.manual_seed(0)
    half = BERT4Rec(BERT4RecConfig(n_items=5, mask_prob=0.5, mask_last=0.5)).cloze_mask(window)
    assert not (half & (window == 0)).any()  # padding is never masked
    only_last = (half == last_only).all(dim=1)  # (600,) rows masked as at inference
    # half the rows by mask_last, plus the cloze rows whose draw happened to mask only the last
    # or masked nothing and fell back to the last: 2/32 of the 5-long rows, 2/8 of the 3-long, every 1-long
    assert abs(only_last.float().mean().item() - (0.5 + 0.5 * (2 / 32 + 2 / 8 + 1) / 3)) < 0.05
    torch.manual_seed(0)
    cloze = BERT4Rec(BERT4RecConfig(n_items=5, mask_prob=0.5)).cloze_mask(window)
    assert abs(cloze[1::3].float().mean().item() - 0.5) < 0.05  # mask_prob of the full rows' interactions


def test_popularity_ranks_by_training_counts() -> None:
    counts = np.array([0, 5, 1, 9, 3])  # index 0 is padding
    m = Popularity(counts)
    assert not m.trainable
    batch = make_batch()
    scores = m.item_logits(m(batch).hidden[:, -1])
    assert scores.shape == (B, 5)
    assert scores[0].argsort(descending=True).tolist()[:4] == [3, 1, 4, 2]
    assert torch.isinf(scores[:, 0]).all()
    with pytest.raises(TypeError, match="nothing to train"):
        m.loss(batch, m(batch))
