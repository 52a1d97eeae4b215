"""Check: RecTools' own SASRec with a sampled softmax on the S3-Rec files, scored by our protocol.

transformer_benchmark's "SASRec+SS" row (Beauty NDCG@10 0.0531, Toys 0.0580) is RecTools' SASRec. Our
SASRec with the same loss and settings (`configs/<data>/sasrec-ss.toml`) comes out about 20% lower. This
runs RecTools itself (``bench/peers/rectools_sasrec_s3rec.py``, in its own virtual environment made
here with torch pinned to our CPU wheel) with that README's settings on the same file, leave-one-out,
full ranking with the user's earlier items excluded, the test metrics of the epoch with the best
validation NDCG@10; if it lands near our row, the gap is not our model.

RecTools gathers the embeddings of the 256 negatives of every position of every padded sequence
(batch x 50 x 257 x d floats), so an epoch is slow on a CPU; the record is rewritten after every epoch,
and a run stopped early keeps its curve, marked as stopped.

    python bench/rectools_check.py --data Beauty --seeds 0 [--threads 1] [--d 64]
    python bench/rectools_check.py --data Beauty --report-only --ours-run runs/ss-d64 --ours-command "..."
The second rebuilds the Markdown from the JSON and adds the validation curve of one of our runs, epoch
by epoch beside RecTools': our SASRec-SS trained as RecTools trains (d 64, constant learning rate, no
gradient clipping, no warm-up): ``intentrec train --config configs/beauty/sasrec-ss.toml --set
model.d=64 --set train.lr_schedule=constant --set train.clip_norm=0 --set train.warmup_steps=0``.
Results: bench/results/rectools_check_<data>.{json,md}.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import tomllib
from speed import ensure_venv
from speed_models import REPO, RESULTS, machine, provenance, shared_data

SPEC = {"label": "RecTools 0.19.0 SASRec", "requirements": ["rectools[torch]==0.19.0"]}
SCRIPT = REPO / "bench" / "peers" / "rectools_sasrec_s3rec.py"
# transformer_benchmark README, "Calculated, SASRec+SS" (HR@10, NDCG@10), earlier items excluded.
PUBLISHED = {"Beauty": (0.0921, 0.0531), "Toys_and_Games": (0.0970, 0.0580)}
OURS = {"Beauty": "beauty", "Toys_and_Games": "toys"}


def our_row(data: str) -> dict[str, Any] | None:
    """Our sasrec-ss row from the accuracy records (seen-excluded test metrics), if there is one."""
    runs = sorted((RESULTS / "accuracy_runs").glob(f"{OURS[data]}-sasrec-ss-s*.json"))
    summaries = [json.loads(p.read_text())["summary"] for p in runs]
    seen = [s["test_seen_excluded"] for s in summaries if "test_seen_excluded" in s]
    if not seen:
        return None
    return {
        "seeds": len(seen),
        "hr@10": sum(s["hr@10"] for s in seen) / len(seen),
        "ndcg@10": sum(s["ndcg@10"] for s in seen) / len(seen),
    }


def stem(data: str) -> Path:
    return RESULTS / f"rectools_check_{data.split('_')[0].lower()}"


def our_curve(run_dir: Path, command: str) -> dict[str, Any]:
    """Validation HR/NDCG@10 per epoch of one of our runs, scored as its config says (``eval.exclude_seen``)."""
    config = tomllib.loads((run_dir / "config.toml").read_text())
    rows = []
    with (run_dir / "metrics.jsonl").open() as lines:
        for line in lines:
            record = json.loads(line)
            if record.get("loss") is None:  # the untrained model's row of a resumed or zero-epoch run
                continue
            valid = record["valid"]
            epoch = record["epoch"] + 1
            rows.append({"epoch": epoch, "valid_hr@10": valid["hr@10"], "valid_ndcg@10": valid["ndcg@10"]})
    return {"command": command, "exclude_seen": config.get("eval", {}).get("exclude_seen", False), "epochs": rows}


def curve_key(record: dict[str, Any]) -> str:
    """RecTools' validation metric scored as our run beside it was: earlier items excluded or kept."""
    excluded = (record.get("ours_curve") or {}).get("exclude_seen", False)
    return "valid_ndcg@10" if excluded else "valid_ndcg@10_seen_kept"


def plot(record: dict[str, Any], path: Path) -> None:
    """Validation NDCG@10 by epoch: RecTools' runs and ours, scored alike."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key = curve_key(record)
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for run in record["runs"]:
        rows = [r for r in run["epochs"] if key in r]
        ax.plot(
            [r["epoch"] for r in rows],
            [r[key] for r in rows],
            label=f"RecTools, seed {run['seed']}",
        )
    ours = (record.get("ours_curve") or {}).get("epochs", [])
    if ours:
        ax.plot([r["epoch"] for r in ours], [r["valid_ndcg@10"] for r in ours], label="ours, same settings")
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"validation NDCG@10 (earlier items {'excluded' if key == 'valid_ndcg@10' else 'kept'})")
    ax.set_title(f"SASRec, sampled softmax (256 negatives), {record['data']}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(record: dict[str, Any]) -> None:
    path = stem(record["data"])
    path.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
    hr, ndcg = record["published"]["hr@10"], record["published"]["ndcg@10"]
    lines = [
        f"# RecTools' SASRec (sampled softmax) on {record['data']}, scored by our protocol",
        "",
        *provenance(record["command"], record),
        f"{SPEC['label']} in its own virtual environment; settings {record['settings']}. Test metrics of "
        "the epoch with the best validation NDCG@10; the user's earlier items excluded.",
        "",
        "| | epochs run | best epoch | valid NDCG@10 | test HR@10 | test NDCG@10 | s/epoch |",
        "|---|---|---|---|---|---|---|",
        f"| transformer_benchmark README (published) | | | | {hr} | {ndcg} | |",
    ]
    ours = record.get("ours")
    if ours:
        lines.append(
            f"| our SASRec-SS, frozen config (`configs/{OURS[record['data']]}/sasrec-ss.toml`, "
            f"{ours['seeds']} seed(s)) "
            f"| | | | {ours['hr@10']:.4f} | {ours['ndcg@10']:.4f} | |"
        )
    for run in record["runs"]:
        epochs = run["epochs"]
        if not epochs:
            continue
        best = max(epochs, key=lambda r: r["valid_ndcg@10"])
        state = run["status"] if run["status"] != "done" else ""
        per_epoch = sorted(r["train_seconds"] for r in epochs)[len(epochs) // 2]
        lines.append(
            f"| RecTools, seed {run['seed']}{f' ({state})' if state else ''} | {len(epochs)} | {best['epoch']} "
            f"| {best['valid_ndcg@10']:.4f} | {best['test_hr@10']:.4f} | {best['test_ndcg@10']:.4f} "
            f"| {per_epoch:.0f} |"
        )
    key = curve_key(record)
    lines += [
        "",
        f"Validation NDCG@10 by epoch, the user's earlier items {'excluded' if key == 'valid_ndcg@10' else 'kept'}, "
        "RecTools beside our SASRec-SS with the same settings"
        + (f" (`{record['ours_curve']['command']}`)" if record.get("ours_curve") else " (not recorded)")
        + ":",
        "",
    ]
    ours = {r["epoch"]: r for r in (record.get("ours_curve") or {}).get("epochs", [])}
    header = "| epoch | " + " | ".join(f"RecTools, seed {run['seed']}" for run in record["runs"]) + " | ours |"
    lines += [header, "|---" * (len(record["runs"]) + 2) + "|"]
    last = max([len(run["epochs"]) for run in record["runs"]] + [max(ours, default=0)])
    for epoch in [1, 2, 3, *range(5, last + 1, 5)]:
        if epoch > last:
            break
        cells = []
        for run in record["runs"]:
            row = next((r for r in run["epochs"] if r["epoch"] == epoch), None)
            cells.append(f"{row[key]:.4f}" if row and key in row else "")
        mine = f"{ours[epoch]['valid_ndcg@10']:.4f}" if epoch in ours else ""
        lines.append(f"| {epoch} | " + " | ".join(cells) + f" | {mine} |")
    if record.get("ours_curve"):
        plot(record, path.with_suffix(".png"))
        lines += ["", f"![validation curves]({path.with_suffix('.png').name})"]
    path.with_suffix(".md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="Beauty", choices=list(PUBLISHED))
    parser.add_argument("--seeds", type=int, nargs="*", default=[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--d", type=int, default=64, help="embedding size (the README's table: 64)")
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--patience", type=int, default=50)
    parser.add_argument("--report-only", action="store_true", help="only rebuild the Markdown from the JSON")
    parser.add_argument("--ours-run", type=Path, help="one of our runs with the same settings, to set beside")
    parser.add_argument("--ours-command", default="", help="the command that trained --ours-run, for the record")
    args = parser.parse_args()
    if args.report_only:
        record = json.loads(stem(args.data).with_suffix(".json").read_text())
        if args.ours_run:
            record["ours_curve"] = our_curve(args.ours_run, args.ours_command)
        record["ours"] = our_row(args.data)
        write(record)
        return
    path = shared_data() / "s3rec" / f"{args.data}.txt"
    if not path.is_file():
        sys.exit(f"{path}: not found; set INTENTREC_SHARED_DATA")
    python = ensure_venv("rectools", SPEC)
    hr, ndcg = PUBLISHED[args.data]
    record: dict[str, Any] = {
        "data": args.data,
        "command": "python bench/rectools_check.py " + " ".join(sys.argv[1:]),
        "machine": machine("cpu"),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "settings": f"d {args.d}, 1 block, 1 head, dropout 0.2, max length 50, 256 negatives, lr 0.001, "
        f"batch 128, at most {args.epochs} epochs, patience {args.patience}, item ids only, {args.threads} thread(s)",
        "published": {"hr@10": hr, "ndcg@10": ndcg, "source": "blondered/transformer_benchmark README"},
        "ours": our_row(args.data),
        "runs": [],
    }
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    for seed in args.seeds:
        run: dict[str, Any] = {"seed": seed, "status": "running", "epochs": []}
        record["runs"].append(run)
        command = [str(python), str(SCRIPT), str(path), str(seed), str(args.threads), "--d", str(args.d)]
        command += ["--epochs", str(args.epochs), "--patience", str(args.patience)]
        with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) as peer:
            assert peer.stdout is not None
            for line in peer.stdout:
                row = json.loads(line)
                if "epoch" in row:
                    run["epochs"].append(row)
                    print(
                        f"seed {seed} epoch {row['epoch']}: valid NDCG@10 {row['valid_ndcg@10']:.4f}, "
                        f"test {row['test_ndcg@10']:.4f} ({row['train_seconds']:.0f} s)",
                        flush=True,
                    )
                else:
                    run.update({k: v for k, v in row.items() if k != "epochs"})
                write(record)
        run["status"] = "done" if peer.returncode == 0 else f"stopped, exit {peer.returncode}"
        write(record)


if __name__ == "__main__":
    main()
