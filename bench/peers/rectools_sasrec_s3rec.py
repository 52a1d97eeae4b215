"""RecTools' SASRec with a sampled softmax on an S3-Rec sequence file, leave-one-out, full ranking.

Runs inside RecTools' own virtual environment (``bench/rectools_check.py`` makes it and calls this).
It is the model behind transformer_benchmark's "SASRec+SS" row, with that README's settings for the
Amazon files (d 64, 1 block, 1 head, dropout 0.2, max length 50, 256 uniform negatives per position,
lr 0.001, batch 128, at most 200 epochs, patience 50), item ids only. Training sees every sequence
without its last two items; after each epoch the model ranks all items for every user, with history
``s[:-2]`` against ``s[-2]`` (validation) and ``s[:-1]`` against ``s[-1]`` (test), the user's earlier
items excluded (RecTools' ``filter_viewed``, as every published row on these files does) and kept (as
our harness picks its epoch). The test metrics reported are those of the epoch with the best
validation NDCG@10, earlier items excluded, as transformer_benchmark's validation is scored.

Usage: python rectools_sasrec_s3rec.py FILE SEED THREADS [--d 64] [--epochs 200] [--patience 50]
Prints a JSON line per epoch, then the summary.
"""

import argparse
import json
import time

import numpy as np
import pandas as pd
import torch
from peer_common import peak_rss_mb
from pytorch_lightning import Trainer, seed_everything
from rectools import Columns
from rectools.dataset import Dataset
from rectools.models import SASRecModel
from rectools.models.nn.item_net import IdEmbeddingsItemNet

DETERMINISTIC = False


def interactions(sequences: list[list[int]], cut: int) -> pd.DataFrame:
    """Every sequence without its last ``cut`` items, as RecTools interactions (time = position)."""
    users, items, times = [], [], []
    for user, s in enumerate(sequences):
        kept = s[: len(s) - cut]
        users += [user] * len(kept)
        items += kept
        times += range(len(kept))
    return pd.DataFrame(
        {
            Columns.User: users,
            Columns.Item: items,
            Columns.Weight: 1.0,
            Columns.Datetime: pd.Timestamp("2020-01-01") + pd.to_timedelta(times, unit="s"),
        }
    )


def metrics(model: SASRecModel, dataset: Dataset, answers: np.ndarray, exclude_seen: bool) -> dict[str, float]:
    """HR@10, NDCG@10 of the top 10 over all items, the user's earlier items excluded or kept."""
    users = np.arange(len(answers))
    reco = model.recommend(users=users, dataset=dataset, k=10, filter_viewed=exclude_seen)
    reco = reco[reco[Columns.User].isin(users)]
    rank = reco[Columns.Rank].to_numpy()
    hit = reco[Columns.Item].to_numpy() == answers[reco[Columns.User].to_numpy()]
    return {
        "hr@10": float(hit.sum() / len(answers)),
        "ndcg@10": float((hit / np.log2(rank + 1)).sum() / len(answers)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file")
    parser.add_argument("seed", type=int)
    parser.add_argument("threads", type=int)
    parser.add_argument("--d", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--patience", type=int, default=50)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    seed_everything(args.seed, workers=True)
    with open(args.file) as lines:
        sequences = [[int(x) for x in line.split()[1:]] for line in lines if line.strip()]
    train = Dataset.construct(interactions(sequences, 2))
    history = {"valid": train, "test": Dataset.construct(interactions(sequences, 1))}
    answers = {"valid": np.array([s[-2] for s in sequences]), "test": np.array([s[-1] for s in sequences])}

    def trainer() -> Trainer:
        return Trainer(
            max_epochs=1,
            deterministic=DETERMINISTIC,
            enable_progress_bar=False,
            enable_model_summary=False,
            logger=False,
            enable_checkpointing=False,
            accelerator="cpu",
            devices=1,
        )

    model = SASRecModel(
        n_factors=args.d,
        n_blocks=1,
        n_heads=1,
        dropout_rate=0.2,
        session_max_len=50,
        loss="sampled_softmax",
        n_negatives=256,
        lr=0.001,
        batch_size=128,
        deterministic=DETERMINISTIC,
        item_net_block_types=(IdEmbeddingsItemNet,),
        get_trainer_func=trainer,
    )
    epochs, best, stale = [], -1.0, 0
    started = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        tick = time.perf_counter()
        model.fit_partial(train, min_epochs=1, max_epochs=1)
        seconds = time.perf_counter() - tick
        row = {"epoch": epoch, "train_seconds": round(seconds, 2)}
        for split in ("valid", "test"):
            for name, value in metrics(model, history[split], answers[split], exclude_seen=True).items():
                row[f"{split}_{name}"] = value
            for name, value in metrics(model, history[split], answers[split], exclude_seen=False).items():
                row[f"{split}_{name}_seen_kept"] = value
        epochs.append(row)
        print(json.dumps(row), flush=True)
        if row["valid_ndcg@10"] > best:
            best, stale = row["valid_ndcg@10"], 0
        else:
            stale += 1
            if stale >= args.patience:
                break
    chosen = max(epochs, key=lambda r: r["valid_ndcg@10"])
    print(
        json.dumps(
            {
                "seed": args.seed,
                "d": args.d,
                "epochs_run": len(epochs),
                "best_epoch": chosen["epoch"],
                "valid_ndcg@10": chosen["valid_ndcg@10"],
                "test_hr@10": chosen["test_hr@10"],
                "test_ndcg@10": chosen["test_ndcg@10"],
                "seconds": round(time.perf_counter() - started, 1),
                "seconds_per_epoch": round(float(np.median([r["train_seconds"] for r in epochs])), 2),
                "peak_rss_mb": round(peak_rss_mb(), 1),
                "epochs": epochs,
            }
        )
    )


if __name__ == "__main__":
    main()
