"""Choosing torch's thread count from the free cores: /proc/stat parsing, the decision, the CLI flag."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from intentrec.cli import main
from intentrec.train.threads import ThreadChoice, apply_threads, busy_cores, choose_threads, cpu_jiffies

# user nice system idle iowait irq softirq steal guest guest_nice
BEFORE = """cpu  300 0 100 1600 0 0 0 0 0 0
cpu0 100 0 50 850 0 0 0 0 0 0
cpu1 200 0 50 750 0 0 0 0 0 0
intr 12345 1 2
ctxt 999
"""
# over the interval cpu0 ran 90 busy jiffies of 100; cpu1 10 of 100 (5 of its 95 not-busy were iowait)
AFTER = """cpu  400 0 100 1790 5 0 0 0 0 0
cpu0 180 0 60 860 0 0 0 0 0 0
cpu1 220 0 50 835 5 0 0 0 0 0
intr 22345 1 2
"""


def test_cpu_jiffies_reads_each_cpu_line_and_counts_iowait_as_idle() -> None:
    assert cpu_jiffies(BEFORE) == {0: (150, 1000), 1: (250, 1000)}
    assert cpu_jiffies(AFTER) == {0: (240, 1100), 1: (270, 1110)}


def test_busy_cores_sums_the_busy_share_of_this_process_cores() -> None:
    texts = iter([BEFORE, AFTER, BEFORE, AFTER])
    slept: list[float] = []
    busy = busy_cores({0, 1}, interval=0.5, read=lambda: next(texts), sleep=slept.append)
    assert busy == pytest.approx(0.9 + 20 / 110)
    assert slept == [0.5]
    only_cpu1 = busy_cores({1, 7}, read=lambda: next(texts), sleep=lambda _: None)  # cpu7 does not exist
    assert only_cpu1 == pytest.approx(20 / 110)


def test_busy_cores_is_none_when_proc_stat_cannot_be_read() -> None:
    def unreadable() -> str:
        raise FileNotFoundError("/proc/stat")

    assert busy_cores({0}, read=unreadable, sleep=lambda _: None) is None


@pytest.mark.parametrize(
    ("requested", "busy", "env", "expected"),
    [
        (3, 1.8, None, ThreadChoice(3, "--threads")),  # an explicit request wins, even over a busy machine
        (0, 1.0, "1", ThreadChoice(4, "OMP_NUM_THREADS=1")),  # torch already read the variable
        (0, None, None, ThreadChoice(4, "torch's default (CPU load unknown)")),
        (0, 0.3, None, ThreadChoice(4, "all cores free")),  # a light load rounds to no busy core
        (0, 0.9, None, ThreadChoice(4, "1 of 8 cores busy with other work")),  # 7 free, torch wants 4
        (0, 5.6, None, ThreadChoice(2, "6 of 8 cores busy with other work")),
        (0, 8.0, None, ThreadChoice(1, "8 of 8 cores busy with other work")),  # at least one thread
    ],
)
def test_choose_threads(requested: int, busy: float | None, env: str | None, expected: ThreadChoice) -> None:
    assert choose_threads(requested, cpus=8, busy=busy, torch_default=4, env_threads=env) == expected


def test_negative_threads_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match="--threads must be 0"):
        choose_threads(-1, cpus=2, busy=0.0, torch_default=2, env_threads=None)
    assert main(["quickstart", "--out", str(tmp_path / "qs"), "--threads", "-2"]) == 2
    assert "--threads must be 0 (choose) or more, got -2" in capsys.readouterr().err
    assert not (tmp_path / "qs").exists()


def test_apply_threads_sets_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert apply_threads(1) == ThreadChoice(1, "--threads")
    assert torch.get_num_threads() == 1
    chosen = apply_threads(0)  # measured: between one thread and every core this process may use
    assert 1 <= chosen.threads == torch.get_num_threads()
