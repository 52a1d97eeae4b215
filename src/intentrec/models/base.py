"""What every sequence model gives the training loop, the evaluation and the service.

A model reads a left-padded `Batch` and returns a `ModelOutput`: hidden states at every position
(scored against the whole catalogue by ``item_logits``), and, for models with intent heads, the
per-head intent logits and attention weights. ``loss`` turns a batch and its output into the training
loss and a dictionary of its named parts.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import torch
from torch import nn

from intentrec.data.batching import Batch

__all__ = ["HeadSpec", "ModelOutput", "SequentialModel"]


@dataclass(frozen=True)
class HeadSpec:
    name: str
    n_classes: int
    multi_label: bool = False


@dataclass
class ModelOutput:
    hidden: torch.Tensor  # (B, L, D) H_k, scored against the catalogue by item_logits
    intent_logits: dict[str, torch.Tensor] = field(default_factory=dict)  # head -> (B, L, K_f)
    intent_weights: torch.Tensor | None = None  # (B, L, n_heads) w, the per-head attention
    intent_embedding: torch.Tensor | None = None  # (B, L, D) Z_k, the attention-weighted intent embedding


class SequentialModel(nn.Module, ABC):
    """Base class: subclasses set ``max_len`` (and ``heads`` if they predict intents) and implement the
    three abstract methods."""

    max_len: int
    heads: tuple[HeadSpec, ...] = ()

    @abstractmethod
    def forward(self, batch: Batch) -> ModelOutput:
        """Hidden states at every position of the left-padded batch, and intent outputs if any."""

    @abstractmethod
    def item_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., D) -> (..., I + 1) scores over the whole catalogue; index 0 (padding) is -inf."""

    @abstractmethod
    def loss(self, batch: Batch, output: ModelOutput) -> tuple[torch.Tensor, dict[str, float]]:
        """The training loss of ``output`` on ``batch`` and its named parts."""

    def training_loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        """One training step's loss; models whose training input differs from inference override it."""
        return self.loss(batch, self(batch))

    @property
    def trainable(self) -> bool:
        return any(p.requires_grad for p in self.parameters())

    @property
    def device(self) -> torch.device:
        for tensor in (*self.parameters(), *self.buffers()):
            return tensor.device
        return torch.device("cpu")


def scores_over_catalogue(hidden: torch.Tensor, item_embeddings: torch.Tensor) -> torch.Tensor:
    """Dot products with every item embedding (tied output layer); the padding id can never win."""
    scores = hidden @ item_embeddings.T  # (..., I + 1)
    scores[..., 0] = float("-inf")
    return scores


def next_item_loss(hidden: torch.Tensor, batch: Batch, item_embeddings: torch.Tensor, kind: str) -> torch.Tensor:
    """Engagement-weighted next-item loss over every position with a target: full softmax
    cross-entropy (``ce``), or binary cross-entropy against one uniform negative (``bce``)."""
    has_target = batch.target_items > 0  # (B, L)
    h = hidden[has_target]  # (N, D)
    target = batch.target_items[has_target]  # (N,)
    if kind == "ce":
        terms = nn.functional.cross_entropy(scores_over_catalogue(h, item_embeddings), target, reduction="none")
    else:
        n_items = item_embeddings.shape[0] - 1
        negative = torch.randint(1, n_items, target.shape, device=target.device)  # (N,)
        negative = negative + (negative >= target).long()  # uniform over items other than the target
        positive_score = (h * item_embeddings[target]).sum(-1)  # (N,)
        negative_score = (h * item_embeddings[negative]).sum(-1)  # (N,)
        terms = nn.functional.softplus(-positive_score) + nn.functional.softplus(negative_score)  # (N,)
    return (terms * batch.target_weights[has_target]).sum() / has_target.sum().clamp(min=1)
