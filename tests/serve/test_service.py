"""The HTTP service, in process: every endpoint, fallback, deletion, validation, concurrency, overload."""

from __future__ import annotations

import asyncio
import gc
import math
import os
import shutil
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx2
import numpy as np
import polars as pl
import pytest
from fastapi.testclient import TestClient

from intentrec.cli import main
from intentrec.config import load_config
from intentrec.runs import prepare_data
from intentrec.serve.app import create_app
from intentrec.serve.engine import Answer, Batcher, Engine, Inference, InferenceCache, ServeSettings
from intentrec.serve.events import Event, SQLiteEventStore, read_deletions
from intentrec.serve.live import History
from tests.conftest import write

SMALL = """
[data.synthetic]
users = 200
seed = 3
titles = 120

[model]
d = 32
max_len = 30

[train]
epochs = 4
batch_size = 32
lr = 0.005
"""
TOKEN = "s3cret-token"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("serve")
    assert main(["train", "--config", str(write(folder / "small.toml", SMALL)), "--out", str(folder / "run")]) == 0
    return folder / "run"


def client(run_dir: Path, db: Path, **kwargs: Any) -> TestClient:
    kwargs.setdefault("admin_token", TOKEN)
    return TestClient(create_app(run_dir, db=db, **kwargs))


def users_of(run_dir: Path) -> list[str]:
    return pl.read_parquet(run_dir / "data" / "users.parquet")["user"].to_list()


# -- live features --------------------------------------------------------------------------------


def test_posted_events_get_exactly_the_prepared_features(run_dir: Path, tmp_path: Path) -> None:
    """Re-posting a user's logged events (after the first few) reproduces the features that
    preparation computed for them: labels as features, event codes, hour, gaps and windows."""
    engine = Engine(run_dir, SQLiteEventStore(tmp_path / "e.db"))
    version = engine.current
    prepared, live = version.prepared, version.live
    frame = prepared.interactions
    vocab = prepared.vocabularies
    assert {"device"} <= set(vocab) and {"action", "format", "recency"} <= set(live.fields)
    assert live.action_rule == "series"
    checked = 0
    for row in range(0, prepared.n_users, 9):
        full = live.base(row)
        start = int(version.store.offsets[row])
        rows = frame.slice(start, len(full))
        for cut in (0, 1, len(full) // 2):
            base = live.base(row)
            base = type(base)(base.items[:cut], base.categorical[:cut], base.gaps[:cut], base.window[:cut],
                              None if base.timestamps is None else base.timestamps[:cut])  # fmt: skip
            events = [
                Event(
                    user="u",
                    item=version.catalogue.ids[int(r["item_idx"])],
                    timestamp=int(r["timestamp"]),
                    device=vocab["device"][r["feat_device"] - 1] if r["feat_device"] else None,
                )
                for r in rows.slice(cut).iter_rows(named=True)
            ]
            rebuilt = live.extend(base, events)
            np.testing.assert_array_equal(rebuilt.items, full.items)
            np.testing.assert_array_equal(rebuilt.categorical, full.categorical)
            np.testing.assert_array_equal(rebuilt.gaps, full.gaps)
            np.testing.assert_array_equal(rebuilt.window, full.window)
            checked += 1
    assert checked >= 60


def test_unknown_items_are_kept_in_the_store_but_not_fed_to_the_model(run_dir: Path, tmp_path: Path) -> None:
    with client(run_dir, tmp_path / "e.db") as c:
        item = pl.read_parquet(run_dir / "data" / "items.parquet")["item"][0]
        r = c.post("/v1/events", json={"events": [{"user": "new", "item": item}, {"user": "new", "item": "nope"}]})
        assert r.status_code == 200
        assert r.json() | {"model_version": ""} == {
            "stored": 2, "users": 1, "unknown_items": ["nope"], "unknown_item_count": 1, "prefetched": 1,
            "model_version": "",
        }  # fmt: skip
        assert c.get("/v1/users/new/intent").json()["history_length"] == 1
    assert len(SQLiteEventStore(tmp_path / "e.db").events("new")) == 2


# -- surfaces -------------------------------------------------------------------------------------


def test_home_page_rows_are_explained_unique_and_carry_intents(run_dir: Path, tmp_path: Path) -> None:
    with client(run_dir, tmp_path / "e.db", settings=ServeSettings(seed=0)) as c:
        user = users_of(run_dir)[5]
        body = c.get(f"/v1/users/{user}/home", params={"rows": 6, "k": 10}).json()
        version = c.app.state.engine.current  # type: ignore[attr-defined]
    assert body["source"] == "model" and body["model_version"] == version.id
    rows = body["rows"]
    seen = set(version.catalogue.ids[i] for i in version.live.base(version.user_rows[user]).items)
    # every row is full, except "Watch it again" when the user has seen fewer titles than k
    assert len(rows) == 6 and all(len(r["items"]) == 10 for r in rows if r["id"] != "rewatch")
    again = [r for r in rows if r["id"] == "rewatch"]
    assert all(len(r["items"]) == min(10, len(seen)) and {i["item"] for i in r["items"]} <= seen for r in again)
    items = [i["item"] for r in rows for i in r["items"]]
    assert len(items) == len(set(items)) == sum(len(r["items"]) for r in rows), "no item twice on a page"
    ids = [r["id"] for r in rows]
    assert "top_picks" in ids and any(i.startswith("because:") for i in ids)
    last = version.catalogue.ids[int(version.live.base(version.user_rows[user]).items[-1])]
    because = next(r for r in rows if r["id"].startswith("because:"))
    assert because["id"] == f"because:{last}" and because["title"].startswith("Because you watched ")
    assert all(r["title"] and r["reason"] for r in rows)
    assert set(body["intents"]) == {"action", "genre", "format", "recency"}
    assert math.isclose(sum(body["intent_weights"].values()), 1.0, abs_tol=1e-3)
    for probs in body["intents"].values():
        values = list(probs.values())
        assert values == sorted(values, reverse=True) and math.isclose(sum(values), 1.0, abs_tol=1e-3)
    # the page's genre entropy by hand: each item spreads one unit over its genres
    catalogue = version.catalogue
    mass: Counter[int] = Counter()
    for item in items:
        genres = catalogue.genre_sets[catalogue.index[item]]
        for g in genres:
            mass[g] += 1 / len(genres)
    total = sum(mass.values())
    expected = -sum(m / total * math.log2(m / total) for m in mass.values())
    assert body["genre_entropy"] == pytest.approx(expected, abs=1e-3)
    # discovery rows leave out what the user has seen (default), "Watch it again" excepted
    seen = {catalogue.ids[i] for i in version.live.base(version.user_rows[user]).items}
    assert not seen & {i["item"] for r in rows if r["id"] != "rewatch" for i in r["items"]}


def test_rows_follow_the_predicted_intents(run_dir: Path, tmp_path: Path) -> None:
    with client(run_dir, tmp_path / "e.db") as c:
        for user in users_of(run_dir)[:30]:
            body = c.get(f"/v1/users/{user}/home", params={"explore": 0}).json()
            genre_rows = [r["id"][6:] for r in body["rows"] if r["id"].startswith("genre:")]
            predicted = [g for g in body["intents"]["genre"] if g != "other"]
            assert genre_rows == predicted[: len(genre_rows)], "genre rows are the top predicted genres, in order"
            if next(iter(body["intents"]["action"])) == "discover":
                assert body["rows"][0]["id"] == "top_picks"
    # the same model output with each action on top: the matching row leads the page
    engine = Engine(run_dir, SQLiteEventStore(tmp_path / "x.db"), ServeSettings(exploration=0))
    version = engine.current
    user = users_of(run_dir)[1]
    history = version.live.base(version.user_rows[user])
    scores = np.random.default_rng(0).normal(size=version.catalogue.n_items + 1)
    scores[0] = -np.inf
    genre = {"Drama": 0.5, "Comedy": 0.3, "Anime": 0.2}
    for action, first, title in [("continue", "continue", "Continue watching"), ("rewatch", "rewatch", "Watch it again"),
                                 ("discover", "top_picks", "Top picks for you")]:  # fmt: skip
        probs = {action: 0.7, **{a: 0.15 for a in ("continue", "discover", "rewatch") if a != action}}
        inference = Inference(scores, {"action": probs, "genre": genre}, {"action": 0.6, "genre": 0.4})
        answer = Answer(version, history, inference, seen=set(history.items.tolist()))
        rows = engine.home(user, answer, 6, 10, diversity=None, exploration=None)["rows"]
        assert (rows[0]["id"], rows[0]["title"]) == (first, title)
        assert rows[0]["reason"].startswith(f"predicted action: {action} 0.70") or action == "discover"
        if action == "rewatch":
            assert {version.catalogue.index[i["item"]] for i in rows[0]["items"]} <= answer.seen
        ranked = [i["score"] for i in rows[0]["items"]]
        assert ranked == sorted(ranked, reverse=True)
        assert [r["id"] for r in rows if r["id"].startswith("genre:")] == ["genre:Drama", "genre:Comedy", "genre:Anime"]


def test_continue_watching_holds_unseen_episodes_of_started_series(run_dir: Path, tmp_path: Path) -> None:
    engine = Engine(run_dir, SQLiteEventStore(tmp_path / "e.db"))
    version = engine.current
    catalogue = version.catalogue
    assert catalogue.series is not None
    with client(run_dir, tmp_path / "e.db") as c:
        for user in users_of(run_dir)[:40]:
            rows = c.get(f"/v1/users/{user}/home", params={"explore": 0, "rows": 20}).json()["rows"]
            history = version.live.base(version.user_rows[user]).items
            started = {int(s) for s in catalogue.series[history] if s >= 0}
            for row in rows:
                if row["id"] == "continue":
                    for item in row["items"]:
                        idx = catalogue.index[item["item"]]
                        assert catalogue.series[idx] in started and idx not in set(history.tolist())


def test_the_loaded_service_is_out_of_the_cycle_collectors_reach(run_dir: Path, tmp_path: Path) -> None:
    """A full collection would walk the model and catalogue (a 100 ms pause under load): they are frozen
    once serving starts and again after a reload, so collections only walk what requests create."""
    gc.unfreeze()
    with client(run_dir, tmp_path / "e.db") as c:
        frozen = gc.get_freeze_count()
        assert frozen > 10_000
        assert c.post("/v1/admin/reload", headers=ADMIN).status_code == 200
        assert gc.get_freeze_count() > frozen, "the new version is frozen too"
        assert len(gc.get_objects()) < gc.get_freeze_count() / 2, "a collection walks far fewer objects"


def test_up_next_and_intent(run_dir: Path, tmp_path: Path) -> None:
    with client(run_dir, tmp_path / "e.db") as c:
        user = users_of(run_dir)[7]
        nxt = c.get(f"/v1/users/{user}/next", params={"k": 5}).json()
        intent = c.get(f"/v1/users/{user}/intent").json()
        home = c.get(f"/v1/users/{user}/home", params={"explore": 0}).json()
    assert nxt["source"] == "model" and len(nxt["items"]) == 5
    scores = [i["score"] for i in nxt["items"]]
    assert scores == sorted(scores, reverse=True)
    assert nxt["reason"].startswith("predicted intent: action ")
    assert intent["intents"] == home["intents"] and intent["intent_weights"] == home["intent_weights"]
    top = next(r for r in home["rows"] if r["id"] == "top_picks")
    assert [i["item"] for i in nxt["items"]] == [i["item"] for i in top["items"][:5]] or home["rows"][0][
        "id"
    ] != "top_picks"


def test_exploration_share_and_propensities(run_dir: Path, tmp_path: Path) -> None:
    with client(run_dir, tmp_path / "e.db", settings=ServeSettings(seed=1)) as c:
        users = users_of(run_dir)[:40]
        none = [c.get(f"/v1/users/{u}/home", params={"explore": 0}).json() for u in users[:5]]
        for body in none:
            assert all(not i["explore"] and i["propensity"] == 1.0 for r in body["rows"] for i in r["items"])
        slots = [i for u in users for r in c.get(f"/v1/users/{u}/home").json()["rows"] for i in r["items"]]
        half = c.get(f"/v1/users/{users[0]}/home", params={"explore": 0.5}).json()
    share = sum(i["explore"] for i in slots) / len(slots)
    assert len(slots) > 40 * 55  # a row can be shorter than k when few items fit it (e.g. unseen episodes)
    assert abs(share - 0.05) < 3 * math.sqrt(0.05 * 0.95 / len(slots)), f"exploration share {share:.3f}"
    for item in slots:
        if item["explore"]:
            assert 0 < item["propensity"] < 0.05 / 10
        else:
            assert item["propensity"] == pytest.approx(0.95)
    explored = [i for r in half["rows"] for i in r["items"] if i["explore"]]
    assert 15 <= len(explored) <= 45
    items = [i["item"] for r in half["rows"] for i in r["items"]]
    assert len(items) == len(set(items)), "exploration never repeats an item on the page"


def test_diversity_rerank_raises_genre_entropy(run_dir: Path, tmp_path: Path) -> None:
    with client(run_dir, tmp_path / "e.db") as c:
        users = users_of(run_dir)[:30]
        plain = [c.get(f"/v1/users/{u}/home", params={"explore": 0}).json()["genre_entropy"] for u in users]
        diverse = [
            c.get(f"/v1/users/{u}/home", params={"explore": 0, "diversity": 0.7}).json()["genre_entropy"] for u in users
        ]
    assert np.mean(diverse) > np.mean(plain) + 0.05


# -- fresh events ---------------------------------------------------------------------------------


def test_posted_events_change_intents_and_recommendations_without_retraining(run_dir: Path, tmp_path: Path) -> None:
    engine = Engine(run_dir, SQLiteEventStore(tmp_path / "x.db"))
    catalogue = engine.current.catalogue
    series_items = [
        i for i in range(1, catalogue.n_items + 1) if catalogue.series is not None and catalogue.series[i] >= 0
    ]
    with client(run_dir, tmp_path / "e.db") as c:
        user = users_of(run_dir)[11]
        before = c.get(f"/v1/users/{user}/home", params={"explore": 0}).json()
        now = int(time.time())
        burst = [
            {"user": user, "item": catalogue.ids[i], "timestamp": now + j * 60} for j, i in enumerate(series_items[:8])
        ]
        assert c.post("/v1/events", json={"events": burst}).json()["stored"] == 8
        after = c.get(f"/v1/users/{user}/home", params={"explore": 0}).json()
        cold = c.get("/v1/users/brand-new/next").json()
        assert cold["source"] == "fallback" and cold["fallback_reason"] == "cold_start"
        c.post("/v1/events", json={"events": [{"user": "brand-new", "item": catalogue.ids[3]}]})
        warm = c.get("/v1/users/brand-new/next").json()
    assert after["history_length"] == before["history_length"] + 8
    assert after["intents"] != before["intents"]
    assert [r["items"] for r in after["rows"]] != [r["items"] for r in before["rows"]]
    assert (
        after["rows"][0]["id"] == "continue"
        or after["intents"]["action"]["continue"] > before["intents"]["action"]["continue"]
    )
    assert warm["source"] == "model" and warm["history_length"] == 1


def test_the_inference_cache_answers_as_the_model_would_and_forgets(run_dir: Path, tmp_path: Path) -> None:
    """A repeat request is answered from the cache with exactly the model's answer; a new event, a
    deletion or another model version is a different key; with the cache off the model always runs."""
    user = users_of(run_dir)[9]
    catalogue = Engine(run_dir, SQLiteEventStore(tmp_path / "x.db")).current.catalogue

    def inferences(c: TestClient) -> dict[str, float]:
        lines = [line for line in c.get("/metrics").text.splitlines() if line.startswith("intentrec_inferences_total")]
        return {line.split('"')[1]: float(line.rsplit(" ", 1)[1]) for line in lines}

    with client(run_dir, tmp_path / "off.db", settings=ServeSettings(cache_mb=0)) as c:
        fresh = [c.get(f"/v1/users/{user}/next", params={"k": 20}).json() for _ in range(2)]
        assert inferences(c) == {"model": 2.0}
    # the prefetch (tested below) would race the request after the event; this is the cache alone
    app = create_app(run_dir, db=tmp_path / "e.db", admin_token=TOKEN, settings=ServeSettings(prefetch=False))
    engine: Engine = app.state.engine
    with TestClient(app) as c:
        first = c.get(f"/v1/users/{user}/next", params={"k": 20}).json()
        again = c.get(f"/v1/users/{user}/next", params={"k": 20}).json()
        intent = c.get(f"/v1/users/{user}/intent").json()
        assert inferences(c) == {"model": 1.0, "cache": 2.0}
        assert first == again == fresh[0] == fresh[1], "the cache answers exactly what the model computes"
        assert intent["intents"] == first["intents"] | intent["intents"]
        c.post("/v1/events", json={"events": [{"user": user, "item": catalogue.ids[5], "timestamp": 2_000_000_000}]})
        after = c.get(f"/v1/users/{user}/next", params={"k": 20}).json()
        assert inferences(c) == {"model": 2.0, "cache": 2.0} and after["history_length"] == first["history_length"] + 1
        assert any(key[1] == user for key in engine.cache.entries)
        assert c.delete(f"/v1/users/{user}", headers=ADMIN).status_code == 200
        assert not any(key[1] == user for key in engine.cache.entries), "a deleted user's inferences are dropped"
        assert c.get(f"/v1/users/{user}/next").json()["fallback_reason"] == "cold_start"


def test_events_start_the_forward_pass_and_requests_share_one(run_dir: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """A user's new events start their forward pass at once (the post-play "up next" then finds it done);
    concurrent requests for the same user and history share one forward pass."""
    app = create_app(run_dir, db=tmp_path / "e.db", admin_token=TOKEN)
    engine: Engine = app.state.engine
    version = engine.current
    real, passes = version.infer, []

    def counting(histories: Any) -> Any:
        passes.append(len(histories))
        return real(histories)

    monkeypatch.setattr(version, "infer", counting)
    users = users_of(run_dir)
    item = version.catalogue.ids[4]

    async def scenario() -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
        async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://test") as c:
            posted = (await c.post("/v1/events", json={"events": [
                {"user": users[1], "item": item, "timestamp": 2_000_000_000},
                {"user": "nobody-yet", "item": "not-in-catalogue"},  # no usable history: nothing to start
            ]})).json()  # fmt: skip
            for _ in range(100):  # the prefetch lands in the cache
                if not engine._inflight:
                    break
                await asyncio.sleep(0.01)
            after_play = (await c.get(f"/v1/users/{users[1]}/next")).json()
            together = await asyncio.gather(*[c.get(f"/v1/users/{users[2]}/next") for _ in range(5)])
            return posted, after_play, [r.json() for r in together]

    posted, after_play, together = asyncio.run(scenario())
    assert posted["prefetched"] == 1
    assert passes[0] == 1 and engine.cache.hits >= 1 and after_play["source"] == "model"
    assert after_play["history_length"] == len(engine.history(users[1], version))
    assert sum(passes[1:]) == 1, "five concurrent requests for one user and history: one forward pass"
    assert all(t == together[0] for t in together)
    with client(run_dir, tmp_path / "off.db", settings=ServeSettings(cache_mb=0)) as c:
        play = {"events": [{"user": users[1], "item": item, "timestamp": 2_000_000_000}]}
        assert c.post("/v1/events", json=play).json()["prefetched"] == 0, "no cache, nowhere to keep it"
        assert c.get(f"/v1/users/{users[1]}/next").json() == after_play, "the prefetched answer is the model's"
    with client(run_dir, tmp_path / "no.db", settings=ServeSettings(prefetch=False)) as c:
        assert c.post("/v1/events", json=play).json()["prefetched"] == 0


def test_background_work_never_makes_a_request_wait_behind_it() -> None:
    """Prefetches fill a forward pass only in the room the requests leave; a request that needs a queued
    prefetch promotes it."""
    passes: list[list[str]] = []

    class Version:  # stands in for a ModelVersion: the batcher only calls infer
        def infer(self, histories: list[Any]) -> list[Inference]:
            passes.append(list(histories))
            return [Inference(np.zeros(3), {}, {}) for _ in histories]

    async def scenario() -> None:
        batcher = Batcher(max_batch=4, background_room=3)
        version = Version()
        background = [batcher.submit(version, f"bg{i}", background=True) for i in range(4)]  # type: ignore[arg-type]
        requests = [batcher.submit(version, f"rq{i}") for i in range(5)]  # type: ignore[arg-type]
        batcher.promote(background[3])
        await asyncio.gather(*requests, *background)
        await batcher.stop()

    asyncio.run(scenario())
    # the promoted prefetch is a request, in its queue order; a full batch of requests leaves no room
    assert passes[0] == ["bg3", "rq0", "rq1", "rq2"]
    assert passes[1] == ["rq3", "rq4", "bg0"], "background fills the room the requests leave (3 - 2)"
    assert passes[2] == ["bg1", "bg2"]


def test_the_inference_cache_is_bounded_in_bytes_least_recently_used_out() -> None:
    history = History(np.arange(1, 40), np.zeros((39, 2), dtype=np.int64), np.ones(39, dtype=np.int64),
                      np.ones(39, dtype=np.int64), None)  # fmt: skip
    one = Inference(np.zeros(1000, dtype=np.float32), {}, {})  # 4,000 bytes of scores + the overhead
    cache = InferenceCache(3 * (4000 + InferenceCache.OVERHEAD))
    keys = [cache.key("v1", f"u{i}", history, 30) for i in range(4)]
    assert len({k[2] for k in keys}) == 1, "the digest is of the model input, the user is part of the key"
    assert cache.key("v1", "u0", history, 30) != cache.key("v2", "u0", history, 30)
    longer = History(*(np.r_[a, a[-1:]] for a in (history.items, history.categorical, history.gaps, history.window)),
                     None)  # fmt: skip
    assert cache.key("v1", "u0", history, 30) != cache.key("v1", "u0", longer, 30)
    for key in keys[:3]:
        cache.put(key, one)
    assert cache.get(keys[0]) is one  # u0 is now the most recently used
    cache.put(keys[3], one)  # over the bound: u1, the least recently used, goes
    assert cache.get(keys[1]) is None and cache.get(keys[0]) is one and cache.get(keys[3]) is one
    assert cache.bytes == 3 * (4000 + InferenceCache.OVERHEAD) and (cache.hits, cache.misses) == (3, 1)
    cache.forget("u0")
    assert cache.get(keys[0]) is None and cache.bytes == 2 * (4000 + InferenceCache.OVERHEAD)


# -- fallback -------------------------------------------------------------------------------------


def test_a_failing_model_gives_fallback_answers_never_a_500(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = users_of(run_dir)[2]
    with client(run_dir, tmp_path / "e.db") as c:
        version = c.app.state.engine.current  # type: ignore[attr-defined]

        def broken(histories: Any) -> Any:
            raise RuntimeError("CUDA error: device-side assert triggered")

        monkeypatch.setattr(version, "infer", broken)
        for surface in ("home", "next", "intent"):
            r = c.get(f"/v1/users/{user}/{surface}")
            assert r.status_code == 200
            body = r.json()
            assert body["source"] == "fallback" and body["fallback_reason"] == "model_error"
            assert "device-side assert" in body["fallback_detail"]
        home = c.get(f"/v1/users/{user}/home", params={"explore": 0}).json()
        assert home["rows"][0]["title"] == "Popular now" and home["rows"][1]["title"].startswith("Popular in ")
        popular = [i["item"] for i in home["rows"][0]["items"]]
        counts = [version.catalogue.popularity[version.catalogue.index[i]] for i in popular]
        assert counts == sorted(counts, reverse=True)
        metrics = c.get("/metrics").text
    assert 'intentrec_fallbacks_total{reason="model_error",surface="home"} 2.0' in metrics
    assert 'intentrec_requests_total{status="200",surface="next"} 1.0' in metrics


def test_a_slow_model_past_its_budget_gives_the_fallback(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with client(run_dir, tmp_path / "e.db", settings=ServeSettings(model_timeout_ms=50)) as c:
        version = c.app.state.engine.current  # type: ignore[attr-defined]
        real = version.infer

        def slow(histories: Any) -> Any:
            time.sleep(0.3)
            return real(histories)

        monkeypatch.setattr(version, "infer", slow)
        started = time.perf_counter()
        body = c.get(f"/v1/users/{users_of(run_dir)[0]}/next").json()
        elapsed = time.perf_counter() - started
    assert body["source"] == "fallback" and body["fallback_reason"] == "model_timeout"
    assert elapsed < 0.25, "the answer does not wait for the slow model"


def test_a_missing_model_serves_the_fallback_and_is_not_ready(run_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "run"
    shutil.copytree(run_dir, broken)
    (broken / "best.pt").write_bytes(b"truncated")
    with client(broken, tmp_path / "e.db") as c:
        assert c.get("/healthz").json() == {"status": "ok"}
        ready = c.get("/readyz")
        assert ready.status_code == 503 and "model not loaded" in ready.json()["problems"][0]
        body = c.get(f"/v1/users/{users_of(run_dir)[0]}/home").json()
        assert body["source"] == "fallback" and body["fallback_reason"] == "model_unavailable"
        assert len(body["rows"]) == 6


# -- deletion and admin ---------------------------------------------------------------------------


def test_admin_endpoints_need_the_token(run_dir: Path, tmp_path: Path) -> None:
    user = users_of(run_dir)[0]
    with client(run_dir, tmp_path / "a.db", admin_token="") as c:  # none configured: disabled
        c.app.state  # noqa: B018
    with TestClient(create_app(run_dir, db=tmp_path / "b.db")) as c:
        r = c.delete(f"/v1/users/{user}")
        assert r.status_code == 403 and "INTENTREC_ADMIN_TOKEN" in r.json()["error"]
    with client(run_dir, tmp_path / "c.db") as c:
        assert c.delete(f"/v1/users/{user}").status_code == 401
        assert c.delete(f"/v1/users/{user}", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.post("/v1/admin/reload", headers={"Authorization": TOKEN}).status_code == 401
        assert c.post("/v1/admin/rollback").status_code == 401
        assert c.get(f"/v1/users/{user}/intent").json()["source"] == "model", "nothing was deleted"


def test_deletion_persists_across_a_restart_and_reaches_data_prepare(run_dir: Path, tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    victim, other = users_of(run_dir)[3], users_of(run_dir)[4]
    with client(run_dir, db) as c:
        c.post("/v1/events", json={"events": [{"user": victim, "item": "1"}, {"user": other, "item": "1"}]})
        r = c.delete(f"/v1/users/{victim}", headers=ADMIN)
        assert r.status_code == 200
        assert r.json()["events_deleted"] == 1 and r.json()["in_training_data"] is True
        after = c.get(f"/v1/users/{victim}/home").json()
        assert after["source"] == "fallback" and after["fallback_reason"] == "cold_start"
    with client(run_dir, db) as c:  # a restart
        assert c.get(f"/v1/users/{victim}/intent").json()["history_length"] == 0
        assert c.get(f"/v1/users/{other}/intent").json()["source"] == "model"
    assert read_deletions(db) == [victim]
    store = SQLiteEventStore(db)
    assert store.events(victim) == [] and len(store.events(other)) == 1
    store.close()
    # the other end: every future training set leaves the user out
    out = tmp_path / "prepared"
    assert (
        main(
            [
                "data",
                "prepare",
                str(run_dir / "world"),
                "--format",
                "synthetic",
                "--deletions",
                str(db),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    users = pl.read_parquet(out / "users.parquet")["user"].to_list()
    assert victim not in users and other in users and len(users) == len(users_of(run_dir)) - 1
    config = load_config(
        None,
        [
            "data.synthetic.users = 200",
            "data.synthetic.seed = 3",
            "data.synthetic.titles = 120",
            f'data.deletions = ["{db}"]',
        ],
    )
    prepared = prepare_data(config, tmp_path / "train-run")
    assert victim not in prepared.users["user"].to_list() and prepared.n_users == len(users_of(run_dir)) - 1


def test_deletions_from_the_environment_variable(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "events.db"
    store = SQLiteEventStore(db)
    victim = users_of(run_dir)[8]
    store.delete_user(victim)
    store.close()
    monkeypatch.setenv("INTENTREC_DELETIONS", str(db))
    out = tmp_path / "prepared"
    assert main(["data", "prepare", str(run_dir / "world"), "--format", "synthetic", "--out", str(out)]) == 0
    assert victim not in pl.read_parquet(out / "users.parquet")["user"].to_list()


def test_reload_and_rollback_switch_model_versions(run_dir: Path, tmp_path: Path) -> None:
    with client(run_dir, tmp_path / "e.db") as c:
        first = c.get("/v1/model").json()["serving"]
        r = c.post("/v1/admin/reload", headers=ADMIN)
        assert r.status_code == 200 and r.json()["previous"] == first["version"]
        assert r.json()["serving"]["loaded_at"] > first["loaded_at"]
        bad = c.post("/v1/admin/reload", headers=ADMIN, json={"run_dir": str(tmp_path / "nowhere")})
        assert bad.status_code == 422 and "is not a folder" in bad.json()["error"]
        back = c.post("/v1/admin/rollback", headers=ADMIN).json()
        assert back["serving"]["loaded_at"] == first["loaded_at"]
        assert c.get(f"/v1/users/{users_of(run_dir)[0]}/next").json()["model_version"] == first["version"]


# -- several processes ----------------------------------------------------------------------------


def test_processes_sharing_a_store_share_deletions_and_the_serving_version(run_dir: Path, tmp_path: Path) -> None:
    """Two apps on one store stand for two worker processes (each has its own SQLite connection)."""
    second = shutil.copytree(run_dir, tmp_path / "second")
    db = tmp_path / "e.db"
    user, other = users_of(run_dir)[:2]
    with client(run_dir, db) as a, client(run_dir, db) as b:
        assert b.get(f"/v1/users/{user}/intent").json()["history_length"] > 0
        assert a.delete(f"/v1/users/{user}", headers=ADMIN).status_code == 200
        body = b.get(f"/v1/users/{user}/intent").json()
        assert (body["history_length"], body["source"]) == (0, "fallback"), "the deletion reached the other process"
        first = b.get("/v1/model").json()["serving"]["version"]
        new = a.post("/v1/admin/reload", headers=ADMIN, json={"run_dir": str(second)}).json()["serving"]["version"]
        assert new != first
        deadline = time.monotonic() + 60  # the other process loads the new version on a thread
        while b.get("/v1/model").json()["serving"]["version"] != new:
            assert time.monotonic() < deadline, "the reload never reached the other process"
            time.sleep(0.05)
        assert b.get(f"/v1/users/{other}/next").json()["model_version"] == new
        assert a.post("/v1/admin/rollback", headers=ADMIN).status_code == 200
        model = b.get("/v1/model").json()
        assert (model["serving"]["version"], model["previous"]) == (first, new), "a rollback is immediate"
    # a restart serves what its command line names, and keeps the deletion
    with client(second, db) as c:
        assert c.get("/v1/model").json()["serving"]["version"] == new
        assert c.get(f"/v1/users/{user}/intent").json()["history_length"] == 0


def test_serve_with_worker_processes(run_dir: Path, tmp_path: Path) -> None:
    """``intentrec serve --workers 2``: every answer right whichever process takes it, one metrics view."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "INTENTREC_ADMIN_TOKEN": TOKEN}
    command = [sys.executable, "-m", "intentrec.cli", "serve", str(run_dir), "--workers", "2", "--port", str(port),
               "--db", str(tmp_path / "e.db"), "--threads", "1"]  # fmt: skip
    server = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, server.stdout.read() if server.stdout else ""
            try:
                if httpx2.get(f"{base}/readyz").status_code == 200:
                    break
            except httpx2.TransportError:
                pass
            assert time.monotonic() < deadline, "the service never became ready"
            time.sleep(0.2)
        processes = {httpx2.get(f"{base}/v1/model").json()["process"] for _ in range(40)}
        assert len(processes) == 2, "fresh connections reach both processes"
        user = users_of(run_dir)[3]
        for _ in range(12):  # a fresh connection each: the kernel hands them to either process
            body = httpx2.get(f"{base}/v1/users/{user}/home").json()
            assert body["source"] == "model" and len(body["rows"]) == 6
        assert httpx2.delete(f"{base}/v1/users/{user}", headers=ADMIN).status_code == 200
        for _ in range(12):
            assert httpx2.get(f"{base}/v1/users/{user}/intent").json()["history_length"] == 0
        text = httpx2.get(f"{base}/metrics").text
        served = [line for line in text.splitlines() if line.startswith("intentrec_requests_total{")]
        home = sum(float(line.rsplit(" ", 1)[1]) for line in served if 'surface="home"' in line)
        assert home == 12, "the metrics count every process's requests"
    finally:
        server.terminate()
        server.wait(timeout=30)


# -- validation -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "url", "body", "field"),
    [
        ("get", "/v1/users/1/home?k=0", None, "query.k"),
        ("get", "/v1/users/1/home?k=101", None, "query.k"),
        ("get", "/v1/users/1/home?rows=21", None, "query.rows"),
        ("get", "/v1/users/1/next?k=abc", None, "query.k"),
        ("get", "/v1/users/1/home?explore=0.9", None, "query.explore"),
        ("get", "/v1/users/" + "u" * 129 + "/intent", None, "path.user"),
        ("post", "/v1/events", {"events": []}, "body.events"),
        ("post", "/v1/events", {"events": [{"user": "1", "item": "2"}] * 1001}, "body.events"),
        ("post", "/v1/events", {"events": [{"user": "1"}]}, "body.events.0.item"),
        ("post", "/v1/events", {"events": [{"user": "1", "item": "2", "colour": "red"}]}, "body.events.0.colour"),
        ("post", "/v1/events", {"events": [{"user": "1", "item": "2", "timestamp": -5}]}, "body.events.0.timestamp"),
        ("post", "/v1/events", {"events": [{"user": "1\n", "item": "2"}]}, "body.events.0.user"),
    ],
)
def test_invalid_input_gets_a_4xx_naming_the_field(
    run_dir: Path, tmp_path: Path, method: str, url: str, body: Any, field: str
) -> None:
    with client(run_dir, tmp_path / "e.db") as c:
        r = c.request(method.upper(), url, json=body)
        assert r.status_code == 422
        assert r.json()["error"].startswith(field + ":")
        assert "Traceback" not in r.text
        assert SQLiteEventStore(tmp_path / "e.db").count() == 0


def test_unknown_paths_and_bad_json_are_json_errors(run_dir: Path, tmp_path: Path) -> None:
    with client(run_dir, tmp_path / "e.db") as c:
        r = c.get("/v1/nothing")
        assert r.status_code == 404 and r.json() == {"error": "Not Found"}
        r = c.post("/v1/events", content=b"{not json", headers={"content-type": "application/json"})
        assert r.status_code == 422 and "error" in r.json()


def test_the_store_is_all_or_nothing(tmp_path: Path) -> None:
    store = SQLiteEventStore(tmp_path / "e.db")
    with pytest.raises(Exception, match="NOT NULL"):
        store.append([Event("u", "1", 5), Event("u", None, 6)])  # type: ignore[arg-type]
    assert store.count() == 0
    assert store.append([Event("u", "1", 5), Event("u", "2", 6)]) == 2
    assert [e.item for e in store.events("u")] == ["1", "2"]


def test_reads_do_not_wait_for_a_write_in_progress(tmp_path: Path) -> None:
    """A commit syncs to disk and can be slow; the service reads on its event loop, so a read must not
    queue behind a write (WAL: readers see the last commit while a writer works)."""
    store = SQLiteEventStore(tmp_path / "e.db")
    other = SQLiteEventStore(tmp_path / "e.db")  # another process of the service
    store.append([Event("u", "1", 5)])
    before = store.changes()
    other._db.execute("BEGIN IMMEDIATE")  # a write in progress holds the database's write lock
    other._db.execute("INSERT INTO events (user, item, timestamp, weight, received) VALUES ('u', '2', 6, 1, 0)")
    with store._lock:  # ... and this process's own writer is busy too
        started = time.perf_counter()
        assert [e.item for e in store.events("u")] == ["1"] and store.deletions() == []
        assert store.setting("serving") is None and store.changes() == before
        assert time.perf_counter() - started < 1.0
    other._db.execute("COMMIT")
    assert [e.item for e in store.events("u")] == ["1", "2"] and store.changes() != before


# -- concurrency and overload ---------------------------------------------------------------------


def test_concurrent_reads_while_events_arrive_lose_nothing(run_dir: Path, tmp_path: Path) -> None:
    app = create_app(run_dir, db=tmp_path / "e.db", admin_token=TOKEN, max_inflight=1000)
    users = users_of(run_dir)[:5]
    items = pl.read_parquet(run_dir / "data" / "items.parquet")["item"].to_list()
    base = {u: None for u in users}

    async def scenario() -> list[int]:
        transport = httpx2.ASGITransport(app=app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://test") as c:
            for u in users:
                base[u] = (await c.get(f"/v1/users/{u}/intent")).json()["history_length"]

            async def post(n: int) -> int:
                events = [
                    {
                        "user": users[(n + j) % 5],
                        "item": items[(n * 7 + j) % len(items)],
                        "timestamp": 10**9 + n * 100 + j,
                    }
                    for j in range(25)
                ]
                return (await c.post("/v1/events", json={"events": events})).status_code

            async def read(n: int) -> int:
                return (await c.get(f"/v1/users/{users[n % 5]}/home")).status_code

            codes = await asyncio.gather(*[post(n) for n in range(40)], *[read(n) for n in range(40)])
            final = [(await c.get(f"/v1/users/{u}/intent")).json()["history_length"] for u in users]
            return [*codes, *final]

    out = asyncio.run(scenario())
    codes, final = out[:80], out[80:]
    assert set(codes) == {200}
    assert SQLiteEventStore(tmp_path / "e.db").count() == 40 * 25
    assert sum(final) - sum(base.values()) == 1000  # type: ignore[arg-type]


def test_overload_answers_503_with_retry_after(run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = create_app(run_dir, db=tmp_path / "e.db", admin_token=TOKEN, max_inflight=4)
    version = app.state.engine.current
    real = version.infer

    def slow(histories: Any) -> Any:
        time.sleep(0.05)
        return real(histories)

    monkeypatch.setattr(version, "infer", slow)
    user = users_of(run_dir)[0]

    async def scenario() -> list[httpx2.Response]:
        async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://test") as c:
            return await asyncio.gather(*[c.get(f"/v1/users/{user}/next") for _ in range(20)])

    responses = asyncio.run(scenario())
    codes = Counter(r.status_code for r in responses)
    assert codes[200] >= 4 and codes[503] >= 1 and set(codes) <= {200, 503}
    refused = next(r for r in responses if r.status_code == 503)
    assert refused.headers["retry-after"] == "1" and "overloaded" in refused.json()["error"]
    assert app.state.metrics.rejected._value.get() == codes[503]


def test_overload_is_refused_even_when_every_answer_is_cached(run_dir: Path, tmp_path: Path) -> None:
    """Answers from the inference cache never wait on the model; requests that arrive together are still
    counted together, so a burst past the bound is refused instead of queueing behind the event loop."""
    app = create_app(run_dir, db=tmp_path / "e.db", admin_token=TOKEN, max_inflight=4)
    user = users_of(run_dir)[0]

    async def scenario() -> tuple[httpx2.Response, list[httpx2.Response]]:
        async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://test") as c:
            first = await c.get(f"/v1/users/{user}/next")  # the model runs once; the burst is all cache hits
            return first, await asyncio.gather(*[c.get(f"/v1/users/{user}/next") for _ in range(20)])

    first, responses = asyncio.run(scenario())
    codes = Counter(r.status_code for r in responses)
    assert first.status_code == 200 and app.state.engine.cache.hits >= 4
    assert codes[200] >= 4 and codes[503] >= 1 and set(codes) <= {200, 503}
    assert all(r.json() == first.json() for r in responses if r.status_code == 200)


def test_feature_values_the_training_log_never_had_become_unknown(run_dir: Path, tmp_path: Path) -> None:
    """E.g. a rewatch posted to a model trained on a log without repeats (ML-100K): its action code has
    no embedding row, so it is fed as 0 (unknown) instead of crashing the forward pass."""
    engine = Engine(run_dir, SQLiteEventStore(tmp_path / "e.db"))
    live = engine.current.live
    action = live.fields.index("action")
    live.cardinalities[action] = 3  # codes 0..2: unknown, continue, discover; rewatch (3) never seen
    user = users_of(run_dir)[0]
    base = live.base(engine.current.user_rows[user])
    again = engine.current.catalogue.ids[int(base.items[-1])]
    out = live.extend(base, [Event(user, again, int(base.timestamps[-1]) + 60)])  # type: ignore[index]
    assert out.categorical[-1, action] == 0
    assert engine.current.infer([out])[0].scores.shape == (engine.current.catalogue.n_items + 1,)


def test_one_failing_history_does_not_fail_the_others_in_its_batch(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = create_app(run_dir, db=tmp_path / "e.db", admin_token=TOKEN)
    version = app.state.engine.current
    real = version.infer
    users = users_of(run_dir)[:8]
    poisoned = len(version.live.base(version.user_rows[users[0]]))

    def fragile(histories: Any) -> Any:
        if any(len(h) == poisoned for h in histories):
            raise RuntimeError("bad row")
        return real(histories)

    monkeypatch.setattr(version, "infer", fragile)

    async def scenario() -> list[dict[str, Any]]:
        async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://test") as c:
            responses = await asyncio.gather(*[c.get(f"/v1/users/{u}/intent") for u in users])
            return [r.json() for r in responses]

    bodies = asyncio.run(scenario())
    for user, body in zip(users, bodies, strict=True):
        bad = len(version.live.base(version.user_rows[user])) == poisoned
        assert body["source"] == ("fallback" if bad else "model"), user


def test_a_repeat_model_is_served_with_its_mixture_scores(tmp_path: Path) -> None:
    """A model trained with the continue/discover mixture serves through the last-position pass: up next
    ranks by the mixture's log-probabilities, never repeats the history, and matches `recommend`."""
    import torch

    from intentrec.runs import load_run

    config = write(tmp_path / "small.toml", SMALL)
    overrides = ["--set", "model.repeat=true", "--set", "train.epochs=1"]
    assert main(["train", "--config", str(config), *overrides, "--out", str(tmp_path / "run")]) == 0
    run = load_run(tmp_path / "run")
    user = users_of(tmp_path / "run")[7]
    with client(tmp_path / "run", tmp_path / "e.db") as c:
        nxt = c.get(f"/v1/users/{user}/next", params={"k": 5}).json()
        home = c.get(f"/v1/users/{user}/home", params={"explore": 0})
    assert nxt["source"] == "model" and len(nxt["items"]) == 5 and home.status_code == 200
    scores = [i["score"] for i in nxt["items"]]
    assert scores == sorted(scores, reverse=True) and all(math.isfinite(s) and s < 0 for s in scores)
    row = run.user_row(user)
    history = set(run.prepared.items.filter(
        pl.col("item_idx").is_in(run.store.items[run.store.offsets[row] : run.store.offsets[row] + run.store.n[row]])
    )["item"].to_list())  # fmt: skip
    assert not history & {i["item"] for i in nxt["items"]}
    with torch.no_grad():  # the full pass scores as the served last-position pass does
        batch = run.store.history(row, run.model.max_len)
        best = run.model.next_item_scores(batch, run.model(batch))[0]
        best[
            torch.from_numpy(run.store.items[run.store.offsets[row] : run.store.offsets[row] + run.store.n[row]])
        ] = -1e9
    assert max(scores) == pytest.approx(float(best.max()), abs=1e-4)
