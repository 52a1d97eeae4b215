"""Benchmark: accuracy of every model on every data set, several seeds, from the frozen configs.

Each (data set, model, seed) trains with ``intentrec train --config configs/<data>/<model>.toml
--set train.seed=<seed>`` into ``bench/runs/`` (ignored by git) and is skipped when its
``summary.json`` already exists, so an interrupted benchmark resumes where it stopped (``--resume``
picks up a half-trained run from its checkpoint). A run folder, finished or not, started from another
version of its frozen config (``frozen_config.sha256`` in the folder says which) is set aside as
``<name>.superseded-<time>`` and trained again, never recorded as the new one nor resumed under it.
``--jobs N`` trains N runs at once, each with cores / N threads.

Every finished run leaves a record, ``bench/results/accuracy_runs/<data>-<model>-s<seed>.json`` (its
summary: validation and test metrics, the best epoch, the digest of the config it ran), which is
committed: the tables are built from these records, so they survive a fresh clone and a run on another
machine adds to them. A record whose config digest no longer matches ``configs/`` is superseded: while
the current config has no record yet, the row shows the records of its previous version, marked as such
and left out of every comparison (bench/report.py); after that, they are left out. A (data set, model)
with no records at all keeps its last entry in ``accuracy.json``, marked as carried over. Test metrics
(full ranking, leave-one-out) are aggregated as mean and standard deviation over seeds and printed beside
the published numbers for the same files.
Results: bench/results/accuracy.{json,md}.

    python bench/accuracy.py --data ml-100k --seeds 0 1 2
    python bench/accuracy.py --data beauty toys --models sasrec-bce sasrec-ce intentrec-v3 --jobs 2
    python bench/accuracy.py --report-only          # rebuild the tables from the records
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from speed_models import machine, provenance

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
RUNS = REPO / "bench" / "runs"
RESULTS = REPO / "bench" / "results"
RECORDS = RESULTS / "accuracy_runs"
DATA_SETS = ("ml-100k", "beauty", "toys", "lastfm", "taobao", "synthetic")
MODELS = (
    "popularity", "recent", "gru4rec", "bert4rec", "sasrec-bce", "sasrec-ce", "sasrec-ss", "sasrec-ce-repeat",
    "intentrec-v0", "intentrec-v1", "intentrec-v2", "intentrec-v3",
)  # fmt: skip
METRICS = ("hr@10", "ndcg@10", "mrr", "coverage@10")
# S3-Rec's preprocessed sets: their published all-rank numbers never rank the user's earlier items, so
# these runs are also scored that way (test_seen_excluded.json in the run folder), beside our protocol
S3REC = ("beauty", "toys", "lastfm")

# Published full-ranking leave-one-out numbers on exactly these files (HR@10, NDCG@10, source).
PUBLISHED: dict[str, list[tuple[str, float, float, str]]] = {
    "beauty": [
        ("SASRec (BCE)", 0.0605, 0.0318, "S3-Rec repository README, all-rank table"),
        ("SASRec (sampled softmax)", 0.0921, 0.0531, "blondered/transformer_benchmark README"),
        ("BSARec (CE)", 0.1008, 0.0611, "yehjin-shin/BSARec best log"),
        ("WEARec (CE)", 0.1041, 0.0614, "xhy963319431/WEARec results log (best of a grid)"),
    ],
    "toys": [
        ("SASRec (BCE)", 0.0675, 0.0374, "S3-Rec all-rank table"),
        ("SASRec (sampled softmax)", 0.0970, 0.0580, "transformer_benchmark README"),
    ],
    "lastfm": [
        ("SASRec (BCE)", 0.0688, 0.0390, "S3-Rec all-rank table"),
        ("S3-Rec", 0.0743, 0.0427, "S3-Rec all-rank table"),
    ],
    "ml-100k": [
        ("SASRec (CE), RePlay 0.22", 0.1074, 0.0482, "measured on a 2-core CPU machine (issue 4)"),
    ],
}


def replace_text(path: Path, text: str) -> None:
    """Write ``path`` whole or not at all (a temporary file renamed over it), so that two benchmark
    processes sharing the results folder never read a half-written file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def config_digest(data: str, model: str) -> str:
    """The first 16 hex digits of the SHA-256 of the settings of the frozen config a run is trained from
    (its parsed TOML, so that editing a comment does not supersede finished runs)."""
    settings = tomllib.loads((CONFIGS / data / f"{model}.toml").read_text())
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def trained_from(run: Path, digest: str) -> bool:
    """Whether ``run`` was trained from the frozen config whose digest is ``digest`` (its stamp says so)."""
    stamp = run / "frozen_config.sha256"
    return stamp.exists() and stamp.read_text().strip() == digest


def set_aside_if_stale(out: Path, digest: str) -> None:
    """Move the run folder ``out`` aside if it was started (finished or not) from another version of its
    config, or before stamps were kept, so that it is never recorded as this one nor resumed under it."""
    if (out / "config.toml").exists() and not trained_from(out, digest):
        aside = out.with_name(f"{out.name}.superseded-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}")
        out.rename(aside)
        print(f"  {out.name}: trained from another config; moved to {aside.name}", flush=True)


def run_one(data: str, model: str, seed: int, env: dict[str, str], threads: int) -> bool:
    """Train one run (unless finished) and write its record; False if training failed."""
    config = CONFIGS / data / f"{model}.toml"
    out = RUNS / f"{data}-{model}-s{seed}"
    stamp = out / "frozen_config.sha256"  # the digest of the frozen config the run was trained from
    digest = config_digest(data, model)
    set_aside_if_stale(out, digest)
    if (out / "summary.json").exists():
        write_record(data, model, seed, env)
        return True
    out.mkdir(parents=True, exist_ok=True)
    stamp.write_text(digest + "\n")
    resume = ["--resume"] if (out / "config.toml").exists() else []
    command = [sys.executable, "-m", "intentrec.cli", "train", "--config", str(config),
               "--set", f"train.seed={seed}", "--out", str(out), *resume]  # fmt: skip
    threaded = {**env, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    started = time.perf_counter()
    done = subprocess.run(command, env=threaded, capture_output=True, text=True)
    if done.returncode != 0:
        print(f"  FAILED {data}/{model}/s{seed}: {done.stderr.strip().splitlines()[-1:]}", flush=True)
        (RUNS / f"{data}-{model}-s{seed}.err").write_text(done.stderr)
        return False
    print(f"  {data}/{model}/s{seed} done in {time.perf_counter() - started:.0f} s", flush=True)
    write_record(data, model, seed, env, threads=threads)
    return True


def same_run(recorded: dict[str, Any], summary: dict[str, Any]) -> bool:
    """Whether a record's summary is that of the run whose summary is ``summary`` (and not of an
    earlier run of the same name)."""
    return all(recorded.get(key) == summary.get(key) for key in ("best_epoch", "train_seconds", "valid"))


RECORD_LOCK = threading.Lock()  # a worker recording its run and the report recording finished runs


def write_record(data: str, model: str, seed: int, env: dict[str, str], threads: int | None = None) -> None:
    """The committed record of a finished run: its summary, scored the S3-Rec way too where that applies,
    and, on the synthetic world, its intent heads against the true intents. Kept if already written for
    this config. One record is written at a time, so a run is never scored twice at once."""
    with RECORD_LOCK:
        _write_record(data, model, seed, env, threads)


def _write_record(data: str, model: str, seed: int, env: dict[str, str], threads: int | None) -> None:
    path = RECORDS / f"{data}-{model}-s{seed}.json"
    digest = config_digest(data, model)
    run = RUNS / f"{data}-{model}-s{seed}"
    if not trained_from(run, digest):
        return  # trained from another config: never recorded as this one (run_one sets it aside)
    summary: dict[str, Any] = json.loads((run / "summary.json").read_text())
    if path.exists():
        recorded = json.loads(path.read_text())
        if recorded.get("config_sha256") == digest and same_run(recorded["summary"], summary):
            return
    if data in S3REC:
        excluded = seen_excluded(run, env)
        if excluded is not None:
            summary["test_seen_excluded"] = excluded
    if exclude_seen_config(data, model):
        kept = scored(run, env, "test_seen_kept.json", "--keep-seen")
        if kept is not None:
            summary["test_seen_kept"] = kept
    if data == "synthetic":
        summary["test_true_intents"] = true_intents(run)
    info = machine("cpu")
    if threads is not None:
        info["torch_threads"] = threads
    record = {"data": data, "model": model, "seed": seed, "config_sha256": digest, "machine": info,
              "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "summary": summary}  # fmt: skip
    RECORDS.mkdir(parents=True, exist_ok=True)
    replace_text(path, json.dumps(record, indent=1) + "\n")


def seen_excluded(run: Path, env: dict[str, str]) -> dict[str, Any] | None:
    """Test metrics of ``run`` with the user's earlier items left out of the ranking (computed once)."""
    return scored(run, env, "test_seen_excluded.json", "--exclude-seen")


def exclude_seen_config(data: str, model: str) -> bool:
    """Whether the frozen config validates and tests with the user's earlier items excluded (eval.exclude_seen)."""
    settings = tomllib.loads((CONFIGS / data / f"{model}.toml").read_text())
    return bool(settings.get("eval", {}).get("exclude_seen", False))


def scored(run: Path, env: dict[str, str], name: str, flag: str) -> dict[str, Any] | None:
    """Test metrics of ``run`` under ``intentrec evaluate``'s protocol ``flag`` (--exclude-seen or
    --keep-seen), computed once and cached in the run folder as ``name``."""
    cached = run / name
    if not cached.exists():
        command = [sys.executable, "-m", "intentrec.cli", "evaluate", str(run), "--split", "test", flag, "--json"]
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            print(f"  FAILED evaluate {flag} {run.name}: {done.stderr.strip().splitlines()[-1:]}", flush=True)
            return None
        cached.write_text(done.stdout.strip().splitlines()[-1] + "\n")
    loaded: dict[str, Any] = json.loads(cached.read_text())
    return loaded


def rescore_seen(env: dict[str, str]) -> None:
    """Score every recorded S3-Rec-file run whose folder is here again with the user's earlier items
    excluded (the evaluation once excluded only the last max_len of them); the record keeps its
    training facts and says when it was re-scored."""
    for path in sorted(RECORDS.glob("*.json")):
        record = json.loads(path.read_text())
        run = RUNS / f"{record['data']}-{record['model']}-s{record['seed']}"
        if record["data"] not in S3REC or not (run / "best.pt").exists():
            continue
        (run / "test_seen_excluded.json").unlink(missing_ok=True)
        excluded = seen_excluded(run, env)
        if excluded is None:
            continue
        before = record["summary"].get("test_seen_excluded", {}).get("ndcg@10")
        record["summary"]["test_seen_excluded"] = excluded
        record["seen_excluded_scored"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        replace_text(path, json.dumps(record, indent=1) + "\n")
        print(f"  {path.stem}: NDCG@10 seen excluded {before} -> {excluded['ndcg@10']:.4f}", flush=True)


def true_intents(run: Path) -> dict[str, Any]:
    """Intent heads of a synthetic-world run against the generator's true session intents on the test
    targets (`intentrec.quickstart.ground_truth_intent_accuracy`; computed once, {} without heads)."""
    cached = run / "test_true_intents.json"
    if not cached.exists():
        from intentrec.quickstart import ground_truth_intent_accuracy
        from intentrec.runs import load_run

        loaded = load_run(run)
        result = ground_truth_intent_accuracy(loaded, run / "world") if loaded.model.heads else {}
        cached.write_text(json.dumps(result, indent=2) + "\n")
    out: dict[str, Any] = json.loads(cached.read_text())
    return out


def spread(values: list[float]) -> dict[str, Any]:
    """Mean, sample standard deviation (0 for one seed) and the values themselves."""
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "values": values}  # fmt: skip


def mean_intents(per_seed: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Each head's metrics averaged over the seeds: those every seed has (older records lack newer ones)."""
    return {
        head: {
            metric: statistics.fmean(seed[head][metric] for seed in per_seed)
            for metric in values
            if metric != "targets" and all(metric in seed[head] for seed in per_seed)
        }
        for head, values in per_seed[0].items()
    }


def aggregate(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"seeds": len(summaries)}
    if all("test_seen_excluded" in s for s in summaries):
        for metric in ("hr@10", "ndcg@10"):
            out[f"test_excluded_{metric}"] = spread([s["test_seen_excluded"][metric] for s in summaries])
    if all("test_seen_kept" in s for s in summaries):  # a config scored with earlier items excluded, also kept
        for metric in METRICS:
            out[f"test_kept_{metric}"] = spread([s["test_seen_kept"][metric] for s in summaries])
    for split in ("valid", "test"):
        for metric in METRICS:
            out[f"{split}_{metric}"] = spread([s[split][metric] for s in summaries])
    out["train_seconds"] = statistics.fmean(s["train_seconds"] for s in summaries)
    out["best_epoch"] = [s["best_epoch"] for s in summaries]
    truth = [s["test_true_intents"] for s in summaries if s.get("test_true_intents")]
    if truth:
        out["true_intents"] = {
            head: {metric: statistics.fmean(t[head][metric] for t in truth) for metric in values if metric != "targets"}
            for head, values in truth[0].items()
        }
    out["intents"] = mean_intents([s["test"].get("intents", {}) for s in summaries])
    return out


def collect(data_sets: list[str], models: list[str], env: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Per data set and model, the aggregate of its current records (every seed recorded); finished
    runs in bench/runs/ without a record get one first. Without records, the entry of the last
    accuracy.json is carried over and says so."""
    for run in sorted(RUNS.glob("*-s*")) if RUNS.exists() else []:
        name, _, seed = run.name.rpartition("-s")
        if not seed.isdigit():  # a run set aside (<name>.superseded-<time>) or not a run
            continue
        data = next((d for d in data_sets if name.startswith(f"{d}-")), None)
        if data and (run / "summary.json").exists() and name[len(data) + 1 :] in models:
            write_record(data, name[len(data) + 1 :], int(seed), env)
    previous = json.loads((RESULTS / "accuracy.json").read_text()) if (RESULTS / "accuracy.json").exists() else {}
    table: dict[str, dict[str, Any]] = {}
    for data in data_sets:
        for model in models:
            digest = config_digest(data, model)
            found, superseded = [], []
            for path in sorted(RECORDS.glob(f"{data}-{model}-s*.json"), key=lambda p: int(p.stem.rpartition("-s")[2])):
                record = json.loads(path.read_text())
                (found if record["config_sha256"] == digest else superseded).append(record)
            if superseded:
                print(f"  {data}/{model}: {len(superseded)} record(s) of an earlier config left out", flush=True)
            if found:
                entry = aggregate([r["summary"] for r in found])
                # a run validated and tested with earlier items excluded: its "test_" keys are seen-excluded ones,
                # never set beside other models' seen-kept scores; its seen-kept scores are "test_kept_"
                entry["eval_exclude_seen"] = exclude_seen_config(data, model)
                table.setdefault(data, {})[model] = entry
            elif superseded:
                table.setdefault(data, {})[model] = earlier_config_entry(superseded)
            elif model in previous.get("results", {}).get(data, {}):
                entry = previous["results"][data][model]
                entry.setdefault("carried_from", previous["date"])
                table.setdefault(data, {})[model] = entry
    return table


def earlier_config_entry(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The aggregate of the latest earlier version of a config that has no run of its current version yet
    (the records of the digest recorded last), marked ``earlier_config`` with that date: shown in the
    table, never compared as the current config."""
    newest = max(records, key=lambda r: r["date"])
    summaries = [r["summary"] for r in records if r["config_sha256"] == newest["config_sha256"]]
    entry = aggregate(summaries)
    # the record says how that version scored: a config validated with earlier items excluded is also scored kept
    entry["eval_exclude_seen"] = all("test_seen_kept" in s for s in summaries)
    entry["earlier_config"] = newest["date"][:10]
    return entry


def cell(entry: dict[str, Any], key: str) -> str:
    value = entry[key]
    return f"{value['mean']:.4f} ± {value['std']:.4f}" if entry["seeds"] > 1 else f"{value['mean']:.4f}"


def kept_cell(entry: dict[str, Any], metric: str) -> str:
    """The seen-kept test score of ``metric``: for a config validated with earlier items excluded, its
    best model scored again with them kept (``test_kept_``), or "-" where that was not scored."""
    if not entry.get("eval_exclude_seen"):
        return cell(entry, f"test_{metric}")
    return cell(entry, f"test_kept_{metric}") if f"test_kept_{metric}" in entry else "-"


def write_report(table: dict[str, dict[str, Any]], command: str) -> None:
    record = {
        "benchmark": "accuracy",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "machine": machine("cpu"),
        "protocol": "leave-one-out, full ranking over all items, seen items kept; test metrics of the model with "
        "the best validation NDCG@10",
        "published": PUBLISHED,
        "results": table,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    replace_text(RESULTS / "accuracy.json", json.dumps(record, indent=2) + "\n")
    lines = [
        "# Accuracy: every model on every data set",
        "",
        *provenance(command, record),
        f"Protocol: {record['protocol']}. Mean ± standard deviation over seeds; configs in `configs/`.",
    ]
    for data, models in table.items():
        excluded = data in S3REC and all("test_excluded_hr@10" in e for e in models.values())
        extra = (" test HR@10, seen excluded | test NDCG@10, seen excluded |", "---|---|") if excluded else ("", "")
        lines += ["", f"## {data}", "", "| model | seeds | test HR@10 | test NDCG@10 | test MRR | valid NDCG@10 | "
                  f"coverage@10 | train s |{extra[0]}", f"|---|---|---|---|---|---|---|---|{extra[1]}"]  # fmt: skip
        for model, entry in models.items():
            mark = " †" if "carried_from" in entry else ""
            mark += " §" if "earlier_config" in entry else ""
            mark += " ‡" if entry.get("eval_exclude_seen") else ""
            kept = " | ".join(kept_cell(entry, m) for m in ("hr@10", "ndcg@10", "mrr"))
            row = (
                f"| {model}{mark} | {entry['seeds']} | {kept} | {cell(entry, 'valid_ndcg@10')} | "
                f"{cell(entry, 'test_coverage@10')} | {entry['train_seconds']:.0f} |"
            )
            if excluded:
                row += f" {cell(entry, 'test_excluded_hr@10')} | {cell(entry, 'test_excluded_ndcg@10')} |"
            lines.append(row)
        for name, hr, ndcg, source in PUBLISHED.get(data, []):
            published = f" {hr:.4f} | {ndcg:.4f} |" if excluded else " | |"
            lines.append(f"| *published: {name}* | | {hr:.4f} | {ndcg:.4f} | | | | *{source}* |"
                         + (published if excluded else ""))  # fmt: skip
        if excluded:
            lines += ["", "The last two columns never rank the user's earlier items, as S3-Rec's full-sort "
                      "evaluation does, which every published row on these files uses (S3-Rec, and BSARec's and "
                      "WEARec's trainers, which zero the user's training items; transformer_benchmark replicates "
                      "S3-Rec's numbers): the published rows are repeated there, like for like."]  # fmt: skip
        if any(e.get("eval_exclude_seen") for e in models.values()):
            lines += ["", "‡ validated and tested with the user's earlier items excluded (its config's "
                      "`eval.exclude_seen`, the way the published rows score these files), so its validation "
                      "NDCG@10 is seen-excluded too; its seen-kept test scores are the same best model scored again "
                      "with earlier items kept (`intentrec evaluate --keep-seen`), \"-\" where not yet "
                      "scored."]  # fmt: skip
        earlier = sorted({e["earlier_config"] for e in models.values() if "earlier_config" in e})
        if earlier:
            lines += ["", f"§ its current config (`configs/{data}/`) has no run yet: the scores of the config's "
                      f"previous version (records of {', '.join(earlier)}, kept in `bench/results/accuracy_runs/` "
                      "until the new runs replace them), left out of every comparison."]  # fmt: skip
        carried = sorted({e["carried_from"] for e in models.values() if "carried_from" in e})
        if carried:
            lines += ["", f"† carried over from the report of {', '.join(carried)}: runs from before per-run records "
                      "were kept (`bench/results/accuracy_runs/`), with the configs of that date"
                      + (" (seen items then excluded only among the last max_len the model reads)" if data in S3REC
                         else "") + "."]  # fmt: skip
        truth = {m: e["true_intents"] for m, e in models.items() if e.get("true_intents")}
        if truth:
            lines += ["", "Intent heads against the generator's true session intents (test targets; mean over seeds). "
                      "Session-start Bayes: the best possible guess from the generator's own probabilities before any "
                      "event of the session is seen; majority: always the most frequent true class.", "",
                      "| model | head | accuracy | session-start Bayes | majority |",
                      "|---|---|---|---|---|"]  # fmt: skip
            for model, per_head in truth.items():
                for head, m in per_head.items():
                    lines.append(f"| {model} | {head} | {m['accuracy']:.4f} | {m['bayes_accuracy']:.4f} | "
                                 f"{m['majority_accuracy']:.4f} |")  # fmt: skip
        heads = {m: e["intents"] for m, e in models.items() if e["intents"]}
        if heads:
            lines += ["", "Intent heads on the test targets (observed next-interaction labels):", ""]
            lines += ["| model | head | metric | value |", "|---|---|---|---|"]
            for model, per_head in heads.items():
                for head, metrics in per_head.items():
                    for metric, value in metrics.items():
                        lines.append(f"| {model} | {head} | {metric} | {value:.4f} |")
    replace_text(RESULTS / "accuracy.md", "\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--data", nargs="*", default=list(DATA_SETS), choices=DATA_SETS)
    parser.add_argument("--models", nargs="*", default=list(MODELS), choices=MODELS)
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=1, help="runs trained at once")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per run (default: cores / jobs)")
    parser.add_argument("--report-only", action="store_true", help="only rebuild the tables from the records")
    parser.add_argument("--rescore-seen", action="store_true",
                        help="re-score the recorded S3-Rec-file runs found in bench/runs with every earlier item "
                             "excluded, then rebuild the tables")  # fmt: skip
    args = parser.parse_args()
    env = dict(os.environ)
    env.setdefault("INTENTREC_SHARED_DATA", str(REPO.parent / "shared" / "data"))
    command = "python bench/accuracy.py " + " ".join(sys.argv[1:])
    if args.rescore_seen:
        rescore_seen(env)
    elif not args.report_only:
        RUNS.mkdir(parents=True, exist_ok=True)
        queue = [(d, m, s) for d in args.data for m in args.models for s in args.seeds]
        threads = args.threads or max(1, (os.cpu_count() or 1) // max(1, args.jobs))
        lock, finished = threading.Lock(), [0]

        def work(task: tuple[str, str, int]) -> None:
            print(f"[{task[0]}/{task[1]}/s{task[2]}] started", flush=True)
            run_one(*task, env, threads)
            with lock:  # one report at a time, rebuilt after every run so that a stopped queue loses nothing
                finished[0] += 1
                print(f"[{finished[0]}/{len(queue)} runs]", flush=True)
                write_report(collect(list(DATA_SETS), list(MODELS), env), command)

        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            list(pool.map(work, queue))
    # Every data set with records goes into the report, not only the ones run by this command.
    write_report(collect(list(DATA_SETS), list(MODELS), env), command)
    print(f"-> {RESULTS / 'accuracy.md'}")


if __name__ == "__main__":
    main()
