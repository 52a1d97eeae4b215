"""SASRec (Kang and McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018) in our harness.

SASRec is IntentRec's V0 with item ids and positions only: no side fields, genres or time gaps, and
no intent heads. Trained with full cross-entropy by default, or, as in the paper (and the S3-Rec
all-rank table), binary cross-entropy with one sampled negative per position (``item_loss="bce"``), or,
as RecTools and transformer_benchmark, softmax over the target and ``n_negatives`` uniform negatives per
position (``item_loss="sampled"``; ``negatives="shared"`` draws them once per batch, much faster).
Departures: pre-LN blocks with GELU (the paper: post-LN-style residual blocks with ReLU), and a
feed-forward width of 4 d by default (the paper and RePlay: d; ``ffn_mult=1``), and positions counted
from the first real interaction by default (the paper's left padding to a fixed width counts them back
from the last: ``positions="from_last"``), and a linear layer and LayerNorm between the embeddings and
the first block by default (the paper: none; ``input_projection=False``).
"""

from __future__ import annotations

from typing import Literal

from intentrec.models.base import ItemLoss, Negatives
from intentrec.models.intentrec import IntentRec, IntentRecConfig
from intentrec.models.layers import Positions

__all__ = ["sasrec"]


def sasrec(
    n_items: int,
    *,
    d: int = 64,
    n_blocks: int = 2,
    n_heads: int = 2,
    dropout: float = 0.2,
    max_len: int = 50,
    item_loss: ItemLoss = "ce",
    n_negatives: int = 256,
    negatives: Negatives = "per_position",
    unseen_negatives: bool = False,
    ffn_mult: int = 4,
    init: Literal["scaled", "small", "xavier"] = "scaled",
    repeat: bool = False,
    positions: Positions = "from_first",
    input_projection: bool = True,
) -> IntentRec:
    config = IntentRecConfig(
        n_items=n_items,
        variant="V0",
        d=d,
        n_blocks=n_blocks,
        n_heads=n_heads,
        ffn_mult=ffn_mult,
        dropout=dropout,
        max_len=max_len,
        use_genres=False,
        use_time_gaps=False,
        item_loss=item_loss,
        n_negatives=n_negatives,
        negatives=negatives,
        unseen_negatives=unseen_negatives,
        init=init,
        repeat=repeat,
        positions=positions,
        input_projection=input_projection,
    )
    return IntentRec(config)
