"""The fused full-softmax loss, the fast dropout and the explicit attention against PyTorch's own."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import intentrec.models.base as base
from intentrec.models.base import linear_cross_entropy
from intentrec.models.layers import (
    Dropout,
    FeatureEmbedder,
    attention,
    causal_mask,
    dropout,
    positions_from_last,
    real_positions,
)


def plain_loss(hidden: torch.Tensor, items: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    logits = hidden @ items.T
    logits = torch.cat([torch.full_like(logits[:, :1], float("-inf")), logits[:, 1:]], dim=1)
    return (F.cross_entropy(logits, target, reduction="none") * weights).sum()


@pytest.mark.parametrize(("n_rows", "n_items", "chunk_logits"), [(13, 7, 1 << 18), (300, 50, 64 * 51), (1, 3, 1)])
def test_linear_cross_entropy_matches_the_plain_loss_and_its_gradients(
    monkeypatch: pytest.MonkeyPatch, n_rows: int, n_items: int, chunk_logits: int
) -> None:
    monkeypatch.setattr(base, "logits_per_chunk", lambda: chunk_logits)  # (300, 50): five chunks of 64 rows
    generator = torch.Generator().manual_seed(n_rows)
    hidden = torch.randn(n_rows, 5, dtype=torch.double, generator=generator, requires_grad=True)
    items = torch.randn(n_items + 1, 5, dtype=torch.double, generator=generator, requires_grad=True)
    target = torch.randint(1, n_items + 1, (n_rows,), generator=generator)
    weights = torch.rand(n_rows, dtype=torch.double, generator=generator)

    ours = linear_cross_entropy(hidden, items, target, weights)
    expected = plain_loss(hidden, items, target, weights)
    assert ours.item() == pytest.approx(expected.item(), rel=1e-12)
    ours_grads = torch.autograd.grad(2.5 * ours, (hidden, items))
    expected_grads = torch.autograd.grad(2.5 * expected, (hidden, items))
    for got, want in zip(ours_grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    assert ours_grads[1][0].abs().max() == 0.0  # the padding row never gets a gradient


@pytest.mark.parametrize("hidden_dtype", [torch.float32, torch.bfloat16])
def test_linear_cross_entropy_under_bf16_autocast_is_the_loss_to_bf16_rounding(
    monkeypatch: pytest.MonkeyPatch, hidden_dtype: torch.dtype
) -> None:
    # train.precision = "bf16": products from bfloat16 operands (8 significant bits, relative rounding
    # 2**-9), softmax and sums in float32; hidden rows may arrive in either dtype, gradients leave in theirs
    monkeypatch.setattr(base, "logits_per_chunk", lambda: 64 * 51)  # 300 rows, 51 columns: five chunks
    generator = torch.Generator().manual_seed(3)
    hidden = torch.randn(300, 16, generator=generator).to(hidden_dtype).requires_grad_()
    items = torch.randn(51, 16, generator=generator, requires_grad=True)
    target = torch.randint(1, 51, (300,), generator=generator)
    weights = torch.rand(300, generator=generator)
    exact = (hidden.detach().double().requires_grad_(), items.detach().double().requires_grad_())
    expected = plain_loss(*exact, target, weights.double())
    expected_grads = torch.autograd.grad(expected, exact)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = linear_cross_entropy(hidden, items, target, weights)
    assert ours.dtype == torch.float32
    assert ours.item() == pytest.approx(expected.item(), rel=5e-3)
    grads = torch.autograd.grad(ours, (hidden, items))
    assert grads[0].dtype == hidden_dtype and grads[1].dtype == torch.float32
    for got, want in zip(grads, expected_grads, strict=True):
        # every entry within 3% of the largest: bfloat16 products, not a wrong formula (which is off by O(1))
        assert (got.double() - want).abs().max() <= 0.03 * want.abs().max()
    assert grads[1][0].abs().max() == 0.0


def test_chunk_size_follows_the_torch_threads() -> None:
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert base.logits_per_chunk() == base.LOGITS_PER_CHUNK
        torch.set_num_threads(2)
        assert base.logits_per_chunk() == base.LOGITS_PER_CHUNK_THREADED > base.LOGITS_PER_CHUNK
    finally:
        torch.set_num_threads(threads)


def test_linear_cross_entropy_by_hand_and_without_item_gradients() -> None:
    # Two items plus padding; hidden . items = logits [_, 0, ln 3]: softmax over items 1, 2 is [1/4, 3/4].
    hidden = torch.tensor([[1.0]], requires_grad=True)
    items = torch.tensor([[5.0], [0.0], [float(torch.log(torch.tensor(3.0)))]])
    loss = linear_cross_entropy(hidden, items, torch.tensor([1]), torch.tensor([2.0]))
    assert loss.item() == pytest.approx(2.0 * -torch.log(torch.tensor(0.25)).item(), rel=1e-6)
    (grad,) = torch.autograd.grad(loss, hidden)
    # d/dh of 2 * (logsumexp - logit_1) = 2 * (E_softmax[item] - item_1) = 2 * (3/4 * ln 3 - 0)
    assert grad.item() == pytest.approx(2.0 * 0.75 * torch.log(torch.tensor(3.0)).item(), rel=1e-6)


def test_dropout_keeps_the_right_share_scaled_and_is_identity_in_eval() -> None:
    torch.manual_seed(0)
    x = torch.ones(200_000)
    for p in (0.2, 0.5):
        y = dropout(x, p, True)
        kept = y != 0
        # 3 sigma of a binomial share over 200,000 draws is under 0.003
        assert kept.float().mean().item() == pytest.approx(1 - p, abs=0.003)
        assert torch.allclose(y[kept], torch.full_like(y[kept], 1 / (1 - p)))
        assert y.mean().item() == pytest.approx(1.0, abs=0.01)  # unbiased
    assert dropout(x, 0.5, False) is x and dropout(x, 0.0, True) is x
    module = Dropout(0.5).eval()
    assert module(x) is x
    with pytest.raises(ValueError, match="dropout probability"):
        Dropout(1.0)


def test_dropout_gradient_is_the_same_mask_and_scale() -> None:
    torch.manual_seed(1)
    x = torch.randn(64, 33, requires_grad=True)  # odd element count: the last 16-bit draw is cut
    y = dropout(x, 0.25, True)
    (grad,) = torch.autograd.grad(y.sum(), x)
    assert torch.equal(grad != 0, y != 0)
    assert torch.allclose(grad[grad != 0], torch.full_like(grad[grad != 0], 1 / 0.75))


def test_attention_equals_the_fused_kernel_without_dropout_and_stays_causal_with_it() -> None:
    torch.manual_seed(2)
    B, h, L, d = 3, 2, 6, 4
    q, k, v = (torch.randn(B, h, L, d) for _ in range(3))
    mask = torch.tensor([[0, 0, 1, 1, 1, 1], [1] * 6, [0, 0, 0, 0, 0, 1]], dtype=torch.bool)
    allowed = causal_mask(mask)
    written_out = (
        torch.softmax((q @ k.transpose(-2, -1) / d**0.5).masked_fill(~allowed[:, None], float("-inf")), dim=-1) @ v
    )
    torch.testing.assert_close(attention(q, k, v, allowed, 0.0), written_out)

    # With dropout, changing keys and values at the last position leaves every earlier output as it was.
    torch.manual_seed(3)
    before = attention(q, k, v, allowed, 0.5)
    k2, v2 = k.clone(), v.clone()
    k2[:, :, -1] += 10.0
    v2[:, :, -1] -= 10.0
    torch.manual_seed(3)
    after = attention(q, k2, v2, allowed, 0.5)
    torch.testing.assert_close(after[:, :, :-1], before[:, :, :-1])


def test_small_init_is_berts_and_starts_with_small_scores() -> None:
    from intentrec.models.intentrec import IntentRec, IntentRecConfig
    from intentrec.models.layers import FeatureEmbedder

    torch.manual_seed(0)
    models = {init: IntentRec(IntentRecConfig(n_items=500, variant="V0", init=init)) for init in ("scaled", "small")}
    small = models["small"]
    weights = [m.weight for m in small.modules() if isinstance(m, torch.nn.Linear | torch.nn.Embedding)]
    everything = torch.cat([w.detach().flatten() for w in weights])
    assert everything.std().item() == pytest.approx(0.02, rel=0.05)
    assert all((m.bias == 0).all() for m in small.modules() if isinstance(m, torch.nn.Linear) and m.bias is not None)
    assert (small.item_embeddings[0] == 0).all(), "the padding row stays zero"
    assert next(m for m in small.modules() if isinstance(m, FeatureEmbedder)).item_scale == 1.0
    # the point of it: scores over the catalogue start near zero instead of spread wide
    spread = {}
    for init, model in models.items():
        hidden = torch.randn(4, 64)
        spread[init] = model.item_logits(hidden)[:, 1:].std().item()
    assert spread["small"] < spread["scaled"] / 5
    with pytest.raises(ValueError, match="init must be one of"):
        IntentRecConfig(n_items=5, variant="V0", init="glorot")  # type: ignore[arg-type]


def test_xavier_init_is_rectools_and_starts_from_the_positions() -> None:
    from intentrec.models.intentrec import IntentRec, IntentRecConfig
    from intentrec.models.layers import FeatureEmbedder

    torch.manual_seed(0)
    model = IntentRec(IntentRecConfig(n_items=2000, variant="V0", d=64, max_len=50, init="xavier"))
    embed = next(m for m in model.modules() if isinstance(m, FeatureEmbedder))
    # Xavier's normal: std sqrt(2 / (fan_in + fan_out)); for an (rows, d) embedding that is sqrt(2 / (rows + d))
    assert embed.item.weight[1:].std().item() == pytest.approx((2 / (2001 + 64)) ** 0.5, rel=0.02)
    assert embed.position.weight.std().item() == pytest.approx((2 / (50 + 64)) ** 0.5, rel=0.05)
    qkv = model.next_encoder.blocks[0].qkv.weight  # (3 d, d)
    assert qkv.std().item() == pytest.approx((2 / (192 + 64)) ** 0.5, rel=0.05)
    assert (embed.item.weight[0] == 0).all(), "the padding row stays zero"
    assert embed.item_scale == 1.0
    ln = model.next_encoder.ln
    assert (ln.weight == 1).all() and (ln.bias == 0).all(), "LayerNorm as built"
    # scores over the catalogue start near zero: a unit hidden state against rows of std 0.031
    hidden = torch.randn(8, 64)
    assert model.item_logits(hidden)[:, 1:].std().item() == pytest.approx(8 * (2 / 2065) ** 0.5, rel=0.1)


def test_positions_from_the_first_and_from_the_last_interaction_by_hand() -> None:
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 0, 1], [0, 0, 0, 0, 0]], dtype=torch.bool)
    first, last = real_positions(mask), positions_from_last(mask)
    assert first[mask].tolist() == [0, 1, 2, 0, 1, 2, 3, 4, 0]
    assert last[mask].tolist() == [2, 1, 0, 4, 3, 2, 1, 0, 0]
    assert ((last >= 0) & (last < 5)).all()  # padding (and an empty row) stays a valid index


def test_from_last_gives_the_last_interaction_the_same_embedding_whatever_came_before() -> None:
    torch.manual_seed(0)
    mask = torch.tensor([[0, 0, 1, 1], [0, 1, 1, 1], [1, 1, 1, 1]], dtype=torch.bool)
    items = torch.tensor([[0, 0, 5, 7], [0, 2, 5, 7], [3, 1, 5, 7]])  # the same last two, after 0, 1 or 2 others
    zeros = torch.zeros_like(items)
    for positions, same in (("from_last", True), ("from_first", False)):
        embed = FeatureEmbedder(9, 8, 4, [], 4, 0.0, positions=positions).eval()
        x = embed(items, zeros[..., None][..., :0], zeros, mask)  # (3, 4, 8)
        assert torch.allclose(x[0, -1], x[1, -1]) is same and torch.allclose(x[0, -1], x[2, -1]) is same
    with pytest.raises(ValueError, match="positions must be one of"):
        FeatureEmbedder(9, 8, 4, [], 4, 0.0, positions="from_middle")
