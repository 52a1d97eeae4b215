"""The recommendation engine behind the service: one model, every surface, and a fallback.

`ModelVersion` is one loaded run: its model (or the reason it could not be loaded), catalogue,
training popularity and live-feature builder. `Engine` holds the current version and the one before
it (for rollback), the event store, and the micro-batcher that runs the model for all concurrent
requests in one forward pass. From one model output per user it builds:

* the home page: rows explained by design ("Continue watching", "Because you watched X", "Top picks
  for you", one row per top predicted genre, "New releases for you"), no item twice, an optional
  diversity re-rank (maximal marginal relevance over genres) and an exploration share of slots, each
  slot carrying the probability with which the policy put that item there;
* "up next", and the predicted intents with their head weights.

When the model is missing, fails, exceeds its time budget or the user has no history at all, every
surface answers from popularity (global and per genre) and says ``source: fallback`` and why.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from intentrec.data.batching import SequenceStore
from intentrec.data.intents import DAY
from intentrec.data.prepare import load_prepared, sha256_file
from intentrec.models.intentrec import IntentRec
from intentrec.runs import DATA, Run, load_run
from intentrec.serve.events import EventStore
from intentrec.serve.live import Catalogue, History, LiveFeatures, batch_of_histories
from intentrec.train.loop import BEST

__all__ = ["Engine", "FallbackReason", "Inference", "ModelVersion", "ServeSettings"]

log = logging.getLogger(__name__)

FallbackReason = str  # cold_start | model_unavailable | model_error | model_timeout
NEIGHBOURS = 200  # candidates of a "Because you watched" row: nearest items by embedding cosine
GENRE_ROWS = 3  # at most this many "<genre> for you" rows
NOT_A_GENRE = ("other", "unknown")  # buckets that make no row: "other" is ours, "unknown" is MovieLens's
SERVING = "serving"  # the store's setting that names the version every process of the service serves
# A candidate row: id, title, reason, and its items in row order (computed only if the row is shown)
Row = tuple[str, str, str, Callable[[int], list[int]]]  # ... and a function of how many items are needed


def settle_memory() -> None:
    """Move every object alive now (the loaded models, catalogues, the app) out of the cycle collector's
    reach. A full collection otherwise walks them all, some 200,000 objects and over 100 ms on this
    2-core machine, a pause every request in flight waits out (the P99). Called once serving starts and
    after a model version loads (unfreezing first, so that a dropped version can be collected)."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


@dataclass(frozen=True)
class ServeSettings:
    exploration: float = 0.05  # share of home-page slots filled by the exploration policy
    diversity: float = 0.0  # maximal-marginal-relevance weight on genre overlap (0 = off, 1 = only diversity)
    model_timeout_ms: float = 150.0  # time budget of one inference; past it the request gets the fallback
    max_batch: int = 64  # requests per forward pass
    exclude_seen: bool = True  # discovery rows and up next leave out items the user has interacted with
    intent_threshold: float = 0.25  # probability that opens an intent-driven row that is not the top intent
    seed: int | None = None  # exploration random seed (None: fresh entropy)
    cache_mb: float = 64.0  # memory for recent inferences (`InferenceCache`); 0 turns the cache off
    prefetch: bool = True  # posted events start the user's forward pass (`Engine.prefetch`; needs the cache)


@dataclass
class Inference:
    scores: np.ndarray  # (I + 1,) model scores, index 0 = -inf
    intents: dict[str, dict[str, float]]  # head -> class -> probability, most likely first
    weights: dict[str, float]  # head -> intent weight
    _order: np.ndarray | None = field(default=None, repr=False)

    def order(self) -> np.ndarray:
        """Item ids by descending score, padding left out (sorted once, then reused)."""
        if self._order is None:
            order = np.argsort(-self.scores, kind="stable")
            self._order = order[order != 0]
        return self._order


Key = tuple[str, str, bytes]  # model version, user, digest of the model input (`InferenceCache.key`)


class InferenceCache:
    """Recent inferences, least recently used out first, bounded in bytes. The key is the model version,
    the user and a digest of the exact model input (the history's latest ``max_len`` interactions and
    their features), so a hit is what the model would compute now: a new event, a deletion or another
    model version is a different key. A deleted user's entries are dropped at once (`forget`). Used
    from the event loop's thread only."""

    OVERHEAD = 2048  # bytes per entry besides the scores: intents, weights, key

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.entries: OrderedDict[Key, Inference] = OrderedDict()
        self.bytes = 0
        self.hits = self.misses = 0

    @staticmethod
    def key(version: str, user: str, history: History, max_len: int) -> Key:
        digest = hashlib.blake2b(digest_size=16)
        for part in (history.items, history.categorical, history.gaps, history.window):
            digest.update(np.ascontiguousarray(part[-max_len:]).tobytes())
        return version, user, digest.digest()

    def get(self, key: Key) -> Inference | None:
        found = self.entries.get(key)
        if found is None:
            self.misses += 1
            return None
        self.hits += 1
        self.entries.move_to_end(key)
        return found

    def put(self, key: Key, inference: Inference) -> None:
        size = inference.scores.nbytes + self.OVERHEAD
        if size > self.max_bytes or key in self.entries:
            return
        self.entries[key] = inference
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, dropped = self.entries.popitem(last=False)
            self.bytes -= dropped.scores.nbytes + self.OVERHEAD

    def forget(self, user: str) -> None:
        for key in [k for k in self.entries if k[1] == user]:
            self.bytes -= self.entries.pop(key).scores.nbytes + self.OVERHEAD


class ModelVersion:
    """One run loaded for serving. The catalogue and popularity come from its prepared data, so the
    fallback works even when the model itself cannot be loaded."""

    def __init__(self, run_dir: Path | str) -> None:
        self.run_dir = Path(run_dir).resolve()
        self.loaded_at = time.time()
        self.run: Run | None = None
        self.error: str | None = None
        try:
            self.run = load_run(self.run_dir)
            prepared, store = self.run.prepared, self.run.store
        except Exception as exc:  # a missing or broken model leaves the fallback serving
            self.error = f"{type(exc).__name__}: {exc}"
            log.error("model of %s not loaded: %s", self.run_dir, self.error)
            prepared = load_prepared(self.run_dir / DATA)
            store = SequenceStore(prepared)
        self.prepared, self.store = prepared, store
        digest = sha256_file(self.run_dir / BEST)[:12] if (self.run_dir / BEST).exists() else "no-model"
        self.id = f"{self.run_dir.name}@{digest}"
        self.kind = "none" if self.run is None else self.run.config.model.kind
        self.catalogue = Catalogue(prepared, store.item_popularity, store.item_genres)
        self.live = LiveFeatures(prepared, store, self.catalogue)
        self.user_rows = {u: i for i, u in enumerate(prepared.users["user"].to_list())}
        self.genre_classes = store.genre_classes
        self._with_genre: dict[int, np.ndarray] = {}
        self._sharing: dict[bytes, np.ndarray] = {}  # an item's genre row -> items sharing one of its genres
        self.item_genres = torch.from_numpy(store.item_genres) if store.item_genres is not None else None
        self.clock = int(prepared.interactions["timestamp"].max()) if prepared.has_timestamps else None  # type: ignore[arg-type]
        popularity = self.catalogue.popularity.copy()
        popularity[0] = -1
        self.by_popularity = np.argsort(-popularity, kind="stable")[: self.catalogue.n_items]  # ids, no padding
        self.popular = self.by_popularity[self.catalogue.popularity[self.by_popularity] > 0]  # with interactions
        # each item's unit of genre mass spread evenly over its genres (I + 1, G), for a page's genre entropy
        self.genre_mass: np.ndarray | None = None
        if store.item_genres is not None:
            hot = store.item_genres.astype(np.float64)
            self.genre_mass = hot / np.maximum(hot.sum(-1, keepdims=True), 1.0)
        self.neighbours: torch.Tensor | None = None
        table = getattr(self.run.model, "item_embeddings", None) if self.run is not None else None
        if isinstance(table, torch.Tensor):
            unit = torch.nn.functional.normalize(table.detach()[: self.catalogue.n_items + 1].float().cpu(), dim=-1)
            self.neighbours = unit

    def with_genre(self, genre: int) -> np.ndarray:
        """Items (ids) with genre class ``genre`` (computed once per genre)."""
        assert self.item_genres is not None
        if genre not in self._with_genre:
            self._with_genre[genre] = np.flatnonzero(self.item_genres[:, genre].numpy() > 0)
        return self._with_genre[genre]

    def sharing_a_genre(self, item: int) -> np.ndarray:
        """Items (ids) with at least one genre in common with ``item`` (computed once per genre set)."""
        if self.item_genres is None:
            return np.zeros(0, dtype=np.int64)
        key = self.item_genres[item].numpy().tobytes()
        if key not in self._sharing:
            self._sharing[key] = np.flatnonzero((self.item_genres @ self.item_genres[item]).numpy() > 0)
        return self._sharing[key]

    @property
    def model_loaded(self) -> bool:
        return self.run is not None

    def describe(self) -> dict[str, Any]:
        return {
            "version": self.id,
            "run_dir": str(self.run_dir),
            "model": self.kind,
            "loaded_at": self.loaded_at,
            "model_loaded": self.model_loaded,
            "error": self.error,
            "items": self.catalogue.n_items,
            "users": len(self.user_rows),
        }

    @torch.inference_mode()
    def infer(self, histories: Sequence[History]) -> list[Inference]:
        """One forward pass for every history (each with at least one interaction)."""
        if self.run is None:
            raise RuntimeError(f"no model loaded: {self.error}")
        run, model = self.run, self.run.model
        batch = batch_of_histories(histories, model.max_len).to(model.device)
        output = model(batch, last_only=True) if isinstance(model, IntentRec) else model(batch)
        scores = model.next_item_scores(batch, output).float().cpu().numpy()
        out = []
        for row in range(len(histories)):
            intents, weights = run.intent_summary(output, row=row)
            out.append(Inference(scores[row], intents, weights))
        return out


class Ranking:
    """The catalogue sorted by score once per request; each row filters that order with masks instead
    of sorting again. Padding (id 0) and ``exclude`` are left out unless a row asks to keep seen items."""

    def __init__(self, scores: np.ndarray, exclude: set[int], order: np.ndarray | None = None) -> None:
        if order is None:  # ``order``: the ids by descending score without padding, when already known
            order = np.argsort(-scores, kind="stable")
            order = order[order != 0]
        self.order = order
        blocked = np.zeros(len(scores), dtype=bool)
        if exclude:
            blocked[np.fromiter(exclude, dtype=np.int64)] = True
        self.allowed = ~blocked[self.order]  # in score order
        self.size = len(scores)

    def items(self, among: np.ndarray | None, keep_seen: bool, limit: int | None = None) -> list[int]:
        """Item ids by descending score: all, or those in ``among``; the first ``limit`` of them."""
        keep = np.ones(len(self.order), dtype=bool) if keep_seen else self.allowed
        if among is not None:
            member = np.zeros(self.size, dtype=bool)
            member[among] = True
            keep = keep & member[self.order]
        chosen = self.order[keep]
        return (chosen if limit is None else chosen[:limit]).tolist()


@dataclass
class Pending:
    version: ModelVersion
    history: History
    future: asyncio.Future[Inference]
    background: bool  # a prefetch: runs only in the room requests leave (`Batcher.background_room`)


class Batcher:
    """Runs the model once for every request waiting when the previous forward pass ends (no added
    wait when idle; larger batches under load), on one worker thread so the event loop stays free.
    Background work (prefetches) fills a pass only up to ``background_room`` histories, after every
    waiting request, so it never makes a request wait behind it; a request that needs a queued
    prefetch's result promotes it."""

    def __init__(self, max_batch: int, background_room: int = 8) -> None:
        self.max_batch, self.background_room = max_batch, background_room
        self.pending: list[Pending] = []
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="intentrec-model")
        self.wakeup: asyncio.Event | None = None
        self.task: asyncio.Task[None] | None = None
        self.on_batch: Callable[[int, float], None] | None = None

    def start(self) -> None:
        if self.task is None:
            self.wakeup = asyncio.Event()
            self.task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None
        self.executor.shutdown(wait=False, cancel_futures=True)

    def submit(self, version: ModelVersion, history: History, background: bool = False) -> asyncio.Future[Inference]:
        self.start()
        assert self.wakeup is not None
        future: asyncio.Future[Inference] = asyncio.get_running_loop().create_future()
        self.pending.append(Pending(version, history, future, background))
        self.wakeup.set()
        return future

    def background_queued(self) -> int:
        return sum(p.background for p in self.pending)

    def promote(self, future: asyncio.Future[Inference]) -> None:
        """A request waits on ``future``: if it is queued as background work, it is a request now."""
        for p in self.pending:
            if p.future is future:
                p.background = False

    def _next_chunk(self) -> list[Pending]:
        live = [p for p in self.pending if not p.future.done()]  # drop requests that timed out
        requests = [p for p in live if not p.background]
        chunk = requests[: self.max_batch]
        room = self.background_room - len(chunk)
        if room > 0:
            chunk += [p for p in live if p.background][:room]
        version = chunk[0].version if chunk else None
        chunk = [p for p in chunk if p.version is version]  # a reload mid-flight: one version per pass
        taken = {id(p) for p in chunk}
        self.pending = [p for p in live if id(p) not in taken]
        return chunk

    async def _loop(self) -> None:
        assert self.wakeup is not None
        loop = asyncio.get_running_loop()
        while True:
            await self.wakeup.wait()
            self.wakeup.clear()
            while chunk := self._next_chunk():
                version = chunk[0].version
                started = time.perf_counter()
                try:
                    results = await loop.run_in_executor(self.executor, version.infer, [p.history for p in chunk])
                except Exception as exc:
                    if len(chunk) == 1:
                        self._settle(chunk[0].future, exc)
                    else:  # one bad history must not fail the others: run them one by one
                        for p in chunk:
                            try:
                                one = await loop.run_in_executor(self.executor, version.infer, [p.history])
                                self._settle(p.future, one[0])
                            except Exception as single:
                                self._settle(p.future, single)
                    continue
                if self.on_batch is not None:
                    self.on_batch(len(chunk), time.perf_counter() - started)
                for p, result in zip(chunk, results, strict=True):
                    self._settle(p.future, result)

    @staticmethod
    def _settle(future: asyncio.Future[Inference], outcome: Inference | BaseException) -> None:
        if future.done():  # the request stopped waiting (time budget)
            return
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)


@dataclass
class Answer:
    """What a surface needs from the model for one user, or why it falls back."""

    version: ModelVersion
    history: History
    inference: Inference | None
    fallback: FallbackReason | None = None
    detail: str | None = None
    seen: set[int] = field(default_factory=set)
    cached: bool = False  # the inference came from the cache


class Engine:
    def __init__(self, run_dir: Path | str, events: EventStore, settings: ServeSettings | None = None) -> None:
        self.settings = settings or ServeSettings()
        self.events = events
        self.current = ModelVersion(run_dir)
        self.previous: ModelVersion | None = None
        self.deleted: set[str] = set()
        self.cache = InferenceCache(int(self.settings.cache_mb * 2**20))
        self._inflight: dict[Key, asyncio.Future[Inference]] = {}  # forward passes on their way, by key
        self._waiting: dict[Key, int] = {}  # requests waiting on each of them
        self._prefetching: set[Key] = set()  # started by `prefetch`
        self._deleted_through = float("-inf")  # deleted_at of the newest deletion read
        self._read_deletions()
        self._changes = events.changes()
        # what the store says serves now; at start the command line wins, later admin actions propagate
        self._serving = events.setting(SERVING)
        self.batcher = Batcher(self.settings.max_batch)
        self.rng = np.random.default_rng(self.settings.seed)

    # -- state shared by the service's processes -----------------------------------------------
    def _read_deletions(self) -> None:
        for d in self.events.deletions(self._deleted_through if self.deleted else None):
            self.forget(d.user)
            self._deleted_through = max(self._deleted_through, d.deleted_at)

    def forget(self, user: str) -> None:
        """Serve ``user`` as deleted from now on: no training history, nothing cached."""
        self.deleted.add(user)
        self.cache.forget(user)

    def sync(self) -> None:
        """Catch up with what other processes of the service wrote to the store since the last call:
        deletions, and the model version an admin reload or rollback made current. A cheap check when
        nothing changed; a version to load is loaded on a thread while the current one keeps serving."""
        token = self.events.changes()
        if token == self._changes:
            return
        self._changes = token
        self._read_deletions()
        serving = self.events.setting(SERVING)
        if serving is None or serving == self._serving:
            return
        self._serving = serving
        wanted = json.loads(serving)
        if wanted["version"] == self.current.id:
            return
        if self.previous is not None and self.previous.id == wanted["version"]:
            self.previous, self.current = self.current, self.previous  # a rollback elsewhere
            return
        threading.Thread(target=self._follow, args=(wanted["run_dir"],), daemon=True, name="intentrec-reload").start()

    def _follow(self, run_dir: str) -> None:
        candidate = ModelVersion(run_dir)
        if candidate.model_loaded:
            self.previous, self.current = self.current, candidate
            settle_memory()
        else:
            log.error("another process serves %s, which does not load here: %s", run_dir, candidate.error)

    def _publish(self) -> None:
        """Tell the other processes which version serves now (they follow at their next request)."""
        state = json.dumps({"run_dir": str(self.current.run_dir), "version": self.current.id, "at": time.time()})
        self.events.set_setting(SERVING, state)
        self._serving = state

    # -- versions ----------------------------------------------------------------------------------
    def reload(self, run_dir: Path | str | None = None) -> ModelVersion:
        """Load a run (the current one again by default) and make it current; the old one is kept for
        rollback. A run whose model does not load is refused and the current one keeps serving."""
        candidate = ModelVersion(run_dir or self.current.run_dir)
        if not candidate.model_loaded:
            raise ValueError(
                f"{candidate.run_dir}: model not loaded ({candidate.error}); still serving {self.current.id}"
            )
        self.previous, self.current = self.current, candidate
        settle_memory()
        self._publish()
        return candidate

    def rollback(self) -> ModelVersion:
        if self.previous is None:
            raise ValueError("no previous model version to roll back to")
        self.previous, self.current = self.current, self.previous
        self._publish()
        return self.current

    # -- history and inference ---------------------------------------------------------------------
    def history(self, user: str, version: ModelVersion) -> History:
        """The user's live history under ``version``: their training history (unless deleted), then the
        events stored since."""
        row = None if user in self.deleted else version.user_rows.get(user)
        base = version.live.base(row) if row is not None else version.live.empty()
        fresh = self.events.events(user)
        return version.live.extend(base, fresh) if fresh else base

    async def answer(self, user: str) -> Answer:
        self.sync()
        version = self.current
        history = self.history(user, version)
        seen = set(history.items.tolist())
        answer = Answer(version, history, None, seen=seen)
        if len(history) == 0:
            answer.fallback, answer.detail = "cold_start", "no history for this user yet"
        elif not version.model_loaded:
            answer.fallback, answer.detail = "model_unavailable", version.error
        else:
            assert version.run is not None
            key = self.cache.key(version.id, user, history, version.run.model.max_len)
            answer.inference = self.cache.get(key) if self.cache.max_bytes else None
            answer.cached = answer.inference is not None
            if answer.inference is None:
                await self._infer(answer, key)
        return answer

    def _compute(
        self, version: ModelVersion, history: History, key: Key, background: bool = False
    ) -> asyncio.Future[Inference]:
        """The forward pass for ``key``: the one already on its way (a prefetch, a concurrent request for
        the same user and history), or a new one in the batcher's queue. Its result goes to the cache."""
        future = self._inflight.get(key)
        if future is None or future.done():
            future = self.batcher.submit(version, history, background)
            self._inflight[key] = future
            future.add_done_callback(partial(self._landed, key))
        elif not background:
            self.batcher.promote(future)
        return future

    def _landed(self, key: Key, future: asyncio.Future[Inference]) -> None:
        if self._inflight.get(key) is future:
            del self._inflight[key]
        if future.cancelled() or future.exception() is not None:  # exception() also marks it retrieved
            return
        if key[1] not in self.deleted:
            self.cache.put(key, future.result())  # a cache of 0 bytes keeps nothing

    async def _infer(self, answer: Answer, key: Key) -> None:
        """Run the model for ``answer`` (batched with the other requests waiting), within the time budget;
        a timeout or a fault becomes the fallback with its reason."""
        user = key[1]
        future = self._compute(answer.version, answer.history, key)
        self._waiting[key] = self._waiting.get(key, 0) + 1
        try:
            answer.inference = await asyncio.wait_for(
                asyncio.shield(future), timeout=self.settings.model_timeout_ms / 1000
            )
        except asyncio.TimeoutError:
            if self._waiting[key] == 1 and key not in self._prefetching:  # nobody else wants it: drop the work
                future.cancel()
                self._inflight.pop(key, None)
            answer.fallback = "model_timeout"
            answer.detail = f"the model took longer than {self.settings.model_timeout_ms:g} ms"
        except Exception as exc:  # any model fault becomes a fallback answer, never a 500
            log.exception("model failed for user %r", user)
            answer.fallback, answer.detail = "model_error", f"{type(exc).__name__}: {exc}"
        finally:
            self._waiting[key] -= 1
            if not self._waiting[key]:
                del self._waiting[key]

    def _prefetched(self, key: Key, _: asyncio.Future[Inference]) -> None:
        self._prefetching.discard(key)

    def prefetch(self, users: Sequence[str], limit: int = 32) -> int:
        """Start the forward pass for users who just sent events, so that their next request (the post-play
        "up next" shown as the credits roll, the next home page) finds it done. It is background work: it
        runs in the room requests leave in a forward pass (`Batcher`), at most that room of it is queued,
        and at most ``limit`` users per call; returns how many were started. Needs the cache (the result
        lives there)."""
        if not (self.cache.max_bytes and self.settings.prefetch):
            return 0
        self.sync()
        version = self.current
        if version.run is None:
            return 0
        started = 0
        for user in users[:limit]:
            if self.batcher.background_queued() >= self.batcher.background_room:
                break  # a pass's room of background work is queued already: a busy model skips the rest
            history = self.history(user, version)
            if len(history) == 0:
                continue
            key = self.cache.key(version.id, user, history, version.run.model.max_len)
            if key in self.cache.entries or key in self._inflight:
                continue
            self._prefetching.add(key)
            self._compute(version, history, key, background=True).add_done_callback(partial(self._prefetched, key))
            started += 1
        return started

    # -- surfaces ----------------------------------------------------------------------------------
    def intent(self, user: str, answer: Answer) -> dict[str, Any]:
        out = self._envelope(user, answer)
        out["intents"] = answer.inference.intents if answer.inference else {}
        out["intent_weights"] = answer.inference.weights if answer.inference else {}
        return out

    def up_next(self, user: str, answer: Answer, k: int) -> dict[str, Any]:
        out = self._envelope(user, answer)
        version = answer.version
        last = int(answer.history.items[-1]) if len(answer.history) else 0
        exclude = answer.seen if self.settings.exclude_seen else {last}
        if answer.inference is None:
            scores = version.catalogue.popularity
            order = Ranking(scores, exclude, version.by_popularity).items(None, False, k)
            reason = "popular now"
        else:
            scores = answer.inference.scores
            order = Ranking(scores, exclude, answer.inference.order()).items(None, False, k)
            reason = self._intent_reason(answer.inference)
        out["items"] = [self._item(version, i, scores[i]) for i in order[:k]]
        out["reason"] = reason
        if answer.inference:
            out["intents"] = {h: dict(list(p.items())[:3]) for h, p in answer.inference.intents.items()}
        return out

    def home(
        self, user: str, answer: Answer, rows: int, k: int, *, diversity: float | None, exploration: float | None
    ) -> dict[str, Any]:
        out = self._envelope(user, answer)
        version = answer.version
        diversity = self.settings.diversity if diversity is None else diversity
        exploration = self.settings.exploration if exploration is None else exploration
        candidates = self._model_rows(answer) if answer.inference is not None else self._fallback_rows(answer)
        scores = answer.inference.scores if answer.inference is not None else version.catalogue.popularity
        used: set[int] = set()
        page: list[dict[str, Any]] = []
        for row_id, title, reason, make in candidates:
            if len(page) == rows:
                break
            wanted = 5 * k if diversity > 0 else k
            fresh = []
            for i in make(len(used) + wanted):  # enough to find `wanted` items not yet on the page
                if i not in used:
                    fresh.append(i)
                    if len(fresh) == wanted:
                        break
            picked = self._mmr(version, fresh, scores, k, diversity) if diversity > 0 else fresh[:k]
            if not picked:
                continue
            used.update(picked)
            page.append({"id": row_id, "title": title, "reason": reason, "items": picked})
        self._explore(version, page, answer.seen | used, exploration)
        items_on_page = [i for row in page for i in row["items"]]
        for row in page:
            row["items"] = [
                self._item(version, i, scores[i], explore=explore, propensity=p)
                for i, explore, p in zip(row["items"], row.pop("explore"), row.pop("propensity"), strict=True)
            ]
        out["rows"] = page
        out["genre_entropy"] = self._entropy(version, items_on_page)
        out["exploration"] = exploration
        out["diversity"] = diversity
        if answer.inference is not None:
            out["intents"] = answer.inference.intents
            out["intent_weights"] = answer.inference.weights
        else:
            out["intents"], out["intent_weights"] = {}, {}
        return out

    # -- helpers -----------------------------------------------------------------------------------
    def _envelope(self, user: str, answer: Answer) -> dict[str, Any]:
        out: dict[str, Any] = {
            "user": user,
            "model_version": answer.version.id,
            "source": "fallback" if answer.fallback else "model",
            "history_length": len(answer.history),
        }
        if answer.fallback:
            out["fallback_reason"] = answer.fallback
            out["fallback_detail"] = answer.detail
        return out

    @staticmethod
    def _item(
        version: ModelVersion, idx: int, score: float, *, explore: bool = False, propensity: float | None = None
    ) -> dict[str, Any]:
        item: dict[str, Any] = {"item": version.catalogue.ids[idx], "score": round(float(score), 4)}
        title = version.catalogue.title(idx)
        if title is not None:
            item["title"] = title
        if propensity is not None:
            item["explore"] = explore
            item["propensity"] = round(propensity, 6)
        return item

    @staticmethod
    def _intent_reason(inference: Inference) -> str:
        parts = []
        for head, probs in inference.intents.items():
            if probs:
                name, p = next(iter(probs.items()))
                parts.append(f"{head} {name} {p:.2f}")
        return "predicted intent: " + ", ".join(parts) if parts else "top picks for you"

    def _model_rows(self, answer: Answer) -> list[Row]:
        """Candidate rows in page order, each (id, title, reason, items by model score)."""
        assert answer.inference is not None
        version, inference, history = answer.version, answer.inference, answer.history
        cat, scores = version.catalogue, inference.scores
        exclude = answer.seen if self.settings.exclude_seen else set()
        ranking = Ranking(scores, exclude, inference.order())
        popularity = Ranking(version.catalogue.popularity, exclude, version.by_popularity)
        intents = inference.intents
        action = intents.get("action", {})
        top_action = next(iter(action), None)
        threshold = self.settings.intent_threshold
        rows: dict[str, Row] = {}
        last = int(history.items[-1])

        if "continue" in action:
            p = action["continue"]
            if cat.series is not None:
                started = {int(s) for s in cat.series[history.items] if s >= 0}
                among = np.flatnonzero(np.isin(cat.series, list(started))) if started else np.zeros(0, dtype=np.int64)
                title = "Continue watching"
            else:
                shared = cat.raw_genres[last]
                among = version.sharing_a_genre(last)
                title = f"Continue with {', '.join(sorted(shared))}" if shared else "Continue watching"
            if len(among):
                rows["continue"] = ("continue", title, f"predicted action: continue {p:.2f}",
                                    partial(ranking.items, among, False))  # fmt: skip
        if "rewatch" in action and len(answer.seen):
            seen = np.array(sorted(answer.seen), dtype=np.int64)
            rows["rewatch"] = ("rewatch", "Watch it again", f"predicted action: rewatch {action['rewatch']:.2f}",
                               partial(ranking.items, seen, True))  # fmt: skip
        top_reason = self._intent_reason(inference)
        rows["top_picks"] = ("top_picks", "Top picks for you", top_reason, partial(ranking.items, None, False))
        anchor_title = cat.title(last) or cat.ids[last]
        if version.neighbours is not None:
            similarity = version.neighbours @ version.neighbours[last]
            similarity[0] = -2
            similarity[last] = -2
            near = similarity.topk(min(NEIGHBOURS, cat.n_items - 1)).indices.numpy()
        else:
            near = version.sharing_a_genre(last)
            near = near[near != last]
        if len(near):
            reason = f"similar to {anchor_title}, your most recent"
            rows["because"] = (f"because:{cat.ids[last]}", f"Because you watched {anchor_title}", reason,
                               partial(ranking.items, near, False))  # fmt: skip
        genre_rows: list[Row] = []
        for name, p in list(intents.get("genre", {}).items()):
            if name in NOT_A_GENRE or version.item_genres is None or len(genre_rows) == GENRE_ROWS:
                continue
            g = version.genre_classes.index(name)
            among = version.with_genre(g)
            genre_rows.append((f"genre:{name}", f"{name} for you", f"predicted genre intent: {name} {p:.2f}",
                               partial(ranking.items, among, False)))  # fmt: skip
        recency = intents.get("recency", {})
        fresh_p = recency.get("new", 0.0) + recency.get("recent", 0.0)
        if recency and cat.release is not None and version.clock is not None:
            recent_days = version.prepared.config.intents.recent_days
            among = np.flatnonzero((cat.release >= version.clock - recent_days * DAY) & (cat.release >= 0))
            if len(among) and (fresh_p >= threshold or next(iter(recency)) in ("new", "recent")):
                reason = f"predicted recency intent: new or recent {fresh_p:.2f}"
                rows["new"] = ("new_releases", "New releases for you", reason,
                               partial(ranking.items, among, False))  # fmt: skip
        order: list[Row] = []
        if top_action == "continue" and "continue" in rows:
            order.append(rows.pop("continue"))
        if top_action == "rewatch" and "rewatch" in rows:
            order.append(rows.pop("rewatch"))
        order.append(rows.pop("top_picks"))
        if "new" in rows:
            order.append(rows.pop("new"))
        if "because" in rows:
            order.append(rows.pop("because"))
        order += genre_rows
        for key in ("continue", "rewatch"):
            if key in rows and action.get(key, 0.0) >= threshold:
                order.append(rows.pop(key))
        order.append(
            (
                "popular",
                "Popular now",
                "most watched in the training data",
                partial(popularity.items, None, False),
            )
        )
        return order

    def _fallback_rows(self, answer: Answer) -> list[Row]:
        version = answer.version
        exclude = answer.seen if self.settings.exclude_seen else set()
        popularity = Ranking(version.catalogue.popularity, exclude, version.by_popularity)
        rows: list[Row] = [("popular", "Popular now", "most watched in the training data",
                            partial(popularity.items, None, False))]  # fmt: skip
        if version.item_genres is not None:
            hot = version.item_genres
            if len(answer.history):  # the user's own genre mix first, then the catalogue's
                mass = hot[torch.from_numpy(answer.history.items)].sum(0)
            else:
                mass = (hot * torch.from_numpy(version.catalogue.popularity).float()[:, None]).sum(0)
            for g in mass.argsort(descending=True).tolist():
                name = version.genre_classes[g]
                if name in NOT_A_GENRE or mass[g] <= 0:
                    continue
                rows.append((f"genre:{name}", f"Popular in {name}", f"most watched {name} titles",
                             partial(popularity.items, version.with_genre(g), False)))  # fmt: skip
        return rows

    @staticmethod
    def _mmr(version: ModelVersion, ordered: list[int], scores: np.ndarray, k: int, weight: float) -> list[int]:
        """Maximal marginal relevance: greedily the item with the best (1 - w) relevance - w max genre
        Jaccard similarity to the items already picked; relevance is the min-max scaled score."""
        pool = ordered[: max(5 * k, k)]
        if not pool:
            return []
        values = scores[pool].astype(np.float64)
        span = values.max() - values.min()
        relevance = (values - values.min()) / span if span > 0 else np.ones_like(values)
        genres = [version.catalogue.genre_sets[i] for i in pool]
        picked: list[int] = []
        similarity = np.zeros(len(pool))
        available = np.ones(len(pool), dtype=bool)
        while len(picked) < min(k, len(pool)):
            value = np.where(available, (1 - weight) * relevance - weight * similarity, -np.inf)
            best = int(value.argmax())
            picked.append(best)
            available[best] = False
            for j in np.flatnonzero(available):
                union = len(genres[j] | genres[best])
                if union:
                    similarity[j] = max(similarity[j], len(genres[j] & genres[best]) / union)
        return [pool[j] for j in picked]

    def _explore(self, version: ModelVersion, page: list[dict[str, Any]], exclude: set[int], share: float) -> None:
        """Replace each slot, with probability ``share``, by an item drawn uniformly from the catalogue
        items with training interactions that are neither on the page nor seen (drawn without replacement).
        Every slot records its propensity, the probability that the policy put that item in that slot:
        share / |pool| for an exploration draw, 1 - share for the model's own choice."""
        blocked = np.zeros(version.catalogue.n_items + 1, dtype=bool)
        if exclude:
            blocked[np.fromiter(exclude, dtype=np.int64, count=len(exclude))] = True
        pool = version.popular[~blocked[version.popular]]  # a fresh array: draws below reorder it in place
        size = len(pool)  # pool[:size] is what is left to draw from
        for row in page:
            row["explore"], row["propensity"] = [], []
            for slot in range(len(row["items"])):
                if share > 0 and size and self.rng.random() < share:
                    j = int(self.rng.integers(size))
                    choice = int(pool[j])
                    pool[j] = pool[size - 1]  # without replacement: the last one left takes its place
                    row["items"][slot] = choice
                    row["explore"].append(True)
                    row["propensity"].append(share / size)
                    size -= 1
                else:
                    row["explore"].append(False)
                    row["propensity"].append(1 - share)  # the pool never holds an item already on the page

    @staticmethod
    def _entropy(version: ModelVersion, items: list[int]) -> float | None:
        """The page's genre entropy in bits, as `intentrec.eval.metrics.genre_entropy` computes it for one
        list (a test checks they agree), in NumPy: a page is one small list."""
        if version.genre_mass is None or not items:
            return None
        mass = version.genre_mass[items].sum(0)  # (G,)
        total = mass.sum()
        if total <= 0:
            return None
        p = mass[mass > 0] / total
        return round(float(-(p * np.log2(p)).sum()), 4)
