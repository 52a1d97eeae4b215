"""Benchmark: does ``train.precision = "bf16"`` cost accuracy? Frozen configs trained in bfloat16 autocast
against the same configs' float32 records.

Each (data set, model, seed) trains ``configs/<data>/<model>.toml`` with ``--set train.precision="bf16"
--set train.seed=<seed>`` into ``bench/runs/precision/`` (ignored by git; a finished run is reused). The
float32 side is the accuracy benchmark's committed record of the same config and seed
(``bench/results/accuracy_runs/``, checked against the config's digest), so it is not trained twice.
Reported: validation and test NDCG@10 per seed, their means, and the best epochs. Speed is measured by
bench/speed.py (its bf16 rows), not here: these runs share the machine with other work.
Results: bench/results/precision.{json,md}.

    python bench/precision.py                                      # ML-100K SASRec-CE and IntentRec V1, 3 seeds
    python bench/precision.py --runs beauty/intentrec-v0 --seeds 0
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from accuracy import CONFIGS, RECORDS, cell, config_digest, set_aside_if_stale, spread
from speed_models import RESULTS, machine, provenance, shared_data, write_results

RUNS = Path(__file__).resolve().parent / "runs" / "precision"
DEFAULT_RUNS = ("ml-100k/sasrec-ce", "ml-100k/intentrec-v1")


def train_bf16(data: str, model: str, seed: int, threads: int) -> dict[str, Any]:
    """The bf16 run's summary, trained unless its folder already holds a finished one of the current config."""
    out = RUNS / f"{data}-{model}-bf16-s{seed}"
    digest = config_digest(data, model)  # a run of an earlier version of the config is not reused
    set_aside_if_stale(out, digest)
    if not (out / "summary.json").exists():
        out.mkdir(parents=True, exist_ok=True)
        (out / "frozen_config.sha256").write_text(digest + "\n")
        command = [sys.executable, "-m", "intentrec.cli", "train", "--config", str(CONFIGS / data / f"{model}.toml"),
                   "--set", 'train.precision="bf16"', "--set", f"train.seed={seed}", "--out", str(out),
                   "--threads", str(threads), *(["--resume"] if (out / "checkpoint.pt").exists() else [])]  # fmt: skip
        print(f"training {out.name} ...", flush=True)
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    summary: dict[str, Any] = json.loads((out / "summary.json").read_text())
    return summary


def fp32_record(data: str, model: str, seed: int) -> dict[str, Any]:
    """The accuracy benchmark's record of the same config and seed (float32)."""
    path = RECORDS / f"{data}-{model}-s{seed}.json"
    if not path.exists():
        sys.exit(f"{path} is missing: run python bench/accuracy.py --data {data} --models {model} --seeds {seed}")
    record = json.loads(path.read_text())
    if record.get("config_sha256") != config_digest(data, model):
        sys.exit(f"{path} was trained from another version of configs/{data}/{model}.toml: rerun it first")
    summary: dict[str, Any] = record["summary"]
    return summary


def mean_sd(values: list[float]) -> str:
    """A table cell as the accuracy tables write one: mean ± sample standard deviation, the mean alone for one."""
    return cell({"seeds": len(values), "score": spread(values)}, "score")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", nargs="*", default=list(DEFAULT_RUNS), help="data/model pairs of configs/")
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--out", default=str(RESULTS / "precision"), help="results path without extension")
    args = parser.parse_args()
    os.environ.setdefault("INTENTREC_SHARED_DATA", str(shared_data()))  # for the training subprocesses

    out = Path(args.out)
    previous = json.loads(out.with_suffix(".json").read_text()) if out.with_suffix(".json").exists() else {}
    results: dict[str, Any] = dict(previous.get("results", {}))
    for pair in args.runs:
        data, model = pair.split("/")
        rows = []
        for seed in args.seeds:
            bf16, fp32 = train_bf16(data, model, seed, args.threads), fp32_record(data, model, seed)
            rows.append({"seed": seed, **{
                f"{name}_{split}": summary[split]["ndcg@10"] for name, summary in (("fp32", fp32), ("bf16", bf16))
                for split in ("valid", "test")
            }, "fp32_best_epoch": fp32["best_epoch"], "bf16_best_epoch": bf16["best_epoch"]})  # fmt: skip
        results[pair] = {"command": f"python bench/precision.py --runs {pair} --seeds "
                         + " ".join(map(str, args.seeds)), "seeds": rows}  # fmt: skip
    record = {
        "benchmark": "precision",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "python bench/precision.py " + " ".join(sys.argv[1:]),
        "machine": machine("cpu"),
        "results": results,
    }
    lines = [
        '# Accuracy with `train.precision = "bf16"` against float32',
        "",
        *provenance(record["command"], record),
        "Float32: the accuracy benchmark's records of the same frozen configs and seeds. NDCG@10 (test: full "
        "ranking, leave-one-out, each config's own protocol); epochs counted from 0.",
        "",
        "| config | seeds | valid fp32 | valid bf16 | test fp32 | test bf16 | test change | best epochs fp32 / bf16 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for pair, entry in results.items():
        rows = entry["seeds"]
        column = {key: [r[key] for r in rows] for key in rows[0]}
        change = statistics.mean(column["bf16_test"]) / statistics.mean(column["fp32_test"]) - 1
        epochs = f"{', '.join(map(str, column['fp32_best_epoch']))} / {', '.join(map(str, column['bf16_best_epoch']))}"
        lines.append(
            f"| {pair} | {len(rows)} | {mean_sd(column['fp32_valid'])} | {mean_sd(column['bf16_valid'])} | "
            f"{mean_sd(column['fp32_test'])} | {mean_sd(column['bf16_test'])} | {change:+.1%} | {epochs} |"
        )
    lines += ["", "Each row's command (rows accumulate over invocations):", ""]
    lines += [f"- {pair}: `{entry['command']}`" for pair, entry in results.items()]
    write_results(out, record, lines)


if __name__ == "__main__":
    main()
