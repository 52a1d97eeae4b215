"""Prepared data on disk (Parquet plus a manifest), loading it back, and data-set statistics.

A prepared folder holds ``interactions.parquet``, ``users.parquet`` (the user id map and split),
``items.parquet`` (the item id map and catalogue) and ``manifest.json`` (source files with SHA-256,
counts, configuration, intent heads and vocabularies, skipped records, package version). It is
written to a temporary folder and renamed into place, so a crash never leaves a half-written one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from intentrec import __version__
from intentrec.config import from_dict
from intentrec.data.intents import IntentHead
from intentrec.data.schema import Dataset
from intentrec.data.sequences import Prepared, SequenceConfig, build_sequences

__all__ = [
    "MANIFEST",
    "load_prepared",
    "prepare",
    "sha256_file",
    "stats",
    "write_prepared",
]

MANIFEST = "manifest.json"
PERCENTILES = (0.05, 0.25, 0.5, 0.75, 0.95, 0.99)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def prepare(dataset: Dataset, out: Path, config: SequenceConfig | None = None, *, source_format: str = "") -> Prepared:
    """Build sequences from ``dataset`` and write them to ``out``."""
    prepared = build_sequences(dataset, config)
    write_prepared(prepared, dataset, Path(out), source_format=source_format)
    return prepared


def write_prepared(prepared: Prepared, dataset: Dataset, out: Path, *, source_format: str = "") -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        prepared.interactions.write_parquet(staging / "interactions.parquet")
        prepared.users.write_parquet(staging / "users.parquet")
        prepared.items.write_parquet(staging / "items.parquet")
        manifest = {
            "intentrec_version": __version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "dataset": dataset.name,
            "source": {
                "format": source_format,
                "options": {k: v for k, v in dataset.options.items()},
                "files": [
                    {"path": str(p), "bytes": p.stat().st_size, "sha256": sha256_file(p)} for p in dataset.sources
                ],
            },
            "counts": {
                "users": prepared.n_users,
                "items": prepared.n_items,
                "interactions": prepared.interactions.height,
                "source_interactions": dataset.interactions.height,
            },
            "bad_rows": dataset.bad_rows.to_dict(),
            "config": dataclasses.asdict(prepared.config),
            "has_timestamps": prepared.has_timestamps,
            "heads": [dataclasses.asdict(h) for h in prepared.heads],
            "disabled_heads": prepared.disabled_heads,
            "vocabularies": prepared.vocabularies,
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str) + "\n")
        if out.exists():
            backup = out.with_name(f".{out.name}.old")
            shutil.rmtree(backup, ignore_errors=True)
            out.rename(backup)
            staging.rename(out)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def load_prepared(folder: Path) -> Prepared:
    folder = Path(folder)
    manifest_path = folder / MANIFEST
    if not manifest_path.exists():
        raise FileNotFoundError(f"{folder}: not a prepared data folder (no {MANIFEST}); run `intentrec data prepare`")
    manifest = json.loads(manifest_path.read_text())
    heads = tuple(
        IntentHead(h["name"], tuple(h["classes"]), bool(h["multi_label"]), h.get("source", ""))
        for h in manifest["heads"]
    )
    return Prepared(
        interactions=pl.read_parquet(folder / "interactions.parquet"),
        users=pl.read_parquet(folder / "users.parquet"),
        items=pl.read_parquet(folder / "items.parquet"),
        heads=heads,
        disabled_heads=dict(manifest["disabled_heads"]),
        vocabularies={k: list(v) for k, v in manifest["vocabularies"].items()},
        config=from_dict(SequenceConfig, manifest["config"], prefix="config."),
        has_timestamps=bool(manifest["has_timestamps"]),
    )


def _window_at_test(prepared: Prepared) -> dict[str, Any]:
    """IntentRec V3's short-term window where the test item is predicted (at each user's last history
    interaction): how many interactions it holds, and for what share of users that is the whole history,
    in which case the window encoder sees nothing the main encoder does not."""
    cfg = prepared.config
    rule = f"{cfg.window_hours:g} hours" if prepared.has_timestamps else f"last {cfg.window_items} interactions"
    at_test = prepared.interactions.filter(pl.col("position") == pl.col("position").max().over("user_idx") - 1)
    if at_test.height == 0:
        return {"rule": rule, "users": 0, "median": 0.0, "whole_history": 0.0}
    window = at_test["window_len"].to_numpy()
    return {
        "rule": rule,
        "users": at_test.height,
        "median": float(np.median(window)),
        "whole_history": float((window == at_test["position"].to_numpy() + 1).mean()),
    }


def stats(dataset: Dataset, prepared: Prepared) -> dict[str, Any]:
    """Counts, density, sequence-length percentiles, skipped records, the short-term window at the test
    prediction and intent label distributions."""
    lengths = prepared.users["n"].cast(pl.Float64).to_numpy()
    users, items, n = prepared.n_users, prepared.n_items, prepared.interactions.height
    out: dict[str, Any] = {
        "dataset": dataset.name,
        "users": users,
        "items": items,
        "interactions": n,
        "density": n / (users * items) if users and items else 0.0,
        "sequence_length": {
            "mean": float(lengths.mean()),
            "min": int(lengths.min()),
            **{f"p{round(q * 100)}": float(np.quantile(lengths, q)) for q in PERCENTILES},
            "max": int(lengths.max()),
        },
        "bad_rows": dataset.bad_rows.count,
        "bad_row_examples": dataset.bad_rows.to_dict()["first"],
        "has_timestamps": prepared.has_timestamps,
        "intents": {},
        "disabled_intents": prepared.disabled_heads,
    }
    if prepared.has_timestamps:
        ts = prepared.interactions["timestamp"]
        out["time_range"] = [
            datetime.fromtimestamp(int(ts.min()), timezone.utc).isoformat(),  # type: ignore[arg-type]
            datetime.fromtimestamp(int(ts.max()), timezone.utc).isoformat(),  # type: ignore[arg-type]
        ]
    out["short_term_window"] = _window_at_test(prepared)
    for head in prepared.heads:
        column = prepared.interactions[head.column]
        known = column.drop_nulls()
        counts = (known.explode() if head.multi_label else known).value_counts()
        shares = {head.classes[int(c)]: int(k) / max(known.len(), 1) for c, k in counts.iter_rows()}
        ordered = dict(sorted(shares.items(), key=lambda kv: -kv[1]))
        out["intents"][head.name] = {
            "classes": len(head.classes),
            "multi_label": head.multi_label,
            "source": head.source,
            "unknown": column.null_count(),
            "distribution": {k: round(v, 4) for k, v in ordered.items()},
        }
    return out
