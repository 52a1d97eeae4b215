"""Model checks with tiny sizes that all differ (B=3, L=7, D=16, I=23): shapes, causality, padding
invariance, finite gradients everywhere, and that a small batch can be overfit."""

from __future__ import annotations

import pytest
import torch

from intentrec.data.batching import Batch
from intentrec.eval.metrics import rank_of_target
from intentrec.models import HeadSpec, IntentRec, IntentRecConfig, sasrec
from intentrec.models.layers import window_mask

B, L, D, I = 3, 7, 16, 23
HEADS = (HeadSpec("action", 3), HeadSpec("genre", 5, multi_label=True), HeadSpec("format", 2))
CARDS = (4, 6)
LENGTHS = (7, 4, 2)  # real interactions per row; the rest is left padding


def make_batch(seed: int = 0, pad: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    Lp = L + pad
    mask = torch.zeros(B, Lp, dtype=torch.bool)
    for row, n in enumerate(LENGTHS):
        mask[row, Lp - n :] = True
    items = torch.randint(1, I + 1, (B, Lp), generator=g) * mask
    categorical = torch.stack([torch.randint(1, c, (B, Lp), generator=g) for c in CARDS], -1) * mask[..., None]
    targets = torch.randint(1, I + 1, (B, Lp), generator=g) * mask
    intent_targets = {
        "action": torch.where(mask, torch.randint(0, 3, (B, Lp), generator=g), -100),
        "genre": (torch.rand(B, Lp, 5, generator=g) < 0.4).float() * mask[..., None],
        "format": torch.where(mask, torch.randint(0, 2, (B, Lp), generator=g), -100),
    }
    return Batch(
        users=torch.arange(B),
        items=items,
        categorical=categorical,
        time_gaps=torch.randint(1, 16, (B, Lp), generator=g) * mask,
        window_len=torch.minimum(mask.long().cumsum(1), torch.full((B, Lp), 3)) * mask,
        mask=mask,
        target_items=targets,
        target_weights=mask.float(),
        intent_targets=intent_targets,
        intent_target_mask={k: mask.clone() for k in intent_targets},
    )


def model(variant: str = "V3", dropout: float = 0.0, **kw: object) -> IntentRec:
    torch.manual_seed(0)
    genres = (torch.rand(I + 1, 5) < 0.3).float()
    config = IntentRecConfig(n_items=I, heads=HEADS, cardinalities=CARDS, variant=variant, d=D, n_blocks=2, n_heads=2,
                             dropout=dropout, max_len=12, **kw)  # type: ignore[arg-type]  # fmt: skip
    return IntentRec(config, item_genres=genres).eval()


@pytest.mark.parametrize("variant", ["V0", "V1", "V2", "V3"])
def test_shapes(variant: str) -> None:
    out = model(variant)(make_batch())
    assert out.hidden.shape == (B, L, D)
    assert model(variant).item_logits(out.hidden).shape == (B, L, I + 1)
    if variant == "V0":
        assert out.intent_logits == {} and out.intent_weights is None
    else:
        assert {k: tuple(v.shape) for k, v in out.intent_logits.items()} == {
            "action": (B, L, 3),
            "genre": (B, L, 5),
            "format": (B, L, 2),
        }
    if variant in ("V2", "V3"):
        assert out.intent_weights is not None and out.intent_weights.shape == (B, L, 3)
        torch.testing.assert_close(out.intent_weights.sum(-1), torch.ones(B, L))


# RECTOOLS: SASRec as RecTools builds it (no input projection, Xavier init, positions from the last)
RECTOOLS = {"input_projection": False, "init": "xavier", "positions": "from_last"}


@pytest.mark.parametrize(("variant", "positions", "kw"), [("V0", "from_first", {}), ("V1", "from_first", {}),
                                                          ("V3", "from_first", {}), ("V3", "from_last", {}),
                                                          ("V0", "from_last", RECTOOLS),
                                                          ("V1", "from_first", {"input_projection": False}),
                                                          ("V3", "from_first", {"input_projection": False})])  # fmt: skip
def test_causality(variant: str, positions: str, kw: dict[str, object]) -> None:
    m = model(variant, **{"positions": positions, **kw})
    batch = make_batch()
    before = m(batch)
    t = 4
    changed = make_batch()
    changed.items[:, t:] = (changed.items[:, t:] % I) + 1
    changed.categorical[:, t:] = 1
    after = m(changed)
    torch.testing.assert_close(before.hidden[:, :t], after.hidden[:, :t])
    for name in before.intent_logits:
        torch.testing.assert_close(before.intent_logits[name][:, :t], after.intent_logits[name][:, :t])
    assert not torch.allclose(before.hidden[0, t:], after.hidden[0, t:])


@pytest.mark.parametrize("variant", ["V0", "V2", "V3"])
def test_last_only_is_the_last_position_of_the_full_pass(variant: str) -> None:
    m, batch = model(variant), make_batch()
    full, last = m(batch), m(batch, last_only=True)
    assert last.hidden.shape == (B, 1, D)
    torch.testing.assert_close(last.hidden[:, 0], full.hidden[:, -1])
    for name, logits in full.intent_logits.items():  # the intent outputs keep every position
        torch.testing.assert_close(last.intent_logits[name], logits)


@pytest.mark.parametrize(
    ("variant", "positions", "kw"),
    [
        ("V0", "from_first", {}),
        ("V3", "from_first", {}),
        ("V3", "from_last", {}),
        ("V0", "from_last", RECTOOLS),
        ("V3", "from_first", {"input_projection": False}),
    ],
)
def test_left_padding_changes_nothing(variant: str, positions: str, kw: dict[str, object]) -> None:
    m = model(variant, **{"positions": positions, **kw})
    plain, padded = make_batch(seed=1), make_batch(seed=1, pad=3)
    # the padded batch holds the same real interactions: copy them over
    for name in ("items", "time_gaps", "window_len", "target_items"):
        getattr(padded, name)[:, 3:] = getattr(plain, name)
    padded.categorical[:, 3:] = plain.categorical
    a, b = m(plain), m(padded)
    real = plain.mask
    torch.testing.assert_close(a.hidden[real], b.hidden[:, 3:][real])
    if a.intent_weights is not None and b.intent_weights is not None:
        torch.testing.assert_close(a.intent_weights[real], b.intent_weights[:, 3:][real])


def test_without_the_input_projection_the_encoder_reads_the_embeddings() -> None:
    with_, without = model("V0"), model("V0", input_projection=False)
    names = {n for n, _ in with_.named_parameters()} - {n for n, _ in without.named_parameters()}
    assert names == {"next_in.0.weight", "next_in.0.bias", "next_in.1.weight", "next_in.1.bias"}
    assert isinstance(without.next_in, torch.nn.Identity)
    v1 = model("V1", input_projection=False)
    assert isinstance(v1.intent_in, torch.nn.Identity) and not hasattr(v1, "next_in")


def test_without_the_input_projection_v2_and_v3_sum_their_inputs() -> None:
    v3 = model("V3", input_projection=False)
    assert not any(n.startswith(("intent_in.", "next_in.")) for n, _ in v3.named_parameters())
    parts = torch.randn(3, B, L, D)  # F_k, S_k, Z_k
    joined = torch.cat(list(parts), -1)  # (B, L, 3D), as forward joins them
    torch.testing.assert_close(v3.next_in(joined), parts[0] + parts[1] + parts[2])
    torch.testing.assert_close(v3.intent_in(joined[..., : 2 * D]), parts[0] + parts[1])
    # the next-item encoder reads exactly that sum: hidden = next_encoder(F + S + Z)
    v3.eval()
    batch = make_batch()
    seen: dict[str, torch.Tensor] = {}
    v3.next_encoder.register_forward_hook(lambda _m, args, _out: seen.setdefault("x", args[0]))
    out = v3(batch)
    features = v3.embed(batch.items, batch.categorical, batch.time_gaps, batch.mask)
    short_term = v3.window(features, window_mask(batch.mask, batch.window_len))
    assert out.intent_embedding is not None
    torch.testing.assert_close(seen["x"], features + short_term + out.intent_embedding)


def test_every_parameter_gets_a_finite_gradient() -> None:
    m = model("V3", dropout=0.1).train()
    batch = make_batch()
    loss, parts = m.loss(batch, m(batch))
    loss.backward()
    assert set(parts) == {"item", "action", "genre", "format", "total"}
    for name, p in m.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"


@pytest.mark.parametrize(("variant", "kw"), [("V0", {}), ("V3", {}), ("V0", RECTOOLS)])
def test_a_small_batch_can_be_overfit(variant: str, kw: dict[str, object]) -> None:
    m = model(variant, **kw).train()
    batch = make_batch(seed=3)
    optimiser = torch.optim.Adam(m.parameters(), lr=1e-2)
    first = None
    for _ in range(150):
        optimiser.zero_grad()
        loss, _ = m.loss(batch, m(batch))
        loss.backward()
        optimiser.step()
        first = first if first is not None else loss.item()
    m.eval()
    final, _ = m.loss(batch, m(batch))
    assert final.item() < 0.1 * first
    has = batch.target_items > 0
    ranks = rank_of_target(m.item_logits(m(batch).hidden[has]), batch.target_items[has])
    assert (ranks == 1).all(), "HR@1 reaches 1.0 on the memorised batch"


def test_sasrec_bce_trains_and_ignores_side_features() -> None:
    torch.manual_seed(0)
    m = sasrec(I, d=D, max_len=12, dropout=0.0, item_loss="bce")
    batch = make_batch()
    other = make_batch()
    other.categorical.fill_(1)
    m.eval()
    torch.testing.assert_close(m(batch).hidden, m(other).hidden)
    m.train()
    optimiser = torch.optim.Adam(m.parameters(), lr=1e-2)
    losses = []
    for _ in range(60):
        optimiser.zero_grad()
        loss, _ = m.loss(batch, m(batch))
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_config_errors() -> None:
    with pytest.raises(ValueError, match="variant must be V0, V1, V2 or V3"):
        IntentRecConfig(n_items=5, variant="V9")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs at least one intent head"):
        IntentRecConfig(n_items=5, variant="V3")
    with pytest.raises(ValueError, match="positions must be one of"):
        IntentRecConfig(n_items=5, variant="V0", positions="from_middle")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not divisible by 3 heads"):
        IntentRec(IntentRecConfig(n_items=5, variant="V0", d=16, n_heads=3))


@pytest.mark.parametrize("kind", ["sasrec", "V3"])
def test_length_groups_give_the_whole_batch_gradient(kind: str) -> None:
    """Training on a batch split into groups of similar length, losses weighted by target share, is the
    whole batch's update (exactly, for the item loss)."""
    batch = make_batch(seed=4, pad=5)
    whole = (
        sasrec(I, d=D, n_blocks=2, n_heads=2, max_len=12, dropout=0.0)
        if kind == "sasrec"
        else model("V3", intent_lambda=0.0)
    )
    whole.train()
    loss, _ = whole.training_loss(batch)
    loss.backward()
    split = (
        sasrec(I, d=D, n_blocks=2, n_heads=2, max_len=12, dropout=0.0)
        if kind == "sasrec"
        else model("V3", intent_lambda=0.0)
    )
    split.load_state_dict(whole.state_dict())
    split.train()
    groups = batch.split_by_length(3)
    assert len(groups) == 3 and sum(share for _, share in groups) == pytest.approx(1.0)
    assert sorted(g.items.shape[1] for g, _ in groups) == sorted(LENGTHS)  # each group as wide as its rows
    for group, share in groups:
        part, _ = split.training_loss(group)
        (part * share).backward()
    for (name, a), (_, b) in zip(whole.named_parameters(), split.named_parameters(), strict=True):
        if a.grad is not None:
            torch.testing.assert_close(a.grad, b.grad, msg=f"gradient of {name}")


def test_output_genres_score_items_with_their_genres() -> None:
    m = model("V0", output_genres=True)
    genres = m.embed.item_genres
    assert genres is not None
    with torch.no_grad():
        expected = m.embed.item.weight + genres @ m.embed.genre.weight.T  # (I + 1, D)
        torch.testing.assert_close(m.item_embeddings, expected)
        assert m.item_embeddings is m.item_embeddings  # kept between calls while nothing changes
    batch = make_batch()
    m.train()
    loss, _ = m.training_loss(batch)
    loss.backward()
    assert m.embed.genre.weight.grad is not None and m.embed.genre.weight.grad.abs().sum() > 0
    before = m.item_embeddings.detach().clone()
    torch.optim.SGD(m.parameters(), lr=0.5).step()
    with torch.no_grad():  # an optimiser step changes the table the model scores with
        assert not torch.allclose(m.item_embeddings, before)
        torch.testing.assert_close(m.item_embeddings, m.embed.item.weight + genres @ m.embed.genre.weight.T)
    plain = model("V0")
    with torch.no_grad():
        assert plain.item_embeddings is plain.embed.item.weight


def test_a_training_step_builds_the_genre_table_once_with_the_same_loss_and_gradients(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the input embedding and the tied output layer (output_genres) both read the genre table
    batch = make_batch()
    separate, shared = model("V3", output_genres=True).train(), model("V3", output_genres=True).train()
    calls = []
    embedding_bag = torch.nn.functional.embedding_bag
    monkeypatch.setattr(torch.nn.functional, "embedding_bag", lambda *a, **k: calls.append(1) or embedding_bag(*a, **k))
    torch.manual_seed(1)
    loss_separate, _ = separate.loss(batch, separate(batch))  # what every model's training_loss does
    assert len(calls) == 2
    torch.manual_seed(1)
    loss_shared, _ = shared.training_loss(batch)
    assert len(calls) == 3  # one table for the step
    torch.testing.assert_close(loss_shared, loss_separate)
    loss_separate.backward()
    loss_shared.backward()
    for (name, a), b in zip(separate.named_parameters(), shared.parameters(), strict=True):
        assert a.grad is not None and b.grad is not None, name
        torch.testing.assert_close(b.grad, a.grad, msg=name)
    assert shared.embed._step_table is None  # nothing is kept past the step: its graph has been freed
    shared.training_loss(batch)[0].backward()  # so a second step builds its own and backward works again
    assert len(calls) == 4
