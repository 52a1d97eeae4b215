"""A run folder, and everything done with one: train, evaluate, recommend.

::

    RUN_DIR/
      config.toml      the resolved configuration (every key, defaults included)
      data/            the prepared data the model was trained on: id maps, split, intent labels
      world/           the generated synthetic world (when ``data.synthetic`` is set)
      checkpoint.pt    the latest training state, for ``--resume``
      best.pt          the model with the best validation NDCG@10
      metrics.jsonl    one line per epoch
      summary.json     best validation and test metrics, timings, sizes

A run is self-contained: loading it needs neither the configuration file nor the source data.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from intentrec.config import ConfigError, ModelConfig, RunConfig, expand_path, load_config, to_dict, write_config
from intentrec.data.batching import SequenceStore
from intentrec.data.prepare import load_prepared, write_prepared
from intentrec.data.sequences import Prepared, SequenceConfig, build_sequences
from intentrec.eval.evaluate import evaluate
from intentrec.models.base import HeadSpec, ModelOutput, SequentialModel
from intentrec.models.bert4rec import BERT4Rec, BERT4RecConfig
from intentrec.models.gru4rec import GRU4Rec, GRU4RecConfig
from intentrec.models.intentrec import IntentRec, IntentRecConfig
from intentrec.models.popularity import Popularity
from intentrec.models.recent import Recent
from intentrec.models.sasrec import sasrec
from intentrec.train.loop import BEST, load_checkpoint, train

__all__ = ["Run", "UnknownUserError", "build_model", "load_run", "prepare_data", "train_run", "with_deletions"]

CONFIG = "config.toml"
DATA = "data"
SUMMARY = "summary.json"
DELETIONS_VARIABLE = "INTENTREC_DELETIONS"


class UnknownUserError(LookupError):
    """A user id that the run's data does not hold."""


def build_model(config: ModelConfig, store: SequenceStore) -> SequentialModel:
    """The model named by ``config.kind``, sized for the data in ``store``."""
    if config.kind == "popularity":
        return Popularity(store.item_popularity)
    if config.kind == "recent":
        return Recent(store.item_popularity, max_len=config.max_len)
    if config.kind == "sasrec":
        return sasrec(store.n_items, d=config.d, n_blocks=config.n_blocks, n_heads=config.n_heads,
                      dropout=config.dropout, max_len=config.max_len, item_loss=config.item_loss,
                      n_negatives=config.n_negatives, negatives=config.negatives,
                      unseen_negatives=config.unseen_negatives, ffn_mult=config.ffn_mult, init=config.init,
                      repeat=config.repeat, positions=config.positions,
                      input_projection=config.input_projection)  # fmt: skip
    if config.kind == "gru4rec":
        gru = GRU4RecConfig(store.n_items, d=config.d, n_layers=config.n_blocks, dropout=config.dropout,
                            max_len=config.max_len, item_loss=config.item_loss,
                            n_negatives=config.n_negatives, negatives=config.negatives,
                            unseen_negatives=config.unseen_negatives)  # fmt: skip
        return GRU4Rec(gru)
    if config.kind == "bert4rec":
        bert = BERT4RecConfig(store.n_items, d=config.d, n_blocks=config.n_blocks, n_heads=config.n_heads,
                              dropout=config.dropout, max_len=config.max_len, mask_prob=config.mask_prob,
                              mask_last=config.mask_last, init=config.init, ffn_mult=config.ffn_mult)  # fmt: skip
        return BERT4Rec(bert)
    available = {h.name: h for h in store.heads}
    names = list(available) if config.heads is None else list(config.heads)
    unknown = [n for n in names if n not in available]
    if unknown:
        raise ConfigError(f"model.heads: {unknown} not enabled for this data set; enabled: {list(available)}")
    bad_weights = sorted(set(config.head_weights) - set(names))
    if bad_weights:
        raise ConfigError(f"model.head_weights: {bad_weights} are not among the model's heads {names}")
    heads = tuple(HeadSpec(n, len(available[n].classes), available[n].multi_label) for n in names)
    intent = IntentRecConfig(
        n_items=store.n_items,
        heads=heads if config.variant != "V0" else (),
        cardinalities=tuple(store.cardinalities) if config.use_side_features else (),
        variant=config.variant,
        d=config.d,
        n_blocks=config.n_blocks,
        n_heads=config.n_heads,
        ffn_mult=config.ffn_mult,
        init=config.init,
        window_blocks=config.window_blocks,
        dropout=config.dropout,
        max_len=config.max_len,
        intent_lambda=config.intent_lambda,
        head_weights=tuple(sorted(config.head_weights.items())),
        use_genres=config.use_genres and store.item_genres is not None,
        use_time_gaps=config.use_time_gaps,
        item_loss=config.item_loss,
        n_negatives=config.n_negatives,
        negatives=config.negatives,
        unseen_negatives=config.unseen_negatives,
        output_genres=config.output_genres,
        repeat=config.repeat,
        repeat_features=config.repeat_features,
        positions=config.positions,
        input_projection=config.input_projection,
    )
    genres = torch.from_numpy(store.item_genres) if intent.use_genres and store.item_genres is not None else None
    return IntentRec(intent, item_genres=genres)


def prepare_data(config: RunConfig, run_dir: Path) -> Prepared:
    """Read (or generate) the data named by ``config.data`` and write it prepared to ``run_dir/data``."""
    from intentrec.data import read_dataset
    from intentrec.data.synthetic import generate, write

    data = config.data
    if data.synthetic is not None:
        world_dir = run_dir / "world"
        write(generate(data.synthetic), world_dir)
        path, format = world_dir, "synthetic"
    else:
        if not data.path:
            raise ConfigError("data.path is empty: name the data set to read, or set [data.synthetic]")
        path, format = expand_path(data.path), data.format
        if not path.exists():
            raise ConfigError(f"data.path: {path} does not exist")
    dataset = read_dataset(path, format, on_bad_rows=data.on_bad_rows, options=data.reader_options())
    prepared = build_sequences(dataset, with_deletions(data.sequence, [expand_path(p) for p in data.deletions]))
    write_prepared(prepared, dataset, run_dir / DATA, source_format=format)
    return prepared


def with_deletions(sequence: SequenceConfig, ledgers: list[Path]) -> SequenceConfig:
    """``sequence`` with every user deleted through the service (in any of ``ledgers``, and in the
    ledgers named by the environment variable ``INTENTREC_DELETIONS``, separated by ``os.pathsep``)
    added to ``exclude_users``."""
    from intentrec.serve.events import read_deletions

    ledgers = [*ledgers, *(Path(p) for p in os.environ.get(DELETIONS_VARIABLE, "").split(os.pathsep) if p)]
    deleted = [user for ledger in ledgers for user in read_deletions(ledger)]
    if not deleted:
        return sequence
    return replace(sequence, exclude_users=tuple(sorted({*sequence.exclude_users, *deleted})))


def train_run(config: RunConfig, run_dir: Path, *, resume: bool = False) -> dict[str, Any]:
    """Prepare the data, train, evaluate the best model on validation and test; write ``summary.json``."""
    run_dir = Path(run_dir)
    saved = run_dir / CONFIG
    if resume and saved.exists():
        previous = load_config(saved)
        if to_dict(replace(previous, train=replace(previous.train, stop_after_epochs=None))) != to_dict(
            replace(config, train=replace(config.train, stop_after_epochs=None))
        ):
            raise ConfigError(f"{saved}: --resume needs the same configuration the run started with")
    elif (run_dir / BEST).exists() and not resume:
        raise ConfigError(f"{run_dir} already holds a trained run; choose another --out or pass --resume")
    run_dir.mkdir(parents=True, exist_ok=True)
    write_config(config, saved, header=f"resolved configuration of run {config.name or run_dir.name}")
    started = time.perf_counter()
    prepared = load_prepared(run_dir / DATA) if resume and (run_dir / DATA).exists() else prepare_data(config, run_dir)
    prepare_seconds = time.perf_counter() - started
    store = SequenceStore(prepared)
    torch.manual_seed(config.train.seed)
    model = build_model(config.model, store)
    best = train(model, store, config.train, run_dir, resume=resume, exclude_seen=config.eval.exclude_seen)
    run = load_run(run_dir)
    summary = {
        "name": config.name,
        "model": config.model.kind if config.model.kind != "intentrec" else f"intentrec-{config.model.variant}",
        "parameters": sum(p.numel() for p in run.model.parameters()),
        "users": prepared.n_users,
        "items": prepared.n_items,
        "interactions": prepared.interactions.height,
        "best_epoch": best["best_epoch"],
        "prepare_seconds": prepare_seconds,
        "train_seconds": best["train_seconds"],  # every epoch's, a resumed run's earlier ones too
        "valid": run.evaluate("valid"),
        "test": run.evaluate("test"),
    }
    (run_dir / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


@dataclass
class Run:
    """A trained run loaded from its folder."""

    path: Path
    config: RunConfig
    prepared: Prepared
    store: SequenceStore
    model: SequentialModel

    def evaluate(self, split: str = "test", *, exclude_seen: bool | None = None) -> dict[str, Any]:
        if split not in ("valid", "test"):
            raise ValueError(f"split must be valid or test, got {split!r}")
        return evaluate(
            self.model,
            self.store,
            split,  # type: ignore[arg-type]
            batch_size=self.config.train.eval_batch_size,
            exclude_seen=self.config.eval.exclude_seen if exclude_seen is None else exclude_seen,
            k=self.config.eval.k,
        )

    def user_row(self, user: str) -> int:
        users = self.prepared.users["user"]
        found = np.flatnonzero((users == str(user)).to_numpy())
        if not len(found):
            examples = ", ".join(repr(u) for u in users.head(3).to_list())
            raise UnknownUserError(
                f"user {user!r} is not in this run's data ({len(users):,} users, ids such as {examples})"
            )
        return int(found[0])

    def intent_summary(
        self, output: ModelOutput, *, row: int = 0, top: int | None = None
    ) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
        """Row ``row``'s predicted intents at the last position ({head: {class: probability}}, most likely
        first, at most ``top`` classes) and per-head intent weights (empty for models without them)."""
        classes = {h.name: h.classes for h in self.store.heads}
        intents: dict[str, dict[str, float]] = {}
        for head in self.model.heads:
            p = output.intent_logits[head.name][row, -1].softmax(-1).tolist()
            ranked = sorted(zip(classes[head.name], p, strict=True), key=lambda t: -t[1])[:top]
            intents[head.name] = {name: round(prob, 4) for name, prob in ranked}
        weights: dict[str, float] = {}
        if output.intent_weights is not None:
            values = output.intent_weights[row, -1].tolist()
            weights = {h.name: round(w, 4) for h, w in zip(self.model.heads, values, strict=True)}
        return intents, weights

    @torch.no_grad()
    def recommend(self, user: str, k: int = 10, *, exclude_seen: bool | None = None) -> dict[str, Any]:
        """Top-``k`` items after the user's whole history, with the predicted intents and head weights."""
        row = self.user_row(user)
        exclude = self.config.eval.exclude_seen if exclude_seen is None else exclude_seen
        self.model.eval()
        batch = self.store.history(row, self.model.max_len).to(self.model.device)
        output = self.model(batch)
        scores = self.model.next_item_scores(batch, output)[0]  # (I + 1,)
        if exclude:
            seen = self.store.items[self.store.offsets[row] : self.store.offsets[row] + self.store.n[row]]
            scores[torch.from_numpy(seen)] = float("-inf")
        top = scores.topk(min(k, self.store.n_items))
        catalogue = self.prepared.items
        picked = (
            pl.DataFrame({"item_idx": top.indices.cpu().numpy().astype(np.int32), "score": top.values.cpu().numpy()})
            .join(catalogue, on="item_idx", how="left", maintain_order="left")
            .filter(pl.col("score").is_finite())
        )
        columns = [c for c in ("item", "title", "genres", "format") if c in picked.columns]
        items = [{**{c: r[c] for c in columns}, "score": float(r["score"])} for r in picked.iter_rows(named=True)]
        intents, weights = self.intent_summary(output)
        return {
            "user": str(user),
            "history_length": int(self.store.n[row]),
            "items": items,
            "intents": intents,
            "intent_weights": weights,
        }


def load_run(run_dir: Path | str) -> Run:
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG).exists():
        raise FileNotFoundError(f"{run_dir}: not a run folder (no {CONFIG}); create one with `intentrec train`")
    if not (run_dir / BEST).exists():
        raise FileNotFoundError(f"{run_dir}: the run has no trained model yet ({BEST} is missing)")
    config = load_config(run_dir / CONFIG)
    prepared = load_prepared(run_dir / DATA)
    store = SequenceStore(prepared)
    model = build_model(config.model, store)
    model.load_state_dict(load_checkpoint(run_dir / BEST)["model"])
    model.to(torch.device("cuda" if torch.cuda.is_available() else "cpu")).eval()
    return Run(run_dir, config, prepared, store, model)
