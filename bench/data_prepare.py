"""Benchmark: `data prepare` on ML-100K, Amazon Beauty and 1M synthetic events.

Each case runs in a fresh Python process, which reports the wall time of read + sequences + intent
labels + Parquet write (imports excluded, reported apart) and its own peak resident memory.
Results go to bench/results/data_prepare.{json,md}.

    python bench/data_prepare.py            # needs ../shared/data or INTENTREC_SHARED_DATA
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
TARGETS = {"ml-100k": 2.0, "beauty": 3.0, "synthetic-1m": 10.0}

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
from intentrec.data import read_dataset
from intentrec.data.prepare import write_prepared
from intentrec.data.sequences import build_sequences
t1 = time.perf_counter()
path, fmt, out = sys.argv[1:4]
dataset = read_dataset(path, fmt)
prepared = build_sequences(dataset)
write_prepared(prepared, dataset, __import__("pathlib").Path(out), source_format=fmt)
t2 = time.perf_counter()
# VmHWM is this address space's peak; ru_maxrss would include the parent's peak inherited across fork/exec
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps({"import_s": t1 - t0, "prepare_s": t2 - t1, "peak_rss_mb": hwm / 1024,
                  "users": prepared.n_users, "items": prepared.n_items, "interactions": prepared.interactions.height}))
"""


def shared_data() -> Path:
    path = Path(os.environ.get("INTENTREC_SHARED_DATA", REPO.parent / "shared" / "data"))
    if not path.is_dir():
        sys.exit(f"shared data not found at {path}; set INTENTREC_SHARED_DATA")
    return path


def run_case(path: Path, fmt: str, out: Path, repeats: int = 3) -> dict[str, float]:
    runs = []
    for _ in range(repeats):
        done = subprocess.run(
            [sys.executable, "-c", CHILD, str(path), fmt, str(out)], check=True, capture_output=True, text=True
        )
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    best = min(runs, key=lambda r: r["prepare_s"])
    best["prepare_s_runs"] = [round(r["prepare_s"], 3) for r in runs]
    return best


def main() -> None:
    data = shared_data()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        from intentrec.data.synthetic import WorldConfig, generate, write

        started = time.perf_counter()
        world = generate(WorldConfig(users=20_000, seed=0))
        synth_s = time.perf_counter() - started
        write(world, work / "world")
        cases = {
            "ml-100k": (data / "movielens-100k", "movielens"),
            "beauty": (data / "s3rec" / "Beauty.txt", "s3rec"),
            "synthetic-1m": (work / "world", "synthetic"),
        }
        results = {}
        for name, (path, fmt) in cases.items():
            results[name] = run_case(path, fmt, work / f"prep-{name}")
            results[name]["target_s"] = TARGETS[name]
            print(
                f"{name:14s} {results[name]['prepare_s']:.2f} s  peak {results[name]['peak_rss_mb']:.0f} MB", flush=True
            )
    import polars

    report = {
        "benchmark": "data_prepare",
        "command": "python bench/data_prepare.py",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
        },
        "versions": {"python": platform.python_version(), "polars": polars.__version__},
        "synthetic_generation_s": round(synth_s, 2),
        "synthetic_events": world.interactions.height,
        "cases": results,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "data_prepare.json").write_text(json.dumps(report, indent=2) + "\n")
    rows = [
        f"| {name} | {r['users']:,} | {r['items']:,} | {r['interactions']:,} | "
        f"{r['prepare_s']:.2f} | {r['target_s']:.0f} | {'yes' if r['prepare_s'] <= r['target_s'] else 'NO'} | "
        f"{r['peak_rss_mb']:.0f} | {r['import_s']:.2f} |"
        for name, r in results.items()
    ]
    md = "\n".join(
        [
            "# Data preparation benchmark",
            "",
            f"`{report['command']}` on {report['machine']['cpus']} CPUs ({report['machine']['platform']}), "
            f"Python {report['versions']['python']}, Polars {report['versions']['polars']}, {report['date']}.",
            "",
            "Time is read + ordering + intent labels + splits + Parquet/manifest write, best of 3 fresh processes; "
            "imports are excluded (last column). Peak memory is the process's maximum resident set.",
            "",
            "| data | users | items | interactions | prepare (s) | target (s) | met | peak RSS (MB) | import (s) |",
            "|---|---|---|---|---|---|---|---|---|",
            *rows,
            "",
            f"Generating the synthetic world ({report['synthetic_events']:,} events, 20,000 users): "
            f"{report['synthetic_generation_s']:.1f} s (target <= 30 s).",
            "",
        ]
    )
    (RESULTS / "data_prepare.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
