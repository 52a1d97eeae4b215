"""Benchmark: do the intent segments recover the synthetic world's planted user archetypes?

For each seed: the quick-start world (2,000 users) and its IntentRec V3 model, trained exactly as
`intentrec quickstart` trains it (reused from ``bench/runs/insights-s<seed>`` when already there), then
`intentrec analyze` at K = 10 (the paper's K) on the intent profile. Reported per seed: the adjusted
Rand index (ARI) of the segments against the archetypes at K = 10 and at K = the number of archetypes,
for the profile and for the raw intent embedding, beside two ceilings: k-means on the generator's
per-user parameters, and on what an ideal observer of every session's true intent would see. Target
(issue 6): ARI >= 0.5. Results: bench/results/insights.{json,md}.

    python bench/insights.py                 # seed 0
    python bench/insights.py --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import polars as pl
from speed_models import machine, provenance

REPO = Path(__file__).resolve().parents[1]
RUNS = REPO / "bench" / "runs"
RESULTS = REPO / "bench" / "results"
TARGET = 0.5
CEILINGS = ("ceiling_from_observed_sessions", "ceiling_from_true_parameters")
USERS = 2000


def run_seed(seed: int, k: int) -> dict[str, Any]:
    from sklearn.metrics import adjusted_rand_score

    from intentrec.analyze import _cluster, analyze, extract, profile
    from intentrec.data.synthetic import WorldConfig, generate, write
    from intentrec.quickstart import quickstart_configs
    from intentrec.runs import load_run, train_run

    base = RUNS / f"insights-s{seed}"
    world, run_dir = base / "world", base / "intentrec"
    if not (world / "world.json").exists():
        write(generate(WorldConfig(users=USERS, seed=seed)), world)
    started = time.perf_counter()
    if not (run_dir / "summary.json").exists():
        config = quickstart_configs(world, epochs=16, seed=seed)["IntentRec"]
        train_run(config, run_dir, resume=(run_dir / "config.toml").exists())
    trained = time.perf_counter()
    run = load_run(run_dir)
    result = analyze(run, base / "analysis", k=k, seed=seed)
    a = result["archetypes"]
    # the same profile from the latest window only (the model's outputs at the latest max_len positions)
    latest = extract(run, span="latest")
    users = pl.DataFrame({"user": latest.users})
    truth = pl.read_parquet(world / "ground_truth" / "users.parquet").with_columns(pl.col("user").cast(pl.String))
    archetypes = users.join(truth, on="user", how="left", maintain_order="left")["archetype"].to_list()
    x = profile(latest)
    a["by_features"]["profile, latest window only"] = {
        f"k={kk}": float(adjusted_rand_score(archetypes, _cluster(x, kk, seed))) for kk in (k, a["archetypes"])
    }
    return {
        "seed": seed,
        "users": result["users"],
        "archetypes": a["archetypes"],
        "adjusted_rand_index": a["adjusted_rand_index"],
        "by_features": a["by_features"],
        "ceiling_from_true_parameters": {
            key: v for key, v in a["ceiling_from_true_parameters"].items() if key != "columns"
        },
        "ceiling_from_observed_sessions": {
            key: v for key, v in a["ceiling_from_observed_sessions"].items() if key != "columns"
        },
        "segments": [s["description"] for s in sorted(result["segments"], key=lambda s: -s["size"])],
        "train_seconds": round(trained - started, 1),
        "analyze_seconds": round(time.perf_counter() - trained, 1),
    }


REAL = ("ml-100k", "taobao")  # real data sets whose accuracy runs (IntentRec V3, seed 0) are analysed too


def real_data(data: str, k: int) -> dict[str, Any] | None:
    """`intentrec analyze` on the accuracy benchmark's IntentRec V3 run (seed 0) of a real data set: no
    ground truth, so the segments are only described (aggregates; no user ids are kept here)."""
    from intentrec.analyze import analyze, head_meaning
    from intentrec.runs import load_run

    run_dir = RUNS / f"{data}-intentrec-v3-s0"
    if not (run_dir / "summary.json").exists():
        print(f"  {data}: no finished run at {run_dir} (python bench/accuracy.py --data {data}); left out", flush=True)
        return None
    result = analyze(load_run(run_dir), RUNS / f"insights-{data}", k=k, seed=0)
    shop = result["heads"].get("action") == "event type"
    return {
        "run": str(run_dir.relative_to(REPO)),
        "users": result["users"],
        "silhouette": result["silhouette"],
        "largest_action_gap": result["largest_action_gap"],
        "heads": {h: head_meaning(h, src, shop) for h, src in result["heads"].items()},
        "disabled_heads": result["disabled_heads"],
        "segments": [
            {"name": s["name"], "size": s["size"], "description": s["description"]}
            for s in sorted(result["segments"], key=lambda s: -s["size"])
        ],
    }


def markdown(record: dict[str, Any]) -> str:
    k, rows = record["k"], record["seeds"]
    n = rows[0]["archetypes"]

    def cell(values: list[float]) -> str:
        mean = statistics.fmean(values)
        return f"{mean:.3f} ± {statistics.stdev(values):.3f}" if len(values) > 1 else f"{mean:.3f}"

    def line(name: str, get: Any) -> str:
        return f"| {name} | {cell([get(r)[f'k={k}'] for r in rows])} | {cell([get(r)[f'k={n}'] for r in rows])} |"

    mean = statistics.fmean(r["adjusted_rand_index"] for r in rows)
    lines = [
        "# Intent segments against the planted archetypes (synthetic world)",
        "",
        *provenance(record["command"], record),
        f"World: the quick-start world ({USERS:,} users, {n} archetypes), seeds {[r['seed'] for r in rows]}; "
        "IntentRec V3 trained as `intentrec quickstart` trains it; `intentrec analyze --k "
        f"{k}` (k-means++ on the intent profile, the model's outputs averaged over each user's whole history). "
        "Adjusted Rand index (ARI): 1 = the archetypes exactly, "
        "0 = chance; mean ± standard deviation over seeds.",
        "",
        f"**Segments (K = {k}, intent profile): ARI {mean:.3f}; target >= {TARGET}: "
        f"{'met' if mean >= TARGET else 'missed'}.**",
        "",
        f"| clustering input | ARI at K = {k} | ARI at K = {n} |",
        "|---|---|---|",
        line("intent profile over the whole history (the default)", lambda r: r["by_features"]["profile"]),
        line("intent profile, latest window only", lambda r: r["by_features"]["profile, latest window only"]),
        line("raw intent embedding Z", lambda r: r["by_features"]["embedding"]),
        line("ceiling: an ideal observer of every session's true intent", lambda r: r[CEILINGS[0]]),
        line("ceiling: the generator's per-user parameters", lambda r: r[CEILINGS[1]]),
        "",
        f"Segments found (seed {rows[0]['seed']}, largest first):",
        "",
        *(f"- {s}" for s in rows[0]["segments"]),
        "",
    ]  # fmt: skip
    for data, r in record.get("real", {}).items():
        silhouette = {int(kk): v for kk, v in r["silhouette"].items()}
        best = max(silhouette, key=silhouette.__getitem__)
        at_k = f"; {silhouette[k]:.3f} at K = {k}" if k in silhouette else ""
        lines += [
            f"## {data}: segments described (no ground truth)",
            "",
            f"`intentrec analyze {r['run']} --k {k}`: {r['users']:,} users. Largest difference between segments "
            f"in any predicted action share: {r['largest_action_gap']:.0%} points; the silhouette is highest at "
            f"K = {best} ({silhouette[best]:.3f}{at_k}).",
            "",
            "| segment | users | what stands out |",
            "|---|---|---|",
            *(f"| {s['name']} | {s['size']:,} | {s['description'].split(': ', 1)[1]} |" for s in r["segments"]),
            "",
            "What the intents mean in this data: "
            + "; ".join(f"{h}: {src}" for h, src in r["heads"].items())
            + "".join(f"; {h}: not predicted ({why})" for h, why in r["disabled_heads"].items())
            + ".",
            "",
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="*", default=[0])
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()

    rows = []
    for seed in args.seeds:
        print(f"seed {seed} ...", flush=True)
        rows.append(run_seed(seed, args.k))
        print(f"  ARI {rows[-1]['adjusted_rand_index']:.3f}", flush=True)
    real = {data: r for data in REAL if (r := real_data(data, args.k)) is not None}
    seeds = f" --seeds {' '.join(map(str, args.seeds))}" if args.seeds != [0] else ""
    record = {
        "command": f"python bench/insights.py{seeds}",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine("cpu"),
        "k": args.k,
        "target": TARGET,
        "seeds": rows,
        "real": real,
    }  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "insights.json").write_text(json.dumps(record, indent=2) + "\n")
    (RESULTS / "insights.md").write_text(markdown(record))
    print((RESULTS / "insights.md").read_text())


if __name__ == "__main__":
    sys.exit(main())
