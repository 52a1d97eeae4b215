"""RePlay 0.22 SASRec on ML-100K, timed like our own models; runs inside RePlay's own virtual environment.

Invoked by ``bench/speed.py`` as ``python replay_sasrec.py U_DATA EPOCHS THREADS`` with RePlay's venv
Python. Prints one JSON object: seconds of each training epoch (the first is a warm-up), sequences and
training targets per epoch, full-ranking evaluation time and test HR@10 / NDCG@10, peak RSS.
Settings are the issue's: d 64, 2 blocks, 2 heads, dropout 0.5, max length 50, batch 128, CE loss over
the full catalogue, Adam lr 1e-3; leave-one-out (train on all but the last two items of each user).
"""

import json
import sys
import time

import numpy as np
import pandas as pd
import torch
from peer_common import memory_mb, peak_rss_mb


def main() -> None:
    path, epochs, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    import lightning as L
    from replay.data import Dataset, FeatureHint, FeatureInfo, FeatureSchema, FeatureSource, FeatureType
    from replay.data.nn import SequenceTokenizer, TensorFeatureInfo, TensorFeatureSource, TensorSchema
    from replay.models.nn.sequential.sasrec import SasRec, SasRecPredictionDataset, SasRecTrainingDataset

    log = pd.read_csv(path, sep="\t", names=["user_id", "item_id", "rating", "timestamp"])
    log = log.sort_values(["user_id", "timestamp"], kind="stable").reset_index(drop=True)
    position_from_end = log.groupby("user_id").cumcount(ascending=False)
    train_log = log[position_from_end >= 2]
    test_log = log[position_from_end >= 1]
    test_target = log[position_from_end == 0].set_index("user_id")["item_id"]

    feature_schema = FeatureSchema(
        [
            FeatureInfo("user_id", FeatureType.CATEGORICAL, FeatureHint.QUERY_ID),
            FeatureInfo("item_id", FeatureType.CATEGORICAL, FeatureHint.ITEM_ID),
            FeatureInfo("timestamp", FeatureType.NUMERICAL, FeatureHint.TIMESTAMP),
        ]
    )
    tensor_schema = TensorSchema(
        TensorFeatureInfo(
            "item_id_seq",
            FeatureType.CATEGORICAL,
            is_seq=True,
            feature_hint=FeatureHint.ITEM_ID,
            feature_sources=[TensorFeatureSource(FeatureSource.INTERACTIONS, "item_id")],
            embedding_dim=64,
        )
    )
    # Every item (all of ML-100K) is known to the tokenizer, as in our full-ranking protocol.
    tokenizer = SequenceTokenizer(tensor_schema, handle_unknown_rule="drop")
    tokenizer.fit(Dataset(feature_schema, log[["user_id", "item_id", "timestamp"]]))
    train_seq = tokenizer.transform(Dataset(feature_schema, train_log[["user_id", "item_id", "timestamp"]]))
    test_seq = tokenizer.transform(Dataset(feature_schema, test_log[["user_id", "item_id", "timestamp"]]))

    model = SasRec(
        tensor_schema, block_count=2, head_count=2, hidden_size=64, max_seq_len=50, dropout_rate=0.5, loss_type="CE"
    )
    loader = torch.utils.data.DataLoader(
        SasRecTrainingDataset(train_seq, max_sequence_length=50), batch_size=128, shuffle=True
    )
    targets_per_epoch = int(sum(len(batch["positive_labels"][batch["target_padding_mask"]]) for batch in loader))

    class EpochTimer(L.Callback):
        def __init__(self) -> None:
            self.seconds: list[float] = []

        def on_train_start(self, trainer, module) -> None:  # the optimiser exists, no step has run
            self.rss_before_training_mb = memory_mb("VmRSS")

        def on_train_epoch_start(self, trainer, module) -> None:
            self.started = time.perf_counter()

        def on_train_epoch_end(self, trainer, module) -> None:
            self.seconds.append(time.perf_counter() - self.started)

    timer = EpochTimer()
    trainer = L.Trainer(
        max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[timer],
    )  # fmt: skip
    trainer.fit(model, loader)

    # Full-ranking evaluation: scores over every item for every user's test-time history.
    model.eval()
    predict = torch.utils.data.DataLoader(SasRecPredictionDataset(test_seq, max_sequence_length=50), batch_size=256)
    started = time.perf_counter()
    scores, users = [], []
    with torch.inference_mode():
        for batch in predict:
            scores.append(model(batch["feature_tensor"], batch["padding_mask"]))
            users.append(batch["query_id"])
    all_scores = torch.cat(scores)
    top = torch.topk(all_scores, 10, dim=1).indices.numpy()
    eval_seconds = time.perf_counter() - started
    user_codes = torch.cat(users).reshape(-1).numpy()
    user_ids = tokenizer.query_id_encoder.inverse_mapping["user_id"]
    item_ids = tokenizer.item_id_encoder.inverse_mapping["item_id"]
    hits, gains = 0, 0.0
    for code, row in zip(user_codes, top, strict=True):
        target = test_target[user_ids[int(code)]]
        ranked = [item_ids[int(i)] for i in row]
        if target in ranked:
            hits += 1
            gains += 1.0 / np.log2(ranked.index(target) + 2)
    json.dump(
        {
            "epoch_seconds": timer.seconds,
            "sequences_per_epoch": len(loader.dataset),
            "targets_per_epoch": targets_per_epoch,
            "eval_seconds": eval_seconds,
            "eval_users": len(user_codes),
            "hr@10": hits / len(user_codes),
            "ndcg@10": gains / len(user_codes),
            "parameters": sum(p.numel() for p in model.parameters()),
            "peak_rss_mb": peak_rss_mb(),
            "rss_before_training_mb": timer.rss_before_training_mb,
            "versions": {
                "replay-rec": __import__("importlib.metadata").metadata.version("replay-rec"),
                "torch": torch.__version__,
                "lightning": L.__version__,
            },
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
