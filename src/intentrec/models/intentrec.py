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
    loss       = sum_k d_k CE(item_{k+1}) / N + lambda * sum_i weight_i * L_intent_i

Variants (``variant``): V0 no intents (the next-item encoder alone); V1 flat multi-task (one encoder,
auxiliary intent heads on it, no hierarchy); V2 hierarchical; V3 hierarchical with the short-term window.

Departures from the paper:
* learned positions (counted from the first real interaction) plus a bucketed time-gap embedding
  instead of timestamp embeddings;
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
from intentrec.models.base import HeadSpec, ModelOutput, SequentialModel, next_item_loss, scores_over_catalogue
from intentrec.models.layers import INITS, CausalTransformer, FeatureEmbedder, causal_mask, small_init, window_mask

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
    item_loss: Literal["ce", "bce"] = "ce"  # full softmax, or BCE with one sampled negative (SASRec paper)
    init: Literal["scaled", "small"] = "scaled"  # weight initialisation (`intentrec.models.layers.small_init`)
    # score items with their genre embedding added to the id embedding, as the input does: items share
    # what their genres (Amazon: categories and brand) say, which helps items seen rarely in training
    output_genres: bool = False

    def __post_init__(self) -> None:
        if self.init not in INITS:
            raise ValueError(f"init must be one of {', '.join(INITS)}, got {self.init!r}")
        if self.item_loss not in ("ce", "bce"):
            raise ValueError(f"item_loss must be ce or bce, got {self.item_loss!r}")
        if self.variant not in ("V0", "V1", "V2", "V3"):
            raise ValueError(f"variant must be V0, V1, V2 or V3, got {self.variant!r}")
        if self.variant != "V0" and not self.heads:
            raise ValueError(f"variant {self.variant} needs at least one intent head; the data set has none enabled")


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
        )
        self.hierarchical = c.variant in ("V2", "V3")
        self.windowed = c.variant == "V3"
        if self.windowed:
            self.window = CausalTransformer(c.d, c.window_blocks, c.n_heads, c.dropout, c.ffn_mult)
        width = c.d * (2 if self.windowed else 1)
        if c.variant != "V0":
            self.intent_in = nn.Sequential(nn.Linear(width, c.d), nn.LayerNorm(c.d))
            self.intent_encoder = CausalTransformer(c.d, c.n_blocks, c.n_heads, c.dropout, c.ffn_mult)
            self.intent_heads = nn.ModuleDict({h.name: nn.Linear(c.d, h.n_classes) for h in c.heads})
        if self.hierarchical:
            self.project = nn.ModuleDict({h.name: nn.Linear(h.n_classes, c.d) for h in c.heads})
            self.attend = nn.Linear(c.d, 1)
            width += c.d
        if c.variant != "V1":
            self.next_in = nn.Sequential(nn.Linear(width, c.d), nn.LayerNorm(c.d))
            self.next_encoder = CausalTransformer(c.d, c.n_blocks, c.n_heads, c.dropout, c.ffn_mult)
        if c.init == "small":
            small_init(self)
        self._scoring: tuple[tuple[int, ...], torch.Tensor] | None = None  # (parameter versions, table)

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
        allowed = causal_mask(mask)  # (B, L, L)
        parts = [features]
        if self.windowed:
            short_term = self.window(features, window_mask(mask, batch.window_len))  # (B, L, D)
            parts.append(short_term)
        if c.variant == "V0":
            joined = parts[0] if len(parts) == 1 else torch.cat(parts, -1)  # (B, L, D * parts)
            hidden = self.next_encoder(self.next_in(joined), allowed, last_only)  # (B, L, D)
            return ModelOutput(hidden)
        encoded = self.intent_encoder(self.intent_in(torch.cat(parts, -1)), allowed)  # (B, L, D)
        logits = {name: head(encoded) for name, head in self.intent_heads.items()}  # head -> (B, L, K_f)
        if c.variant == "V1":
            return ModelOutput(encoded, logits)
        projected = []
        for h in c.heads:
            p = torch.softmax(logits[h.name], -1)  # (B, L, K_f)
            projected.append(self.project[h.name](p))  # (B, L, D)
        stacked = torch.stack(projected, dim=2)  # (B, L, n_heads, D)
        weights = torch.softmax(self.attend(stacked).squeeze(-1), dim=-1)  # (B, L, n_heads)
        intent = (weights[..., None] * stacked).sum(dim=2)  # (B, L, D) Z_k
        joined = torch.cat([*parts, intent], -1)  # (B, L, D * (parts + 1))
        hidden = self.next_encoder(self.next_in(joined), allowed, last_only)  # (B, L, D); (B, 1, D) last_only
        return ModelOutput(hidden, logits, weights, intent)

    def item_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return scores_over_catalogue(hidden, self.item_embeddings)

    def loss(self, batch: Batch, output: ModelOutput) -> tuple[torch.Tensor, dict[str, float]]:
        """Engagement-weighted item cross-entropy at every position with a target, plus the intent losses."""
        c = self.config
        item_loss = next_item_loss(output.hidden, batch, self.item_embeddings, c.item_loss)
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
