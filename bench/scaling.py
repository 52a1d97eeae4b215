"""Benchmark: how training time and recommendation latency grow with the catalogue and the history length.

SASRec at d 64, 2 blocks, 2 heads, batch 128, full-softmax cross-entropy at every position, on
synthetic full-length sequences of uniformly drawn items (the cost of a step does not depend on which
items they are). IntentRec's next-item output is the same tied softmax over the catalogue, so the
catalogue-dependent part of its cost is the same; its encoders add a constant.

- Training: seconds per epoch of 1,024 sequences against the catalogue size (1K to 1M items, max
  length 50) and against the maximum length (50 to 200, 10K items), with the share of the step spent
  in the output softmax (forward and gradient of the fused loss, timed on the step's own hidden states).
  Against the catalogue, also the same model trained with the sampled softmax (``item_loss="sampled"``,
  256 uniform negatives per position), whose cost does not grow with the catalogue but for the
  embedding table's optimiser update. Large catalogues are timed on fewer batches and scaled to the epoch.
- Inference: per-user recommendation latency at batch 1 (encoder at every position, scores over the
  whole catalogue at the last one, top 10): P50/P95/P99, and batched throughput at batch 256.

    python bench/scaling.py                        # about 10 minutes on 2 cores
    python bench/scaling.py --items 1000 10000 --lengths 50 100
Results: bench/results/scaling.{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from speed_models import RESULTS, machine, provenance

EPOCH_SEQUENCES = 1024
BATCH = 128
DEFAULT_ITEMS = (1_000, 10_000, 100_000, 1_000_000)
DEFAULT_LENGTHS = (50, 100, 150, 200)
LENGTH_SWEEP_ITEMS = 10_000
SAMPLED_NEGATIVES = 256


def synthetic_batch(n_items: int, batch: int, max_len: int, generator: torch.Generator) -> Any:
    """A full-length batch: ``max_len`` items in, the next item as target at every position."""
    from intentrec.data.batching import Batch

    seq = torch.randint(1, n_items + 1, (batch, max_len + 1), generator=generator)
    full = torch.ones(batch, max_len, dtype=torch.long)
    return Batch(
        users=torch.arange(batch),
        items=seq[:, :-1],
        categorical=torch.zeros(batch, max_len, 0, dtype=torch.long),
        time_gaps=full,
        window_len=full,
        mask=full.bool(),
        target_items=seq[:, 1:],
        target_weights=torch.ones(batch, max_len),
        intent_targets={},
        intent_target_mask={},
    )


def train_step(model: Any, optimiser: torch.optim.Optimizer, batch: Any) -> float:
    """Seconds of one optimiser step of ``model`` on ``batch``."""
    started = time.perf_counter()
    optimiser.zero_grad(set_to_none=True)
    loss, _ = model.training_loss(batch)
    loss.backward()
    optimiser.step()
    return time.perf_counter() - started


# the sampled-softmax variants timed beside the full softmax: key prefix in the results -> negatives
SAMPLED_VARIANTS = {"sampled": "per_position", "shared": "shared"}
SAMPLED_LABELS = {"sampled": "negatives per position", "shared": "negatives shared by the batch"}


def train_point(n_items: int, max_len: int, with_sampled: bool = False) -> dict[str, Any]:
    """Seconds per epoch of EPOCH_SEQUENCES sequences, and the softmax's share of a step; with
    ``with_sampled``, also the seconds per epoch of the same model trained with the sampled softmax,
    its negatives drawn per position and shared by the batch (``<prefix>_seconds_per_epoch``)."""
    from intentrec.models.base import linear_cross_entropy
    from intentrec.models.sasrec import sasrec

    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    model = sasrec(n_items, d=64, n_blocks=2, n_heads=2, dropout=0.2, max_len=max_len)
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3)
    variants = {
        prefix: sasrec(n_items, d=64, n_blocks=2, n_heads=2, dropout=0.2, max_len=max_len, item_loss="sampled",
                       n_negatives=SAMPLED_NEGATIVES, negatives=negatives)  # type: ignore[arg-type]
        for prefix, negatives in (SAMPLED_VARIANTS.items() if with_sampled else ())
    }  # fmt: skip
    variant_optimisers = {prefix: torch.optim.AdamW(m.parameters(), lr=1e-3) for prefix, m in variants.items()}
    work = BATCH * max_len * n_items  # logits per batch
    timed_batches = max(1, min(EPOCH_SEQUENCES // BATCH, int(4e9 // work)))
    batches = [synthetic_batch(n_items, BATCH, max_len, generator) for _ in range(timed_batches + 1)]
    step_seconds, softmax_seconds = [], []
    variant_seconds: dict[str, list[float]] = {prefix: [] for prefix in variants}
    for index, batch in enumerate(batches):  # the first batch warms up
        elapsed = train_step(model, optimiser, batch)
        hidden = model(batch).hidden.detach().reshape(-1, 64).requires_grad_()
        started = time.perf_counter()
        linear_cross_entropy(hidden, model.item_embeddings, batch.target_items.reshape(-1),
                             batch.target_weights.reshape(-1)).backward()  # fmt: skip
        softmax = time.perf_counter() - started
        for prefix, variant in variants.items():
            variant_elapsed = train_step(variant, variant_optimisers[prefix], batch)
            if index:
                variant_seconds[prefix].append(variant_elapsed)
        if index:
            step_seconds.append(elapsed)
            softmax_seconds.append(softmax)
    step = statistics.median(step_seconds)
    point = {
        "items": n_items,
        "max_len": max_len,
        "timed_batches": timed_batches,
        "seconds_per_step": step,
        "seconds_per_epoch": step * EPOCH_SEQUENCES / BATCH,
        "softmax_share": min(1.0, statistics.median(softmax_seconds) / step),
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    for prefix, seconds in variant_seconds.items():
        point[f"{prefix}_seconds_per_epoch"] = statistics.median(seconds) * EPOCH_SEQUENCES / BATCH
    return point


def inference_point(n_items: int, max_len: int, repeats: int) -> dict[str, Any]:
    """Batch-1 latency percentiles and batch-256 throughput of a top-10 recommendation."""
    from intentrec.models.sasrec import sasrec

    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(1)
    model = sasrec(n_items, d=64, n_blocks=2, n_heads=2, max_len=max_len).eval()

    def recommend(batch: Any) -> torch.Tensor:
        with torch.inference_mode():
            return torch.topk(model.item_logits(model(batch).hidden[:, -1]), 10, dim=-1).indices

    one = [synthetic_batch(n_items, 1, max_len, generator) for _ in range(repeats)]
    for batch in one[:5]:
        recommend(batch)
    latencies = []
    for batch in one:
        started = time.perf_counter()
        recommend(batch)
        latencies.append((time.perf_counter() - started) * 1e3)
    many = synthetic_batch(n_items, 256, max_len, generator)
    recommend(many)
    started, rounds = time.perf_counter(), 0
    while rounds < 3 or time.perf_counter() - started < 2.0:
        recommend(many)
        rounds += 1
    throughput = 256 * rounds / (time.perf_counter() - started)
    q = np.percentile(latencies, [50, 95, 99])
    return {"items": n_items, "max_len": max_len, "p50_ms": q[0], "p95_ms": q[1], "p99_ms": q[2],
            "users_per_second_batch_256": throughput}  # fmt: skip


def growth(points: list[dict[str, Any]], x: str, y: str) -> float:
    """Least-squares slope of log y against log x: time grows as x to this power."""
    xs = np.log([p[x] for p in points])
    ys = np.log([p[y] for p in points])
    return float(np.polyfit(xs, ys, 1)[0]) if len(points) > 1 else math.nan


def plot(record: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    items = record["train_by_items"]
    ax = axes[0]
    xs = [p["items"] for p in items]
    ax.loglog(xs, [p["seconds_per_epoch"] for p in items], "o-", label="whole step")
    ax.loglog(xs, [p["seconds_per_epoch"] * p["softmax_share"] for p in items], "s--", label="output softmax")
    for prefix, style in zip(SAMPLED_VARIANTS, ("^:", "v-."), strict=True):
        if all(f"{prefix}_seconds_per_epoch" in p for p in items):
            ax.loglog(xs, [p[f"{prefix}_seconds_per_epoch"] for p in items], style,
                      label=f"sampled softmax, {SAMPLED_NEGATIVES} {SAMPLED_LABELS[prefix]}")  # fmt: skip
    slope = record["growth"]["epoch_vs_items"]
    ax.set(xlabel="catalogue size (items)", ylabel=f"seconds per epoch of {EPOCH_SEQUENCES:,} sequences",
           title=f"Training vs catalogue (max length 50): ~ items^{slope:.2f}")  # fmt: skip
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(True, which="both", alpha=0.3)
    lengths = record["train_by_length"]
    ax = axes[1]
    ax.plot([p["max_len"] for p in lengths], [p["seconds_per_epoch"] for p in lengths], "o-")
    slope = record["growth"]["epoch_vs_length"]
    ax.set(xlabel="maximum history length", ylabel="seconds per epoch",
           title=f"Training vs length ({LENGTH_SWEEP_ITEMS:,} items): ~ L^{slope:.2f}")  # fmt: skip
    ax.grid(True, alpha=0.3)
    infer = record["inference"]
    ax = axes[2]
    xs = [p["items"] for p in infer]
    for key, style in (("p50_ms", "o-"), ("p95_ms", "s--"), ("p99_ms", "^:")):
        ax.loglog(xs, [p[key] for p in infer], style, label=key.replace("_ms", ""))
    ax.set(xlabel="catalogue size (items)", ylabel="ms per user (batch 1, top 10)", title="Recommendation latency")
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(record: dict[str, Any]) -> str:
    lines = [
        "# Scaling: catalogue size, history length, inference latency",
        "",
        *provenance(record["command"], record, f" ({record['machine']['torch_threads']} threads)"),
        f"Settings: {record['settings']}",
        "",
        "![scaling](scaling.png)",
        "",
        f"## Training time against catalogue size (max length 50, epoch = {EPOCH_SEQUENCES:,} sequences)",
        "",
        "| items | parameters | s/step (batch 128) | s/epoch | output softmax share | "
        + "".join(f"s/epoch, sampled softmax ({SAMPLED_NEGATIVES} {label}) | " for label in SAMPLED_LABELS.values())
        + "batches timed |",
        "|---|---|---|---|---|" + "---|" * len(SAMPLED_VARIANTS) + "---|",
    ]  # fmt: skip
    for p in record["train_by_items"]:
        sampled = "".join(f"{p[f'{prefix}_seconds_per_epoch']:.2f} | " if f"{prefix}_seconds_per_epoch" in p
                          else "- | " for prefix in SAMPLED_VARIANTS)  # fmt: skip
        lines.append(f"| {p['items']:,} | {p['parameters']:,} | {p['seconds_per_step']:.3f} | "
                     f"{p['seconds_per_epoch']:.2f} | {p['softmax_share']:.0%} | {sampled}"
                     f"{p['timed_batches']} |")  # fmt: skip
    growth_of = {prefix: record["growth"].get(f"{prefix}_epoch_vs_items") for prefix in SAMPLED_VARIANTS}
    growths = [f"with the sampled softmax, {SAMPLED_LABELS[prefix]}, ~ items^{g:.2f}"
               for prefix, g in growth_of.items() if g is not None]  # fmt: skip
    lines += ["", f"Measured growth: time per epoch ~ items^{record['growth']['epoch_vs_items']:.2f} over the range"
              + "".join(f"; {g}" for g in growths) + ".",
              "", f"## Training time against maximum length ({LENGTH_SWEEP_ITEMS:,} items)", "",
              "| max length | s/step | s/epoch | output softmax share |", "|---|---|---|---|"]  # fmt: skip
    for p in record["train_by_length"]:
        lines.append(f"| {p['max_len']} | {p['seconds_per_step']:.3f} | {p['seconds_per_epoch']:.2f} | "
                     f"{p['softmax_share']:.0%} |")  # fmt: skip
    lines += ["", f"Measured growth: time per epoch ~ L^{record['growth']['epoch_vs_length']:.2f} over the range.",
              "", "## Recommendation latency (max length 50, top 10 over the whole catalogue)", "",
              "| items | P50 ms | P95 ms | P99 ms | users/s at batch 256 |", "|---|---|---|---|---|"]  # fmt: skip
    for p in record["inference"]:
        lines.append(f"| {p['items']:,} | {p['p50_ms']:.2f} | {p['p95_ms']:.2f} | {p['p99_ms']:.2f} | "
                     f"{p['users_per_second_batch_256']:,.0f} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--items", nargs="*", type=int, default=list(DEFAULT_ITEMS))
    parser.add_argument("--lengths", nargs="*", type=int, default=list(DEFAULT_LENGTHS))
    parser.add_argument("--repeats", type=int, default=200, help="batch-1 requests per catalogue size")
    parser.add_argument("--out", default=str(RESULTS / "scaling"), help="results path without extension")
    args = parser.parse_args()

    by_items = []
    for n_items in args.items:
        by_items.append(train_point(n_items, 50, with_sampled=True))
        p = by_items[-1]
        print(f"train {n_items:>9,} items, L 50: {p['seconds_per_epoch']:.2f} s/epoch, "
              f"softmax {p['softmax_share']:.0%}; sampled softmax {p['sampled_seconds_per_epoch']:.2f} s/epoch, "
              f"with shared negatives {p['shared_seconds_per_epoch']:.2f} s/epoch", flush=True)  # fmt: skip
    by_length = []
    for max_len in args.lengths:
        by_length.append(train_point(LENGTH_SWEEP_ITEMS, max_len))
        p = by_length[-1]
        print(f"train {LENGTH_SWEEP_ITEMS:,} items, L {max_len}: {p['seconds_per_epoch']:.2f} s/epoch", flush=True)
    inference = []
    for n_items in args.items:
        inference.append(inference_point(n_items, 50, args.repeats))
        p = inference[-1]
        print(f"infer {n_items:>9,} items: P50 {p['p50_ms']:.2f} ms, P99 {p['p99_ms']:.2f} ms, "
              f"{p['users_per_second_batch_256']:,.0f} users/s at batch 256", flush=True)  # fmt: skip

    record = {
        "benchmark": "scaling",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "python bench/scaling.py " + " ".join(sys.argv[1:]),
        "machine": machine("cpu"),
        "settings": "SASRec d 64, 2 blocks, 2 heads, dropout 0.2, batch 128, full-softmax CE at every position, "
        "synthetic full-length sequences of uniform items",
        "train_by_items": by_items,
        "train_by_length": by_length,
        "inference": inference,
        "growth": {
            "epoch_vs_items": growth(by_items, "items", "seconds_per_epoch"),
            **{
                f"{prefix}_epoch_vs_items": growth(by_items, "items", f"{prefix}_seconds_per_epoch")
                for prefix in SAMPLED_VARIANTS
            },
            "epoch_vs_length": growth(by_length, "max_len", "seconds_per_epoch"),
        },
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    out.with_suffix(".md").write_text(report(record))
    plot(record, out.with_suffix(".png"))
    print(f"-> {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
