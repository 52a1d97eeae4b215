"""Shared fixtures. Tests that read ../shared/data fail (never skip) when INTENTREC_SHARED_DATA is set."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _restore_torch_threads() -> Iterator[None]:
    """The CLI sets torch's thread count for the process (intentrec.train.threads); keep tests apart."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    configured = os.environ.get("INTENTREC_SHARED_DATA")
    if configured:
        path = Path(configured)
        if not path.is_dir():
            pytest.fail(f"INTENTREC_SHARED_DATA={configured} is not a folder")
        return path
    fallback = REPO.parent / "shared" / "data"
    if fallback.is_dir():
        return fallback
    pytest.skip("shared data not available (set INTENTREC_SHARED_DATA to run these tests)")


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path
