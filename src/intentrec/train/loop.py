"""The training loop: AdamW, linear warm-up then linear decay, gradient clipping, early stopping on
validation NDCG@10, atomic checkpoints and exact resume.

A checkpoint holds the model, optimiser and scheduler states, every RNG state (Python, NumPy, torch),
the epoch, the best score so far and the configuration. It is written to a temporary file and renamed
over the old one, so a crash mid-write never leaves a corrupt checkpoint. Each epoch shuffles with
``seed + epoch``, so a run resumed from a checkpoint repeats exactly what an uninterrupted run does.
"""

from __future__ import annotations

import json
import logging
import os
import random
import tempfile
import time
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from intentrec.config import TrainConfig
from intentrec.data.batching import SequenceStore
from intentrec.eval.evaluate import evaluate
from intentrec.heap import shared_trimmer
from intentrec.models.base import SequentialModel

__all__ = ["TrainConfig", "load_checkpoint", "save_checkpoint", "train", "train_epoch"]  # TrainConfig re-exported

log = logging.getLogger(__name__)
CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"


def _rng_state() -> dict[str, Any]:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write atomically: a temporary file in the same folder, fsync, then rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: Path) -> dict[str, Any]:
    state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=False)
    return state


def _config_dict(config: Any) -> dict[str, Any]:
    return asdict(config) if is_dataclass(config) and not isinstance(config, type) else {}


def _schedule(
    optimiser: torch.optim.Optimizer, warmup: int, total: int, shape: str = "linear"
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup`` steps, then a linear fall to 0 at step ``total`` or, with
    ``shape = "constant"``, the full rate."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if shape == "constant":
            return 1.0
        return max(0.0, (total - step) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimiser, factor)


def train_epoch(
    model: SequentialModel,
    store: SequenceStore,
    optimiser: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    config: TrainConfig,
    epoch: int,
    device: torch.device,
) -> tuple[int, float]:
    """One pass over every training user (or target, with ``config.samples = "prefixes"``); returns the
    rows seen and the mean loss per row."""
    model.train()
    started, sequences, total = time.perf_counter(), 0, 0.0
    steps = store.train_steps(config.batch_size, model.max_len, config.samples)
    batches = store.train_batches(
        config.batch_size, model.max_len, shuffle=True, seed=config.seed + epoch, samples=config.samples
    )
    bar = tqdm(batches, total=steps, desc=f"epoch {epoch + 1}/{config.epochs}", leave=False, disable=None)
    trim_heap = shared_trimmer()  # glibc's heap fragments under this loop: see intentrec.heap
    for batch in bar:
        batch = batch.to(device, non_blocking=True)
        optimiser.zero_grad(set_to_none=True)
        step_loss = 0.0
        groups = batch.split_by_length(config.length_groups) if config.length_groups > 1 else [(batch, 1.0)]
        for group, share in groups:  # gradients add up to the whole batch's
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.precision == "bf16"):
                loss, parts = model.training_loss(group)
            (loss * share).backward()
            step_loss += parts["total"] * share
        if config.clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip_norm)
        optimiser.step()
        if scheduler is not None:
            scheduler.step()
        trim_heap()
        sequences += batch.items.shape[0]
        total += step_loss * batch.items.shape[0]
        rate = sequences / max(time.perf_counter() - started, 1e-9)
        bar.set_postfix(loss=f"{step_loss:.3f}", seq_s=f"{rate:.0f}")
    return sequences, total / max(sequences, 1)


def train(
    model: SequentialModel,
    store: SequenceStore,
    config: TrainConfig,
    out: Path,
    *,
    resume: bool = False,
    exclude_seen: bool = False,
) -> dict[str, Any]:
    """Train ``model`` on the store's training split; returns the best validation NDCG@10, its epoch and
    the wall seconds of training and validation over every epoch (a resumed run's earlier ones too).
    Validation follows the run's protocol (``exclude_seen``)."""
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    if not model.trainable:  # popularity: nothing to fit, the validation score is the whole story
        started = time.perf_counter()
        valid = evaluate(model, store, "valid", batch_size=config.eval_batch_size, exclude_seen=exclude_seen)
        save_checkpoint(out / BEST, {"model": model.state_dict(), "epoch": 0, "valid": valid})
        with (out / "metrics.jsonl").open("a") as handle:
            handle.write(json.dumps({"epoch": 0, "loss": None, "train_seconds": 0.0, "valid": valid}) + "\n")
        return {"best_valid_ndcg@10": valid["ndcg@10"], "best_epoch": 0, "train_seconds": time.perf_counter() - started}
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = store.train_steps(config.batch_size, model.max_len, config.samples)
    scheduler = _schedule(optimiser, config.warmup_steps, config.epochs * steps_per_epoch, config.lr_schedule)
    start_epoch, best, best_epoch, stale, elapsed = 0, -1.0, -1, 0, 0.0
    if resume and (out / CHECKPOINT).exists():
        state = load_checkpoint(out / CHECKPOINT)
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        scheduler.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"])
        start_epoch, best, best_epoch, stale = state["epoch"] + 1, state["best"], state["best_epoch"], state["stale"]
        elapsed = state.get("elapsed", 0.0)  # checkpoints written before it was kept: this process's time only
        log.info("resumed at epoch %d", start_epoch)
    else:
        torch.manual_seed(config.seed)
        np.random.seed(config.seed)
        random.seed(config.seed)
    metrics_log = (out / "metrics.jsonl").open("a")
    for epochs_run, epoch in enumerate(range(start_epoch, config.epochs)):
        if stale >= config.patience:
            break
        if config.stop_after_epochs is not None and epochs_run >= config.stop_after_epochs:
            break
        started = time.perf_counter()
        sequences, mean_loss = train_epoch(model, store, optimiser, scheduler, config, epoch, device)
        train_seconds = time.perf_counter() - started
        valid = evaluate(model, store, "valid", batch_size=config.eval_batch_size, exclude_seen=exclude_seen)
        elapsed += time.perf_counter() - started
        score = float(valid["ndcg@10"])
        improved = score > best
        if improved:
            best, best_epoch, stale = score, epoch, 0
            save_checkpoint(out / BEST, {"model": model.state_dict(), "epoch": epoch, "valid": valid})
        else:
            stale += 1
        record = {"epoch": epoch, "loss": mean_loss, "train_seconds": train_seconds,
                  "sequences_per_second": sequences / max(train_seconds, 1e-9), "valid": valid}  # fmt: skip
        metrics_log.write(json.dumps(record) + "\n")
        metrics_log.flush()
        log.info("epoch %d loss %.4f valid ndcg@10 %.4f%s", epoch, record["loss"], score, " (best)" if improved else "")
        save_checkpoint(
            out / CHECKPOINT,
            {
                "model": model.state_dict(),
                "optimiser": optimiser.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": _rng_state(),
                "epoch": epoch,
                "best": best,
                "best_epoch": best_epoch,
                "stale": stale,
                "elapsed": elapsed,
                "model_config": _config_dict(getattr(model, "config", None)),
                "train_config": asdict(config),
            },
        )
    metrics_log.close()
    return {"best_valid_ndcg@10": best, "best_epoch": best_epoch, "train_seconds": elapsed}
