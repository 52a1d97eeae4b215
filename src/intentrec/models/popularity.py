"""The popularity baseline: every user gets the items with the most training interactions.

It has no parameters and needs no training; the counts come from the training split only, so
validation and test targets never leak into them.
"""

from __future__ import annotations

import numpy as np
import torch

from intentrec.data.batching import Batch
from intentrec.models.base import ModelOutput, SequentialModel

__all__ = ["Popularity"]


class Popularity(SequentialModel):
    counts: torch.Tensor  # (I + 1,) training interactions per item; -inf for padding

    def __init__(self, item_popularity: np.ndarray) -> None:
        super().__init__()
        self.max_len = 1  # the history is never read; one position keeps batches small
        counts = torch.as_tensor(item_popularity, dtype=torch.float32).clone()  # (I + 1,)
        counts[0] = float("-inf")
        self.register_buffer("counts", counts)

    def forward(self, batch: Batch) -> ModelOutput:
        B, L = batch.items.shape
        return ModelOutput(torch.zeros(B, L, 1, device=batch.items.device))

    def item_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.counts.expand(*hidden.shape[:-1], -1).clone()  # (..., I + 1)

    def loss(self, batch: Batch, output: ModelOutput) -> tuple[torch.Tensor, dict[str, float]]:
        raise TypeError("the popularity baseline has nothing to train")
