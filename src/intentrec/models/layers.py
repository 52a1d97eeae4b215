"""Building blocks shared by the sequence models: masks, a pre-LN Transformer, the feature embedder.

Shapes: B batch, L sequence, D hidden, I items (+1 for padding id 0), C categorical fields, G genres.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "CausalTransformer", "Dropout", "FeatureEmbedder", "apply_init", "attention", "causal_mask", "dropout",
    "real_positions", "window_mask", "xavier_init",
]  # fmt: skip


def real_positions(mask: torch.Tensor) -> torch.Tensor:
    """Index of each interaction from the first real one, so left padding does not shift positions."""
    return (mask.long().cumsum(dim=1) - 1).clamp(min=0)  # (B, L)


def positions_from_last(mask: torch.Tensor) -> torch.Tensor:
    """How many interactions before the row's last real one each interaction is (the last is 0), as the
    original SASRec's left padding to a fixed width numbers positions (and S3-Rec's, and RecTools'
    inverse positional encoding). The query at the last position always has the same position, in
    training and in serving; in exchange an earlier position's embedding depends on how many
    interactions follow it in the row (never on which)."""
    return (mask.long().sum(dim=1, keepdim=True) - 1 - real_positions(mask)).clamp(min=0)  # (B, L)


Positions = Literal["from_first", "from_last"]  # how FeatureEmbedder numbers positions
POSITIONS: tuple[str, ...] = get_args(Positions)


def causal_mask(mask: torch.Tensor) -> torch.Tensor:
    """(B, L, L) True where query i may attend key j: j <= i and j is real. A padded query attends to
    itself only, so no softmax row is empty (its output is never used)."""
    L = mask.shape[1]
    causal = torch.ones(L, L, dtype=torch.bool, device=mask.device).tril()  # (L, L)
    allowed = causal[None] & mask[:, None, :]  # (B, L, L)
    return allowed | torch.eye(L, dtype=torch.bool, device=mask.device)[None]


def window_mask(mask: torch.Tensor, window_len: torch.Tensor) -> torch.Tensor:
    """(B, L, L) causal mask limited to the short-term window: key j with i - window_len[i] < j <= i."""
    L = mask.shape[1]
    idx = torch.arange(L, device=mask.device)
    distance = idx[:, None] - idx[None, :]  # (L, L): i - j
    inside = (distance[None] >= 0) & (distance[None] < window_len[:, :, None])  # (B, L, L)
    return (inside & mask[:, None, :]) | torch.eye(L, dtype=torch.bool, device=mask.device)[None]


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Inverted dropout, as ``F.dropout``, with the keep mask drawn from uniform 16-bit integers (four per
    64-bit draw), so ``p`` is applied at a resolution of 1/65,536. On CPU this is about 10x faster than
    the Bernoulli sampler ``F.dropout`` uses, which was the largest single cost of a training step at
    d = 64 (bench/speed.py). Elsewhere (CUDA's sampler is fused and fast) this is ``F.dropout``."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p, True)
    n = x.numel()
    # [-2**63, 2**63 - 1): every 64-bit pattern but one, so each 16-bit quarter is uniform to 1 part in 2**48
    draws = torch.randint(-(2**63), 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64, device=x.device)
    keep = draws.view(torch.int16)[:n].view(x.shape) >= round(p * 65536) - 32768
    # the scale folded into the mask: one multiplication forward and one backward (a boolean factor
    # would be converted to floats in both, and the scale applied in a pass of its own each way)
    return x * (keep * (1.0 / (1.0 - p))).to(x.dtype)


class Dropout(nn.Module):
    """`nn.Dropout` through `dropout` above (no parameters, so checkpoints are unaffected)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor, p: float) -> torch.Tensor:
    """Scaled dot-product attention of (B, h, L, D/h) tensors where ``allowed`` (B, L, L) is True, with
    dropout ``p`` on the attention probabilities. Without dropout, or off the CPU, this is PyTorch's fused
    kernel; with dropout on the CPU, the same arithmetic written out so that the mask comes from
    `dropout` (PyTorch's CPU kernel falls back to this very computation, with the slow sampler)."""
    if p == 0.0 or q.device.type != "cpu":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed[:, None], dropout_p=p)
    scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.shape[-1]))  # (B, h, L, L)
    scores = scores.masked_fill(~allowed[:, None], float("-inf"))
    return dropout(scores.softmax(dim=-1), p, True) @ v  # (B, h, L, D/h)


class TransformerBlock(nn.Module):
    def __init__(self, d: int, n_heads: int, dropout: float, ffn_mult: int = 4) -> None:
        super().__init__()
        if d % n_heads:
            raise ValueError(f"hidden size {d} is not divisible by {n_heads} heads")
        self.n_heads = n_heads
        self.dropout = dropout
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.ffn = nn.Sequential(nn.Linear(d, ffn_mult * d), nn.GELU(), nn.Linear(ffn_mult * d, d))
        self.drop = Dropout(dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """(B, L, D) -> (B, L, D); with ``last_only``, (B, 1, D): only the last position's output, which
        still attends to every position (serving needs nothing else from the final block)."""
        B, L, D = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(D, dim=-1)  # 3 x (B, L, D)
        if last_only:
            x, q, allowed, L = x[:, -1:], q[:, -1:], allowed[:, -1:], 1  # the query side shrinks to one position
        q = q.view(B, L, self.n_heads, D // self.n_heads).transpose(1, 2)  # (B, h, L, D/h)
        k, v = (t.view(B, -1, self.n_heads, D // self.n_heads).transpose(1, 2) for t in (k, v))  # (B, h, L_k, D/h)
        attended = attention(q, k, v, allowed, self.dropout if self.training else 0.0)  # (B, h, L, D/h)
        x = x + self.drop(self.out(attended.transpose(1, 2).reshape(B, L, D)))  # (B, L, D)
        return x + self.drop(self.ffn(self.ln2(x)))  # (B, L, D)


class CausalTransformer(nn.Module):
    """A stack of pre-LN Transformer blocks; the attention pattern comes from the caller's mask."""

    def __init__(self, d: int, n_blocks: int, n_heads: int, dropout: float, ffn_mult: int = 4) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(TransformerBlock(d, n_heads, dropout, ffn_mult) for _ in range(n_blocks))
        self.ln = nn.LayerNorm(d)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """(B, L, D); with ``last_only``, (B, 1, D): the last position alone out of the final block."""
        for i, block in enumerate(self.blocks):
            x = block(x, allowed, last_only=last_only and i == len(self.blocks) - 1)  # (B, L, D)
        return self.ln(x)


class FeatureEmbedder(nn.Module):
    """F_k: item id, categorical side fields, item genres, time gap and position, summed into D.

    The paper concatenates the field embeddings; a sum of D-sized embeddings equals a concatenation
    followed by a linear map, at a fraction of the width.
    """

    genre_index: torch.Tensor  # buffers, with item genres: the genre columns of every item, and where each starts
    genre_offsets: torch.Tensor

    def __init__(
        self,
        n_items: int,
        d: int,
        max_len: int,
        cardinalities: list[int],
        gap_buckets: int,
        dropout: float,
        item_genres: torch.Tensor | None = None,
        positions: str = "from_first",
    ) -> None:
        super().__init__()
        if positions not in POSITIONS:
            raise ValueError(f"positions must be one of {', '.join(POSITIONS)}, got {positions!r}")
        self.d = d
        self.position_index = real_positions if positions == "from_first" else positions_from_last
        self.item = nn.Embedding(n_items + 1, d, padding_idx=0)
        self.fields = nn.ModuleList(nn.Embedding(c, d, padding_idx=0) for c in cardinalities)
        self.gap = nn.Embedding(gap_buckets, d, padding_idx=0)
        self.position = nn.Embedding(max_len, d)
        if item_genres is not None:
            self.register_buffer("item_genres", item_genres.float(), persistent=False)  # (I + 1, G)
            self.genre = nn.Linear(item_genres.shape[1], d, bias=False)
            # the same multi-hot as lists (CSR), so an item's genre embedding is a sum over its few genres
            rows, cols = item_genres.nonzero(as_tuple=True)
            counts = torch.bincount(rows, minlength=item_genres.shape[0])
            self.register_buffer("genre_index", cols, persistent=False)  # (nnz,)
            self.register_buffer("genre_offsets", counts.cumsum(0) - counts, persistent=False)  # (I + 1,)
        else:
            self.item_genres = None
        self._genre_table: tuple[tuple[int, int], torch.Tensor] | None = None  # (weight version, table)
        self._step_table: torch.Tensor | None = None  # with autograd, inside `one_genre_table`
        self._in_step = False
        self.ln = nn.LayerNorm(d)
        self.drop = Dropout(dropout)
        self.item_scale = math.sqrt(d)  # 1 under the "small" and "xavier" initialisations (`small_init`)
        nn.init.normal_(self.item.weight, std=d**-0.5)

    def forward(
        self, items: torch.Tensor, categorical: torch.Tensor, time_gaps: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        x = self.item(items) * self.item_scale  # (B, L, D)
        for c, embedding in enumerate(self.fields):
            x = x + embedding(categorical[..., c])  # (B, L, D)
        if self.item_genres is not None:
            x = x + self.genre_table()[items]  # (B, L, D)
        x = x + self.gap(time_gaps) + self.position(self.position_index(mask))  # (B, L, D)
        return self.drop(self.ln(x)) * mask[..., None]  # padding stays exactly zero

    def genre_table(self) -> torch.Tensor:
        """(I + 1, D) each item's genre embedding, ``genre(item_genres)``, summed over its genres' columns
        (a few per item instead of all G). Outside autograd it is kept until the weight changes."""
        weight = self.genre.weight  # (D, G)
        key = (id(weight), weight._version)
        if not torch.is_grad_enabled() and self._genre_table is not None and self._genre_table[0] == key:
            return self._genre_table[1]
        if torch.is_grad_enabled() and self._step_table is not None:
            return self._step_table
        table = F.embedding_bag(self.genre_index, weight.t().contiguous(), self.genre_offsets, mode="sum")
        if not torch.is_grad_enabled():
            self._genre_table = (key, table)
        elif self._in_step:
            self._step_table = table
        return table

    @contextlib.contextmanager
    def one_genre_table(self) -> Iterator[None]:
        """Within this block, with autograd, `genre_table` is computed once and the same tensor is
        returned to every caller (the input embedding and the tied output layer of one training step),
        so its forward and backward over the whole catalogue run once instead of twice. Outside the block
        each call computes its own (a table whose graph one backward has freed is never handed out)."""
        self._in_step, self._step_table = True, None
        try:
            yield
        finally:
            self._in_step, self._step_table = False, None


INITS = ("scaled", "small", "xavier")


def apply_init(model: nn.Module, init: str) -> None:
    """Re-initialise ``model`` as ``init`` names (`small_init`, `xavier_init`); "scaled" keeps it as built."""
    if init == "small":
        small_init(model)
    elif init == "xavier":
        xavier_init(model)


def small_init(model: nn.Module, std: float = 0.02) -> None:
    """BERT's initialisation, which S3-Rec's and RecBole's SASRec use: every linear and embedding weight
    from N(0, std), biases and padding rows zero, LayerNorm as built; item embeddings enter unscaled.
    The default ("scaled": item embeddings from N(0, 1/d) times sqrt(d), PyTorch's defaults elsewhere)
    starts with input and output scores about 50 times larger."""
    for module in model.modules():
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, std=std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()
        if isinstance(module, FeatureEmbedder):
            module.item_scale = 1.0


def xavier_init(model: nn.Module) -> None:
    """RecTools' initialisation for its SASRec and BERT4Rec: every weight with two or more dimensions
    (linear layers and embeddings alike) from Xavier's normal, N(0, 2 / (fan_in + fan_out)), biases and
    LayerNorm as built, padding rows zero; item embeddings enter unscaled. The item table's rows are
    tiny (std 0.013 for 12,000 items at d 64) next to the positions' (0.13 for 50), so training starts
    from the order of the sequence and the scores over the catalogue start near zero."""
    for module in model.modules():
        for parameter in module.parameters(recurse=False):
            if parameter.dim() > 1:
                nn.init.xavier_normal_(parameter)
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()
        if isinstance(module, FeatureEmbedder):
            module.item_scale = 1.0
