"""The main job on the built-in data: a synthetic streaming world, IntentRec against SASRec.

1. generate the synthetic world (its true session intents are known);
2. train SASRec and IntentRec (V3) on it, same data, split and training budget;
3. evaluate both on the test split (full ranking), and IntentRec's intent predictions against the
   observed next-interaction labels and against the generator's true session intents, next to the
   Bayes accuracy (the best any model could do) and the majority class;
4. write a report folder: ``report.md``, ``results.json`` and ``training_curves.png``.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from intentrec.config import DataConfig, EvalConfig, ModelConfig, RunConfig, TrainConfig
from intentrec.data.synthetic import ACTIONS, FORMATS, GENRES, RECENCY, WorldConfig, generate, write
from intentrec.eval.evaluate import predict
from intentrec.runs import Run, load_run, train_run

__all__ = ["ground_truth_intent_accuracy", "quickstart"]

SHOWN = ("hr@10", "ndcg@10", "mrr", "coverage@10", "genre_entropy@10", "popularity_percentile@10")
TRUE_CLASSES = {"action": ACTIONS, "genre": GENRES, "format": FORMATS, "recency": RECENCY}


def quickstart_configs(world: Path, epochs: int, seed: int) -> dict[str, RunConfig]:
    data = DataConfig(path=str(world), format="synthetic")
    train = TrainConfig(epochs=epochs, lr=3e-3, warmup_steps=20, patience=3, seed=seed)
    return {
        "SASRec": RunConfig("quickstart-sasrec", data, ModelConfig(kind="sasrec"), train, EvalConfig()),
        "IntentRec": RunConfig("quickstart-intentrec", data, ModelConfig(kind="intentrec"), train, EvalConfig()),
    }


def ground_truth_intent_accuracy(run: Run, world: Path) -> dict[str, dict[str, float]]:
    """Per head, on the test targets: accuracy of the predicted class against the generator's true
    session intent; the session-start Bayes accuracy on the same sessions (the best guess before any of
    the session's events is seen); and the majority-class accuracy."""
    p = predict(run.model, run.store, "test")
    target_rows = run.prepared.interactions[p.targets.tolist()]
    targets = (
        target_rows.select("user_idx", "item_idx", "timestamp")
        .with_row_index("n")
        .join(run.prepared.users.select("user_idx", "user"), on="user_idx")
        .join(run.prepared.items.select("item_idx", "item"), on="item_idx")
    )
    events = pl.read_parquet(world / "interactions.parquet").unique(["user", "item", "timestamp"], keep="first")
    sessions = pl.read_parquet(world / "ground_truth" / "sessions.parquet")
    truth = (
        targets.join(events.select("user", "item", "timestamp", "session"), on=["user", "item", "timestamp"])
        .join(sessions, on="session", suffix="_session")
        .sort("n")
    )
    order = torch.from_numpy(truth["n"].to_numpy().astype(np.int64))
    out: dict[str, dict[str, float]] = {}
    for head in run.store.heads:
        if head.name not in p.intent_scores or head.name not in TRUE_CLASSES:
            continue
        true_classes = TRUE_CLASSES[head.name]
        predicted = np.asarray(head.classes)[p.intent_scores[head.name][order].argmax(-1).numpy()]
        actual = truth[head.name].to_numpy()
        probabilities = truth.select([f"p_{head.name}_{c}" for c in true_classes]).to_numpy()
        bayes = probabilities.max(1) / probabilities.sum(1)
        _, counts = np.unique(actual, return_counts=True)
        out[head.name] = {
            "accuracy": float((predicted == actual).mean()),
            "bayes_accuracy": float(bayes.mean()),
            "majority_accuracy": float(counts.max() / counts.sum()),
            "targets": len(actual),
        }
    return out


def _curves(runs: dict[str, Path], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (loss_ax, ndcg_ax) = plt.subplots(1, 2, figsize=(10, 4))
    for name, run_dir in runs.items():
        records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        epochs = [r["epoch"] + 1 for r in records]
        loss_ax.plot(epochs, [r["loss"] for r in records], marker="o", label=name)
        ndcg_ax.plot(epochs, [r["valid"]["ndcg@10"] for r in records], marker="o", label=name)
    loss_ax.set(title="training loss (IntentRec: item + λ·intent)", xlabel="epoch", ylabel="loss")
    ndcg_ax.set(title="validation NDCG@10", xlabel="epoch", ylabel="NDCG@10")
    for ax in (loss_ax, ndcg_ax):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def _table(results: dict[str, Any]) -> list[str]:
    names = list(results["models"])
    lines = ["| metric | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for key in SHOWN:
        cells = [f"{results['models'][n]['test'][key]:.4f}" for n in names]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    lines.append(
        "| train seconds | " + " | ".join(f"{results['models'][n]['train_seconds']:.0f}" for n in names) + " |"
    )
    return lines


def _report(results: dict[str, Any], out: Path) -> str:
    world = results["world"]
    intent = results["models"]["IntentRec"]
    lines = [
        "# intentrec quick start",
        "",
        f"Synthetic streaming world: {world['users']:,} users, {world['items']:,} items, "
        f"{world['interactions']:,} events (seed {world['seed']}). Leave-one-out split; every metric is "
        "a full ranking over the whole catalogue on the test split (each user's last event).",
        "",
        "## Next-item prediction",
        "",
        *_table(results),
        "",
        "## Intent prediction (IntentRec)",
        "",
        "Accuracy of the predicted intent of the next event. *Observed* labels are derived from the log "
        "(what `data prepare` computes); *true* intents are the generator's latent session intents, "
        "which no model sees. Session-start Bayes accuracy is the best any model could do knowing the "
        "generator's state but none of the session's events; a target inside a session that has already "
        "shown its intent can be predicted better than that. Majority always guesses the most common class.",
        "",
        "| head | observed label | true intent | session-start Bayes | majority |",
        "|---|---|---|---|---|",
    ]
    observed = intent["test"]["intents"]
    for head, truth in intent["true_intents"].items():
        seen = observed.get(head, {})
        label = seen.get("accuracy", seen.get("top1_accuracy", float("nan")))
        lines.append(
            f"| {head} | {label:.3f} | {truth['accuracy']:.3f} | {truth['bayes_accuracy']:.3f} | "
            f"{truth['majority_accuracy']:.3f} |"
        )
    lines += [
        "",
        "Genre is multi-label in the data; its accuracy counts the top predicted genre as right when "
        "the next item has it (observed) or it is the session's genre (true).",
        "",
        "![training curves](training_curves.png)",
        "",
        f"Reproduce: `intentrec quickstart --out {results['out']} --users {world['users']} --seed {world['seed']}`. "
        f"Took {results['seconds']:.0f} s.",
    ]
    text = "\n".join(lines) + "\n"
    (out / "report.md").write_text(text)
    return text


def quickstart(
    out: Path, *, users: int = 2000, seed: int = 0, epochs: int = 16, echo: Callable[[str], None] = print
) -> dict[str, Any]:
    """Run the whole job into ``out``, reporting each step through ``echo``; returns the results that
    are also written to ``out/report/results.json``."""
    started = time.perf_counter()
    out = Path(out)
    world_dir = out / "world"
    world = generate(WorldConfig(users=users, seed=seed))
    write(world, world_dir)
    echo(f"[1/4] synthetic world: {world.interactions.height:,} events of {users:,} users -> {world_dir}")
    results: dict[str, Any] = {
        "out": str(out),
        "world": {
            "users": users,
            "items": world.items.height,
            "interactions": world.interactions.height,
            "seed": seed,
        },
        "models": {},
    }
    run_dirs = {}
    for step, (name, config) in enumerate(quickstart_configs(world_dir, epochs, seed).items(), start=2):
        run_dir = out / "runs" / name.lower()
        shutil.rmtree(run_dir, ignore_errors=True)  # the quick start always starts afresh
        summary = train_run(config, run_dir)
        run_dirs[name] = run_dir
        entry = {
            "train_seconds": summary["train_seconds"],
            "best_epoch": summary["best_epoch"],
            "test": summary["test"],
        }
        if name == "IntentRec":
            entry["true_intents"] = ground_truth_intent_accuracy(load_run(run_dir), world_dir)
        results["models"][name] = entry
        echo(
            f"[{step}/4] {name}: test NDCG@10 {summary['test']['ndcg@10']:.4f}, HR@10 {summary['test']['hr@10']:.4f} "
            f"({summary['train_seconds']:.0f} s) -> {run_dir}"
        )
    report_dir = out / "report"
    report_dir.mkdir(parents=True, exist_ok=True)
    _curves(run_dirs, report_dir / "training_curves.png")
    results["seconds"] = time.perf_counter() - started
    (report_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    text = _report(results, report_dir)
    echo(f"[4/4] report -> {report_dir / 'report.md'}\n")
    echo(text.split("## Next-item prediction\n\n", 1)[1].split("\n![", 1)[0])
    return results
