"""RecBole 1.2.1 SASRec on ML-100K, timed like our own models; runs inside RecBole's own virtual environment.

Invoked by ``bench/speed.py`` as ``python recbole_sasrec.py U_DATA EPOCHS THREADS`` with RecBole's venv
Python (which needs setuptools<81, numpy<2, pandas<3 and TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 on current
torch). Prints one JSON object like ``replay_sasrec.py``. Settings: d 64, 2 blocks, 2 heads, FFN 256,
dropout 0.5, max length 50, batch 128, CE loss over the full catalogue, Adam lr 1e-3, leave-one-out
ordered by time, full-ranking evaluation. RecBole trains sequential models on every prefix of each
training sequence with the loss at its last position only, so one of its epochs holds about as many
samples as training interactions; ``targets_per_epoch`` makes epochs comparable across libraries.
"""

import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from peer_common import memory_mb, peak_rss_mb


def main() -> None:
    path, epochs, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    torch.set_num_threads(threads)
    import logging

    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.model.sequential_recommender import SASRec
    from recbole.trainer import Trainer
    from recbole.utils import init_seed

    work = Path(tempfile.mkdtemp(prefix="recbole-"))
    (work / "ml-100k").mkdir()
    with open(path) as source, open(work / "ml-100k" / "ml-100k.inter", "w") as inter:
        inter.write("user_id:token\titem_id:token\trating:float\ttimestamp:float\n")
        for line in source:
            inter.write(line)
    config = Config(
        model="SASRec",
        dataset="ml-100k",
        config_dict={
            "data_path": str(work), "checkpoint_dir": str(work / "saved"), "show_progress": False,
            "device": "cpu", "use_gpu": False, "seed": 0, "reproducibility": True,
            "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
            "MAX_ITEM_LIST_LENGTH": 50, "n_layers": 2, "n_heads": 2, "hidden_size": 64, "inner_size": 256,
            "hidden_dropout_prob": 0.5, "attn_dropout_prob": 0.5, "loss_type": "CE",
            "train_neg_sample_args": None, "train_batch_size": 128, "eval_batch_size": 256,
            "learning_rate": 0.001, "epochs": epochs,
            "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full", "group_by": "user"},
            "metrics": ["Hit", "NDCG"], "topk": [10], "valid_metric": "NDCG@10",
        },
    )  # fmt: skip
    logging.getLogger().setLevel(logging.WARNING)
    init_seed(config["seed"], config["reproducibility"])
    torch.set_num_threads(threads)
    dataset = create_dataset(config)
    train_data, _valid_data, test_data = data_preparation(config, dataset)
    model = SASRec(config, train_data.dataset).to("cpu")
    trainer = Trainer(config, model)
    rss_before_training = memory_mb("VmRSS")  # the optimiser exists, no step has run
    seconds = []
    for epoch in range(epochs):
        started = time.perf_counter()
        trainer._train_epoch(train_data, epoch, show_progress=False)
        seconds.append(time.perf_counter() - started)
    started = time.perf_counter()
    result = trainer.evaluate(test_data, load_best_model=False, show_progress=False)
    eval_seconds = time.perf_counter() - started
    samples = len(train_data.dataset)
    json.dump(
        {
            "epoch_seconds": seconds,
            "sequences_per_epoch": samples,
            "targets_per_epoch": samples,
            "eval_seconds": eval_seconds,
            "eval_users": len(test_data.dataset),
            "hr@10": float(result["hit@10"]),
            "ndcg@10": float(result["ndcg@10"]),
            "parameters": sum(p.numel() for p in model.parameters()),
            "peak_rss_mb": peak_rss_mb(),
            "rss_before_training_mb": rss_before_training,
            "versions": {
                "recbole": __import__("importlib.metadata").metadata.version("recbole"),
                "torch": torch.__version__,
            },
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
