"""How many CPU threads torch should use, given what else the machine is already running.

PyTorch starts one intra-op thread per physical core, and its OpenMP threads spin while they wait
for each other. When another process already keeps a core busy, a thread placed on that core makes
the whole step wait for it: on a 2-core machine with one core busy, SASRec trained 2.5x slower on
ML-100K with torch's default of 2 threads than with 1 (bench/threads.py, bench/results/threads.md).

So, unless the user chose (``--threads``, or ``OMP_NUM_THREADS`` in the environment), we measure the
share of each of this process's cores that other processes use over a quarter of a second (Linux
``/proc/stat``) and give torch the cores that are free, at least one and never more than torch's own
default. The choice is made once, at start: load that arrives later is not seen.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = ["ThreadChoice", "apply_threads", "busy_cores", "choose_threads", "cpu_jiffies"]

PROC_STAT = Path("/proc/stat")
IDLE_FIELDS = (3, 4)  # idle and iowait, counted from the first number after the cpuN label


@dataclass(frozen=True)
class ThreadChoice:
    threads: int
    reason: str


def cpu_jiffies(stat_text: str) -> dict[int, tuple[int, int]]:
    """Per CPU, (busy, total) jiffies since boot from the text of ``/proc/stat``."""
    jiffies: dict[int, tuple[int, int]] = {}
    for line in stat_text.splitlines():
        label, _, rest = line.partition(" ")
        if not label.startswith("cpu") or label == "cpu":
            continue
        counts = [int(x) for x in rest.split()]
        total = sum(counts[:8])  # user..steal; guest time is already inside user and nice
        idle = sum(counts[i] for i in IDLE_FIELDS if i < len(counts))
        jiffies[int(label[3:])] = (total - idle, total)
    return jiffies


def busy_cores(
    cpus: set[int],
    interval: float = 0.25,
    read: Callable[[], str] = PROC_STAT.read_text,
    sleep: Callable[[float], None] = time.sleep,
) -> float | None:
    """How many of ``cpus`` other processes keep busy (0.0 to len(cpus)), measured over ``interval``
    seconds while this process sleeps; None where ``/proc/stat`` cannot be read."""
    try:
        before = cpu_jiffies(read())
        sleep(interval)
        after = cpu_jiffies(read())
    except (OSError, ValueError):
        return None
    busy = 0.0
    for cpu in cpus & before.keys() & after.keys():
        d_busy = after[cpu][0] - before[cpu][0]
        d_total = after[cpu][1] - before[cpu][1]
        if d_total > 0:
            busy += min(max(d_busy / d_total, 0.0), 1.0)
    return busy


def choose_threads(
    requested: int, *, cpus: int, busy: float | None, torch_default: int, env_threads: str | None
) -> ThreadChoice:
    """The pure decision: an explicit request wins, then OMP_NUM_THREADS, then the free cores."""
    if requested < 0:
        raise ValueError(f"--threads must be 0 (choose) or more, got {requested}")
    if requested:
        return ThreadChoice(requested, "--threads")
    if env_threads:
        return ThreadChoice(torch_default, f"OMP_NUM_THREADS={env_threads}")
    if busy is None:
        return ThreadChoice(torch_default, "torch's default (CPU load unknown)")
    taken = round(busy)
    free = max(1, min(torch_default, cpus - taken))
    return ThreadChoice(free, f"{taken} of {cpus} cores busy with other work" if taken else "all cores free")


def apply_threads(requested: int = 0) -> ThreadChoice:
    """Choose the thread count (see the module docstring), give it to torch, and return the choice
    for the caller to report."""
    try:
        cpus = os.sched_getaffinity(0)
    except AttributeError:  # not Linux
        cpus = set(range(os.cpu_count() or 1))
    env_threads = os.environ.get("OMP_NUM_THREADS")
    measure = not requested and not env_threads
    choice = choose_threads(
        requested,
        cpus=len(cpus),
        busy=busy_cores(cpus) if measure else None,
        torch_default=torch.get_num_threads(),
        env_threads=env_threads,
    )
    torch.set_num_threads(choice.threads)
    return choice
