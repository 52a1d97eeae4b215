"""Full-catalogue evaluation of a model on a split (never sampled negatives)."""

from __future__ import annotations

import torch

from intentrec.data.batching import SequenceStore, Split
from intentrec.eval.metrics import KS, macro_f1, rank_of_target, ranking_metrics
from intentrec.models.intentrec import IntentRec

__all__ = ["evaluate"]


@torch.no_grad()
def evaluate(
    model: IntentRec, store: SequenceStore, split: Split, *, batch_size: int = 256, exclude_seen: bool = False
) -> dict[str, object]:
    """HR@K, NDCG@K, MRR over all items at every target of the split, and per-head intent accuracy
    and macro-F1 for single-label heads. ``exclude_seen`` removes items already in the history."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    ranks = []
    predictions: dict[str, list[torch.Tensor]] = {}
    truths: dict[str, list[torch.Tensor]] = {}
    for batch in store.eval_batches(split, batch_size, model.config.max_len):
        batch = batch.to(device)
        output = model(batch)
        scores = model.item_logits(output.hidden[:, -1])  # (B, I + 1)
        exclude = None
        if exclude_seen:
            exclude = torch.zeros_like(scores, dtype=torch.bool)
            exclude.scatter_(1, batch.items, True)
            exclude[:, 0] = True
        ranks.append(rank_of_target(scores, batch.target_items[:, -1], exclude).cpu())
        for head in model.config.heads:
            if head.multi_label or head.name not in output.intent_logits:
                continue
            known = batch.intent_target_mask[head.name][:, -1]
            predictions.setdefault(head.name, []).append(output.intent_logits[head.name][:, -1][known].argmax(-1).cpu())
            truths.setdefault(head.name, []).append(batch.intent_targets[head.name][:, -1][known].cpu())
    model.train(was_training)
    all_ranks = torch.cat(ranks) if ranks else torch.zeros(0, dtype=torch.long)
    result: dict[str, object] = {"targets": len(all_ranks), **ranking_metrics(all_ranks, KS)}
    intents: dict[str, dict[str, float]] = {}
    for head in model.config.heads:
        if head.name in predictions:
            p, t = torch.cat(predictions[head.name]), torch.cat(truths[head.name])
            intents[head.name] = {
                "accuracy": (p == t).double().mean().item() if len(t) else float("nan"),
                "macro_f1": macro_f1(p, t, head.n_classes),
            }
    result["intents"] = intents
    return result
