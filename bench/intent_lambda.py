"""Benchmark: what the intent heads' supervision adds to next-item accuracy, by its weight lambda.

IntentRec's item predictor attends over its intent heads; the heads are trained on the session-intent
labels with weight ``model.intent_lambda`` (the config's default 0.3). With lambda 0 the heads and the
attention over them stay in the model but no intent label trains them, so the run isolates what the
supervision adds, apart from the architecture. Each lambda trains the frozen ``configs/<data>/<config>.toml``
with ``--set model.intent_lambda=<lambda>`` for a fixed, short budget (``--epochs``; the learning rate
falls linearly to 0 over it, so every run finishes its schedule) and records, per epoch, the
validation NDCG@10 (the protocol of the config) and, at the best epoch, the intent heads' validation
quality. With several ``--seeds`` each lambda's scores are the mean and sample standard deviation over
them, and the change against the config's lambda is paired by seed (the same seed's run at each lambda).
Validation only: this is a tuning question, never answered on the test split.
Runs go to ``bench/runs/intent_lambda/`` (ignored), and a finished run is reused.
Results: bench/results/intent_lambda_<data>-<config>.{json,md,png}.

    python bench/intent_lambda.py --data beauty --lambdas 0.3 0 1 3 --epochs 20
    python bench/intent_lambda.py --data taobao --lambdas 0.3 0 1 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from accuracy import CONFIGS, RESULTS, RUNS, mean_intents, replace_text, spread
from speed_models import machine, provenance


def run_name(data: str, config: str, lam: float, seed: int) -> str:
    return f"{data}-{config}-lambda{lam:g}-s{seed}"


def train(config: Path, out: Path, lam: float, epochs: int, seed: int, threads: int) -> None:
    """Train one lambda (unless finished; a half-trained run resumes from its checkpoint)."""
    if (out / "summary.json").exists():
        return
    command = [sys.executable, "-m", "intentrec.cli", "train", "--config", str(config), "--out", str(out),
               "--set", f"model.intent_lambda={lam}", "--set", f"train.epochs={epochs}",
               "--set", f"train.seed={seed}"]  # fmt: skip
    if (out / "config.toml").exists():
        command.append("--resume")
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    print(f"[lambda {lam:g}] training -> {out}", flush=True)
    subprocess.run(command, env=env, check=True)


def read_run(out: Path, lam: float) -> dict[str, Any]:
    """The per-epoch validation curve and the best epoch's validation scores of a finished run."""
    epochs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    summary = json.loads((out / "summary.json").read_text())
    intents = {
        head: {k: v for k, v in m.items() if k != "targets"} for head, m in summary["valid"].get("intents", {}).items()
    }
    return {
        "lambda": lam,
        "run": out.name,
        "best_epoch": summary["best_epoch"],
        "valid_ndcg@10": summary["valid"]["ndcg@10"],
        "valid_hr@10": summary["valid"]["hr@10"],
        "valid_intents": intents,
        "epochs": [r["epoch"] for r in epochs],  # numbered as the run numbers them (and its best_epoch)
        "curve": [r["valid"]["ndcg@10"] for r in epochs],
        "train_seconds": summary["train_seconds"],
    }


def combine(lam: float, seeds: list[int], runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One lambda's row over its seeds' runs (in ``seeds`` order): means, with the spread of NDCG@10.

    The curve is the mean over the seeds of the epochs every run reached; the heads' scores are means.
    With one seed the row is that run's, as before the script took several.
    """
    if len(runs) == 1:
        return {**runs[0], "seeds": seeds}
    ndcg = spread([r["valid_ndcg@10"] for r in runs])
    common = [e for e in runs[0]["epochs"] if all(e in r["epochs"] for r in runs)]
    return {
        "lambda": lam,
        "seeds": seeds,
        "run": [r["run"] for r in runs],
        "best_epoch": [r["best_epoch"] for r in runs],
        "valid_ndcg@10": ndcg["mean"],
        "valid_ndcg@10_std": ndcg["std"],
        "valid_ndcg@10_values": ndcg["values"],
        "valid_hr@10": sum(r["valid_hr@10"] for r in runs) / len(runs),
        "valid_intents": mean_intents([r["valid_intents"] for r in runs]),
        "epochs": common,
        "curve": [sum(r["curve"][r["epochs"].index(e)] for r in runs) / len(runs) for e in common],
        "train_seconds": sum(r["train_seconds"] for r in runs) / len(runs),
    }


def paired_change(row: dict[str, Any], reference: dict[str, Any]) -> dict[str, Any]:
    """The change of ``row`` against ``reference`` per seed (run over the same seed's run, minus 1)."""
    mine = row.get("valid_ndcg@10_values", [row["valid_ndcg@10"]])
    theirs = reference.get("valid_ndcg@10_values", [reference["valid_ndcg@10"]])
    return spread([a / b - 1 for a, b in zip(mine, theirs, strict=True)])


def seeds_of(payload: dict[str, Any]) -> list[int]:
    """The seeds of a sweep (a result written before ``--seeds`` has one, ``seed``)."""
    return list(payload.get("seeds", [payload["seed"]]))


def markdown(payload: dict[str, Any]) -> str:
    rows = payload["results"]
    reference = next((r for r in rows if r["lambda"] == payload["config_lambda"]), rows[0])
    seeds = seeds_of(payload)
    several = len(seeds) > 1
    lines = [
        f"# What the intent supervision adds: {payload['data']}, {payload['config']}, by intent_lambda",
        "",
        *provenance(payload["command"], payload),
        f"Each run: `configs/{payload['data']}/{payload['config']}.toml` with `model.intent_lambda` set, "
        f"{payload['epochs']} epochs (the learning rate falls linearly to 0 over them), "
        + (
            f"seeds {', '.join(map(str, seeds))}: each score is the mean ± sample standard deviation over them, the "
            "heads' scores and the curve are means, and the change against the config's lambda is paired by seed. "
            if several
            else f"seed {seeds[0]}. "
        )
        + "Validation only (the config's protocol). With lambda 0 the heads stay in the model and the item predictor "
        "still attends over them, but no intent label trains them (only the item loss shapes them, and their "
        "intent scores fall to chance), so that row isolates what the intent labels add."
        + (
            " This config has no intent heads (V0): intent_lambda changes nothing, and the run is the "
            "reference without them."
            if payload.get("variant") == "V0"
            else ""
        ),
        "",
        "| intent_lambda | best valid NDCG@10 | against the config's lambda | best epoch | valid HR@10 | "
        "intent heads at the best epoch (validation) | train s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        heads = (
            "; ".join(
                f"{head}: " + ", ".join(f"{k} {v:.3f}" for k, v in m.items()) for head, m in r["valid_intents"].items()
            )
            or "none"
        )
        change = paired_change(r, reference)
        if several:
            score = f"{r['valid_ndcg@10']:.4f} ± {r['valid_ndcg@10_std']:.4f}"
            moved = f"{change['mean']:+.1%} ± {change['std']:.1%}"
            best = ", ".join(map(str, r["best_epoch"]))
        else:
            score, moved, best = f"{r['valid_ndcg@10']:.4f}", f"{change['mean']:+.1%}", str(r["best_epoch"])
        lines.append(
            f"| {r['lambda']:g} | {score} | {moved} | {best} | {r['valid_hr@10']:.4f} | {heads} | "
            f"{r['train_seconds']:.0f} |"
        )
    lines += [
        "",
        "Validation NDCG@10 per epoch" + (" (mean over the seeds):" if several else ":"),
        "",
        "| epoch | " + " | ".join(f"λ {r['lambda']:g}" for r in rows) + " |",
    ]
    lines.append("|---|" + "---|" * len(rows))
    for epoch in sorted({e for r in rows for e in r["epochs"]}):
        cells = [f"{r['curve'][r['epochs'].index(epoch)]:.4f}" if epoch in r["epochs"] else "" for r in rows]
        lines.append(f"| {epoch} | " + " | ".join(cells) + " |")
    lines += ["", f"![curves](intent_lambda_{payload['data']}-{payload['config']}.png)"]
    return "\n".join(lines) + "\n"


def plot(payload: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for r in payload["results"]:
        ax.plot(r["epochs"], r["curve"], marker=".", label=f"intent_lambda {r['lambda']:g}")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation NDCG@10")
    seeds = seeds_of(payload)
    mean = f", mean of {len(seeds)} seeds" if len(seeds) > 1 else ""
    ax.set_title(f"{payload['data']} {payload['config']}: next-item accuracy by intent-loss weight{mean}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="beauty")
    parser.add_argument("--config", default="intentrec-v3", help="frozen config under configs/<data>/")
    parser.add_argument("--lambdas", nargs="+", type=float, default=[0.3, 0.0, 1.0, 3.0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="each lambda is trained once per seed")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=Path, default=RUNS / "intent_lambda", help="where the runs go")
    args = parser.parse_args()
    config = CONFIGS / args.data / f"{args.config}.toml"
    if not config.exists():
        parser.error(f"no frozen config {config}")
    from intentrec.config import load_config

    frozen = load_config(config).model
    config_lambda = frozen.intent_lambda
    command = "python bench/intent_lambda.py " + " ".join(sys.argv[1:])
    runs: dict[float, list[dict[str, Any]]] = {lam: [] for lam in args.lambdas}
    for seed in args.seeds:  # seed by seed, so that a stopped sweep has every lambda at its first seeds
        for lam in args.lambdas:
            out = args.runs / run_name(args.data, args.config, lam, seed)
            train(config, out, lam, args.epochs, seed, args.threads)
            runs[lam].append(read_run(out, lam))
    rows = [combine(lam, args.seeds, runs[lam]) for lam in args.lambdas]
    payload = {
        "benchmark": "intent_lambda",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "machine": {**machine("cpu"), "torch_threads": args.threads},
        "data": args.data,
        "config": args.config,
        "config_lambda": config_lambda,
        "variant": frozen.variant,
        "epochs": args.epochs,
        "seed": args.seeds[0],
        "seeds": args.seeds,
        "results": rows,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / f"intent_lambda_{args.data}-{args.config}"
    replace_text(stem.with_suffix(".json"), json.dumps(payload, indent=2) + "\n")
    replace_text(stem.with_suffix(".md"), markdown(payload))
    plot(payload, stem.with_suffix(".png"))
    print(f"-> {stem}.md")


if __name__ == "__main__":
    main()
