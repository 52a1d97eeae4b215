"""What every sequence model gives the training loop, the evaluation and the service.

A model reads a left-padded `Batch` and returns a `ModelOutput`: hidden states at every position
(scored against the whole catalogue by ``item_logits``), and, for models with intent heads, the
per-head intent logits and attention weights. ``loss`` turns a batch and its output into the training
loss and a dictionary of its named parts.
"""

from __future__ import annotations

import itertools
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import torch
from torch import nn

from intentrec.data.batching import Batch

__all__ = [
    "ITEM_LOSSES",
    "HeadSpec",
    "ItemLoss",
    "ModelOutput",
    "SequentialModel",
    "linear_cross_entropy",
    "next_item_loss",
]


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
    history_keys: torch.Tensor | None = None  # (B, L, D) the repeat pointer's keys, with repeat_features


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

    def next_item_scores(self, batch: Batch, output: ModelOutput) -> torch.Tensor:
        """(B, I + 1) scores of the item after each row's last interaction, for ranking; index 0 is -inf.
        Models whose scores depend on the history itself (IntentRec's ``repeat``) override it."""
        return self.item_logits(output.hidden[:, -1])

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
        for tensor in itertools.chain(self.parameters(), self.buffers()):  # the first one: not all of them
            return tensor.device
        return torch.device("cpu")


def scores_over_catalogue(hidden: torch.Tensor, item_embeddings: torch.Tensor) -> torch.Tensor:
    """Dot products with every item embedding (tied output layer); the padding id can never win."""
    scores = hidden @ item_embeddings.T  # (..., I + 1)
    scores[..., 0] = float("-inf")
    return scores


ItemLoss = Literal["ce", "bce", "sampled"]
ITEM_LOSSES: tuple[str, ...] = get_args(ItemLoss)
Negatives = Literal["per_position", "shared"]  # how item_loss="sampled" draws its negatives
NEGATIVES: tuple[str, ...] = get_args(Negatives)
# The sampled softmax scores every item when the catalogue is at most this many times the negatives
# drawn per position: on a CPU, gathering N x K embeddings costs about 100 times a matmul per element.
# Measured, 1 thread: N 1,100, K 256, D 256, 12,101 items: 0.98 s a step gathered, 0.41 s scoring every
# item; SASRec d 64 at batch 128 x 50, 20,000 items: a whole step 1.9 s with the full softmax, 2.1 s gathered.
SCORE_ALL_ITEMS_UP_TO = 100


def next_item_loss(
    hidden: torch.Tensor,
    batch: Batch,
    item_embeddings: torch.Tensor,
    kind: str,
    n_negatives: int = 256,
    negatives: str = "per_position",
    unseen_negatives: bool = False,
) -> torch.Tensor:
    """Engagement-weighted next-item loss over every position with a target: full softmax
    cross-entropy (``ce``), binary cross-entropy against one uniform negative (``bce``), or softmax
    cross-entropy over the target and ``n_negatives`` uniform negatives (``sampled``; a negative that
    happens to be the target itself is left out of that position's softmax). The sampled negatives are
    drawn for each position (``negatives="per_position"``, as RecTools' and transformer_benchmark's
    sampled softmax) or once for the whole batch and shared by every position (``"shared"``, as
    TensorFlow's ``sampled_softmax_loss``): one (N, D) x (D, K) matmul instead of gathering N x K
    embeddings: 5-8 times faster an epoch of SASRec at 10K-100K items on a CPU (bench/scaling.py).
    With ``unseen_negatives``, the ``bce`` negative is drawn from the items its row does not hold (its
    inputs and targets), as S3-Rec's trainer draws them: see `unseen_negative`."""
    if negatives not in NEGATIVES:
        raise ValueError(f"negatives must be one of {', '.join(NEGATIVES)}, got {negatives!r}")
    has_target = batch.target_items > 0  # (B, L)
    h = hidden[has_target]  # (N, D)
    target = batch.target_items[has_target]  # (N,)
    weights = batch.target_weights[has_target]
    n_items = item_embeddings.shape[0] - 1
    if kind == "ce":
        return linear_cross_entropy(h, item_embeddings, target, weights) / has_target.sum().clamp(min=1)
    if kind == "sampled":
        if negatives == "shared":
            negative = torch.randint(1, n_items + 1, (n_negatives,), device=target.device)  # (K,)
            positive_score = (h * item_embeddings[target]).sum(-1, keepdim=True)  # (N, 1)
            negative_score = h @ item_embeddings[negative].T  # (N, K)
            hit = negative[None, :] == target[:, None]  # (N, K)
        else:
            negative = torch.randint(1, n_items + 1, (len(target), n_negatives), device=target.device)  # (N, K)
            if n_items + 1 <= SCORE_ALL_ITEMS_UP_TO * n_negatives:
                # a small catalogue: one matmul against every item and a gather beat gathering N x K embeddings
                scores = h @ item_embeddings.T  # (N, I + 1)
                positive_score, negative_score = scores.gather(1, target[:, None]), scores.gather(1, negative)
            else:
                positive_score = (h * item_embeddings[target]).sum(-1, keepdim=True)  # (N, 1)
                drawn = nn.functional.embedding(negative, item_embeddings)  # (N, K, D)
                negative_score = torch.bmm(drawn, h[:, :, None]).squeeze(-1)  # (N, K)
            hit = negative == target[:, None]  # (N, K)
        logits = torch.cat([positive_score, negative_score.masked_fill(hit, float("-inf"))], dim=1)  # target first
        terms = torch.logsumexp(logits, dim=1) - logits[:, 0]  # (N,)
    elif kind == "bce":
        if unseen_negatives:
            row = has_target.nonzero(as_tuple=True)[0]  # (N,) the batch row of each target
            negative = unseen_negative(target, torch.cat([batch.items, batch.target_items], dim=1)[row], n_items)
        else:
            negative = other_item(target, n_items)
        positive_score = (h * item_embeddings[target]).sum(-1)  # (N,)
        negative_score = (h * item_embeddings[negative]).sum(-1)  # (N,)
        terms = nn.functional.softplus(-positive_score) + nn.functional.softplus(negative_score)  # (N,)
    else:
        raise ValueError(f"item loss must be one of {', '.join(ITEM_LOSSES)}, got {kind!r}")
    return (terms * weights).sum() / has_target.sum().clamp(min=1)


def other_item(target: torch.Tensor, n_items: int) -> torch.Tensor:
    """For each target, an item drawn uniformly from the ``n_items`` items (1..n_items) other than it."""
    drawn = torch.randint(1, n_items, target.shape, device=target.device)
    return drawn + (drawn >= target).long()


UNSEEN_REDRAWS = 20  # rounds of redrawing the negatives that hit their row's items


def unseen_negative(target: torch.Tensor, held: torch.Tensor, n_items: int) -> torch.Tensor:
    """For each target (N,), an item other than it and not among its row's items ``held`` (N, H; 0 is
    padding): drawn uniformly, and the draws that hit a held item drawn again, up to `UNSEEN_REDRAWS`
    times. A row that holds nearly the whole catalogue may keep a held item after that (the chance that
    a draw stays held is (share held) ** 21)."""
    negative = other_item(target, n_items)
    pending = torch.arange(len(target), device=target.device)  # rows whose latest draw is unchecked
    for _ in range(UNSEEN_REDRAWS):
        pending = pending[(negative[pending, None] == held[pending]).any(dim=1)]  # those that hit a held item
        if not len(pending):
            break
        negative[pending] = other_item(target[pending], n_items)
    return negative


# Logits per chunk. On one thread, 1 MB of float32 logits, which stays in cache from the matmul through
# the softmax. With more threads every chunk's ten or so operations each split their work across the
# threads and wait for them all, so fewer, larger chunks win. Measured, forward and backward (ML-100K's
# step: 4,850 rows, 1,683 columns, D 64; idle machine, median of 40): 1 thread 66 ms at 2^18 against
# 76 ms at 2^21; 2 threads 57 ms at 2^18, 47 ms at 2^20, 41 ms at 2^21, 43 ms at 2^22; at 20,000 x
# 12,102 on 2 threads 1.54 s at 2^18 against 1.38 s at 2^21.
LOGITS_PER_CHUNK = 1 << 18
LOGITS_PER_CHUNK_THREADED = 1 << 21


def logits_per_chunk() -> int:
    """How many logits `linear_cross_entropy` computes at a time, for the current torch threads."""
    return LOGITS_PER_CHUNK if torch.get_num_threads() == 1 else LOGITS_PER_CHUNK_THREADED


def linear_cross_entropy(
    hidden: torch.Tensor, items: torch.Tensor, target: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """``sum(weights * cross_entropy(hidden @ items.T, target))`` with index 0 (padding) excluded, computed
    without ever holding the (N, I + 1) logits: see `_LinearCrossEntropy`. Same value and gradients as
    the plain expression; ``weights`` get no gradient. Under autocast (``train.precision = "bf16"``) the
    logits and the hidden rows' gradient come from bfloat16 products, the rest stays in float32."""
    work = torch.promote_types(hidden.dtype, torch.float32)  # the softmax's dtype: float32 or float64
    out: torch.Tensor = _LinearCrossEntropy.apply(hidden, items, target, weights.to(work))
    return out


def autocast_dtype(device_type: str) -> torch.dtype | None:
    """The lower precision autocast is running in on ``device_type``, or None outside autocast."""
    return torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else None


class _LinearCrossEntropy(torch.autograd.Function):
    """Full-softmax cross-entropy over a tied output layer, a chunk of rows at a time.

    Each chunk's logits are computed, turned into the loss and, because the loss is a scalar, straight
    into the gradients with respect to the hidden rows and the item table ((softmax - one-hot) @ items
    and its transpose); only those gradients (N x D and I x D) are kept, and backward scales them by the
    incoming gradient. Peak memory is one chunk of logits instead of three or four (N, I) tensors, and
    the FLOPs are those of the plain forward and backward passes. The chunk's logits go to one buffer,
    reused: a fresh (C, I + 1) tensor each chunk costs the page faults of a new allocation every time.

    Under autocast (bfloat16 on a CPU with AVX512-BF16 or AMX, or on a GPU) the logits and the hidden
    rows' gradient are products of bfloat16 operands; the softmax, the sums and the item table's gradient
    (accumulated in place over the chunks) stay in float32.
    """

    @staticmethod
    def forward(
        ctx: Any,
        hidden: torch.Tensor,
        items: torch.Tensor,
        target: torch.Tensor,
        weights: torch.Tensor,
    ) -> torch.Tensor:
        n, n_columns = hidden.shape[0], items.shape[0]
        chunk = max(64, logits_per_chunk() // max(n_columns, 1))
        needs_hidden, needs_items = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        work = weights.dtype  # float32 (or float64): logits, softmax and sums
        low = autocast_dtype(hidden.device.type)
        compute = low or work  # the products' operands
        h_all, table = hidden.detach().to(compute), items.detach().to(compute)
        # the item gradient's operand, converted once (h_all itself outside autocast)
        h_items = hidden.detach().to(items.dtype) if needs_items else None
        grad_hidden = torch.empty_like(hidden) if needs_hidden else None
        grad_items = torch.zeros_like(items) if needs_items else None
        total = hidden.new_zeros((), dtype=work)
        logits_buffer = hidden.new_empty(min(chunk, n), n_columns, dtype=work)
        low_buffer = hidden.new_empty(min(chunk, n), n_columns, dtype=low) if low is not None else None
        for start in range(0, n, chunk):
            rows = slice(start, start + chunk)
            h, t, w = h_all[rows], target[rows], weights[rows]
            if low_buffer is None:
                logits = torch.mm(h, table.T, out=logits_buffer[: len(h)])  # (C, I + 1)
            else:
                logits = logits_buffer[: len(h)].copy_(torch.mm(h, table.T, out=low_buffer[: len(h)]))
            logits[:, 0] = float("-inf")
            picked = logits.gather(1, t[:, None]).squeeze(1)  # (C,)
            top = logits.amax(dim=1, keepdim=True)  # (C, 1)
            exp = logits.sub_(top).exp_()  # in place: one exp for both the loss and its gradient
            norm = exp.sum(dim=1)  # (C,)
            total += (w * (top.squeeze(1) + norm.log() - picked)).sum()
            if grad_hidden is None and grad_items is None:
                continue
            coefficient = exp.mul_((w / norm)[:, None])  # weighted softmax
            coefficient[torch.arange(len(t), device=t.device), t] -= w  # d loss / d logits
            if grad_items is not None and h_items is not None:  # in place, items' dtype (mixed-dtype sums are slow)
                grad_items.addmm_(coefficient.T, h_items[rows])
            if grad_hidden is not None:
                if low_buffer is not None:
                    coefficient = low_buffer[: len(h)].copy_(coefficient)
                if grad_hidden.dtype == compute:
                    torch.mm(coefficient, table, out=grad_hidden[rows])
                else:
                    grad_hidden[rows] = coefficient @ table
        ctx.save_for_backward(grad_hidden, grad_items)
        return total

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None, None]:
        grad_hidden, grad_items = ctx.saved_tensors
        return (
            None if grad_hidden is None else grad_hidden * grad_output,
            None if grad_items is None else grad_items * grad_output,
            None,
            None,
        )
