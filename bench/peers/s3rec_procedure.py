"""S3-Rec's SASRec fine-tuning procedure, re-written compactly, to check the published LastFM row.

The S3-Rec all-rank table (aHuiWang/CIKM2020-S3Rec README) lists SASRec on LastFM at HR@10 0.0688 /
NDCG@10 0.0390; our harness gets half of that. This script follows that repository's
``run_finetune_full.py`` without pre-training (its "model is same as SASRec" path), step by step and
in our own code: the same files; for each user, inputs ``items[:-3]`` and targets ``items[1:-2]`` (the
last 50); one negative per position drawn from the items not in the user's whole sequence; a
post-LayerNorm encoder (2 layers, 2 heads, d 64, GELU feed-forward 4d, LayerNorm eps 1e-12, dropout
0.5 on hidden states and attention, weights drawn from N(0, 0.02)); item plus position embedding, then
LayerNorm and dropout; the summed BCE of positives and negatives over real positions; Adam (lr 1e-3,
no weight decay), batch 256, at most 200 epochs; early stopping on validation NDCG@20 with patience
10; full ranking where the scores of the user's earlier items are set to 0 (their evaluation), and
also with them kept (ours). Results: bench/results/s3rec_check.{json,md}.

Their negatives are drawn from outside the user's whole sequence, so the validation and test items
are never a training negative for their user. ``--negatives training`` draws them from outside the
items training shows (all but the last two), and ``--negatives uniform`` from every item but the
position's target, as our SASRec-BCE does; ``--pre-norm`` makes the blocks pre-LayerNorm with a final
LayerNorm, as ours. Each writes its own result files.

    python bench/peers/s3rec_procedure.py                 # seeds 42 0 1, LastFM
    python bench/peers/s3rec_procedure.py --data Beauty --seeds 42
    python bench/peers/s3rec_procedure.py --seeds 42 --patience 200 --negatives uniform
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "bench" / "results"
PUBLISHED = {"LastFM": (0.0688, 0.0390), "Beauty": (0.0605, 0.0318), "Toys_and_Games": (0.0675, 0.0374)}
L, H, HEADS = 50, 64, 2


class LayerNorm(nn.Module):
    """TF-style LayerNorm, epsilon inside the square root, as the S3-Rec code has it."""

    def __init__(self) -> None:
        super().__init__()
        self.weight, self.bias = nn.Parameter(torch.ones(H)), nn.Parameter(torch.zeros(H))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(-1, keepdim=True)
        var = (x - mean).pow(2).mean(-1, keepdim=True)
        return self.weight * (x - mean) / torch.sqrt(var + 1e-12) + self.bias


class Block(nn.Module):
    """Post-LayerNorm transformer layer: attention, add and norm; feed-forward, add and norm. With
    ``pre_norm``, as ours: norm, attention, add; norm, feed-forward, add."""

    def __init__(self, pre_norm: bool = False) -> None:
        super().__init__()
        self.pre_norm = pre_norm
        self.q, self.k, self.v, self.out = (nn.Linear(H, H) for _ in range(4))
        self.ffn_in, self.ffn_out = nn.Linear(H, 4 * H), nn.Linear(4 * H, H)
        self.norm_attention, self.norm_ffn = LayerNorm(), LayerNorm()
        self.dropout, self.attention_dropout = nn.Dropout(0.5), nn.Dropout(0.5)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, L, HEADS, H // HEADS).permute(0, 2, 1, 3)

        def attend(y: torch.Tensor) -> torch.Tensor:
            scores = heads(self.q(y)) @ heads(self.k(y)).transpose(-1, -2) / math.sqrt(H // HEADS) + bias
            context = self.attention_dropout(scores.softmax(-1)) @ heads(self.v(y))
            return self.dropout(self.out(context.permute(0, 2, 1, 3).reshape(b, L, H)))

        def feed_forward(y: torch.Tensor) -> torch.Tensor:
            return self.dropout(self.ffn_out(nn.functional.gelu(self.ffn_in(y))))

        if self.pre_norm:
            x = x + attend(self.norm_attention(x))
            return x + feed_forward(self.norm_ffn(x))
        x = self.norm_attention(attend(x) + x)
        return self.norm_ffn(feed_forward(x) + x)


class SASRec(nn.Module):
    def __init__(self, n_items: int, pre_norm: bool = False) -> None:
        super().__init__()
        self.item, self.position = nn.Embedding(n_items, H, padding_idx=0), nn.Embedding(L, H)
        self.norm, self.dropout = LayerNorm(), nn.Dropout(0.5)
        self.blocks = nn.ModuleList([Block(pre_norm), Block(pre_norm)])
        self.final_norm = LayerNorm() if pre_norm else nn.Identity()  # a pre-norm stack ends with one
        for m in self.modules():
            if isinstance(m, nn.Linear | nn.Embedding):
                m.weight.data.normal_(0.0, 0.02)
            if isinstance(m, nn.Linear):
                m.bias.data.zero_()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        allowed = (ids > 0).long()[:, None, None, :] * torch.tril(torch.ones(L, L)).long()[None, None]
        bias = (1.0 - allowed.float()) * -10000.0
        x = self.dropout(self.norm(self.item(ids) + self.position(torch.arange(L))[None]))
        for block in self.blocks:
            x = block(x, bias)
        return self.final_norm(x)


# What a user's negatives exclude: the whole sequence (theirs), the training items, the target alone (ours).
NEGATIVES = ("sequence", "training", "uniform")


def run(
    sequences: list[list[int]], seed: int, patience: int = 10, negatives_from: str = "sequence", pre_norm: bool = False
) -> dict[str, Any]:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    n_items = max(max(s) for s in sequences) + 2

    def negative(seen: set[int]) -> int:
        while (j := random.randint(1, n_items - 1)) in seen:
            pass
        return j

    def tensors(split: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        cut = {"train": 3, "valid": 2, "test": 1}[split]
        rows = []
        for s in sequences:
            inputs, targets = s[:-cut], s[1 : len(s) - cut + 1]
            if negatives_from == "uniform":
                negatives = [negative({t}) for t in targets]
            else:
                seen = set(s) if negatives_from == "sequence" else set(s[:-2])
                negatives = [negative(seen) for _ in inputs]
            pad = [0] * (L - len(inputs))
            rows.append([*(pad + inputs)[-L:], *(pad + targets)[-L:], *(pad + negatives)[-L:]])
        t = torch.tensor(rows)
        return t[:, :L], t[:, L : 2 * L], t[:, 2 * L :]

    model = SASRec(n_items, pre_norm)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)

    def evaluate(split: str, exclude_seen: bool) -> dict[str, float]:
        inputs = tensors(split)[0]
        model.eval()
        with torch.no_grad():
            scores = (model(inputs)[:, -1] @ model.item.weight.T).numpy()
        cut = 2 if split == "valid" else 1
        if exclude_seen:  # their evaluation: earlier items scored 0 (not -inf)
            for u, s in enumerate(sequences):
                scores[u, s[:-cut]] = 0
        answers = np.array([s[-cut] for s in sequences])
        hits = np.argsort(-scores, 1)[:, :20] == answers[:, None]
        gain = 1 / np.log2(np.arange(2, 22))
        out = {}
        for k in (10, 20):
            out[f"hr@{k}"] = float(hits[:, :k].any(1).mean())
            out[f"ndcg@{k}"] = float((hits[:, :k] * gain[:k]).sum(1).mean())
        return out

    best, stale, best_epoch, state = -1.0, 0, 0, model.state_dict()
    started = time.perf_counter()
    for epoch in range(200):
        inputs, positives, negatives = tensors("train")
        model.train()
        for rows in torch.randperm(len(sequences)).split(256):
            out = model(inputs[rows])
            real = (positives[rows] > 0).float()
            pos = (out * model.item(positives[rows])).sum(-1)
            neg = (out * model.item(negatives[rows])).sum(-1)
            terms = -torch.log(torch.sigmoid(pos) + 1e-24) - torch.log(1 - torch.sigmoid(neg) + 1e-24)
            loss = (terms * real).sum() / real.sum()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        valid = evaluate("valid", exclude_seen=True)["ndcg@20"]
        if valid > best:
            best, stale, best_epoch = valid, 0, epoch + 1
            state = {k: t.clone() for k, t in model.state_dict().items()}
        else:
            stale += 1
            if stale >= patience:
                break
    model.load_state_dict(state)
    return {
        "seed": seed,
        "epochs": epoch + 1,
        "best_epoch": best_epoch,
        "seconds": round(time.perf_counter() - started, 1),
        "test_seen_excluded": evaluate("test", exclude_seen=True),
        "test_seen_kept": evaluate("test", exclude_seen=False),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="LastFM", choices=list(PUBLISHED))
    parser.add_argument("--seeds", type=int, nargs="*", default=[42, 0, 1])
    parser.add_argument("--patience", type=int, default=10, help="early-stopping patience (theirs: 10)")
    parser.add_argument("--negatives", choices=NEGATIVES, default="sequence",
                        help="what a user's negatives exclude (theirs: the whole sequence)")  # fmt: skip
    parser.add_argument("--pre-norm", action="store_true", help="pre-LayerNorm blocks and a final LayerNorm, as ours")
    args = parser.parse_args()
    torch.set_num_threads(1)
    root = Path(os.environ.get("INTENTREC_SHARED_DATA", REPO.parent / "shared" / "data"))
    path = root / "s3rec" / f"{args.data}.txt"
    if not path.is_file():
        sys.exit(f"{path}: not found; set INTENTREC_SHARED_DATA")
    sequences = [[int(x) for x in line.split()[1:]] for line in path.read_text().splitlines() if line.strip()]
    rows = []
    for seed in args.seeds:
        rows.append(run(sequences, seed, args.patience, args.negatives, args.pre_norm))
        r = rows[-1]["test_seen_excluded"]
        print(f"seed {seed}: HR@10 {r['hr@10']:.4f} NDCG@10 {r['ndcg@10']:.4f} ({rows[-1]['seconds']} s)", flush=True)

    def mean(key: str, metric: str) -> str:
        values = [r[key][metric] for r in rows]
        return f"{statistics.fmean(values):.4f}" + (f" ± {statistics.stdev(values):.4f}" if len(values) > 1 else "")

    hr, ndcg = PUBLISHED[args.data]
    record = {
        "command": f"python bench/peers/s3rec_procedure.py --data {args.data} --seeds {' '.join(map(str, args.seeds))}"
                   + (f" --patience {args.patience}" if args.patience != 10 else "")
                   + (f" --negatives {args.negatives}" if args.negatives != "sequence" else "")
                   + (" --pre-norm" if args.pre_norm else ""),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "torch": torch.__version__},
        "data": args.data,
        "patience": args.patience,
        "negatives": args.negatives,
        "pre_norm": args.pre_norm,
        "published": {"hr@10": hr, "ndcg@10": ndcg},
        "runs": rows,
    }  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = f"s3rec_check_{args.data.lower()}" + (f"_patience{args.patience}" if args.patience != 10 else "")
    name += f"_negatives_{args.negatives}" if args.negatives != "sequence" else ""
    name += "_pre_norm" if args.pre_norm else ""
    (RESULTS / f"{name}.json").write_text(json.dumps(record, indent=2) + "\n")
    lines = [
        f"# S3-Rec's SASRec procedure on {args.data}, re-run",
        "",
        f"Command: `{record['command']}`  ",
        f"Machine: {record['machine']['platform']}, {record['machine']['cpu_count']} CPUs, torch "
        f"{record['machine']['torch']}  ",
        f"Date: {record['date']}  ",
        "The procedure of the S3-Rec repository's `run_finetune_full.py` without pre-training, re-written in "
        "`bench/peers/s3rec_procedure.py` (see its docstring). Mean ± standard deviation over seeds "
        f"{args.seeds}; early-stopping patience {args.patience}; negatives drawn from outside "
        + {"sequence": "the user's whole sequence (theirs)", "training": "the user's training items",
           "uniform": "the position's target only (ours)"}[args.negatives]
        + ("; pre-LayerNorm blocks and a final LayerNorm (ours), not theirs" if args.pre_norm else "") + ".",
        "",
        "| | HR@10 | NDCG@10 |",
        "|---|---|---|",
        f"| S3-Rec table (published) | {hr} | {ndcg} |",
        "| their procedure, re-run, earlier items scored 0 (their evaluation) | "
        f"{mean('test_seen_excluded', 'hr@10')} | {mean('test_seen_excluded', 'ndcg@10')} |",
        f"| their procedure, re-run, earlier items kept (our evaluation) | {mean('test_seen_kept', 'hr@10')} | "
        f"{mean('test_seen_kept', 'ndcg@10')} |",
        "",
        "Epochs run (best): " + ", ".join(f"{r['epochs']} ({r['best_epoch']})" for r in rows) + ".",
        "",
    ]  # fmt: skip
    (RESULTS / f"{name}.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
