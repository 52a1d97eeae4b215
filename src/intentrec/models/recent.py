"""The "recently viewed" baseline: the user's own latest items first, then the most popular ones.

Repeat consumption is the strongest signal in many logs (on the Taobao prefix, 31% of test targets are
items already in the user's history), and this list is what a shop shows as "recently viewed". It
ranks the distinct items of the last ``max_len`` interactions by how recently each was last seen,
ahead of every other item, which follow by training popularity. Nothing is trained. With seen items
excluded it is the popularity baseline.
"""

from __future__ import annotations

import numpy as np
import torch

from intentrec.data.batching import Batch
from intentrec.models.base import ModelOutput
from intentrec.models.popularity import Popularity

__all__ = ["Recent"]


class Recent(Popularity):
    """Popularity, after the distinct items of the last ``max_len`` interactions, latest first."""

    def __init__(self, item_popularity: np.ndarray, max_len: int = 50) -> None:
        super().__init__(item_popularity)
        self.max_len = max_len
        with torch.no_grad():  # below 1: any item of the history outranks every other one
            self.counts[1:] /= self.counts[1:].max() + 1

    def next_item_scores(self, batch: Batch, output: ModelOutput) -> torch.Tensor:
        scores = self.item_logits(output.hidden[:, -1])  # (B, I + 1)
        B, L = batch.items.shape
        # 1 + position (1 .. L): the later an item was last seen, the higher; scatter keeps the maximum
        recency = (torch.arange(L, device=scores.device, dtype=scores.dtype) + 1).expand(B, L) * batch.mask
        bonus = torch.zeros_like(scores).scatter_reduce_(1, batch.items, recency, reduce="amax")
        bonus[:, 0] = 0.0
        return scores + bonus
