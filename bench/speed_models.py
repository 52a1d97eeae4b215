"""Benchmark: training time per epoch of every model on ML-100K (the issue's speed settings).

SASRec at max length 50, d=64, 2 blocks, 2 heads, batch 128, loss at every position; IntentRec V0-V3,
GRU4Rec and BERT4Rec at the same sizes. Per model, in a fresh process: one warm-up epoch, then
``--epochs`` timed epochs through the training loop's own ``train_epoch`` (no evaluation inside), then
one full-ranking evaluation of the test split. Reports seconds per epoch (median), sequences per
second, evaluation seconds and peak resident memory. Results go to bench/results/speed_models.{json,md}.

    python bench/speed_models.py                 # needs ../shared/data or INTENTREC_SHARED_DATA
    python bench/speed_models.py --device cuda   # on a GPU machine
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
MODELS = {
    "sasrec": ["model.kind='sasrec'"],
    "intentrec-V0": ["model.kind='intentrec'", "model.variant='V0'"],
    "intentrec-V1": ["model.kind='intentrec'", "model.variant='V1'"],
    "intentrec-V2": ["model.kind='intentrec'", "model.variant='V2'"],
    "intentrec-V3": ["model.kind='intentrec'", "model.variant='V3'"],
    "gru4rec": ["model.kind='gru4rec'", "model.n_blocks=1"],
    "bert4rec": ["model.kind='bert4rec'"],
}
SASREC_TARGET_S = 1.5  # seconds per epoch on 2 CPU cores
INTENTREC_RATIO_TARGET = 2.0  # IntentRec's time per epoch at most this multiple of SASRec's

CHILD = r"""
import json, statistics, sys, time
from pathlib import Path
import torch
from intentrec.config import load_config
from intentrec.data.batching import SequenceStore
from intentrec.data.prepare import load_prepared
from intentrec.eval.evaluate import evaluate
from intentrec.runs import build_model
from intentrec.train.loop import train_epoch

def memory_mb(field):  # VmRSS (now) or VmHWM (the peak so far) of this process, in MB
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(field + ":")) / 1024

prepared_dir, device_name, epochs = sys.argv[1], sys.argv[2], int(sys.argv[3])
config = load_config(None, sys.argv[4:])
store = SequenceStore(load_prepared(Path(prepared_dir)))
torch.manual_seed(0)
device = torch.device(device_name)
model = build_model(config.model, store).to(device)
optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3)
sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
rss_before = memory_mb("VmRSS")  # libraries, data, model and optimiser: what is there before any step
times, sequences = [], 0
for epoch in range(epochs + 1):  # epoch 0 warms up
    sync()
    t0 = time.perf_counter()
    sequences, _ = train_epoch(model, store, optimiser, None, config.train, epoch, device)
    sync()
    if epoch:
        times.append(time.perf_counter() - t0)
targets = sum(int((b.target_items > 0).sum()) for b in store.train_batches(config.train.batch_size, model.max_len))
t0 = time.perf_counter()
result = evaluate(model, store, "test", batch_size=512)
sync()
eval_s = time.perf_counter() - t0
peak = memory_mb("VmHWM")  # training and evaluation, as the peers measure it; not the FLOP count below
# FLOPs of one epoch (matmuls and attention, forward and backward, as counted by PyTorch), untimed.
from torch.utils.flop_counter import FlopCounterMode
with FlopCounterMode(display=False) as counter:
    train_epoch(model, store, optimiser, None, config.train, epochs + 1, device)
print(json.dumps({
    "seconds_per_epoch": statistics.median(times), "epoch_seconds": [round(t, 3) for t in times],
    "sequences_per_epoch": sequences, "sequences_per_second": sequences / statistics.median(times),
    "eval_seconds": eval_s, "eval_targets": result["targets"],
    "peak_rss_mb": peak, "rss_before_training_mb": rss_before,
    "parameters": sum(p.numel() for p in model.parameters()), "threads": torch.get_num_threads(),
    "flops_per_epoch": counter.get_total_flops(), "targets_per_epoch": targets,
    "gpu_peak_mb": torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None,
}))
"""


def shared_data() -> Path:
    path = Path(os.environ.get("INTENTREC_SHARED_DATA", REPO.parent / "shared" / "data"))
    if not path.is_dir():
        sys.exit(f"shared data not found at {path}; set INTENTREC_SHARED_DATA")
    return path


def provenance(command: str, record: dict[str, Any], note: str = "") -> list[str]:
    """The Command / Machine / Date lines that open a results Markdown file (``note`` follows the torch
    version on the machine line)."""
    m = record["machine"]
    return [
        f"Command: `{command}`  ",
        f"Machine: {m['platform']}, {m['cpu_count']} CPUs, torch {m['torch']}{note}  ",
        f"Date: {record['date']}  ",
    ]


def write_results(out: Path, record: dict[str, Any], lines: list[str]) -> None:
    """``record`` to ``out``.json and the Markdown ``lines`` to ``out``.md (``out`` without extension)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"-> {out.with_suffix('.md')}")


def machine(device: str) -> dict[str, object]:
    import torch

    info: dict[str, object] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": device,
    }
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def prepare_ml100k(tmp: Path) -> Path:
    """ML-100K prepared by our own pipeline into ``tmp``; returns the prepared directory."""
    from intentrec.data import read_dataset
    from intentrec.data.prepare import write_prepared
    from intentrec.data.sequences import build_sequences

    dataset = read_dataset(shared_data() / "movielens-100k", "movielens")
    prepared_dir = tmp / "ml-100k"
    write_prepared(build_sequences(dataset), dataset, prepared_dir, source_format="movielens")
    return prepared_dir


def time_ours(prepared_dir: Path, name: str, device: str, epochs: int, extra: tuple[str, ...] = ()) -> dict:
    """One of our models (a key of MODELS) at the issue's speed settings, timed in a fresh process."""
    settings = ["model.max_len=50", "model.d=64", "model.n_heads=2", "train.batch_size=128", *MODELS[name], *extra]
    if "model.n_blocks=1" not in settings:
        settings.append("model.n_blocks=2")
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(prepared_dir), device, str(epochs), *settings],
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"{name:<14} {result['seconds_per_epoch']:.3f} s/epoch  {result['sequences_per_second']:.0f} seq/s  "
          f"eval {result['eval_seconds']:.2f} s  peak RSS {result['peak_rss_mb']:.0f} MB", flush=True)  # fmt: skip
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per model (after one warm-up)")
    parser.add_argument("--models", nargs="*", default=list(MODELS))
    parser.add_argument("--out", default=str(RESULTS / "speed_models"), help="results path without extension")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        prepared_dir = prepare_ml100k(Path(tmp))
        results = {name: time_ours(prepared_dir, name, args.device, args.epochs) for name in args.models}
    sasrec = results.get("sasrec", {}).get("seconds_per_epoch")
    record = {
        "benchmark": "speed_models",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "python bench/speed_models.py " + " ".join(sys.argv[1:]),
        "machine": machine(args.device),
        "data": "ML-100K, leave-one-out, 943 training sequences per epoch",
        "settings": "max_len 50, d 64, 2 blocks (GRU4Rec: 1 layer), 2 heads, batch 128, loss at every position",
        "targets": {"sasrec_seconds_per_epoch": SASREC_TARGET_S, "intentrec_over_sasrec": INTENTREC_RATIO_TARGET},
        "results": results,
    }
    lines = [
        "# Training speed per model (ML-100K)",
        "",
        f"Command: `{record['command']}`  ",
        f"Machine: {record['machine']['platform']}, {record['machine']['cpu_count']} CPUs, torch "
        f"{record['machine']['torch']} ({record['machine']['torch_threads']} threads), device {args.device}"
        + (f" ({record['machine'].get('gpu')})" if args.device == "cuda" else "")
        + f"  \nDate: {record['date']}  ",
        f"Settings: {record['settings']}; median of {args.epochs} epochs after one warm-up.",
        "",
        "| model | s/epoch | sequences/s | vs SASRec | eval (943 users, full ranking) | peak RSS | parameters |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        ratio = f"{r['seconds_per_epoch'] / sasrec:.2f}x" if sasrec else "-"
        lines.append(
            f"| {name} | {r['seconds_per_epoch']:.3f} | {r['sequences_per_second']:.0f} | {ratio} | "
            f"{r['eval_seconds']:.2f} s | {r['peak_rss_mb']:.0f} MB | {r['parameters']:,} |"
        )
    if sasrec:
        intent = results.get("intentrec-V3", {}).get("seconds_per_epoch")
        lines += ["", f"Target: SASRec <= {SASREC_TARGET_S} s/epoch: **{sasrec:.3f} s** "
                  f"({'met' if sasrec <= SASREC_TARGET_S else 'missed'})."]  # fmt: skip
        if intent:
            ratio = intent / sasrec
            lines.append(f"Target: IntentRec V3 <= {INTENTREC_RATIO_TARGET}x SASRec: **{ratio:.2f}x** "
                         f"({'met' if ratio <= INTENTREC_RATIO_TARGET else 'missed'}).")  # fmt: skip
    write_results(Path(args.out), record, lines)


if __name__ == "__main__":
    main()
