"""The HTTP service: ``intentrec serve RUN_DIR`` (FastAPI). Every surface comes from one model.

Read surfaces (never a 500: a model fault, a timeout or a cold-start user gets popularity rows with
``source: fallback`` and the reason):

* ``GET /v1/users/{user}/home?rows=6&k=10[&diversity=0.3][&explore=0.05]`` the home page
* ``GET /v1/users/{user}/next?k=10``   the post-play "up next" surface
* ``GET /v1/users/{user}/intent``      predicted intents and per-head weights
* ``GET /v1/model``                    the model version answering

Writes:

* ``POST /v1/events`` appends up to 1,000 events; the user's next request reflects them
* ``DELETE /v1/users/{user}`` (admin) deletes the user's history and records the deletion
* ``POST /v1/admin/reload`` (admin; body ``{"run_dir": ...}`` optional) and ``POST /v1/admin/rollback``

Operations: ``GET /healthz``, ``GET /readyz``, ``GET /metrics`` (Prometheus). Administrative endpoints
need ``Authorization: Bearer <token>`` matching ``INTENTREC_ADMIN_TOKEN``; with no token configured they
are disabled. Past ``max_inflight`` concurrent requests the service answers 503 with ``Retry-After``
instead of queueing without bound.

Several processes: ``intentrec serve --workers N`` runs N copies behind one port (uvicorn's
supervisor); each builds its app with `app_from_environment`. They share the event store, and
through it deletions and the serving model version (an admin reload or rollback in one reaches the
others at their next request; `Engine.sync`), and one Prometheus registry (its multiprocess mode).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from pathlib import Path as FilePath
from typing import Annotated, Any

import orjson
from fastapi import Depends, FastAPI, Header, HTTPException, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from intentrec.serve.engine import Answer, Engine, ServeSettings, settle_memory
from intentrec.serve.events import Event, EventStore, SQLiteEventStore

__all__ = ["ADMIN_TOKEN_VARIABLE", "SERVE_VARIABLE", "app_from_environment", "create_app"]

log = logging.getLogger(__name__)

ADMIN_TOKEN_VARIABLE = "INTENTREC_ADMIN_TOKEN"
SERVE_VARIABLE = "INTENTREC_SERVE"  # JSON: create_app's arguments for each worker process (--workers N)
MULTIPROCESS_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"  # set: the processes share their metrics there
MAX_EVENTS = 1000
ID = r"^[^\x00-\x1f\x7f]+$"  # any printable text; ids are compared as strings
UserId = Annotated[str, Path(min_length=1, max_length=128, pattern=ID, description="the user's id")]
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class FastJSONResponse(JSONResponse):
    """JSON written by orjson (the read surfaces' answers are large; the standard library was 5% of a
    home page's time). Floats are finite by construction: scores are rounded finite values."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class EventIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user: str = Field(min_length=1, max_length=128, pattern=ID)
    item: str = Field(min_length=1, max_length=128, pattern=ID)
    timestamp: int | None = Field(None, ge=0, le=4_102_444_800, description="seconds since the epoch; default now")
    event: str | None = Field(None, max_length=32, description="event type, e.g. pv, cart, play")
    device: str | None = Field(None, max_length=32)
    weight: float | None = Field(None, ge=0, le=1e6, description="engagement weight, e.g. watch fraction")


class EventsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: list[EventIn] = Field(min_length=1, max_length=MAX_EVENTS)


class ReloadIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    run_dir: str | None = Field(None, max_length=4096, description="run folder to load; default the current one")


class Metrics:
    def __init__(self) -> None:
        disable_created_metrics()  # the *_created series only repeat the start time
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("intentrec_requests", "HTTP requests", ["surface", "status"], registry=r)
        self.latency = Histogram(
            "intentrec_request_seconds", "request latency", ["surface"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.fallbacks = Counter("intentrec_fallbacks", "answers from the fallback", ["surface", "reason"], registry=r)
        self.inferences = Counter(
            "intentrec_inferences", "model answers, computed or from the inference cache", ["source"], registry=r
        )
        self.rejected = Counter("intentrec_rejected", "requests refused with 503 under overload", registry=r)
        self.inflight = Gauge(
            "intentrec_inflight_requests", "requests being served", registry=r, multiprocess_mode="livesum"
        )
        self.events = Counter("intentrec_events_stored", "events appended to the store", registry=r)
        self.batch = Histogram(
            "intentrec_model_batch_size", "requests per forward pass", buckets=(1, 2, 4, 8, 16, 32, 64), registry=r
        )
        self.model_seconds = Histogram(
            "intentrec_model_seconds", "time of one forward pass", buckets=LATENCY_BUCKETS, registry=r
        )


def surface_of(method: str, path: str) -> str:
    parts = path.strip("/").split("/")
    if parts[:2] == ["v1", "users"] and len(parts) == 4:
        return parts[3]
    if parts[:2] == ["v1", "users"] and len(parts) == 3:
        return "delete" if method == "DELETE" else "user"
    if parts[:2] == ["v1", "events"]:
        return "events"
    if parts[:2] == ["v1", "admin"]:
        return "admin"
    return parts[0] if parts and parts[0] in ("healthz", "readyz", "metrics") else "other"


class Guard:
    """ASGI middleware: counts, times and bounds the requests in flight; past the bound it answers 503
    with Retry-After at once, so overload costs a refusal instead of unbounded latency and memory."""

    def __init__(self, app: Callable[..., Awaitable[None]], metrics: Metrics, max_inflight: int) -> None:
        self.app, self.metrics, self.max_inflight = app, metrics, max_inflight
        self.inflight = 0

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        surface = surface_of(scope["method"], scope["path"])
        limited = scope["path"].startswith("/v1/")
        if limited and self.inflight >= self.max_inflight:
            self.metrics.rejected.inc()
            self.metrics.requests.labels(surface, "503").inc()
            response = JSONResponse(
                {"error": f"overloaded: {self.inflight} requests in flight; retry shortly"},
                status_code=503,
                headers={"Retry-After": "1"},
            )
            await response(scope, receive, send)
            return
        status = {"code": 500}

        async def capture(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        started = time.perf_counter()
        self.inflight += limited
        self.metrics.inflight.inc(limited)
        try:
            if limited:
                # Let every request that arrived in this turn of the event loop be counted before any is
                # served: one answered without waiting (a cache hit) would otherwise leave the count at 1
                # however many requests queue behind it, and the bound would never refuse.
                await asyncio.sleep(0)
            await self.app(scope, receive, capture)
        finally:
            self.inflight -= limited
            self.metrics.inflight.dec(limited)
            self.metrics.requests.labels(surface, str(status["code"])).inc()
            self.metrics.latency.labels(surface).observe(time.perf_counter() - started)


def create_app(
    run_dir: FilePath | str,
    *,
    db: FilePath | str | None = None,
    store: EventStore | None = None,
    settings: ServeSettings | None = None,
    admin_token: str | None = None,
    max_inflight: int = 64,
) -> FastAPI:
    """The service for ``run_dir``. Events and deletions go to ``store``, or to a SQLite store at ``db``
    (default ``intentrec.db`` in the working directory). ``admin_token`` defaults to the environment
    variable ``INTENTREC_ADMIN_TOKEN``; with neither, administrative endpoints are disabled."""
    events = store if store is not None else SQLiteEventStore(db or "intentrec.db")
    engine = Engine(run_dir, events, settings)
    metrics = Metrics()
    token = admin_token if admin_token is not None else os.environ.get(ADMIN_TOKEN_VARIABLE) or None

    def on_batch(size: int, seconds: float) -> None:
        metrics.batch.observe(size)
        metrics.model_seconds.observe(seconds)

    engine.batcher.on_batch = on_batch

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        engine.batcher.start()
        settle_memory()
        yield
        await engine.batcher.stop()
        events.close()

    app = FastAPI(
        title="intentrec",
        summary="Intent-aware recommendations: one multi-task model behind every surface",
        lifespan=lifespan,
    )
    app.state.engine = engine
    app.state.metrics = metrics
    app.add_middleware(Guard, metrics=metrics, max_inflight=max_inflight)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]} for e in exc.errors()
        ]  # fmt: skip
        first = problems[0] if problems else {"field": "", "message": "invalid request"}
        return JSONResponse({"error": f"{first['field']}: {first['message']}", "problems": problems}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return JSONResponse({"error": "internal error; see the service log"}, status_code=500)

    def admin(authorization: Annotated[str | None, Header()] = None) -> None:
        if token is None:
            raise HTTPException(
                403, f"administrative endpoints are disabled: set {ADMIN_TOKEN_VARIABLE} to enable them"
            )
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(given.encode(), token.encode()):
            raise HTTPException(401, "a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"})

    async def answer_for(user: str, surface: str) -> Answer:
        answer = await engine.answer(user)
        if answer.fallback:
            metrics.fallbacks.labels(surface, answer.fallback).inc()
        elif answer.inference is not None:
            metrics.inferences.labels("cache" if answer.cached else "model").inc()
        return answer

    def build(surface: str, answer: Answer, make: Callable[[Answer], dict[str, Any]]) -> JSONResponse:
        try:
            return FastJSONResponse(make(answer))
        except Exception as exc:  # a fault in building the answer still gets the fallback
            if answer.inference is None:
                raise
            log.exception("%s failed on the model's output; answering from the fallback", surface)
            answer.inference, answer.fallback, answer.detail = None, "model_error", f"{type(exc).__name__}: {exc}"
            metrics.fallbacks.labels(surface, "model_error").inc()
            return FastJSONResponse(make(answer))

    @app.get("/v1/users/{user}/home")
    async def home(
        user: UserId,
        rows: Annotated[int, Query(ge=1, le=20, description="rows on the page")] = 6,
        k: Annotated[int, Query(ge=1, le=100, description="items per row")] = 10,
        diversity: Annotated[float | None, Query(ge=0, le=1, description="genre MMR weight; 0 off")] = None,
        explore: Annotated[float | None, Query(ge=0, le=0.5, description="exploration share of slots")] = None,
    ) -> JSONResponse:
        """The home page: rows explained by design, no item twice, exploration slots with propensities."""
        answer = await answer_for(user, "home")
        return build("home", answer, lambda a: engine.home(user, a, rows, k, diversity=diversity, exploration=explore))

    @app.get("/v1/users/{user}/next")
    async def up_next(user: UserId, k: Annotated[int, Query(ge=1, le=100)] = 10) -> JSONResponse:
        """The post-play "up next" surface."""
        answer = await answer_for(user, "next")
        return build("next", answer, lambda a: engine.up_next(user, a, k))

    @app.get("/v1/users/{user}/intent")
    async def intent(user: UserId) -> JSONResponse:
        """Predicted intents (most likely first) and the per-head intent weights."""
        answer = await answer_for(user, "intent")
        return build("intent", answer, lambda a: engine.intent(user, a))

    @app.post("/v1/events")
    async def post_events(body: EventsIn) -> dict[str, Any]:
        """Append events (all or none); the next request for each user reflects them."""
        now = int(time.time())
        batch = [
            Event(e.user, e.item, e.timestamp if e.timestamp is not None else now, e.event, e.device, e.weight)
            for e in body.events
        ]
        stored = await run_in_threadpool(events.append, batch)
        metrics.events.inc(stored)
        prefetched = engine.prefetch(list(dict.fromkeys(e.user for e in batch)))
        known = engine.current.catalogue.index
        unknown = sorted({e.item for e in batch if e.item not in known})
        return {
            "stored": stored,
            "users": len({e.user for e in batch}),
            "unknown_items": unknown[:20],
            "unknown_item_count": len(unknown),
            "prefetched": prefetched,
            "model_version": engine.current.id,
        }

    @app.delete("/v1/users/{user}", dependencies=[Depends(admin)])
    async def delete_user(user: UserId) -> dict[str, Any]:
        """Delete the user's stored events, hide their training history from serving, and record the
        deletion so that `intentrec data prepare --deletions DB` leaves them out of future training."""
        deletion = await run_in_threadpool(events.delete_user, user)
        engine.forget(user)
        return {
            "user": user,
            "events_deleted": deletion.events_deleted,
            "deleted_at": deletion.deleted_at,
            "in_training_data": user in engine.current.user_rows,
            "excluded_from_future_training": True,
        }

    @app.post("/v1/admin/reload", dependencies=[Depends(admin)])
    async def reload(body: ReloadIn | None = None) -> dict[str, Any]:
        """Load a run (the current one by default) and serve it; the old version stays for rollback."""
        target = body.run_dir if body is not None else None
        if target is not None and not FilePath(target).is_dir():
            raise HTTPException(422, f"run_dir: {target} is not a folder")
        try:
            version = await run_in_threadpool(engine.reload, target)
        except (ValueError, FileNotFoundError) as exc:
            raise HTTPException(409, str(exc)) from exc
        return {"serving": version.describe(), "previous": engine.previous.id if engine.previous else None}

    @app.post("/v1/admin/rollback", dependencies=[Depends(admin)])
    async def rollback() -> dict[str, Any]:
        """Serve the previous model version again."""
        try:
            version = engine.rollback()
        except ValueError as exc:
            raise HTTPException(409, str(exc)) from exc
        return {"serving": version.describe(), "previous": engine.previous.id if engine.previous else None}

    @app.get("/v1/model")
    async def model() -> dict[str, Any]:
        """The model version answering, the one a rollback would restore, and the process answering."""
        engine.sync()
        previous = engine.previous.id if engine.previous else None
        return {"serving": engine.current.describe(), "previous": previous, "process": os.getpid()}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        """Ready when the model is loaded and the event store answers."""
        problems = []
        if not engine.current.model_loaded:
            problems.append(f"model not loaded ({engine.current.error}); answering from the fallback")
        try:
            await run_in_threadpool(events.events, "\x00readyz")
        except Exception as exc:
            problems.append(f"event store: {exc}")
        body = {"ready": not problems, "model_version": engine.current.id, "problems": problems}
        return JSONResponse(body, status_code=200 if not problems else 503)

    @app.get("/metrics")
    async def prometheus() -> Response:
        registry = metrics.registry
        if os.environ.get(MULTIPROCESS_VARIABLE):  # every worker's numbers, summed
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app


def app_from_environment() -> FastAPI:
    """The app of one worker process of ``intentrec serve --workers N``: `create_app` with the
    arguments the command line put in ``INTENTREC_SERVE`` (JSON)."""
    import json

    import torch

    options = json.loads(os.environ[SERVE_VARIABLE])
    if options.get("threads"):
        torch.set_num_threads(int(options["threads"]))
    return create_app(
        options["run_dir"],
        db=options["db"],
        settings=ServeSettings(**options["settings"]),
        max_inflight=int(options["max_inflight"]),
    )
