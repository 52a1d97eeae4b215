"""Trimming the C heap when it grows: the decision against hand-set memory levels, and where it is called."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import intentrec.eval.evaluate as evaluate_module
import intentrec.train.loop as loop_module
from intentrec.data.batching import SequenceStore
from intentrec.data.schema import make_dataset
from intentrec.data.sequences import build_sequences
from intentrec.data.synthetic import WorldConfig, generate
from intentrec.heap import HeapTrimmer, resident_bytes, shared_trimmer
from intentrec.models import sasrec
from intentrec.train.loop import TrainConfig, train_epoch

MB = 1 << 20


class Levels:
    """Resident memory read from a script of levels (MB), one per read; counts trims."""

    def __init__(self, levels: list[int]) -> None:
        self.levels: Iterator[int] = iter(levels)
        self.trims = 0

    def resident(self) -> int:
        return next(self.levels) * MB

    def trim(self) -> None:
        self.trims += 1


def test_trims_only_past_the_slack_and_measures_from_the_step_after_the_trim() -> None:
    # created at 400; steps end at 430 (within 64), 470 (past 464: trim, down to 420), 440 (the step
    # after a trim takes 20 back: the new floor; allowed stays 64 > 2 x 20), 500 (within 504), 505 (past)
    levels = Levels([400, 430, 470, 420, 440, 500, 505, 420])
    trimmer = HeapTrimmer(64 * MB, resident=levels.resident, trim=levels.trim)
    assert [trimmer() for _ in range(5)] == [False, True, False, False, True]
    assert levels.trims == trimmer.trims == 2
    assert trimmer.floor == 440 * MB and trimmer.allowed == 64 * MB


def test_a_large_working_set_raises_the_allowed_growth() -> None:
    # trim at 500 leaves 400; the next step takes 100 back (500): allowed becomes 200, so 650 is kept
    # and 710 (past 700) is trimmed
    levels = Levels([400, 500, 400, 500, 650, 710, 450])
    trimmer = HeapTrimmer(64 * MB, resident=levels.resident, trim=levels.trim)
    assert [trimmer() for _ in range(4)] == [True, False, False, True]
    assert trimmer.allowed == 200 * MB


def test_the_floor_follows_memory_down() -> None:
    # 400 at creation, 300 after a release: growth is measured from 300 (370 is past 364)
    levels = Levels([400, 300, 370, 300])
    trimmer = HeapTrimmer(64 * MB, resident=levels.resident, trim=levels.trim)
    assert [trimmer(), trimmer()] == [False, True]
    assert trimmer.floor == 300 * MB


def test_does_nothing_without_glibc_or_proc() -> None:
    no_proc = HeapTrimmer(resident=lambda: None, trim=lambda: pytest.fail("trimmed without a memory reading"))
    assert not no_proc.active and no_proc() is False
    no_glibc = HeapTrimmer(resident=lambda: 10**12)
    no_glibc.trim = None  # as when libc has no malloc_trim
    assert not no_glibc.active and no_glibc() is False


def test_negative_slack_is_refused() -> None:
    with pytest.raises(ValueError, match="slack must be >= 0 bytes, got -1"):
        HeapTrimmer(-1)


def test_resident_bytes_agrees_with_the_kernel_status_or_is_none_without_proc() -> None:
    status = Path("/proc/self/status")
    if not status.exists():  # macOS, Windows: no reading, so the trimmer stands aside
        assert resident_bytes() is None and not HeapTrimmer().active
        return
    rss_kb = next(int(line.split()[1]) for line in status.read_text().splitlines() if line.startswith("VmRSS:"))
    assert resident_bytes() == pytest.approx(rss_kb * 1024, rel=0.05)
    assert HeapTrimmer().active  # glibc on the Linux machines we test on


def test_training_and_evaluation_check_one_shared_trimmer_once_per_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"train": 0, "eval": 0}
    shared = HeapTrimmer()

    class Counting:
        def __init__(self, kind: str) -> None:
            self.kind = kind

        def __call__(self) -> bool:
            calls[self.kind] += 1
            return shared()

    monkeypatch.setattr(loop_module, "shared_trimmer", lambda: Counting("train"))
    monkeypatch.setattr(evaluate_module, "shared_trimmer", lambda: Counting("eval"))
    world = generate(WorldConfig(users=50, seed=3, titles=30))
    store = SequenceStore(build_sequences(make_dataset("w", world.interactions, world.items)))
    torch.manual_seed(0)
    model = sasrec(store.n_items, d=16, max_len=20)
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3)
    config = TrainConfig(batch_size=16)
    train_epoch(model, store, optimiser, None, config, 0, torch.device("cpu"))
    users, targets = len(store.train_users()), len(store.targets("valid"))
    assert calls["train"] == -(-users // 16) > 1  # one call per batch of 16 users
    evaluate_module.evaluate(model, store, "valid", batch_size=16)
    assert calls["eval"] == -(-targets // 16) > 1


def test_one_trimmer_per_process() -> None:
    assert shared_trimmer() is shared_trimmer()
    assert loop_module.shared_trimmer is shared_trimmer is evaluate_module.shared_trimmer
