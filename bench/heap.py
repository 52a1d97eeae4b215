"""Benchmark: resident memory of training with and without trimming the C heap (intentrec.heap).

glibc's heap fragments under a training loop and, on Amazon Beauty, grew by megabytes a step. The
training loop and the evaluation therefore check the resident memory after each batch and call
``malloc_trim`` when it has grown 256 MB past its level after the previous trim. Here each frozen
config below trains for one epoch and then validates once, in a fresh process with one thread, both
as it now runs and with the trimmer switched off, in ``--rounds`` interleaved rounds. It records the
resident memory after every training step (the plot), the peak (VmHWM), the seconds of
the epoch and of the validation, the number of trims, and the loss and validation NDCG@10 (which must
be the same both ways: trimming moves no numbers). Results: bench/results/heap.{json,md,png}.

    python bench/heap.py      # needs ../shared/data or INTENTREC_SHARED_DATA; about 8 minutes on 2 cores
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

from speed_models import REPO, RESULTS, machine, provenance, shared_data, write_results

CONFIGS = {
    "beauty-sasrec-bce": "configs/beauty/sasrec-bce.toml",
    "beauty-intentrec-v2": "configs/beauty/intentrec-v2.toml",
    "ml-100k-sasrec-ce": "configs/ml-100k/sasrec-ce.toml",
}

CHILD = r"""
import json, sys, tempfile, time
from pathlib import Path
import torch
import intentrec.eval.evaluate as evaluate_module
import intentrec.runs as runs
import intentrec.train.loop as loop_module
from intentrec.config import load_config
from intentrec.heap import HeapTrimmer, resident_bytes

def memory_mb(field):
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(field + ":")) / 1024

config_path, trim = sys.argv[1], sys.argv[2] == "on"
steps = []

def training():  # the same trimmer, recording the resident memory after each training step
    def step():
        trimmed = shared()
        steps.append(resident_bytes() / 2**20)
        return trimmed
    return step

loop_module.shared_trimmer, evaluate_module.shared_trimmer = training, lambda: shared
torch.set_num_threads(1)
config = load_config(config_path, [])
store = runs.SequenceStore(runs.prepare_data(config, Path(tempfile.mkdtemp())))
torch.manual_seed(0)
model = runs.build_model(config.model, store)
optimiser = torch.optim.AdamW(model.parameters(), lr=config.train.lr, weight_decay=config.train.weight_decay)
shared = HeapTrimmer()  # created where `shared_trimmer` first is: at the first training step
if not trim:  # one that never trims
    shared.trim = None
before = memory_mb("VmRSS")
t0 = time.perf_counter()
_, loss = loop_module.train_epoch(model, store, optimiser, None, config.train, 0, torch.device("cpu"))
train_s = time.perf_counter() - t0
after_epoch, epoch_peak = memory_mb("VmRSS"), memory_mb("VmHWM")
t0 = time.perf_counter()
valid = evaluate_module.evaluate(model, store, "valid", batch_size=config.train.eval_batch_size)
print(json.dumps({
    "rss_before_mb": before, "rss_after_epoch_mb": after_epoch, "peak_after_epoch_mb": epoch_peak,
    "peak_mb": memory_mb("VmHWM"), "rss_after_validation_mb": memory_mb("VmRSS"),
    "train_seconds": train_s, "valid_seconds": time.perf_counter() - t0, "trims": shared.trims,
    "loss": loss, "valid_ndcg@10": valid["ndcg@10"], "steps": len(steps), "rss_per_step_mb": steps,
}))
"""


def run_once(config: str, trim: bool) -> dict:
    env = {**os.environ, "INTENTREC_SHARED_DATA": str(shared_data()), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(REPO / config), "on" if trim else "off"],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        sys.exit(f"{config} (trim {'on' if trim else 'off'}) failed:\n{done.stderr[-3000:]}")
    result: dict = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"{config} trim {'on ' if trim else 'off'}: epoch {result['train_seconds']:.1f} s, "
          f"after the epoch {result['rss_after_epoch_mb']:.0f} MB, peak {result['peak_mb']:.0f} MB, "
          f"{result['trims']} trims", flush=True)  # fmt: skip
    return result


def plot(results: dict[str, dict[str, dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 3.6), squeeze=False)
    for ax, (name, both) in zip(axes[0], results.items(), strict=True):
        for mode, style in (("off", "--"), ("on", "-")):
            ax.plot(both[mode]["rss_per_step_mb"], style, label=f"trim {mode}")
        ax.set_title(name)
        ax.set_xlabel("training step (first epoch)")
        ax.set_ylabel("resident memory (MB)")
        ax.set_ylim(bottom=0)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


MEDIANS = ("train_seconds", "valid_seconds", "rss_before_mb", "rss_after_epoch_mb", "peak_mb", "trims")


def median_row(rounds: list[dict]) -> dict:
    """Per measurement, the median over the rounds; the first round's per-step memory for the plot."""
    row = {key: statistics.median(r[key] for r in rounds) for key in MEDIANS}
    return {**row, "loss": rounds[0]["loss"], "valid_ndcg@10": rounds[0]["valid_ndcg@10"],
            "rss_per_step_mb": rounds[0]["rss_per_step_mb"]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--configs", nargs="*", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--rounds", type=int, default=3, help="each config runs both ways once a round")
    args = parser.parse_args()
    rounds: dict[str, dict[str, list[dict]]] = {name: {"off": [], "on": []} for name in args.configs}
    for _ in range(args.rounds):  # interleaved, so that drift in the machine's speed hits both ways alike
        for name in args.configs:
            for mode in ("off", "on"):
                rounds[name][mode].append(run_once(CONFIGS[name], mode == "on"))
    for name, both in rounds.items():
        numbers = {(r["loss"], r["valid_ndcg@10"]) for mode in both for r in both[mode]}
        if len(numbers) != 1:
            sys.exit(f"{name}: the loss or validation NDCG@10 differ between runs: {sorted(numbers)}")
    results = {name: {mode: median_row(runs) for mode, runs in both.items()} for name, both in rounds.items()}
    record = {
        "benchmark": "heap",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "python bench/heap.py " + " ".join(sys.argv[1:]),
        "machine": machine("cpu"),
        "settings": "frozen config, one training epoch then one validation, 1 thread, fresh process each",
        "results": results,
        "rounds": {
            n: {m: [{k: r[k] for k in MEDIANS} for r in runs] for m, runs in b.items()} for n, b in rounds.items()
        },
    }
    lines = [
        "# Resident memory with and without trimming the C heap",
        "",
        *provenance(record["command"], record, " (1 thread)"),
        f"Settings: {record['settings']}. Trim off: the same loop with the trimmer switched off. Medians of "
        f"{args.rounds} interleaved rounds; the plot shows the first round.",
        "",
        "![resident memory per step](heap.png)",
        "",
        "| config | trim | epoch s | validation s | RSS before | RSS after the epoch | peak RSS | trims | loss "
        "| valid NDCG@10 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, both in results.items():
        for mode in ("off", "on"):
            r = both[mode]
            lines.append(
                f"| {name} | {mode} | {r['train_seconds']:.1f} | {r['valid_seconds']:.1f} | "
                f"{r['rss_before_mb']:.0f} MB | {r['rss_after_epoch_mb']:.0f} MB | {r['peak_mb']:.0f} MB | "
                f"{r['trims']:g} | {r['loss']:.5f} | {r['valid_ndcg@10']:.5f} |"
            )
    lines += ["", "Loss and validation NDCG@10 are the same in every run, trimmed or not (checked by the script)."]
    for name, both in results.items():
        off, on = both["off"], both["on"]
        lines.append(
            f"- {name}: peak {on['peak_mb']:.0f} MB against {off['peak_mb']:.0f} MB "
            f"({on['peak_mb'] / off['peak_mb'] - 1:+.0%}), epoch {on['train_seconds']:.1f} s against "
            f"{off['train_seconds']:.1f} s ({on['train_seconds'] / off['train_seconds'] - 1:+.0%})."
        )
    out = RESULTS / "heap"
    plot(results, out.with_suffix(".png"))
    write_results(out, record, lines)


if __name__ == "__main__":
    main()
