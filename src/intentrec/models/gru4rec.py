"""GRU4Rec (Hidasi, Karatzoglou, Baltrunas and Tikk, "Session-based Recommendations with Recurrent
Neural Networks", ICLR 2016) in our harness.

Item embedding -> GRU -> a linear layer -> scores against the (tied) item embeddings at every position.

Departures from the paper:
* sequences are whole user histories (the latest ``max_len`` interactions), not session-parallel
  mini-batches; the hidden state starts at zero at the first real interaction of each row;
* trained with full softmax cross-entropy over the catalogue (the follow-up paper, Hidasi and
  Karatzoglou 2018, shows cross-entropy with many negatives is what makes GRU4Rec competitive), or
  BCE with one sampled negative; engagement weights scale each target's loss as for every model here;
* an embedding input layer rather than one-hot input.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from intentrec.data.batching import Batch
from intentrec.models.base import (
    ItemLoss,
    ModelOutput,
    Negatives,
    SequentialModel,
    next_item_loss,
    scores_over_catalogue,
)
from intentrec.models.layers import Dropout

__all__ = ["GRU4Rec", "GRU4RecConfig"]


@dataclass(frozen=True)
class GRU4RecConfig:
    n_items: int
    d: int = 64  # embedding and hidden size
    n_layers: int = 1  # stacked GRU layers
    dropout: float = 0.2
    max_len: int = 50
    item_loss: ItemLoss = "ce"  # see `intentrec.models.base.next_item_loss`
    n_negatives: int = 256  # uniform negatives per position (item_loss="sampled")
    negatives: Negatives = "per_position"  # drawn per position or once per batch ("shared")
    unseen_negatives: bool = False  # item_loss="bce": the negative drawn from items the row does not hold


class GRU4Rec(SequentialModel):
    def __init__(self, config: GRU4RecConfig) -> None:
        super().__init__()
        self.config = c = config
        self.max_len = c.max_len
        self.item = nn.Embedding(c.n_items + 1, c.d, padding_idx=0)
        nn.init.normal_(self.item.weight, std=c.d**-0.5)
        self.gru = nn.GRU(c.d, c.d, c.n_layers, batch_first=True, dropout=c.dropout if c.n_layers > 1 else 0.0)
        self.out = nn.Linear(c.d, c.d)
        self.drop = Dropout(c.dropout)

    @property
    def item_embeddings(self) -> torch.Tensor:
        return self.item.weight  # (I + 1, D)

    def forward(self, batch: Batch) -> ModelOutput:
        mask = batch.mask  # (B, L)
        B, L = mask.shape
        lengths = mask.sum(1)  # (B,)
        pad = (L - lengths)[:, None]  # (B, 1)
        cols = torch.arange(L, device=mask.device)[None]  # (1, L)
        # left padding -> right padding, so the GRU starts from a zero state at the first real interaction
        items = batch.items.gather(1, (cols + pad) % L)  # (B, L)
        x = self.drop(self.item(items))  # (B, L, D)
        packed = pack_padded_sequence(x, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)
        encoded, _ = self.gru(packed)
        encoded, _ = pad_packed_sequence(encoded, batch_first=True, total_length=L)  # (B, L, D), right-padded
        back = ((cols - pad) % L)[..., None].expand(B, L, encoded.shape[-1])  # (B, L, D)
        hidden = self.out(self.drop(encoded.gather(1, back)))  # (B, L, D), left-padded again
        return ModelOutput(hidden * mask[..., None])

    def item_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return scores_over_catalogue(hidden, self.item_embeddings)

    def loss(self, batch: Batch, output: ModelOutput) -> tuple[torch.Tensor, dict[str, float]]:
        loss = next_item_loss(
            output.hidden,
            batch,
            self.item_embeddings,
            self.config.item_loss,
            self.config.n_negatives,
            self.config.negatives,
            self.config.unseen_negatives,
        )
        return loss, {"item": loss.item(), "total": loss.item()}
