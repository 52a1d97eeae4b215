"""The continue/discover mixture (``repeat``): its scores are a distribution, its loss is the
likelihood of the observed branch, it only points backwards, ignores padding, and learns to copy."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from intentrec.config import ConfigError, ModelConfig
from intentrec.data.batching import Batch
from intentrec.eval.metrics import rank_of_target
from intentrec.models import IntentRec, IntentRecConfig, sasrec
from tests.models.test_intentrec import B, I, L, make_batch, model


@pytest.mark.parametrize("variant", ["V0", "V3"])
def test_scores_are_a_distribution_split_by_the_gate(variant: str) -> None:
    m = model(variant, repeat=True)
    batch = make_batch()
    with torch.no_grad():
        output = m(batch)
        scores = m.next_item_scores(batch, output)  # (B, I + 1)
        gate = torch.sigmoid(m.repeat_gate(output.hidden[:, -1])).squeeze(-1)  # (B,)
    assert scores.shape == (B, I + 1) and torch.isneginf(scores[:, 0]).all()
    torch.testing.assert_close(scores[:, 1:].logsumexp(-1), torch.zeros(B), atol=1e-5, rtol=0)
    for row in range(B):
        seen = sorted(set(batch.items[row][batch.mask[row]].tolist()))
        torch.testing.assert_close(scores[row, seen].exp().sum(), gate[row])
        # unseen items keep the catalogue softmax's order
        unseen = torch.tensor([i for i in range(1, I + 1) if i not in seen])
        logits = m.item_logits(output.hidden[row, -1])[unseen]
        assert torch.equal(scores[row, unseen].argsort(), logits.argsort())


def test_the_loss_is_the_likelihood_of_the_observed_branch() -> None:
    m = model("V0", repeat=True)
    batch = make_batch(seed=2)
    # one target per row, at the last position: rows 0 and 1 come back to an item of their history (row 0
    # to one it saw twice), row 2 picks an item it never saw
    batch.target_items.zero_()
    batch.target_weights.zero_()
    batch.items[0, -1] = batch.items[0, -3]
    seen = [set(batch.items[r][batch.mask[r]].tolist()) for r in range(B)]
    new_item = next(i for i in range(1, I + 1) if i not in seen[2])
    targets = [int(batch.items[0, -1]), int(batch.items[1, -2]), new_item]
    batch.target_items[:, -1] = torch.tensor(targets)
    batch.target_weights[:, -1] = 1.0
    output = m(batch)
    loss, parts = m.loss(batch, output)
    with torch.no_grad():
        scores = m.next_item_scores(batch, output)
        hidden = output.hidden[:, -1]
        gate = m.repeat_gate(hidden).squeeze(-1)
        full = F.log_softmax(m.item_logits(hidden)[2, 1:], -1)[new_item - 1]  # training: whole catalogue
    expected = (-scores[0, targets[0]] - scores[1, targets[1]] - F.logsigmoid(-gate[2]) - full) / 3
    torch.testing.assert_close(loss.detach(), expected)
    assert parts["item"] == pytest.approx(float(expected), rel=1e-5)


@pytest.mark.parametrize("features", [False, True])
def test_the_pointer_never_looks_ahead_and_padding_changes_nothing(features: bool) -> None:
    m = model("V3", repeat=True, repeat_features=features)
    batch = make_batch(seed=1)
    with torch.no_grad():
        output = m(batch)
        assert (output.history_keys is not None) == features
        pointer = m._pointer(output.hidden, batch, torch.arange(L), output.history_keys)  # (B, L, L)
    later = torch.ones(L, L, dtype=torch.bool).triu(1)
    assert torch.isneginf(pointer[:, later]).all()
    real = batch.mask
    torch.testing.assert_close(pointer[real].exp().sum(-1), torch.ones(int(real.sum())))

    plain, padded = make_batch(seed=1), make_batch(seed=1, pad=3)
    for name in ("items", "time_gaps", "window_len", "target_items", "target_weights"):
        getattr(padded, name)[:, 3:] = getattr(plain, name)
    padded.categorical[:, 3:] = plain.categorical
    padded.mask[:, :3] = False
    padded.target_items[:, :3] = 0
    padded.target_weights[:, :3] = 0
    for name, target in plain.intent_targets.items():
        padded.intent_targets[name][:, 3:] = target
        padded.intent_target_mask[name][:, 3:] = plain.intent_target_mask[name]
        padded.intent_target_mask[name][:, :3] = False
    with torch.no_grad():
        a, b = m(plain), m(padded)
        torch.testing.assert_close(m.next_item_scores(plain, a), m.next_item_scores(padded, b))
        torch.testing.assert_close(m.loss(plain, a)[0], m.loss(padded, b)[0])


def fit(m: IntentRec, batch: Batch, steps: int, lr: float) -> torch.Tensor:
    """Train ``m`` on ``batch`` alone with Adam; its next-item scores (B, I + 1) afterwards."""
    optimiser = torch.optim.Adam(m.parameters(), lr=lr)
    m.train()
    for _ in range(steps):
        optimiser.zero_grad()
        loss, _ = m.loss(batch, m(batch))
        loss.backward()
        optimiser.step()
    m.eval()
    with torch.no_grad():
        return m.next_item_scores(batch, m(batch))


def test_it_learns_to_come_back() -> None:
    """Each row alternates between two items of its own that the catalogue softmax cannot tell from
    the rest: the mixture learns to point at the item two steps back."""
    torch.manual_seed(0)
    m = sasrec(I, d=16, n_blocks=1, n_heads=2, max_len=12, dropout=0.0, repeat=True)
    batch = make_batch(seed=5)
    for row in range(B):
        a, b = 2 * row + 1, 2 * row + 2
        pattern = torch.tensor([a, b] * L)[:L]
        batch.items[row] = pattern * batch.mask[row]
        batch.target_items[row] = torch.tensor([b, a] * L)[:L] * batch.mask[row]
        batch.target_items[row, L - int(batch.mask[row].sum())] = 0  # the first position has no history
    batch.target_weights = (batch.target_items > 0).float()
    scores = fit(m, batch, steps=120, lr=2e-2)
    expected = batch.items[:, -2]  # the next item after ... a b is a
    assert (rank_of_target(scores, expected) == 1).all()
    assert math.exp(float(scores[0, expected[0]])) > 0.9


def test_it_comes_back_to_what_the_interaction_says() -> None:
    """Histories of distinct items in random order, one of them bought (event code 2, the others
    viewed, code 1); the next item is the bought one. With the interaction's features in the pointer's
    keys the mixture points at it, wherever it is in the history."""
    torch.manual_seed(0)
    m = model("V0", repeat=True, repeat_features=True, use_genres=False)
    batch = make_batch(seed=6)
    g = torch.Generator().manual_seed(6)
    batch.mask[:] = True
    batch.items = torch.stack([torch.randperm(I, generator=g)[:L] + 1 for _ in range(B)])
    bought = torch.randint(0, L - 1, (B,), generator=g)  # never the last position, so recency cannot tell
    batch.categorical[..., 0] = 1
    batch.categorical[torch.arange(B), bought, 0] = 2
    batch.target_items.zero_()
    batch.target_items[:, -1] = batch.items[torch.arange(B), bought]
    batch.target_weights = (batch.target_items > 0).float()
    scores = fit(m, batch, steps=150, lr=1e-2)
    assert (rank_of_target(scores, batch.target_items[:, -1]) == 1).all()


def test_every_parameter_gets_a_finite_gradient() -> None:
    m = model("V3", dropout=0.1, repeat=True, repeat_features=True).train()
    batch = make_batch()
    batch.target_items[:, -1] = batch.items[:, -2]  # at least one repeated target per row
    loss, _ = m.loss(batch, m(batch))
    loss.backward()
    for name, p in m.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"
    assert m.repeat_query.weight.grad is not None and m.repeat_query.weight.grad.abs().sum() > 0
    assert m.repeat_key.weight.grad is not None and m.repeat_key.weight.grad.abs().sum() > 0


def test_config_errors() -> None:
    with pytest.raises(ValueError, match="repeat needs item_loss='ce'"):
        IntentRecConfig(n_items=5, variant="V0", item_loss="bce", repeat=True)
    with pytest.raises(ConfigError, match=r"model\.repeat applies to intentrec and sasrec, not gru4rec"):
        ModelConfig(kind="gru4rec", repeat=True)
    with pytest.raises(ConfigError, match=r'model\.repeat needs model\.item_loss = "ce"'):
        ModelConfig(kind="sasrec", item_loss="bce", repeat=True)
    with pytest.raises(ValueError, match="repeat_features needs repeat"):
        IntentRecConfig(n_items=5, variant="V0", repeat_features=True)
    with pytest.raises(ConfigError, match=r"model\.repeat_features needs model\.repeat = true"):
        ModelConfig(kind="intentrec", repeat_features=True)
    with pytest.raises(ConfigError, match=r"model\.repeat_features applies to intentrec"):
        ModelConfig(kind="sasrec", repeat=True, repeat_features=True)
