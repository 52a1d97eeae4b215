"""Benchmark: our SASRec and IntentRec against RePlay 0.22 and RecBole 1.2.1 SASRec, same machine, same data.

ML-100K, the settings of the issue's RePlay row: d 64, 2 blocks, 2 heads, dropout 0.5, max length 50,
batch 128, full-softmax cross-entropy, Adam(W) lr 1e-3. Each peer is installed by this script into its
own virtual environment under ``bench/.venvs/`` (ignored by git) with torch pinned to our CPU wheel,
and run by a small script in ``bench/peers/`` that prints the same measurements as ours: seconds per
epoch (the first epoch is a warm-up and is not counted), sequences and training targets per epoch,
full-ranking evaluation time over the 943 users, and peak resident memory (VmHWM) of the process.

Ratios are ours over the peer's. Sequences/s compares like with like for RePlay, whose epoch is one
window of at most 50 items per user with the loss at every position, as ours. RecBole trains on every
prefix with the loss at its last position only, so its epoch is about 100x the sequences; the fair
comparison there is training targets (next-item predictions with a loss) per second.

Two more rows train our SASRec (width d) and IntentRec V3 with ``train.precision = "bf16"`` (autocast:
bfloat16 products, float32 weights, softmax and optimiser). The peers train in float32, so those rows are
reported beside the targets, not as them, and their FLOP utilisation is against the bfloat16 matmul rate.

Model FLOP utilisation: PyTorch's FlopCounterMode counts the matmul and attention FLOPs of one full
training epoch (forward and backward); divided by the measured seconds per epoch, that is the achieved
rate, reported as a share of the machine's best dense float32 matmul rate, measured here with the same
threads. Peak memory is read after training and evaluation, before the FLOP count; the resident memory
just before the first training step (libraries, data, model, optimiser) is reported beside it, so the
part of the peak that training itself adds can be compared.

The machine's speed drifts (its host has other tenants: the same row has measured 0.6 and 0.9 s an epoch
an hour apart), so the rows are timed in interleaved rounds (``--rounds``, each row once a round) and the
throughput ratio to RePlay is the median of the ratios within each round.

    python bench/speed.py                          # everything; about 20 minutes on 2 cores
    python bench/speed.py --peers replay           # rerun RePlay only; RecBole's last row is kept, dated
Results: bench/results/speed.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from speed_models import REPO, RESULTS, machine, prepare_ml100k, shared_data, time_ours

VENVS = REPO / "bench" / ".venvs"
PEERS = REPO / "bench" / "peers"
CONSTRAINTS = REPO / "constraints.txt"
# Each peer: pip requirements for its own venv, the script that runs it, extra environment.
PEER_SPECS: dict[str, dict[str, Any]] = {
    "replay": {
        "label": "RePlay 0.22 SASRec",
        "requirements": ["replay-rec[torch]==0.22.0"],
        "script": "replay_sasrec.py",
        "env": {},
    },
    "recbole": {
        "label": "RecBole 1.2.1 SASRec",
        "requirements": ["recbole==1.2.1", "setuptools<81", "numpy<2", "pandas<3"],
        "script": "recbole_sasrec.py",
        "env": {"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"},
    },
}
# Our rows: (model in speed_models.MODELS, label, extra settings). The first has RePlay's architecture
# (and the SASRec paper's): feed-forward width d; the throughput and memory targets are checked on it.
# The others use our default width 4 d, as RecBole's SASRec (inner size 256) does.
BF16 = "train.precision='bf16'"
# The "-bf16" rows train with train.precision = "bf16" (autocast: bfloat16 products, float32 weights and
# softmax); the peers train in float32, so these rows are reported beside the targets, not as them.
OURS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "sasrec-ffn1": ("sasrec", "intentrec SASRec, FFN d (RePlay's architecture)", ("model.ffn_mult=1",)),
    "sasrec": ("sasrec", "intentrec SASRec, FFN 4d (RecBole's; our default)", ()),
    "intentrec-V3": ("intentrec-V3", "intentrec IntentRec V3, FFN 4d", ()),
    "sasrec-ffn1-bf16": ("sasrec", "intentrec SASRec, FFN d, bf16 autocast", ("model.ffn_mult=1", BF16)),
    "intentrec-V3-bf16": ("intentrec-V3", "intentrec IntentRec V3, FFN 4d, bf16 autocast", (BF16,)),
}
# Our settings for the comparison; the rest are speed_models' (max length 50, d 64, 2 heads, batch 128).
OUR_SETTINGS = ("model.dropout=0.5", "model.item_loss='ce'")
THROUGHPUT_TARGET = 2.0  # our training throughput over RePlay's
MEMORY_TARGET = 0.5  # our peak RSS over RePlay's
MFU_TARGET = 0.30


def peak_matmul_flops(threads: int, dtype: str = "float32") -> dict[str, float]:
    """Best dense matmul rate of this machine (FLOP/s) in ``dtype`` over a few square sizes, ``threads``
    threads."""
    import torch

    torch.set_num_threads(threads)
    best: dict[str, float] = {}
    for n in (512, 1024, 2048, 4096):
        a, b = torch.randn(n, n).to(getattr(torch, dtype)), torch.randn(n, n).to(getattr(torch, dtype))
        for _ in range(3):
            torch.mm(a, b)
        repeats = max(3, int(2e10 / (2 * n**3)))
        rates = []
        for _ in range(5):
            started = time.perf_counter()
            for _ in range(repeats):
                torch.mm(a, b)
            rates.append(2 * n**3 * repeats / (time.perf_counter() - started))
        best[str(n)] = max(rates)
    return best


def ensure_venv(name: str, spec: dict[str, Any] | None = None) -> Path:
    """The peer's own virtual environment, created and installed on first use; returns its Python.

    ``spec`` (label, requirements) defaults to the speed peer of that name.
    """
    spec = spec or PEER_SPECS[name]
    venv = VENVS / name
    python = venv / "bin" / "python"
    stamp = venv / ".installed"
    wanted = "\n".join(spec["requirements"])
    if stamp.exists() and stamp.read_text() == wanted:
        return python
    print(f"installing {spec['label']} into {venv} ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "-c", str(CONSTRAINTS), *spec["requirements"]], check=True)
    stamp.write_text(wanted)
    return python


def time_peer(name: str, u_data: Path, epochs: int, threads: int) -> dict[str, Any]:
    """Run a peer for ``epochs`` timed epochs after one warm-up; its JSON plus our summary fields."""
    spec = PEER_SPECS[name]
    python = ensure_venv(name)
    env = {**os.environ, **spec["env"], "PYTHONWARNINGS": "ignore"}
    with tempfile.TemporaryDirectory(prefix=f"{name}-") as work:  # what a peer writes (RecBole: log_tensorboard/)
        done = subprocess.run(
            [str(python), str(PEERS / spec["script"]), str(u_data), str(epochs + 1), str(threads)],
            env=env,
            cwd=work,
            capture_output=True,
            text=True,
        )
    if done.returncode != 0:
        raise SystemExit(f"{spec['label']} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    timed = result["epoch_seconds"][1:]
    result["seconds_per_epoch"] = statistics.median(timed)
    result["sequences_per_second"] = result["sequences_per_epoch"] / result["seconds_per_epoch"]
    result["targets_per_second"] = result["targets_per_epoch"] / result["seconds_per_epoch"]
    print(f"{name:<14} {result['seconds_per_epoch']:.3f} s/epoch  {result['sequences_per_second']:.0f} seq/s  "
          f"{result['targets_per_second']:.0f} targets/s  peak RSS {result['peak_rss_mb']:.0f} MB",
          flush=True)  # fmt: skip
    return result


def memory_split(ours: dict[str, Any], peer: dict[str, Any]) -> str:
    """Where the two peaks come from: what is resident before the first training step (libraries, data,
    model, optimiser), and what training and evaluation add to it."""
    ours_before, peer_before = ours["rss_before_training_mb"], peer["rss_before_training_mb"]
    ours_added, peer_added = ours["peak_rss_mb"] - ours_before, peer["peak_rss_mb"] - peer_before
    return (
        f"Resident before the first training step (libraries, data, model, optimiser): ours {ours_before:.0f} MB, "
        f"RePlay's {peer_before:.0f} MB, already {ours_before / peer['peak_rss_mb']:.0%} of RePlay's peak. "
        f"Training and evaluation then add {ours_added:.0f} MB to ours and {peer_added:.0f} MB to RePlay's "
        f"({ours_added / peer_added:.0%})."
    )


def report(record: dict[str, Any]) -> str:
    rows, peak = record["results"], record["peak_matmul_flops"]
    lines = [
        "# Training speed and memory against RePlay and RecBole (ML-100K)",
        "",
        f"Command: `{record['command']}`  ",
        f"Machine: {record['machine']['platform']}, {record['machine']['cpu_count']} CPUs, "
        f"torch {record['machine']['torch']}, {record['threads']} threads  ",
        f"Date: {record['date']}  ",
        f"Settings: {record['settings']}. Median of {record['epochs']} epochs after one warm-up "
        f"(RecBole: {record['recbole_epochs']}); each row the median of {record.get('rounds', 1)} rounds, "
        "every row timed once a round in a fresh process, RecBole in the first round only.",
        "",
        "| library / model | s/epoch | sequences/epoch | sequences/s | targets/epoch | targets/s | eval 943 users "
        "| RSS before training | peak RSS | parameters | MFU |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows.values():
        mfu = f"{r['mfu']:.1%}" if r.get("mfu") is not None else "-"
        before = f"{r['rss_before_training_mb']:.0f} MB" if r.get("rss_before_training_mb") is not None else "-"
        lines.append(
            f"| {r['label']} | {r['seconds_per_epoch']:.3f} | {r['sequences_per_epoch']:,} | "
            f"{r['sequences_per_second']:,.0f} | {r['targets_per_epoch']:,} | {r['targets_per_second']:,.0f} | "
            f"{r['eval_seconds']:.2f} s | {before} | {r['peak_rss_mb']:.0f} MB | {r['parameters']:,} | {mfu} |"
        )
    lines += ["", f"Machine's best float32 matmul rate ({record['threads']} threads): "
              + ", ".join(f"{n}²: {rate / 1e9:.0f} GFLOP/s" for n, rate in peak.items())
              + f"; peak taken as {max(peak.values()) / 1e9:.0f} GFLOP/s."]  # fmt: skip
    if record.get("peak_matmul_flops_bf16"):
        peak_bf16 = record["peak_matmul_flops_bf16"]
        rates = ", ".join(f"{n}²: {r / 1e9:.0f}" for n, r in peak_bf16.items())
        lines.append(f"Its best bfloat16 rate: {rates} GFLOP/s; the bf16 rows' MFU is against "
                     f"{max(peak_bf16.values()) / 1e9:.0f} GFLOP/s.")  # fmt: skip
    lines.append("")
    ours, default = rows.get("sasrec-ffn1"), rows.get("sasrec")
    checks = []
    if ours and "replay" in rows:
        replay = rows["replay"]
        paired = record.get("throughput_over_replay_by_round") or []
        if paired:  # measured round by round, side by side
            speedup = statistics.median(paired)
            how = f"median of {len(paired)} rounds: " + ", ".join(f"{r:.2f}x" for r in paired)
        else:
            speedup = ours["sequences_per_second"] / replay["sequences_per_second"]
            how = "one round"
        memory = ours["peak_rss_mb"] / replay["peak_rss_mb"]
        checks.append(f"Target: training throughput >= {THROUGHPUT_TARGET:.0f}x RePlay's: **{speedup:.2f}x** "
                      f"({how}; {'met' if speedup >= THROUGHPUT_TARGET else 'missed'}).")  # fmt: skip
        checks.append(f"Target: peak memory <= {MEMORY_TARGET:.0%} of RePlay's: **{memory:.0%}** "
                      f"({'met' if memory <= MEMORY_TARGET else 'missed'}).")  # fmt: skip
        if ours.get("rss_before_training_mb") is not None and replay.get("rss_before_training_mb") is not None:
            checks.append(memory_split(ours, replay))
    if default and "recbole" in rows:
        speedup = default["targets_per_second"] / rows["recbole"]["targets_per_second"]
        memory = default["peak_rss_mb"] / rows["recbole"]["peak_rss_mb"]
        checks.append(f"Against RecBole (same FFN width): **{speedup:.1f}x** its training targets per second, "
                      f"**{memory:.0%}** of its peak memory.")  # fmt: skip
    bf16 = record.get("bf16_over_replay_by_round") or []
    if bf16 and ours:
        speedup = statistics.median(bf16)
        checks.append(f"Beside the target: with `train.precision = \"bf16\"` (RePlay still in float32), "
                      f"**{speedup:.2f}x** RePlay's throughput (median of {len(bf16)} rounds: "
                      + ", ".join(f"{r:.2f}x" for r in bf16)
                      + f"), {rows['sasrec-ffn1-bf16']['seconds_per_epoch'] / ours['seconds_per_epoch']:.2f} "
                      "of the float32 row's time per epoch.")  # fmt: skip
    for row in (ours, default):
        if row and row.get("mfu") is not None:
            checks.append(f"Target: model FLOP utilisation in training >= {MFU_TARGET:.0%}, {row['label']}: "
                          f"**{row['mfu']:.1%}** ({'met' if row['mfu'] >= MFU_TARGET else 'missed'}).")  # fmt: skip
    return "\n".join(lines + [f"- {c}" for c in checks]) + "\n"


def median_round(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """A row's figures from its round with the median seconds per epoch (each round's own peak memory and
    evaluation time with it), and every round's seconds per epoch."""
    chosen = sorted(runs, key=lambda r: r["seconds_per_epoch"])[(len(runs) - 1) // 2]
    return {**chosen, "round_seconds_per_epoch": [round(r["seconds_per_epoch"], 3) for r in runs]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs (after one warm-up)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of our rows and RePlay's, interleaved")
    parser.add_argument("--recbole-epochs", type=int, default=1, help="timed RecBole epochs (minutes each)")
    parser.add_argument("--peers", nargs="*", default=list(PEER_SPECS), choices=list(PEER_SPECS))
    parser.add_argument("--ours", nargs="*", default=list(OURS), choices=list(OURS))
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", default=str(RESULTS / "speed"), help="results path without extension")
    args = parser.parse_args()

    peak = peak_matmul_flops(args.threads)
    print("peak matmul: " + ", ".join(f"{n}: {r / 1e9:.0f} GFLOP/s" for n, r in peak.items()), flush=True)
    peak_bf16 = peak_matmul_flops(args.threads, "bfloat16") if any(BF16 in OURS[n][2] for n in args.ours) else {}
    u_data = shared_data() / "movielens-100k" / "u.data"
    runs: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        prepared_dir = prepare_ml100k(Path(tmp))
        # This machine's speed drifts by tens of percent over minutes (other tenants of the host), so each
        # round times every row once, and ratios are taken within a round. RecBole (minutes an epoch, a
        # ratio far from any target) runs in the first round only.
        for index in range(args.rounds):
            print(f"round {index + 1}/{args.rounds}", flush=True)
            for name in args.ours:
                model, _, extra = OURS[name]
                runs.setdefault(name, []).append(
                    time_ours(prepared_dir, model, "cpu", args.epochs, (*OUR_SETTINGS, *extra))
                )
            for name in args.peers:
                if name != "recbole" or index == 0:
                    epochs = args.recbole_epochs if name == "recbole" else args.epochs
                    runs.setdefault(name, []).append(time_peer(name, u_data, epochs, args.threads))
    results: dict[str, dict[str, Any]] = {}
    for name in args.ours:
        r = median_round(runs[name])
        r["targets_per_second"] = r["targets_per_epoch"] / r["seconds_per_epoch"]
        row_peak = peak_bf16 if BF16 in OURS[name][2] else peak
        r["mfu"] = r["flops_per_epoch"] / r["seconds_per_epoch"] / max(row_peak.values())
        results[name] = {"label": OURS[name][1], **r}
    out = Path(args.out)
    previous = json.loads(out.with_suffix(".json").read_text()) if out.with_suffix(".json").exists() else {}
    for name in PEER_SPECS:
        if name in args.peers:
            results[name] = {"label": PEER_SPECS[name]["label"], **median_round(runs[name])}
        elif name in previous.get("results", {}):  # a peer not rerun keeps its last measurement, dated
            kept = previous["results"][name]
            kept.setdefault("measured", previous["date"])
            kept["label"] = f"{PEER_SPECS[name]['label']} (measured {kept['measured'][:10]})"
            results[name] = kept
    # ours over RePlay's sequences per second, round by round (the rows' medians may come from different rounds)
    paired, bf16 = (
        [
            ours["sequences_per_second"] / replay["sequences_per_second"]
            for ours, replay in zip(runs.get(row, []), runs.get("replay", []), strict=False)
        ]
        for row in ("sasrec-ffn1", "sasrec-ffn1-bf16")
    )

    record = {
        "benchmark": "speed",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "python bench/speed.py " + " ".join(sys.argv[1:]),
        "machine": machine("cpu"),
        "threads": args.threads,
        "epochs": args.epochs,
        "rounds": args.rounds,
        "recbole_epochs": args.recbole_epochs,
        "settings": "ML-100K leave-one-out, d 64, 2 blocks, 2 heads, dropout 0.5, max length 50, batch 128, "
        "full-softmax cross-entropy, lr 1e-3",
        "peak_matmul_flops": peak,
        "peak_matmul_flops_bf16": peak_bf16,
        "targets": {
            "throughput_over_replay": THROUGHPUT_TARGET,
            "memory_over_replay": MEMORY_TARGET,
            "mfu": MFU_TARGET,
        },
        "throughput_over_replay_by_round": paired,
        "bf16_over_replay_by_round": bf16,
        "results": results,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    out.with_suffix(".md").write_text(report(record))
    print(f"-> {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
