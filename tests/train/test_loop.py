from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from intentrec.config import load_config
from intentrec.data.batching import SequenceStore
from intentrec.data.schema import make_dataset
from intentrec.data.sequences import build_sequences
from intentrec.data.synthetic import WorldConfig, generate
from intentrec.eval.evaluate import evaluate
from intentrec.models import HeadSpec, IntentRec, IntentRecConfig
from intentrec.runs import build_model
from intentrec.train.loop import BEST, CHECKPOINT, TrainConfig, _schedule, load_checkpoint, train, train_epoch


def store() -> SequenceStore:
    world = generate(WorldConfig(users=60, seed=5, titles=40))
    return SequenceStore(build_sequences(make_dataset("w", world.interactions, world.items)))


def build(s: SequenceStore) -> IntentRec:
    torch.manual_seed(0)
    heads = tuple(HeadSpec(h.name, len(h.classes), h.multi_label) for h in s.heads)
    config = IntentRecConfig(
        n_items=s.n_items, heads=heads, cardinalities=tuple(s.cardinalities), d=16, max_len=20, dropout=0.1
    )
    return IntentRec(config)


@pytest.mark.parametrize(
    "batching",
    [
        {},
        {"length_groups": 3},
        {"samples": "prefixes", "length_groups": 3, "batch_size": 128},  # 2,316 targets
        {"precision": "bf16"},  # autocast: the products in bfloat16, the weights still float32
    ],
)
def test_training_improves_validation_and_writes_checkpoints(tmp_path: Path, batching: dict[str, object]) -> None:
    s = store()
    model = build(s)
    before = evaluate(model, s, "valid")["ndcg@10"]
    config = TrainConfig(**{"epochs": 4, "batch_size": 16, "warmup_steps": 2, "lr": 5e-3, **batching})  # type: ignore[arg-type]
    result = train(model, s, config, tmp_path)
    assert result["best_valid_ndcg@10"] > before  # type: ignore[operator]
    state = load_checkpoint(tmp_path / CHECKPOINT)
    assert state["epoch"] == 3 and set(state) >= {"model", "optimiser", "scheduler", "rng", "model_config"}
    assert {v.dtype for v in state["model"].values() if v.is_floating_point()} == {torch.float32}
    assert (tmp_path / BEST).exists()
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 4
    assert not list(tmp_path.glob(".*pt.*")), "no temporary checkpoint files left behind"


def test_resume_ends_exactly_like_an_uninterrupted_run(tmp_path: Path) -> None:
    s = store()
    config = TrainConfig(epochs=3, batch_size=16, warmup_steps=2, lr=5e-3, seed=11)
    straight = build(s)
    train(straight, s, config, tmp_path / "a")
    interrupted = build(s)
    first = train(interrupted, s, TrainConfig(**{**config.__dict__, "stop_after_epochs": 1}), tmp_path / "b")
    resumed = build(s)  # a fresh process would rebuild the model from scratch
    result = train(resumed, s, config, tmp_path / "b", resume=True)
    # the resumed run's time counts the epoch trained before the interruption too
    epochs = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert len(epochs) == 3 and result["train_seconds"] > first["train_seconds"] > 0
    assert result["train_seconds"] >= sum(e["train_seconds"] for e in epochs)
    for (name, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, msg=f"{name} differs after resuming")
    assert evaluate(straight, s, "test") == evaluate(resumed, s, "test")


def test_learning_rate_schedules_by_hand() -> None:
    def rates(shape: str) -> list[float]:
        optimiser = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=2.0)
        scheduler = _schedule(optimiser, warmup=2, total=10, shape=shape)
        out = []
        for _ in range(10):
            out.append(optimiser.param_groups[0]["lr"])
            optimiser.step()
            scheduler.step()
        return out

    # warm-up (step + 1) / 2, then (10 - step) / 8 of the rate, or the whole rate
    assert rates("linear") == pytest.approx([1.0, 2.0, 2.0, 1.75, 1.5, 1.25, 1.0, 0.75, 0.5, 0.25])
    assert rates("constant") == pytest.approx([1.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0])


def test_constant_rate_without_clipping_ends_at_the_full_rate(tmp_path: Path) -> None:
    s = store()
    model = build(s)
    before = evaluate(model, s, "valid")["ndcg@10"]
    config = TrainConfig(epochs=3, batch_size=16, warmup_steps=0, lr=5e-3, lr_schedule="constant", clip_norm=0.0)
    result = train(model, s, config, tmp_path)
    assert result["best_valid_ndcg@10"] > before  # type: ignore[operator]
    assert load_checkpoint(tmp_path / CHECKPOINT)["optimiser"]["param_groups"][0]["lr"] == pytest.approx(5e-3)
    train(build(s), s, TrainConfig(**{**config.__dict__, "lr_schedule": "linear"}), tmp_path / "linear")
    assert load_checkpoint(tmp_path / "linear" / CHECKPOINT)["optimiser"]["param_groups"][0]["lr"] == 0.0


def test_prefix_rows_give_the_same_loss_and_gradients_as_whole_sequences() -> None:
    """With every history inside max_len and no dropout, a causal model's prediction at a position
    depends only on what comes before it: one row per target must reproduce the loss (item and intent
    parts) and the gradients of one row per user, target for target."""
    world = generate(WorldConfig(users=30, seed=5, titles=40))
    s = SequenceStore(build_sequences(make_dataset("w", world.interactions, world.items)))
    longest = int(s.train_end.max())
    torch.manual_seed(0)
    heads = tuple(HeadSpec(h.name, len(h.classes), h.multi_label) for h in s.heads)
    config = IntentRecConfig(
        n_items=s.n_items, heads=heads, cardinalities=tuple(s.cardinalities), d=16, max_len=longest, dropout=0.0
    )
    model = IntentRec(config)
    losses, grads = [], []
    for samples in ("sequences", "prefixes"):
        batch = next(s.train_batches(10_000, longest, shuffle=False, samples=samples))  # type: ignore[arg-type]
        model.zero_grad()
        loss, parts = model.training_loss(batch)
        loss.backward()
        losses.append(parts)
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert losses[0].keys() == losses[1].keys() and len(losses[0]) > 2  # item, each head, total
    for name in losses[0]:
        assert losses[1][name] == pytest.approx(losses[0][name], rel=1e-5), name
    assert grads[0].keys() == grads[1].keys()
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize(
    "settings",
    [
        ["model.kind='sasrec'"],
        ["model.kind='sasrec'", "model.item_loss='bce'"],
        ["model.kind='intentrec'", "model.item_loss='sampled'"],
        ["model.kind='intentrec'", "model.variant='V3'"],
        ["model.kind='bert4rec'"],
        ["model.kind='gru4rec'", "model.n_blocks=1"],
    ],
)
def test_bf16_training_follows_the_fp32_losses(settings: list[str]) -> None:
    s = store()
    losses = {}
    for precision in ("fp32", "bf16"):
        config = load_config(None, [*settings, "model.d=16", "model.max_len=20", f"train.precision='{precision}'"])
        torch.manual_seed(0)
        model = build_model(config.model, s)
        optimiser = torch.optim.AdamW(model.parameters(), lr=5e-3)
        train_config = TrainConfig(batch_size=16, precision=config.train.precision)
        losses[precision] = [
            train_epoch(model, s, optimiser, None, train_config, e, torch.device("cpu"))[1] for e in range(3)
        ]
    assert losses["fp32"][-1] < losses["fp32"][0]  # it learns
    # bfloat16 products move each epoch's mean loss by rounding only: well under 1% (fp32 falls 5-10%)
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=0.01)
    if "gru4rec" not in settings[0]:  # autocast took effect (PyTorch's CPU GRU keeps float32 under it)
        assert losses["bf16"] != losses["fp32"]
