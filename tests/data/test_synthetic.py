from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from intentrec.data import read_dataset
from intentrec.data.intents import derive_intents
from intentrec.data.synthetic import ACTIONS, ARCHETYPES, GENRES, WorldConfig, bayes_accuracy, generate, write

SMALL = WorldConfig(users=300, seed=7)


@pytest.fixture(scope="module")
def world():  # type: ignore[no-untyped-def]
    return generate(SMALL)


def test_deterministic_for_a_seed(world) -> None:  # type: ignore[no-untyped-def]
    again = generate(SMALL)
    assert again.interactions.equals(world.interactions)
    assert again.sessions.equals(world.sessions)
    other = generate(WorldConfig(users=300, seed=8))
    assert not other.interactions.equals(world.interactions)


def test_catalogue_and_log_are_consistent(world) -> None:  # type: ignore[no-untyped-def]
    items = world.items
    assert set(items["format"].unique()) == {"film", "series"}
    assert items.filter(pl.col("format") == "series")["series"].null_count() == 0
    assert set(items["genres"].explode().unique()) <= set(GENRES)
    joined = world.interactions.join(items, on="item")
    assert joined.height == world.interactions.height
    released = joined.with_columns(pl.col("release_date").cast(pl.Datetime("ms")).dt.epoch("s").alias("r"))
    assert (released["timestamp"] >= released["r"]).all(), "nothing is watched before its release"
    start = world.interactions["timestamp"].min()
    arrivals = items.with_columns(pl.col("release_date").cast(pl.Datetime("ms")).dt.epoch("s").alias("r")).filter(
        pl.col("r") > start
    )
    assert arrivals.height > 0, "new titles keep arriving during the period"
    assert set(world.interactions["device"].unique()) <= {"tv", "mobile", "web", "tablet"}
    per_user = world.interactions.group_by("user").agg(pl.col("timestamp").diff().min().alias("d"))
    assert (per_user["d"].drop_nulls() > 0).all(), "events of a user are strictly ordered in time"


def test_ground_truth_probabilities(world) -> None:  # type: ignore[no-untyped-def]
    s = world.sessions
    for field, values in (("action", ACTIONS), ("genre", GENRES)):
        total = s.select(pl.sum_horizontal([f"p_{field}_{v}" for v in values])).to_series()
        assert ((total - 1.0).abs() < 1e-6).all()
    chosen = s.select(
        pl.struct(["action", *[f"p_action_{a}" for a in ACTIONS]]).map_elements(
            lambda r: r[f"p_action_{r['action']}"], return_dtype=pl.Float64
        )
    )
    assert (chosen.to_series() > 0).all(), "every drawn intent had positive probability"
    assert set(world.users["archetype"].unique()) == set(ARCHETYPES)
    acc = bayes_accuracy(s)
    assert 1 / 3 < acc["action"] < 0.95 and 1 / len(GENRES) < acc["genre"] < 0.95


def test_intents_shape_what_is_watched(world) -> None:  # type: ignore[no-untyped-def]
    labels = derive_intents(world.interactions, world.items).frame.join(
        world.sessions.select("session", "action"), on="session"
    )
    realised = labels.group_by("action").agg((pl.col("intent_action") == 0).mean().alias("continue_share"))
    share = dict(realised.iter_rows())
    assert share["continue"] > 0.6 > 0.2 > share["discover"], "continue sessions mostly continue a series"
    # ...but not trivially: noise makes some events depart from the session intent
    assert share["continue"] < 0.99


def test_archetypes_behave_differently(world) -> None:  # type: ignore[no-untyped-def]
    counts = world.interactions.group_by("user").len().join(world.users, on="user")
    mean_events = dict(counts.group_by("archetype").agg(pl.col("len").mean()).iter_rows())
    assert mean_events["binger"] > 2 * mean_events["casual"]
    labels = derive_intents(world.interactions, world.items).frame.join(
        world.users.select("user", "archetype"), on="user"
    )
    rewatch = dict(labels.group_by("archetype").agg((pl.col("intent_action") == 2).mean()).iter_rows())
    assert rewatch["rewatcher"] > 2 * rewatch["explorer"]
    # a new-release chaser's wish for new titles shows in what they watch (intent_recency 0 = new)
    new = dict(labels.group_by("archetype").agg((pl.col("intent_recency") == 0).mean()).iter_rows())
    assert new["new_release_chaser"] > 0.2 and new["new_release_chaser"] > 3 * new["explorer"]
    # every parameter that tells archetypes apart is in the ground truth
    assert {"p_series", "p_new", "p_evergreen", "top_genre_share", "session_length"} <= set(world.users.columns)


def test_written_world_is_readable_without_ground_truth(tmp_path: Path, world) -> None:  # type: ignore[no-untyped-def]
    folder = write(world, tmp_path / "world")
    ds = read_dataset(folder, "synthetic")
    assert ds.interactions.height == world.interactions.height
    assert set(ds.interactions.columns) == {"user", "item", "timestamp", "weight", "device", "session"}
    assert (folder / "ground_truth" / "sessions.parquet").exists()


def test_config_validation() -> None:
    with pytest.raises(ValueError, match=r"noise must be in \[0, 1\]"):
        WorldConfig(noise=1.5)
