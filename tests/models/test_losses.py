"""The next-item losses of `intentrec.models.base.next_item_loss`: the sampled softmax against a value
computed by hand, against the full softmax when every item is drawn, padding invariance, and that
models trained with it learn."""

from __future__ import annotations

import math

import pytest
import torch

from intentrec.config import ConfigError, ModelConfig
from intentrec.data.batching import Batch
from intentrec.eval.metrics import rank_of_target
from intentrec.models import GRU4Rec, GRU4RecConfig, IntentRecConfig, SequentialModel, sasrec
from intentrec.models import base as base_module
from intentrec.models.base import Negatives, linear_cross_entropy, next_item_loss
from tests.models.test_intentrec import I, make_batch

# items 1..3 in two dimensions; row 0 is padding
TABLE = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])


def two_targets() -> tuple[torch.Tensor, Batch]:
    """One row, two positions with targets (item 1 with weight 1, item 2 with weight 2) and one without."""
    hidden = torch.tensor([[[5.0, 5.0], [2.0, 0.0], [0.0, 1.0]]])  # (1, 3, 2)
    batch = make_batch()
    batch.target_items = torch.tensor([[0, 1, 2]])
    batch.target_weights = torch.tensor([[0.0, 1.0, 2.0]])
    return hidden, batch


def drawing(rows: list[list[int]], calls: list[tuple[int, int, tuple[int, ...]]]):  # type: ignore[no-untyped-def]
    """A stand-in for torch.randint that returns ``rows`` and records how it was called."""

    def randint(low: int, high: int, size: tuple[int, ...], **kwargs: object) -> torch.Tensor:
        calls.append((low, high, tuple(size)))
        return torch.tensor(rows)

    return randint


def test_sampled_softmax_matches_the_hand_computed_value(monkeypatch: pytest.MonkeyPatch) -> None:
    hidden, batch = two_targets()
    calls: list[tuple[int, int, tuple[int, ...]]] = []
    # first target (item 1): negatives 2, 3 and 1 itself (an accidental hit, left out of the softmax)
    # second target (item 2): negatives 1, 1, 3
    monkeypatch.setattr(base_module.torch, "randint", drawing([[2, 3, 1], [1, 1, 3]], calls))
    loss = next_item_loss(hidden, batch, TABLE, "sampled", n_negatives=3)
    # scores h . e: first  target 2, negatives 0, 2 (and the hit, dropped): log(e^2 + e^0 + e^2) - 2
    #               second target 1, negatives 0, 0, 1:                    log(e^1 + 1 + 1 + e^1) - 1
    first = math.log(2 * math.e**2 + 1) - 2
    second = math.log(2 * math.e + 2) - 1
    assert loss.item() == pytest.approx((1 * first + 2 * second) / 2, rel=1e-6)
    assert calls == [(1, 4, (2, 3))], "one draw of 3 negatives for each of the 2 targets, from items 1..3"


def test_shared_negatives_match_the_hand_computed_value(monkeypatch: pytest.MonkeyPatch) -> None:
    hidden, batch = two_targets()
    calls: list[tuple[int, int, tuple[int, ...]]] = []
    # one draw for the batch, 2, 3 and 1, used at both positions; each drops its own target (a hit)
    monkeypatch.setattr(base_module.torch, "randint", drawing([2, 3, 1], calls))
    loss = next_item_loss(hidden, batch, TABLE, "sampled", n_negatives=3, negatives="shared")
    # first  target (item 1), h (2, 0): target 2, negatives 0 (item 2), 2 (item 3): log(e^2 + 1 + e^2) - 2
    # second target (item 2), h (0, 1): target 1, negatives 1 (item 3), 0 (item 1): log(e^1 + e^1 + 1) - 1
    first = math.log(2 * math.e**2 + 1) - 2
    second = math.log(2 * math.e + 1) - 1
    assert loss.item() == pytest.approx((1 * first + 2 * second) / 2, rel=1e-6)
    assert calls == [(1, 4, (3,))], "one draw of 3 negatives for the whole batch, from items 1..3"
    with pytest.raises(ValueError, match="negatives must be one of per_position, shared"):
        next_item_loss(hidden, batch, TABLE, "sampled", n_negatives=3, negatives="in_batch")


def test_shared_negatives_over_every_item_are_the_full_softmax(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    items = torch.randn(I + 1, 5, requires_grad=True)
    hidden = torch.randn(3, 7, 5, requires_grad=True)
    batch = make_batch(seed=2)
    monkeypatch.setattr(base_module.torch, "randint", drawing(list(range(1, I + 1)), []))
    shared = next_item_loss(hidden, batch, items, "sampled", n_negatives=I, negatives="shared")
    full = next_item_loss(hidden, batch, items, "ce")
    torch.testing.assert_close(shared, full)
    for a, b in zip(
        torch.autograd.grad(shared, [hidden, items]), torch.autograd.grad(full, [hidden, items]), strict=True
    ):
        torch.testing.assert_close(a, b)


def test_sampled_softmax_over_every_item_is_the_full_softmax(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    items = torch.randn(I + 1, 5, requires_grad=True)
    hidden = torch.randn(3, 7, 5, requires_grad=True)
    batch = make_batch(seed=2)
    has = batch.target_items > 0
    every_item = torch.arange(1, I + 1).expand(int(has.sum()), I).tolist()
    monkeypatch.setattr(base_module.torch, "randint", drawing(every_item, []))
    sampled = next_item_loss(hidden, batch, items, "sampled", n_negatives=I)
    full = next_item_loss(hidden, batch, items, "ce")
    torch.testing.assert_close(sampled, full)
    grad_sampled = torch.autograd.grad(sampled, [hidden, items])
    grad_full = torch.autograd.grad(full, [hidden, items])
    for a, b in zip(grad_sampled, grad_full, strict=True):
        torch.testing.assert_close(a, b)
    # and the full softmax is linear_cross_entropy's, the loss it is checked against elsewhere
    expected = linear_cross_entropy(hidden[has], items, batch.target_items[has], batch.target_weights[has])
    torch.testing.assert_close(full, expected / has.sum())


def test_both_ways_of_scoring_the_negatives_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    items = torch.randn(I + 1, 5, requires_grad=True)
    hidden = torch.randn(3, 7, 5, requires_grad=True)
    batch = make_batch(seed=2)
    results = []
    for score_all_up_to in (10**6, 0):  # every item scored, then only the drawn embeddings gathered
        monkeypatch.setattr(base_module, "SCORE_ALL_ITEMS_UP_TO", score_all_up_to)
        torch.manual_seed(1)
        loss = next_item_loss(hidden, batch, items, "sampled", n_negatives=6)
        results.append((loss, *torch.autograd.grad(loss, [hidden, items])))
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("negatives", ["per_position", "shared"])
def test_left_padding_changes_nothing_in_the_sampled_softmax(negatives: Negatives) -> None:
    m = sasrec(I, d=16, max_len=12, dropout=0.0, item_loss="sampled", n_negatives=64, negatives=negatives).eval()
    plain, padded = make_batch(seed=1), make_batch(seed=1, pad=3)
    for name in ("items", "time_gaps", "window_len", "target_items", "target_weights"):
        getattr(padded, name)[:, 3:] = getattr(plain, name)
    padded.target_weights[:, :3] = 0.0
    torch.manual_seed(5)
    a, _ = m.loss(plain, m(plain))
    torch.manual_seed(5)
    b, _ = m.loss(padded, m(padded))
    torch.testing.assert_close(a, b)  # the same targets draw the same negatives, padding adds no term


@pytest.mark.parametrize(("kind", "negatives"), [("sasrec", "per_position"), ("gru4rec", "per_position"),
                                                  ("sasrec", "shared"), ("gru4rec", "shared")])  # fmt: skip
def test_models_trained_with_the_sampled_softmax_memorise_a_batch(kind: str, negatives: Negatives) -> None:
    torch.manual_seed(0)
    m: SequentialModel
    if kind == "sasrec":
        m = sasrec(I, d=16, max_len=12, dropout=0.0, item_loss="sampled", n_negatives=8, negatives=negatives)
    else:
        m = GRU4Rec(GRU4RecConfig(n_items=I, d=16, dropout=0.0, max_len=12, item_loss="sampled", n_negatives=8,
                                  negatives=negatives))  # fmt: skip
    batch = make_batch(seed=3)
    optimiser = torch.optim.Adam(m.parameters(), lr=1e-2)
    for _ in range(200):
        optimiser.zero_grad()
        loss, _ = m.loss(batch, m(batch))
        loss.backward()
        optimiser.step()
    m.eval()
    has = batch.target_items > 0
    ranks = rank_of_target(m.item_logits(m(batch).hidden[has]), batch.target_items[has])
    # 8 negatives out of 22 other items per step: ranked against the whole catalogue, nearly all first
    assert (ranks == 1).float().mean() >= 0.9


def test_sampled_softmax_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"model\.n_negatives must be at least 1"):
        ModelConfig(kind="sasrec", item_loss="sampled", n_negatives=0)
    with pytest.raises(ConfigError, match=r'model\.repeat needs model\.item_loss = "ce"'):
        ModelConfig(kind="sasrec", item_loss="sampled", repeat=True)
    with pytest.raises(ConfigError, match=r'model\.negatives applies to model\.item_loss = "sampled"'):
        ModelConfig(kind="sasrec", negatives="shared")
    with pytest.raises(ConfigError, match=r"model\.negatives must be per_position or shared"):
        ModelConfig(kind="sasrec", item_loss="sampled", negatives="in_batch")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="negatives must be one of per_position, shared"):
        IntentRecConfig(n_items=5, variant="V0", item_loss="sampled", negatives="in_batch")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="item_loss must be one of ce, bce, sampled"):
        IntentRecConfig(n_items=5, variant="V0", item_loss="softmax")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n_negatives must be at least 1"):
        IntentRecConfig(n_items=5, variant="V0", item_loss="sampled", n_negatives=0)
    with pytest.raises(ValueError, match="item loss must be one of"):
        next_item_loss(torch.zeros(1, 3, 2), two_targets()[1], TABLE, "hinge")


def test_unseen_negatives_avoid_the_target_and_the_rows_items_and_are_uniform_over_the_rest() -> None:
    torch.manual_seed(0)
    n = 60_000
    target = torch.full((n,), 4)
    held = torch.tensor([[0, 1, 2, 3, 4]]).expand(n, 5)  # padding, items 1-3 and the target itself
    negative = base_module.unseen_negative(target, held, n_items=10)
    counts = torch.bincount(negative, minlength=11)
    assert counts[:5].sum() == 0  # never padding, a held item or the target
    # uniform over items 5..10: 10,000 each; 4 standard deviations of a binomial(60,000, 1/6) is 365
    assert (counts[5:] - n / 6).abs().max() < 365


def test_unseen_negatives_in_a_row_that_holds_all_but_one_item_find_it() -> None:
    torch.manual_seed(1)
    held = torch.tensor([[1, 2, 3, 5, 6], [0, 0, 0, 0, 2]])
    negative = base_module.unseen_negative(torch.tensor([2, 1]), held, n_items=6)
    assert negative[0] == 4  # items 1-6 less the five held: only 4 is left
    assert negative[1] not in (1, 2)


def test_bce_with_unseen_negatives_matches_the_hand_computed_value() -> None:
    hidden, batch = two_targets()
    batch.items = torch.tensor([[0, 1, 2]])  # with the targets 1 and 2, the row holds items 1 and 2: only 3 is unseen
    torch.manual_seed(0)
    loss = next_item_loss(hidden, batch, TABLE, "bce", unseen_negatives=True)

    def softplus(x: float) -> float:
        return math.log1p(math.exp(x))

    # first target (item 1), h = (2, 0): positive score 2, negative (item 3) 2
    # second target (item 2), h = (0, 1): positive score 1, negative (item 3) 1
    first, second = softplus(-2) + softplus(2), softplus(-1) + softplus(1)
    assert loss.item() == pytest.approx((1 * first + 2 * second) / 2, rel=1e-6)


def test_unseen_negatives_config_errors() -> None:
    with pytest.raises(ConfigError, match=r'model\.unseen_negatives applies to model\.item_loss = "bce"'):
        ModelConfig(kind="sasrec", unseen_negatives=True)
    with pytest.raises(ConfigError, match=r"model\.unseen_negatives applies to intentrec, sasrec and gru4rec"):
        ModelConfig(kind="bert4rec", item_loss="bce", unseen_negatives=True)
    with pytest.raises(ValueError, match="unseen_negatives applies to item_loss='bce'"):
        IntentRecConfig(n_items=5, variant="V0", unseen_negatives=True)


@pytest.mark.parametrize("kind", ["sasrec", "gru4rec", "intentrec"])
def test_unseen_negatives_reach_the_model_from_the_config(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from intentrec.data.batching import SequenceStore
    from intentrec.data.schema import make_dataset
    from intentrec.data.sequences import build_sequences
    from intentrec.data.synthetic import WorldConfig, generate
    from intentrec.runs import build_model

    world = generate(WorldConfig(users=20, seed=1, titles=30))
    store = SequenceStore(build_sequences(make_dataset("w", world.interactions, world.items)))
    config = ModelConfig(kind=kind, item_loss="bce", unseen_negatives=True, d=8, max_len=10)  # type: ignore[arg-type]
    model = build_model(config, store)
    calls: list[int] = []
    real = base_module.unseen_negative

    def counted(target: torch.Tensor, held: torch.Tensor, n_items: int) -> torch.Tensor:
        calls.append(len(target))
        return real(target, held, n_items)

    monkeypatch.setattr(base_module, "unseen_negative", counted)
    batch = next(iter(store.train_batches(4, 10, shuffle=False, seed=0)))
    model.loss(batch, model(batch))
    assert calls == [int((batch.target_items > 0).sum())]  # one draw for every target of the batch
