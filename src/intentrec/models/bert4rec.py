"""BERT4Rec (Sun, Liu, Wu, Pei, Lin, Ou and Jiang, "BERT4Rec: Sequential Recommendation with
Bidirectional Encoder Representations from Transformer", CIKM 2019) in our harness.

A bidirectional Transformer over item ids and positions, trained with the cloze task: a random
``mask_prob`` share of the interactions in each training window is replaced by a [MASK] token (at least
one per row) and predicted with a full softmax over the catalogue; a ``mask_last`` share of the rows
instead mask only their latest interaction, the paper's extra samples that match the inference task
(Section 3.6: "we also produce samples that only mask the last item"). To predict the next item, [MASK]
is appended to the history (its oldest interaction dropped when the row would exceed ``max_len``);
the hidden state at that last position is the prediction (``forward`` puts it at position L - 1;
other positions are not next-item predictions).

Departures from the paper: pre-LN blocks (shared with our other Transformers); the output layer is
the tied item embedding without the extra projection and bias; no engagement weighting of the cloze
loss (every masked interaction counts once).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from intentrec.data.batching import Batch
from intentrec.models.base import ModelOutput, SequentialModel, scores_over_catalogue
from intentrec.models.layers import INITS, CausalTransformer, Dropout, apply_init, real_positions

__all__ = ["BERT4Rec", "BERT4RecConfig"]


@dataclass(frozen=True)
class BERT4RecConfig:
    n_items: int
    d: int = 64
    n_blocks: int = 2
    n_heads: int = 2
    ffn_mult: int = 4  # feed-forward width as a multiple of d
    dropout: float = 0.2
    max_len: int = 50
    mask_prob: float = 0.2  # share of training interactions replaced by [MASK]
    mask_last: float = 0.0  # share of training rows that mask only their latest interaction
    # "scaled" (the default): items from N(0, 1/d), PyTorch's defaults elsewhere, so positions from N(0, 1)
    # start 8 times larger than items at d 64; "small": BERT's, every weight N(0, 0.02), as the original
    # BERT4Rec (truncated there) and RecBole; "xavier": RecTools'
    init: Literal["scaled", "small", "xavier"] = "scaled"

    def __post_init__(self) -> None:
        if not 0 < self.mask_prob < 1:
            raise ValueError(f"mask_prob must be between 0 and 1, got {self.mask_prob}")
        if not 0 <= self.mask_last <= 1:
            raise ValueError(f"mask_last must be between 0 and 1, got {self.mask_last}")
        if self.init not in INITS:
            raise ValueError(f"init must be one of {', '.join(INITS)}, got {self.init!r}")


class BERT4Rec(SequentialModel):
    def __init__(self, config: BERT4RecConfig) -> None:
        super().__init__()
        self.config = c = config
        self.max_len = c.max_len
        self.mask_token = c.n_items + 1
        self.item = nn.Embedding(c.n_items + 2, c.d, padding_idx=0)  # ids 1..I, then [MASK]
        nn.init.normal_(self.item.weight, std=c.d**-0.5)
        self.position = nn.Embedding(c.max_len, c.d)
        self.ln = nn.LayerNorm(c.d)
        self.drop = Dropout(c.dropout)
        self.encoder = CausalTransformer(c.d, c.n_blocks, c.n_heads, c.dropout, c.ffn_mult)
        apply_init(self, c.init)

    @property
    def item_embeddings(self) -> torch.Tensor:
        return self.item.weight[: self.config.n_items + 1]  # (I + 1, D), without [MASK]

    def encode(self, items: torch.Tensor) -> torch.Tensor:
        """(B, L) ids with [MASK]s -> (B, L) hidden states, each position seeing the whole row."""
        mask = items > 0  # (B, L)
        x = self.item(items) + self.position(real_positions(mask))  # (B, L, D)
        x = self.drop(self.ln(x)) * mask[..., None]
        L = items.shape[1]
        allowed = mask[:, None, :] | torch.eye(L, dtype=torch.bool, device=items.device)[None]  # (B, L, L)
        return self.encoder(x, allowed)  # (B, L, D)

    def forward(self, batch: Batch) -> ModelOutput:
        query = torch.full_like(batch.items[:, :1], self.mask_token)  # (B, 1)
        hidden = self.encode(self._latest(torch.cat([batch.items, query], dim=1)))  # (B, L or L + 1, D)
        return ModelOutput(hidden[:, -batch.items.shape[1] :])  # (B, L, D), [MASK] last

    def _latest(self, items: torch.Tensor) -> torch.Tensor:
        """The latest ``max_len`` columns of (B, L) ids: the oldest column goes only when the row would
        not fit, so a batch without its all-padding columns gives the same outputs."""
        return items[:, -self.max_len :]

    def item_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return scores_over_catalogue(hidden, self.item_embeddings)

    def loss(self, batch: Batch, output: ModelOutput) -> tuple[torch.Tensor, dict[str, float]]:
        """Next-item cross-entropy at the [MASK] appended after the history (the inference task)."""
        loss = F.cross_entropy(self.item_logits(output.hidden[:, -1]), batch.target_items[:, -1])
        return loss, {"item": loss.item(), "total": loss.item()}

    def cloze_mask(self, window: torch.Tensor) -> torch.Tensor:
        """(B, L) left-padded ids -> (B, L) True where [MASK] replaces the id: each real interaction with
        probability ``mask_prob``, or, in a ``mask_last`` share of the rows, the latest one alone."""
        real = window > 0
        chosen = (torch.rand(window.shape, device=window.device) < self.config.mask_prob) & real  # (B, L)
        # rows where the draw masked nothing predict their last interaction, as at inference
        chosen[:, -1] |= ~chosen.any(dim=1) & real[:, -1]
        if self.config.mask_last > 0:
            last_only = torch.zeros_like(chosen)
            last_only[:, -1] = real[:, -1]
            rows = torch.rand(window.shape[0], device=window.device) < self.config.mask_last  # (B,)
            chosen = torch.where(rows[:, None], last_only, chosen)
        return chosen

    def training_loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        # the window's latest L interactions: inputs shifted by one, plus the last target
        window = self._latest(torch.cat([batch.items, batch.target_items[:, -1:]], dim=1))  # (B, L')
        chosen = self.cloze_mask(window)  # (B, L')
        hidden = self.encode(torch.where(chosen, self.mask_token, window))  # (B, L, D)
        loss = F.cross_entropy(self.item_logits(hidden[chosen]), window[chosen])
        return loss, {"item": loss.item(), "total": loss.item()}
