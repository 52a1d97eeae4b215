"""Benchmark: where each model's accuracy comes from, per slice of the test targets.

Re-scores the accuracy benchmark's trained runs (``bench/runs/<data>-<model>-s<seed>``, best
validation model) on the test split and splits NDCG@10 and HR@10 by

- the true item's popularity: tail, torso and head, the tertiles (over the targets) of the item's
  training interactions; a model that shares what an item's attributes say across items should gain
  most on the tail;
- the user's activity: light, medium and heavy, the tertiles of the users' training lengths.

Each model is printed with its change against SASRec-CE on the same slice. On the S3-Rec files the
user's earlier items are left out of the ranking, as in every published row there (see
``accuracy.py``); elsewhere each run's own protocol applies. A run whose overall score differs from its
committed accuracy record is reported, since then it is not the run the tables describe.
Results: bench/results/breakdown.{json,md,png}.

    python bench/breakdown.py --data beauty toys --seed 0
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from accuracy import MODELS, RECORDS, RESULTS, RUNS, S3REC, replace_text
from speed_models import machine, provenance

SLICES = {"item_popularity": ("tail", "torso", "head"), "activity": ("light", "medium", "heavy")}
BASELINE = "sasrec-ce"


def score(run: Path, exclude_seen: bool | None) -> dict[str, Any]:
    """Overall and per-slice NDCG@10 / HR@10 of ``run`` on the test split."""
    import torch

    from intentrec.runs import load_run

    torch.set_num_threads(1)
    result = load_run(run).evaluate("test", exclude_seen=exclude_seen)
    out: dict[str, Any] = {"targets": result["targets"], "ndcg@10": result["ndcg@10"], "hr@10": result["hr@10"]}
    for kind, names in SLICES.items():
        out[f"{kind}_cuts"] = result[f"{kind}_cuts"]
        out[kind] = {
            name: {m: result[f"by_{kind}"][name][m] for m in ("targets", "ndcg@10", "hr@10")} for name in names
        }
    return out


def recorded(data: str, model: str, seed: int, exclude_seen: bool) -> float | None:
    path = RECORDS / f"{data}-{model}-s{seed}.json"
    if not path.exists():
        return None
    summary = json.loads(path.read_text())["summary"]
    block = summary.get("test_seen_excluded") if exclude_seen else summary.get("test")
    return None if block is None else float(block["ndcg@10"])


def markdown(payload: dict[str, Any]) -> str:
    results: dict[str, dict[str, Any]] = payload["results"]
    lines = [
        "# Where the accuracy comes from: test NDCG@10 per slice of the targets",
        "",
        *provenance(payload["command"], payload),
        "Slices: the true item's popularity (tertiles, over the targets, of its training interactions) and the "
        "user's activity (tertiles of the users' training lengths). In brackets: the change against SASRec-CE "
        "on the same slice.",
        "",
    ]
    for data, block in results.items():
        protocol = "seen items excluded" if block["exclude_seen"] else "seen items kept"
        lines += [f"## {data} (seed {block['seed']}, {protocol})", ""]
        models = block["models"]
        for kind in SLICES:
            lines += [*slice_table(models, kind), ""]
        stale = [f"{m} ({r['recorded_ndcg@10']:.4f} recorded)" for m, r in models.items() if r.get("differs")]
        if stale:
            lines += [f"Runs that differ from their accuracy record: {', '.join(stale)}.", ""]
    return "\n".join(lines)


def slice_table(models: dict[str, Any], kind: str) -> list[str]:
    """A Markdown table of NDCG@10 per slice of ``kind``, each model against SASRec-CE."""
    names = SLICES[kind]
    base = models.get(BASELINE)
    first = next(iter(models.values()))
    header = " | ".join(f"{n} ({first[f'{kind}_cuts'][n]}, {first[kind][n]['targets']:,} targets)" for n in names)
    lines = [f"| model | all | {header} |", "|---|---|" + "---|" * len(names)]
    for model, r in models.items():
        compare = base is not None and model != BASELINE
        cells = [_cell(r["ndcg@10"], base["ndcg@10"] if compare else None)]
        cells += [_cell(r[kind][n]["ndcg@10"], base[kind][n]["ndcg@10"] if compare else None) for n in names]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return lines


def _cell(value: float, reference: float | None) -> str:
    if reference is None or reference == 0:
        return f"{value:.4f}"
    return f"{value:.4f} ({100 * (value / reference - 1):+.0f}%)"


def plot(results: dict[str, dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4), squeeze=False)
    for ax, (data, block) in zip(axes[0], results.items(), strict=True):
        names = SLICES["item_popularity"]
        models = block["models"]
        width = 0.8 / max(len(models), 1)
        for i, (model, r) in enumerate(models.items()):
            xs = [j + (i - (len(models) - 1) / 2) * width for j in range(len(names))]
            ax.bar(xs, [r["item_popularity"][n]["ndcg@10"] for n in names], width, label=model)
        ax.set_xticks(range(len(names)), [f"{n}\n({block['models'][next(iter(models))]['item_popularity_cuts'][n]})"
                                          for n in names])  # fmt: skip
        ax.set_title(f"{data}: test NDCG@10 by the true item's training interactions")
        ax.set_ylabel("NDCG@10")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", nargs="*", default=["beauty", "toys"])
    parser.add_argument("--models", nargs="*", default=list(MODELS), choices=MODELS)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from tqdm import tqdm

    command = "python bench/breakdown.py " + " ".join(sys.argv[1:])
    results: dict[str, dict[str, Any]] = {}
    for data in args.data:
        exclude = data in S3REC
        runs = [(m, RUNS / f"{data}-{m}-s{args.seed}") for m in args.models]
        runs = [(m, r) for m, r in runs if (r / "best.pt").exists() and (r / "summary.json").exists()]
        if not runs:
            print(f"{data}: no finished runs for seed {args.seed} under {RUNS}", file=sys.stderr)
            continue
        models: dict[str, Any] = {}
        for model, run in tqdm(runs, desc=data, unit="run"):
            r = score(run, True if exclude else None)
            expected = recorded(data, model, args.seed, exclude)
            if expected is not None and abs(expected - r["ndcg@10"]) > 1e-6:
                r["differs"], r["recorded_ndcg@10"] = True, expected
            models[model] = r
        results[data] = {"seed": args.seed, "exclude_seen": exclude, "models": models}
    if not results:
        sys.exit("nothing to score: run bench/accuracy.py first")
    when = datetime.now(timezone.utc).isoformat(timespec="seconds")
    payload = {"command": command, "date": when, "machine": machine("cpu"), "results": results}
    replace_text(RESULTS / "breakdown.json", json.dumps(payload, indent=1) + "\n")
    replace_text(RESULTS / "breakdown.md", markdown(payload) + "\n")
    plot(results, RESULTS / "breakdown.png")
    print((RESULTS / "breakdown.md").read_text())


if __name__ == "__main__":
    main()
