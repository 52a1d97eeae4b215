"""The command line: ``intentrec <command>``. Run ``intentrec --help`` for the list."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from intentrec import __version__

__all__ = ["main"]

log = logging.getLogger("intentrec")


class UsageError(Exception):
    """A mistake in the command line, reported without a traceback."""


def _mapping(pairs: Sequence[str] | None, flag: str) -> dict[str, str]:
    out = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key or not value:
            raise UsageError(f"{flag} expects NAME=SOURCE_COLUMN, got {pair!r}")
        out[key.strip()] = value.strip()
    return out


def _reader_options(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if args.column:
        options["columns"] = _mapping(args.column, "--column")
    if args.items:
        options["items"] = Path(args.items)
    if args.item_column:
        options["item_columns"] = _mapping(args.item_column, "--item-column")
    if args.format == "csv":
        if args.separator:
            options["separator"] = "\t" if args.separator == "\\t" else args.separator
        if args.timestamp_format:
            options["timestamp_format"] = args.timestamp_format
    elif args.separator or args.timestamp_format:
        raise UsageError("--separator and --timestamp-format apply to --format csv only")
    if options and args.format not in ("csv", "parquet"):
        raise UsageError(f"--column/--items/--item-column apply to csv and parquet, not {args.format}")
    return options


def _sequence_config(args: argparse.Namespace) -> Any:
    from intentrec.data.intents import IntentConfig
    from intentrec.data.sequences import SequenceConfig

    intents = IntentConfig(
        action_source=args.action_source,
        genre_top_n=args.genre_top_n,
        new_days=args.new_days,
        recent_days=args.recent_days,
    )
    from intentrec.runs import with_deletions

    sequence = SequenceConfig(
        split=args.split,
        min_user_interactions=args.min_user_interactions,
        min_item_interactions=args.min_item_interactions,
        window_hours=args.window_hours,
        window_items=args.window_items,
        intents=intents,
    )
    return with_deletions(sequence, [Path(p) for p in args.deletions or ()])


def _load(args: argparse.Namespace) -> tuple[Any, Any]:
    from intentrec.data import read_dataset
    from intentrec.data.sequences import build_sequences

    dataset = read_dataset(args.path, args.format, on_bad_rows=args.on_bad_rows, options=_reader_options(args))
    return dataset, build_sequences(dataset, _sequence_config(args))


def _print_stats(summary: dict[str, Any]) -> None:
    lines = [
        f"data set       {summary['dataset']}",
        f"users          {summary['users']:,}",
        f"items          {summary['items']:,}",
        f"interactions   {summary['interactions']:,}",
        f"density        {summary['density']:.6f}",
        "sequence length " + "  ".join(f"{k} {v:g}" for k, v in summary["sequence_length"].items()),
        f"bad rows       {summary['bad_rows']}",
    ]
    for example in summary["bad_row_examples"]:
        lines.append(f"  {example['file']}:{example['line']}: {example['reason']}")
    if "time_range" in summary:
        lines.append(f"time range     {summary['time_range'][0]} .. {summary['time_range'][1]}")
    window = summary["short_term_window"]
    lines.append(
        f"short-term window  {window['rule']}; where the test item is predicted it holds {window['median']:g} "
        f"interactions (median) and the whole history for {window['whole_history']:.1%} of users"
    )
    for name, head in summary["intents"].items():
        top = ", ".join(f"{k} {v:.1%}" for k, v in list(head["distribution"].items())[:6])
        more = " ..." if len(head["distribution"]) > 6 else ""
        lines.append(f"intent {name:<8}{head['classes']} classes ({head['source']}): {top}{more}")
    for name, reason in summary["disabled_intents"].items():
        lines.append(f"intent {name:<8}disabled: {reason}")
    print("\n".join(lines))


def cmd_data_stats(args: argparse.Namespace) -> int:
    from intentrec.data.prepare import stats

    dataset, prepared = _load(args)
    summary = stats(dataset, prepared)
    if args.json:
        print(json.dumps(summary, default=str))
    else:
        _print_stats(summary)
    return 0


def cmd_data_prepare(args: argparse.Namespace) -> int:
    from intentrec.data.prepare import write_prepared

    started = time.perf_counter()
    dataset, prepared = _load(args)
    write_prepared(prepared, dataset, Path(args.out), source_format=args.format)
    print(
        f"prepared {prepared.n_users:,} users, {prepared.n_items:,} items, "
        f"{prepared.interactions.height:,} interactions ({dataset.bad_rows.count} bad rows skipped) "
        f"in {time.perf_counter() - started:.1f} s -> {args.out}"
    )
    return 0


def cmd_data_synth(args: argparse.Namespace) -> int:
    from intentrec.data.synthetic import WorldConfig, generate, write

    started = time.perf_counter()
    world = generate(WorldConfig(users=args.users, seed=args.seed, days=args.days))
    write(world, Path(args.out))
    print(
        f"synthetic world: {world.users.height:,} users, {world.items.height:,} items, "
        f"{world.interactions.height:,} events, {world.sessions.height:,} sessions "
        f"in {time.perf_counter() - started:.1f} s -> {args.out}"
    )
    return 0


def _threads(args: argparse.Namespace, quiet: bool = False) -> None:
    """Give torch the free cores (intentrec.train.threads), or what --threads asks for."""
    from intentrec.train.threads import apply_threads

    choice = apply_threads(args.threads)
    if not quiet:
        print(f"torch threads: {choice.threads} ({choice.reason})", flush=True)


def cmd_quickstart(args: argparse.Namespace) -> int:
    """Generate the synthetic world, train IntentRec and SASRec on it, compare them, write a report."""
    from intentrec.quickstart import quickstart

    _threads(args)
    quickstart(
        Path(args.out), users=args.users, seed=args.seed, epochs=args.epochs, echo=lambda s: print(s, flush=True)
    )
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from intentrec.config import load_config
    from intentrec.runs import train_run

    config = load_config(Path(args.config) if args.config else None, args.set or ())
    _threads(args)
    summary = train_run(config, Path(args.out), resume=args.resume)
    print(f"trained {summary['model']} ({summary['parameters']:,} parameters) in {summary['train_seconds']:.1f} s, "
          f"best epoch {summary['best_epoch'] + 1} -> {args.out}")  # fmt: skip
    _print_metrics({"valid": summary["valid"], "test": summary["test"]})
    return 0


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _print_metrics(by_split: dict[str, dict[str, Any]]) -> None:
    """One column per split (or slice): ranking metrics, beyond-accuracy metrics, then intent heads."""
    names = list(by_split)
    first = by_split[names[0]]
    keys = [k for k, v in first.items() if isinstance(v, int | float) and k != "targets"]
    rows = [("targets", [_fmt(by_split[n]["targets"]) for n in names])]
    rows += [(k, [_fmt(by_split[n].get(k, "")) for n in names]) for k in keys]
    for head, values in first.get("intents", {}).items():
        for metric in values:
            if metric != "targets":
                cells = [_fmt(by_split[n]["intents"].get(head, {}).get(metric, "")) for n in names]
                rows.append((f"intent {head} {metric}", cells))
    width = max(len(r[0]) for r in rows)
    print(" " * width + "".join(f"{n:>12}" for n in names))
    for label, cells in rows:
        print(f"{label:<{width}}" + "".join(f"{c:>12}" for c in cells))


def cmd_evaluate(args: argparse.Namespace) -> int:
    from intentrec.runs import load_run

    _threads(args, quiet=args.json)
    run = load_run(Path(args.run_dir))
    # --exclude-seen / --keep-seen override the run's eval.exclude_seen; neither: the run's own protocol
    exclude = True if args.exclude_seen else False if args.keep_seen else None
    result = run.evaluate(args.split, exclude_seen=exclude)
    if args.json:
        print(json.dumps(result))
        return 0
    excluded = run.config.eval.exclude_seen if exclude is None else exclude
    print(f"{args.run_dir}: {args.split} split, full ranking over {run.store.n_items:,} items, "
          f"seen items {'excluded' if excluded else 'kept'}")  # fmt: skip
    _print_metrics({"all": result, **result["by_activity"], **result["by_item_popularity"]})
    cuts = ", ".join(f"{k} {v}" for k, v in result["activity_cuts"].items())
    print(f"activity slices by the user's training interactions: {cuts}")
    cuts = ", ".join(f"{k} {v}" for k, v in result["item_popularity_cuts"].items())
    print(f"popularity slices by the true item's training interactions: {cuts}")
    return 0


def cmd_recommend(args: argparse.Namespace) -> int:
    from intentrec.runs import load_run

    run = load_run(Path(args.run_dir))
    if args.k < 1 or args.k > 1000:
        raise UsageError(f"--k must be between 1 and 1000, got {args.k}")
    exclude = {"yes": True, "no": False, None: None}[args.exclude_seen]
    result = run.recommend(args.user, args.k, exclude_seen=exclude)
    if args.json:
        print(json.dumps(result, default=str))
        return 0
    print(f"user {result['user']} ({result['history_length']} interactions)")
    for name, probs in result["intents"].items():
        top = ", ".join(f"{c} {p:.2f}" for c, p in list(probs.items())[:3])
        weight = result["intent_weights"].get(name)
        print(f"  intent {name:<8} {top}" + (f"   (weight {weight:.2f})" if weight is not None else ""))
    for rank, item in enumerate(result["items"], 1):
        title = f"  {item['title']}" if item.get("title") else ""
        print(f"{rank:>4}. {item['item']:<10} {item['score']:>9.3f}{title}")
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    from intentrec.analyze import analyze
    from intentrec.runs import load_run

    if args.k < 2:
        raise UsageError(f"--k must be at least 2, got {args.k}")
    result = analyze(
        load_run(Path(args.run_dir)), Path(args.out), k=args.k, seed=args.seed, features=args.features, span=args.span
    )
    print(f"{result['users']:,} users in {len(result['segments'])} segments -> {args.out}/report.md")
    for segment in sorted(result["segments"], key=lambda s: -s["size"]):
        print(f"  {segment['size']:>6,}  {segment['description']}")
    if "archetypes" in result:
        a, n = result["archetypes"], result["archetypes"]["archetypes"]
        print(
            f"adjusted Rand index against the {n} planted archetypes: {a['adjusted_rand_index']:.3f} "
            f"(at K={n}: {a['by_features'][args.features][f'k={n}']:.3f})"
        )
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from intentrec.analyze import explain
    from intentrec.runs import load_run

    result = explain(load_run(Path(args.run_dir)), args.user, recent=args.recent)
    if args.json:
        print(json.dumps(result, default=str))
        return 0
    print(f"user {result['user']} ({result['history_length']} interactions)")
    if result["driver"]:
        print(f"{result['driver']} drives this user: {result['intent_weights'][result['driver']]:.2f}")
        print("head weights: " + ", ".join(f"{k} {v:.2f}" for k, v in result["intent_weights"].items()))
    for name, probs in result["intents"].items():
        print(f"  next {name:<8} " + ", ".join(f"{c} {p:.2f}" for c, p in list(probs.items())[:3]))
    print("recent events that moved the predicted intents most (occlusion):")
    for event in result["recent_events"][:5]:
        what = event.get("title") or event.get("item")
        moved = ", ".join(f"{k} {v:.2f}" for k, v in event["influence"].items())
        print(f"  {event['events_ago']:>2} events ago  {what}  ({moved})")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import dataclasses
    import json
    import os
    import shutil
    import tempfile

    import torch
    import uvicorn

    from intentrec.serve.app import ADMIN_TOKEN_VARIABLE, MULTIPROCESS_VARIABLE, SERVE_VARIABLE, create_app
    from intentrec.serve.engine import ServeSettings
    from intentrec.serve.workers import reuse_port_supported, serve_workers

    if not Path(args.run_dir).is_dir():
        raise UsageError(f"{args.run_dir}: no such run folder")
    if not 0 <= args.exploration <= 0.5:
        raise UsageError(f"--exploration must be between 0 and 0.5, got {args.exploration}")
    if not 0 <= args.diversity <= 1:
        raise UsageError(f"--diversity must be between 0 and 1, got {args.diversity}")
    if args.workers < 1:
        raise UsageError(f"--workers must be at least 1, got {args.workers}")
    if args.cache_mb < 0:
        raise UsageError(f"--cache-mb must be 0 or more, got {args.cache_mb}")
    settings = ServeSettings(
        exploration=args.exploration,
        diversity=args.diversity,
        model_timeout_ms=args.timeout_ms,
        exclude_seen=not args.keep_seen,
        seed=args.seed,
        cache_mb=args.cache_mb,
        prefetch=not args.no_prefetch,
    )
    admin = "enabled" if os.environ.get(ADMIN_TOKEN_VARIABLE) else f"disabled (set {ADMIN_TOKEN_VARIABLE})"
    where = f"http://{args.host}:{args.port}; events and deletions in {args.db}; admin endpoints {admin}"
    if args.workers > 1:  # N processes, each builds its app from the environment (intentrec.serve.workers)
        metrics_dir = tempfile.mkdtemp(prefix="intentrec-metrics-")
        os.environ[MULTIPROCESS_VARIABLE] = metrics_dir
        os.environ[SERVE_VARIABLE] = json.dumps({
            "run_dir": str(Path(args.run_dir).resolve()),
            "db": str(Path(args.db).resolve()),
            "settings": dataclasses.asdict(settings),
            "max_inflight": -(-args.max_inflight // args.workers),  # the bound is shared out
            "threads": args.threads,
        })  # fmt: skip
        print(f"serving {args.run_dir} with {args.workers} worker processes on {where}", flush=True)
        try:
            if reuse_port_supported():
                return serve_workers(args.workers, args.host, args.port, args.log_level)
            uvicorn.run("intentrec.serve.app:app_from_environment", factory=True, workers=args.workers,
                        host=args.host, port=args.port, log_level=args.log_level, access_log=False)  # fmt: skip
        finally:
            shutil.rmtree(metrics_dir, ignore_errors=True)
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    app = create_app(args.run_dir, db=args.db, settings=settings, max_inflight=args.max_inflight)
    engine = app.state.engine
    print(f"serving {engine.current.id} ({engine.current.kind}, {engine.current.catalogue.n_items:,} items) on {where}",
          flush=True)  # fmt: skip
    if engine.current.error:
        print(f"warning: model not loaded, answering from the fallback: {engine.current.error}", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False)
    return 0


THREADS_HELP = "torch threads (default 0: the cores not busy with other work at start, or OMP_NUM_THREADS where set)"


def _add_reader_flags(p: argparse.ArgumentParser) -> None:
    from intentrec.data import FORMATS

    p.add_argument("path", help="data folder (movielens, recbole, synthetic) or file (s3rec, taobao, csv, parquet)")
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument(
        "--on-bad-rows",
        choices=("error", "skip"),
        default="error",
        help="stop at the first bad record, or skip and report",
    )
    p.add_argument(
        "--column",
        action="append",
        metavar="NAME=SOURCE",
        help="csv/parquet: map a canonical column to a source column",
    )
    p.add_argument("--items", help="csv/parquet: an item catalogue file")
    p.add_argument("--item-column", action="append", metavar="NAME=SOURCE", help="csv/parquet: map a catalogue column")
    p.add_argument("--separator", help="csv: field separator (default ','; '\\t' for tab)")
    p.add_argument("--timestamp-format", help="csv: strftime format of date-time timestamps")
    p.add_argument("--split", choices=("leave_one_out", "temporal"), default="leave_one_out")
    p.add_argument(
        "--min-user-interactions", type=int, default=0, help="k-core: users need at least this many (0: off)"
    )
    p.add_argument(
        "--min-item-interactions", type=int, default=0, help="k-core: items need at least this many (0: off)"
    )
    p.add_argument("--window-hours", type=float, default=168.0, help="short-term window H (default one week)")
    p.add_argument("--window-items", type=int, default=10, help="short-term window w without timestamps")
    p.add_argument("--action-source", choices=("auto", "event", "derived"), default="auto")
    p.add_argument("--genre-top-n", type=int, default=30)
    p.add_argument("--new-days", type=int, default=7)
    p.add_argument("--recent-days", type=int, default=30)
    p.add_argument(
        "--deletions",
        action="append",
        metavar="DB",
        help="leave out users deleted through the service (its --db file; also $INTENTREC_DELETIONS)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="intentrec", description="Intent-aware sequential recommendation.")
    parser.add_argument("--version", action="version", version=f"intentrec {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress and decisions")
    commands = parser.add_subparsers(dest="command", required=True)

    data = commands.add_parser("data", help="read, check, describe and prepare data sets")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    p = data_commands.add_parser("stats", help="counts, lengths, bad rows and intent label distributions")
    _add_reader_flags(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_data_stats)
    p = data_commands.add_parser("prepare", help="write Parquet sequences and a manifest for training")
    _add_reader_flags(p)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_data_prepare)
    p = data_commands.add_parser("synth", help="generate the synthetic streaming world")
    p.add_argument("--out", required=True)
    p.add_argument("--users", type=int, default=3000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--days", type=int, default=180)
    p.set_defaults(func=cmd_data_synth)

    p = commands.add_parser("train", help="train a model from a TOML configuration into a run folder")
    p.add_argument("--config", help="TOML run configuration (see configs/); defaults apply to keys it leaves out")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a key, e.g. model.d=128")
    p.add_argument("--out", required=True, help="run folder to create")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from its checkpoint")
    p.add_argument("--threads", type=int, default=0, help=THREADS_HELP)
    p.set_defaults(func=cmd_train)

    p = commands.add_parser("evaluate", help="full-ranking metrics of a trained run")
    p.add_argument("run_dir")
    p.add_argument("--split", choices=("valid", "test"), default="test")
    seen = p.add_mutually_exclusive_group()
    seen.add_argument("--exclude-seen", action="store_true", help="never rank items the user has already seen")
    seen.add_argument("--keep-seen", action="store_true", help="rank every item, even where the run's config "
                      "excludes seen ones (eval.exclude_seen)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--threads", type=int, default=0, help=THREADS_HELP)
    p.set_defaults(func=cmd_evaluate)

    p = commands.add_parser("recommend", help="top items, predicted intents and head weights for one user")
    p.add_argument("run_dir")
    p.add_argument("--user", required=True)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--exclude-seen", choices=("yes", "no"), help="default: the run's eval.exclude_seen")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_recommend)

    p = commands.add_parser("analyze", help="user segments from intent embeddings, with a report")
    p.add_argument("run_dir")
    p.add_argument("--out", required=True)
    p.add_argument("--k", type=int, default=10, help="number of segments (k-means++)")
    p.add_argument(
        "--features",
        choices=("profile", "embedding"),
        default="profile",
        help="cluster on the intent profile (predicted intents, genre concentration, head weights, activity) "
        "or on the raw intent embedding",
    )
    p.add_argument(
        "--span",
        choices=("history", "latest"),
        default="history",
        help="average the model's intents over every position of a user's history, or over the latest "
        "max_len interactions only",
    )
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_analyze)

    p = commands.add_parser("explain", help="one user's predicted intents, head weights and what drove them")
    p.add_argument("run_dir")
    p.add_argument("--user", required=True)
    p.add_argument("--recent", type=int, default=10, help="recent events to test by occlusion")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_explain)

    p = commands.add_parser("serve", help="the HTTP recommendation service for a trained run")
    p.add_argument("run_dir")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--db", default="intentrec.db", help="SQLite event store and deletion ledger (WAL mode)")
    p.add_argument("--exploration", type=float, default=0.05, help="share of home-page slots explored")
    p.add_argument("--diversity", type=float, default=0.0, help="genre MMR weight on the home page (0 off)")
    p.add_argument("--timeout-ms", type=float, default=150.0, help="model time budget before the fallback answers")
    p.add_argument("--max-inflight", type=int, default=64, help="concurrent requests before 503 + Retry-After")
    p.add_argument("--keep-seen", action="store_true", help="let discovery rows show items the user has seen")
    p.add_argument("--seed", type=int, help="exploration random seed")
    p.add_argument(
        "--cache-mb",
        type=float,
        default=64.0,
        help="memory for recent inferences, reused while a user's history and the model are unchanged (0 off)",
    )
    p.add_argument(
        "--no-prefetch",
        action="store_true",
        help="do not start a user's forward pass when their events arrive (by default it runs in spare capacity)",
    )
    p.add_argument("--threads", type=int, default=0, help="torch threads per process (default: torch's choice)")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="service processes behind the port (one per core is fastest; each loads the model; they share "
        "the store, deletions, model reloads and metrics)",
    )
    p.add_argument("--log-level", default="warning", choices=("debug", "info", "warning", "error"))
    p.set_defaults(func=cmd_serve)

    p = commands.add_parser("quickstart", help="the main job on the built-in synthetic data")
    p.add_argument("--out", default="runs/quickstart")
    p.add_argument("--users", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=16, help="at most this many epochs per model (early stopping)")
    p.add_argument("--threads", type=int, default=0, help=THREADS_HELP)
    p.set_defaults(func=cmd_quickstart)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from intentrec.data.textio import DataFormatError
    from intentrec.runs import UnknownUserError

    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.func(args))
    except (DataFormatError, UsageError, ValueError, FileNotFoundError, UnknownUserError) as exc:
        print(f"intentrec: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
