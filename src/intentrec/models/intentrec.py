"""IntentRec: hierarchical multi-task next-item prediction through predicted session intents.

Oh, Bhattacharya, Feng and Lamkhede, "IntentRec: Predicting User Session Intent with Hierarchical
Multi-Task Learning", arXiv 2408.05353 (Netflix; shipped as FM-Intent). See ../shared/INTENTREC.md.

    F_k        = FeatureEmbedder(item, categorical fields, genres, time gap, position)
    S_k        = WindowEncoder(F_{p..k})                 short-term interest within H (V3)
    E_k        = IntentEncoder(LN(Linear([F_k; S_k])))   causal Transformer
    p_i        = softmax(FC_i(E_k)), one head per intent field (genre too: a distribution over genres)
    P_i        = Proj_i(p_i);  a_i = FC_att(P_i);  w = softmax(a);  Z_k = sum_i w_i P_i
    H_k        = NextItemEncoder(LN(Linear([F_k; S_k; Z_k])))   a second, separate causal Transformer
    logits     = H_k @ item_embeddings^T                 over the whole catalogue (tied weights)
    (with input_projection = false each LN(Linear([...])) is the sum of its parts: F_k + S_k + Z_k)
    loss       = sum_k d_k CE(item_{k+1}) / N + lambda * sum_i weight_i * L_intent_i

With ``repeat`` (ours; the continue/discover intent made explicit in the scores, for logs where users
come back to items, as Taobao's views, carts and purchases do), the next item comes from a mixture:

    g_k        = sigmoid(FC_gate(H_k))                   P(the next item is one already in the history)
    P_rep(i)   = sum_{j <= k, item_j = i} softmax_j(FC_q(H_k) . e_{item_j} + r[k - j])   pointer over history
    P_new(i)   = softmax over the items not in the history of H_k @ item_embeddings^T
    P(i)       = g_k P_rep(i) for items in the history, (1 - g_k) P_new(i) for the others

With ``repeat_features`` the pointer's keys are e_{item_j} + FC_key(F_j): the interaction's own features
(its event type and other fields, time gap, genres, position), so that what a user did with an item
(viewed it, carted it, bought it) and when can decide whether they come back to it.

trained by the log-likelihood of the observed branch (repeat or new, known from the data): the gate by
binary cross-entropy, the pointer on repeated targets, the catalogue softmax on new ones (its
normaliser runs over the whole catalogue in training, and over the new items when scoring). Items are
ranked by log P(i), so a model that learns users never come back ranks history items last.

Variants (``variant``): V0 no intents (the next-item encoder alone); V1 flat multi-task (one encoder,
auxiliary intent heads on it, no hierarchy); V2 hierarchical; V3 hierarchical with the short-term window.

Departures from the paper:
* learned positions (counted from the first real interaction, or back from the last with
  ``positions="from_last"``) plus a bucketed time-gap embedding instead of timestamp embeddings;
* field embeddings are summed into D rather than concatenated (equivalent up to a linear map);
* the window encoder is one Transformer block with a window attention mask, computed for all
  positions in one pass;
* the multi-label genre head is a softmax trained with cross-entropy against the item's genres as a
  uniform soft target, so only the positives carry loss, as in the paper; its output is a distribution
  over genres;
* the output layer shares the item embedding (with ``output_genres``, plus the item's genre embedding).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from intentrec.data.batching import GAP_BUCKETS, Batch
from intentrec.models.base import (
    ITEM_LOSSES,
    NEGATIVES,
    HeadSpec,
    ItemLoss,
    ModelOutput,
    Negatives,
    SequentialModel,
    linear_cross_entropy,
    next_item_loss,
    scores_over_catalogue,
)
from intentrec.models.layers import (
    INITS,
    POSITIONS,
    CausalTransformer,
    FeatureEmbedder,
    Positions,
    apply_init,
    causal_mask,
    window_mask,
)

__all__ = ["IntentRec", "IntentRecConfig"]


@dataclass(frozen=True)
class IntentRecConfig:
    """Every hyperparameter of the model, with its default."""

    n_items: int
    heads: tuple[HeadSpec, ...] = ()
    cardinalities: tuple[int, ...] = ()  # sizes of the categorical side fields (code 0 = padding)
    variant: Literal["V0", "V1", "V2", "V3"] = "V3"
    d: int = 64  # hidden size D
    n_blocks: int = 2  # Transformer blocks per encoder
    n_heads: int = 2  # attention heads
    ffn_mult: int = 4  # feed-forward width as a multiple of d
    window_blocks: int = 1  # blocks of the short-term window encoder (V3)
    dropout: float = 0.2
    max_len: int = 50
    intent_lambda: float = 0.3  # weight of the summed intent losses
    head_weights: tuple[tuple[str, float], ...] = ()  # per-head loss weights; 1 when not listed
    use_genres: bool = True  # item genre multi-hot as an input feature
    use_time_gaps: bool = True  # bucketed time gap to the previous interaction as an input feature
    # full softmax, BCE with one sampled negative (SASRec paper), or softmax over sampled negatives
    item_loss: ItemLoss = "ce"
    n_negatives: int = 256  # uniform negatives per position (item_loss="sampled")
    negatives: Negatives = "per_position"  # drawn per position or once per batch ("shared")
    unseen_negatives: bool = False  # item_loss="bce": the negative drawn from items the row does not hold
    # weight initialisation (`intentrec.models.layers.small_init`, `intentrec.models.layers.xavier_init`)
    init: Literal["scaled", "small", "xavier"] = "scaled"
    # score items with their genre embedding added to the id embedding, as the input does: items share
    # what their genres (Amazon: categories and brand) say, which helps items seen rarely in training
    output_genres: bool = False
    repeat: bool = False  # the continue/discover mixture above
    repeat_features: bool = False  # the pointer's keys from the interaction's features too (needs repeat)
    # learned positions counted from the row's first real interaction, or back from its last one
    # (`intentrec.models.layers.positions_from_last`: the original SASRec's and S3-Rec's numbering)
    positions: Positions = "from_first"
    # a linear layer and LayerNorm between the joined inputs and each encoder. Off, as SASRec, V0's and V1's
    # encoder reads the embeddings directly, and V2's and V3's reads the sum of their inputs (`SumOfParts`)
    input_projection: bool = True

    def __post_init__(self) -> None:
        if self.init not in INITS:
            raise ValueError(f"init must be one of {', '.join(INITS)}, got {self.init!r}")
        if self.item_loss not in ITEM_LOSSES:
            raise ValueError(f"item_loss must be one of {', '.join(ITEM_LOSSES)}, got {self.item_loss!r}")
        if self.negatives not in NEGATIVES:
            raise ValueError(f"negatives must be one of {', '.join(NEGATIVES)}, got {self.negatives!r}")
        if self.n_negatives < 1:
            raise ValueError(f"n_negatives must be at least 1, got {self.n_negatives}")
        if self.unseen_negatives and self.item_loss != "bce":
            raise ValueError("unseen_negatives applies to item_loss='bce'")
        if self.variant not in ("V0", "V1", "V2", "V3"):
            raise ValueError(f"variant must be V0, V1, V2 or V3, got {self.variant!r}")
        if self.repeat and self.item_loss != "ce":
            raise ValueError("repeat needs item_loss='ce': the mixture is a full softmax")
        if self.repeat_features and not self.repeat:
            raise ValueError("repeat_features needs repeat: it changes the pointer's keys")
        if self.positions not in POSITIONS:
            raise ValueError(f"positions must be one of {', '.join(POSITIONS)}, got {self.positions!r}")
        if self.variant != "V0" and not self.heads:
            raise ValueError(f"variant {self.variant} needs at least one intent head; the data set has none enabled")


class SumOfParts(nn.Module):
    """The joined inputs (B, L, n * D) summed part by part into (B, L, D): V2's and V3's encoders without
    the input projection read F_k + S_k (+ Z_k), as a Transformer reads token and position embeddings."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.d = d

    def forward(self, joined: torch.Tensor) -> torch.Tensor:
        return joined.unflatten(-1, (-1, self.d)).sum(-2)


class IntentRec(SequentialModel):
    def __init__(self, config: IntentRecConfig, item_genres: torch.Tensor | None = None) -> None:
        super().__init__()
        self.config = c = config
        self.max_len, self.heads = c.max_len, c.heads
        self.embed = FeatureEmbedder(
            c.n_items,
            c.d,
            c.max_len,
            list(c.cardinalities),
            GAP_BUCKETS,
            c.dropout,
            item_genres if c.use_genres else None,
            positions=c.positions,
        )
        self.hierarchical = c.variant in ("V2", "V3")
        self.windowed = c.variant == "V3"
        if self.windowed:
            self.window = CausalTransformer(c.d, c.window_blocks, c.n_heads, c.dropout, c.ffn_mult)
        width = c.d * (2 if self.windowed else 1)
        if c.variant != "V0":
            self.intent_in = self._input_layer(width)
            self.intent_encoder = CausalTransformer(c.d, c.n_blocks, c.n_heads, c.dropout, c.ffn_mult)
            self.intent_heads = nn.ModuleDict({h.name: nn.Linear(c.d, h.n_classes) for h in c.heads})
        if self.hierarchical:
            self.project = nn.ModuleDict({h.name: nn.Linear(h.n_classes, c.d) for h in c.heads})
            self.attend = nn.Linear(c.d, 1)
            width += c.d
        if c.variant != "V1":
            self.next_in = self._input_layer(width)
            self.next_encoder = CausalTransformer(c.d, c.n_blocks, c.n_heads, c.dropout, c.ffn_mult)
        if c.repeat:
            self.repeat_gate = nn.Linear(c.d, 1)  # logit of g_k
            self.repeat_query = nn.Linear(c.d, c.d)  # the pointer's query from H_k
            self.repeat_recency = nn.Embedding(c.max_len, 1)  # r[k - j], by how many interactions ago
        if c.repeat_features:
            self.repeat_key = nn.Linear(c.d, c.d)  # FC_key: the interaction's features into the pointer's keys
        apply_init(self, c.init)
        self._scoring: tuple[tuple[int, ...], torch.Tensor] | None = None  # (parameter versions, table)

    def _input_layer(self, width: int) -> nn.Module:
        """What carries the joined inputs (B, L, width) into an encoder: (B, L, D)."""
        d = self.config.d
        if self.config.input_projection:
            return nn.Sequential(nn.Linear(width, d), nn.LayerNorm(d))
        return nn.Identity() if width == d else SumOfParts(d)

    @property
    def item_embeddings(self) -> torch.Tensor:
        """(I + 1, D) the output layer: the item-id embedding, plus each item's genre embedding with
        ``output_genres``. Outside autograd the sum is kept until a parameter changes."""
        table = self.embed.item.weight
        if not self.config.output_genres or self.embed.item_genres is None:
            return table
        if torch.is_grad_enabled():
            return table + self.embed.genre_table()
        genre = self.embed.genre.weight
        versions = (id(table), table._version, id(genre), genre._version)
        if self._scoring is None or self._scoring[0] != versions:
            self._scoring = (versions, table + self.embed.genre_table())
        return self._scoring[1]

    def forward(self, batch: Batch, last_only: bool = False) -> ModelOutput:
        """Every position's outputs; with ``last_only`` the hidden state (B, 1, D) of the last position
        alone, about a fifth less work for serving (the intent outputs keep every position)."""
        c = self.config
        mask = batch.mask  # (B, L)
        gaps = batch.time_gaps if c.use_time_gaps else batch.time_gaps.clamp(max=1)  # 1 = "unknown gap"
        features = self.embed(batch.items, batch.categorical, gaps, mask)  # (B, L, D)
        keys = self.item_embeddings[batch.items] + self.repeat_key(features) if c.repeat_features else None
        allowed = causal_mask(mask)  # (B, L, L)
        parts = [features]
        if self.windowed:
            short_term = self.window(features, window_mask(mask, batch.window_len))  # (B, L, D)
            parts.append(short_term)
        if c.variant == "V0":
            joined = parts[0] if len(parts) == 1 else torch.cat(parts, -1)  # (B, L, D * parts)
            hidden = self.next_encoder(self.next_in(joined), allowed, last_only)  # (B, L, D)
            return ModelOutput(hidden, history_keys=keys)
        encoded = self.intent_encoder(self.intent_in(torch.cat(parts, -1)), allowed)  # (B, L, D)
        logits = {name: head(encoded) for name, head in self.intent_heads.items()}  # head -> (B, L, K_f)
        if c.variant == "V1":
            return ModelOutput(encoded, logits, history_keys=keys)
        projected = []
        for h in c.heads:
            p = torch.softmax(logits[h.name], -1)  # (B, L, K_f)
            projected.append(self.project[h.name](p))  # (B, L, D)
        stacked = torch.stack(projected, dim=2)  # (B, L, n_heads, D)
        weights = torch.softmax(self.attend(stacked).squeeze(-1), dim=-1)  # (B, L, n_heads)
        intent = (weights[..., None] * stacked).sum(dim=2)  # (B, L, D) Z_k
        joined = torch.cat([*parts, intent], -1)  # (B, L, D * (parts + 1))
        hidden = self.next_encoder(self.next_in(joined), allowed, last_only)  # (B, L, D); (B, 1, D) last_only
        return ModelOutput(hidden, logits, weights, intent, keys)

    def item_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return scores_over_catalogue(hidden, self.item_embeddings)

    def _pointer(
        self, hidden: torch.Tensor, batch: Batch, positions: torch.Tensor, keys: torch.Tensor | None = None
    ) -> torch.Tensor:
        """log softmax_j of the pointer's scores over the history positions j <= k, for the hidden
        states (B, Q, D) at query positions ``positions`` (Q,): (B, Q, L), -inf where j > k or padding.
        ``keys`` (B, L, D): the history's keys (`ModelOutput.history_keys`); the item embeddings if None."""
        items = batch.items  # (B, L)
        keys = self.item_embeddings[items] if keys is None else keys  # (B, L, D)
        scores = torch.einsum("bqd,bld->bql", self.repeat_query(hidden), keys)  # (B, Q, L)
        distance = positions[:, None] - torch.arange(items.shape[1], device=items.device)[None, :]  # (Q, L)
        scores = scores + self.repeat_recency(distance.clamp(0, self.config.max_len - 1)).squeeze(-1)
        allowed = (distance >= 0)[None] & batch.mask[:, None, :]  # (B, Q, L)
        scores = scores.masked_fill(~allowed, float("-inf"))
        empty = ~allowed.any(-1, keepdim=True)  # query positions with no history (padding): no NaN
        return scores.masked_fill(empty, 0.0).log_softmax(-1).masked_fill(~allowed, float("-inf"))

    def next_item_scores(self, batch: Batch, output: ModelOutput) -> torch.Tensor:
        """log P(i) of the next item after each row's last interaction (the mixture with ``repeat``)."""
        hidden = output.hidden[:, -1]  # (B, D)
        logits = self.item_logits(hidden)  # (B, I + 1)
        if not self.config.repeat:
            return logits
        items = batch.items  # (B, L), 0 where padding
        seen = torch.zeros_like(logits, dtype=torch.bool).scatter_(1, items, True)
        seen[:, 0] = False
        new = logits.masked_fill(seen, float("-inf"))
        new = new - new.logsumexp(-1, keepdim=True).clamp(min=-1e30)  # log P_new over the unseen items
        last = torch.tensor([items.shape[1] - 1], device=items.device)
        pointer = self._pointer(hidden[:, None], batch, last, output.history_keys)[:, 0].exp()  # (B, L)
        repeat = torch.zeros_like(logits).scatter_add_(1, items, pointer)  # (B, I + 1) P_rep
        gate = self.repeat_gate(hidden)  # (B, 1)
        scores = torch.where(seen, F.logsigmoid(gate) + repeat.log(), F.logsigmoid(-gate) + new)
        scores[:, 0] = float("-inf")
        return scores

    def _mixture_loss(self, output: ModelOutput, batch: Batch) -> torch.Tensor:
        """Engagement-weighted -log P(target) of the continue/discover mixture, per target."""
        hidden = output.hidden  # (B, L, D)
        has_target = batch.target_items > 0  # (B, L)
        target, weights = batch.target_items, batch.target_weights
        length = batch.items.shape[1]
        positions = torch.arange(length, device=target.device)
        pointer = self._pointer(hidden, batch, positions, output.history_keys)  # (B, L, L)
        same = (batch.items[:, None, :] == target[:, :, None]) & pointer.isfinite()  # (B, L, L)
        repeated = same.any(-1) & has_target  # (B, L): the target is in the history so far
        new = has_target & ~repeated
        item_terms = linear_cross_entropy(hidden[new], self.item_embeddings, target[new], weights[new])
        pointer_terms = -(pointer.masked_fill(~same, float("-inf")).logsumexp(-1)[repeated] * weights[repeated]).sum()
        gate = self.repeat_gate(hidden).squeeze(-1)  # (B, L)
        gate_terms = F.binary_cross_entropy_with_logits(
            gate[has_target], repeated[has_target].to(gate.dtype), weight=weights[has_target], reduction="sum"
        )
        return (item_terms + pointer_terms + gate_terms) / has_target.sum().clamp(min=1)

    def training_loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        """As for every model, with the items' genre table built once for the step: the input embedding
        and the tied output layer share it (`FeatureEmbedder.one_genre_table`)."""
        with self.embed.one_genre_table():
            return self.loss(batch, self(batch))

    def loss(self, batch: Batch, output: ModelOutput) -> tuple[torch.Tensor, dict[str, float]]:
        """Engagement-weighted item cross-entropy at every position with a target, plus the intent losses."""
        c = self.config
        if c.repeat:
            item_loss = self._mixture_loss(output, batch)
        else:
            item_loss = next_item_loss(
                output.hidden, batch, self.item_embeddings, c.item_loss, c.n_negatives, c.negatives, c.unseen_negatives
            )
        parts = {"item": item_loss.item()}
        total = item_loss
        weights = dict(c.head_weights)
        for h in c.heads:
            if h.name not in output.intent_logits:
                continue
            known = batch.intent_target_mask[h.name]  # (B, L)
            if not known.any():
                continue
            logits = output.intent_logits[h.name][known]  # (N_h, K_f)
            target = batch.intent_targets[h.name][known]
            if h.multi_label:  # cross-entropy against the genres as a uniform soft target
                positives = target.float().sum(-1, keepdim=True)  # (N_h, 1); rows without a genre carry no loss
                soft = target.float() / positives.clamp(min=1)  # (N_h, K_f)
                terms = -(soft * F.log_softmax(logits, -1)).sum(-1)  # (N_h,)
                head_loss = terms.sum() / (positives > 0).sum().clamp(min=1)
            else:
                head_loss = F.cross_entropy(logits, target)
            parts[h.name] = head_loss.item()
            total = total + c.intent_lambda * weights.get(h.name, 1.0) * head_loss
        parts["total"] = total.item()
        return total, parts
