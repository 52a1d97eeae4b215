"""Benchmark: `intentrec train` with torch's thread count chosen three ways, on an idle machine and
beside a process that keeps one core busy.

PyTorch's OpenMP threads spin while they wait for each other, so a thread that shares a core with
another busy process stalls every step. `intentrec train` therefore gives torch only the cores that
are free at start (intentrec.train.threads). This measures the three choices, each in a fresh
process: one thread, torch's default (one per physical core), and ours (``--threads 0``), by the
wall time of the whole command and the training seconds it reports (ML-100K SASRec-CE, the frozen
config, ``--epochs`` epochs with validation after each). Results: bench/results/threads.{json,md}.

    python bench/threads.py      # needs ../shared/data or INTENTREC_SHARED_DATA; several minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from speed_models import REPO, RESULTS, machine, provenance, shared_data, write_results

CONFIG = REPO / "configs" / "ml-100k" / "sasrec-ce.toml"
SPIN = "while True: pass"


def train_once(threads: int | None, epochs: int, tmp: Path) -> dict[str, object]:
    """One `intentrec train` in a fresh process; ``threads`` None leaves torch its default."""
    out = tmp / f"run-{time.monotonic_ns()}"
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env["INTENTREC_SHARED_DATA"] = str(shared_data())
    flags = [] if threads is None else ["--threads", str(threads)]
    if threads is None:  # torch's default: with OMP_NUM_THREADS set to it, `intentrec train` keeps it
        import torch

        env["OMP_NUM_THREADS"] = str(torch.get_num_threads())
    command = [sys.executable, "-m", "intentrec.cli", "train", "--config", str(CONFIG), "--out", str(out),
               "--set", f"train.epochs={epochs}", "--set", "train.patience=1000", *flags]  # fmt: skip
    t0 = time.perf_counter()
    done = subprocess.run(command, env=env, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    chosen = next(line for line in done.stdout.splitlines() if line.startswith("torch threads:"))
    summary = json.loads((out / "summary.json").read_text())
    return {"wall_seconds": round(wall, 2), "train_seconds": round(summary["train_seconds"], 2), "chosen": chosen}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--out", default=str(RESULTS / "threads"), help="results path without extension")
    args = parser.parse_args()
    import torch

    default = torch.get_num_threads()
    choices = {"1 thread": 1, f"torch default ({default})": None, "ours (--threads 0)": 0}
    results: dict[str, dict[str, dict[str, object]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for condition in ("idle", "one core busy"):
            spinner = subprocess.Popen([sys.executable, "-c", SPIN]) if condition != "idle" else None
            try:
                if spinner:
                    time.sleep(1.0)  # let the spinner be running when the choice is made
                for name, threads in choices.items():
                    r = train_once(threads, args.epochs, Path(tmp))
                    results.setdefault(condition, {})[name] = r
                    print(f"{condition:<14} {name:<22} train {r['train_seconds']:>7.2f} s  wall "
                          f"{r['wall_seconds']:>7.2f} s  {r['chosen']}", flush=True)  # fmt: skip
            finally:
                if spinner:
                    spinner.kill()
                    spinner.wait()
    record = {
        "benchmark": "threads",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python bench/threads.py", *sys.argv[1:]]),
        "machine": machine("cpu"),
        "data": "ML-100K, configs/ml-100k/sasrec-ce.toml",
        "epochs": args.epochs,
        "results": results,
    }
    lines = [
        "# Torch threads: `intentrec train` on an idle machine and beside a busy core",
        "",
        *provenance(record["command"], record),
        f"Job: `intentrec train --config configs/ml-100k/sasrec-ce.toml`, {args.epochs} epochs with validation "
        "after each; the busy core is a second Python process spinning in a loop.",
        "",
        "| machine | threads | training s | whole command s | what `intentrec train` printed |",
        "|---|---|---|---|---|",
    ]
    for condition, by_choice in results.items():
        for name, r in by_choice.items():
            lines.append(
                f"| {condition} | {name} | {r['train_seconds']:.2f} | {r['wall_seconds']:.2f} | {r['chosen']} |"
            )
    write_results(Path(args.out), record, lines)


if __name__ == "__main__":
    main()
