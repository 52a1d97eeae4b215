"""Give the C heap's free memory back to the operating system while training and evaluating.

glibc's malloc keeps freed memory to reuse it, and under the allocation pattern of a training loop
(tensors of many sizes, all freed every step) its heap fragments and keeps growing: on Amazon Beauty a
SASRec-BCE training process that needs about 0.5 GB reached 2.3 GB, adding about 7 MB a step through
its first epoch (bench/results/heap.md). PyTorch has no caching allocator on the CPU to prevent this, and
a fixed mmap threshold (``MALLOC_MMAP_THRESHOLD_``) stops the growth but made ML-100K epochs twice as
slow, because every large tensor then costs fresh zeroed pages.

`HeapTrimmer` watches the process's resident memory instead (one read of ``/proc/self/statm``, a few
microseconds) and calls glibc's ``malloc_trim(0)`` when it has grown ``slack`` bytes past its level at
the end of the step after the last trim. That level, not the one just after the trim, is the baseline:
the trim also hands back the pages every step reuses, and the next step takes them again, so measuring
from just after the trim would trim at every step, and every step would pay for fresh zeroed pages
(ML-100K epochs 30% slower). For the same reason the allowed growth is at least twice what the step
after a trim took back: where each step (or evaluation batch) needs hundreds of megabytes for a moment,
a trim would only make the next one fault them in again. Nothing is trimmed while the heap is not
growing. Training and evaluation share one trimmer per process (`shared_trimmer`): with one for each
epoch and each evaluation, each started from the last one's leftovers, and a Beauty SASRec-BCE run
still stood at 1.7 GB after 13 epochs. Where there is no glibc or no ``/proc`` (macOS, musl), it does
nothing.
"""

from __future__ import annotations

import ctypes
import functools
import os
from collections.abc import Callable
from pathlib import Path

__all__ = ["DEFAULT_SLACK", "HeapTrimmer", "resident_bytes", "shared_trimmer"]

STATM = Path("/proc/self/statm")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096  # read once, not every step
DEFAULT_SLACK = 256 << 20  # bytes of growth between trims


def resident_bytes() -> int | None:
    """This process's resident memory (``/proc/self/statm``), or None where that file does not exist."""
    try:
        fields = STATM.read_bytes().split()
    except OSError:
        return None
    return int(fields[1]) * PAGE_SIZE


@functools.cache
def _glibc_trim() -> Callable[[], object] | None:
    """glibc's ``malloc_trim(0)``, looked up once; None where the C library is not glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")  # glibc's name on Linux; macOS and musl have no such file
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc: nothing to call
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return lambda: trim(0)


class HeapTrimmer:
    """Call after each step: trims the C heap when resident memory grew past its lowest level at a
    step's end since the step after the last trim (or since creation) by more than ``allowed``: the
    ``slack``, or twice what the step after the last trim took back if that is more. ``resident`` and
    ``trim`` are the sources (overridable for tests)."""

    def __init__(
        self,
        slack: int = DEFAULT_SLACK,
        *,
        resident: Callable[[], int | None] = resident_bytes,
        trim: Callable[[], object] | None = None,
    ) -> None:
        if slack < 0:
            raise ValueError(f"slack must be >= 0 bytes, got {slack}")
        self.slack = slack
        self.resident = resident
        self.trim = trim if trim is not None else _glibc_trim()
        self.floor = resident()
        self.allowed = slack
        self.trims = 0
        self.after_trim: int | None = None  # set by a trim: the next call measures from it

    @property
    def active(self) -> bool:
        return self.trim is not None and self.floor is not None

    def __call__(self) -> bool:
        """Trim if the heap grew past the slack; returns whether it trimmed."""
        if self.trim is None or self.floor is None:
            return False
        now = self.resident()
        if now is None:
            return False
        if self.after_trim is not None:  # the step after a trim took back its working pages
            self.allowed = max(self.slack, 2 * (now - self.after_trim))
            self.floor, self.after_trim = now, None
            return False
        if now <= self.floor + self.allowed:
            self.floor = min(self.floor, now)
            return False
        self.trim()
        self.trims += 1
        after = self.resident()
        self.after_trim = now if after is None else after
        return True


@functools.cache
def shared_trimmer() -> HeapTrimmer:
    """This process's trimmer, shared by training and evaluation, so that growth is measured from one
    floor across epochs and evaluations."""
    return HeapTrimmer()
