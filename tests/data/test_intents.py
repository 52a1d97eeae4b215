"""Intent labels checked by hand on small fixtures."""

from __future__ import annotations

from datetime import date, datetime, timezone

import polars as pl
import pytest

from intentrec.data.intents import IntentConfig, derive_intents


def ts(day: str) -> int:
    return int(datetime.fromisoformat(day).replace(tzinfo=timezone.utc).timestamp())


ITEMS = pl.DataFrame(
    {
        "item": ["f1", "f2", "e1", "e2"],
        "genres": [["Drama"], ["Comedy", "Drama"], ["Kids"], ["Kids"]],
        "format": ["film", "film", "series", "series"],
        "series": [None, None, "s1", "s1"],
        "release_date": [date(2024, 1, 1), date(2024, 1, 20), date(2023, 1, 1), date(2023, 1, 1)],
    }
)
LOG = pl.DataFrame(
    {
        "user": ["u1"] * 5,
        "item": ["f1", "e1", "e2", "f1", "f2"],
        "timestamp": [
            ts("2024-01-05"),
            ts("2024-01-06"),
            ts("2024-01-07"),
            ts("2024-02-10"),
            ts("2024-02-10T01:00"),
        ],
    }
)


def test_streaming_labels_by_hand() -> None:
    labels = derive_intents(LOG, ITEMS, IntentConfig(genre_top_n=1))
    names = [h.name for h in labels.heads]
    assert names == ["action", "genre", "format", "recency"]
    f = labels.frame
    # continue=0 discover=1 rewatch=2: first film, new series, its next episode, the film again, a new film
    assert f["intent_action"].to_list() == [1, 1, 0, 2, 1]
    # Drama is the most frequent genre (3 interactions); Kids and Comedy fall into "other"
    assert labels.head("genre").classes == ("Drama", "other")
    assert f["intent_genre"].to_list() == [[0], [1], [1], [0], [0, 1]]
    assert f["intent_format"].to_list() == [0, 1, 1, 0, 0]
    # ages: 4 d (new), >1 y, >1 y, 40 d (evergreen), 21 d (recent)
    assert f["intent_recency"].to_list() == [0, 2, 2, 2, 1]


def test_recency_thresholds_are_configurable() -> None:
    labels = derive_intents(LOG, ITEMS, IntentConfig(new_days=3, recent_days=50))
    assert labels.frame["intent_recency"].to_list() == [1, 2, 2, 1, 1]


def test_previous_genre_rule_without_series() -> None:
    items = pl.DataFrame({"item": ["a", "b", "c"], "genres": [["Drama"], ["Drama", "Comedy"], ["Horror"]]})
    log = pl.DataFrame({"user": ["u"] * 4 + ["v"], "item": ["a", "b", "c", "a", "b"]})
    labels = derive_intents(log, items)
    assert labels.head("action").source == "derived: rewatch / continue (previous genre) / discover"
    # a: first -> discover; b shares Drama with a -> continue; c shares nothing -> discover; a again -> rewatch;
    # v's first interaction has no previous one -> discover
    assert labels.frame["intent_action"].to_list() == [1, 0, 1, 2, 1]


def test_event_types_become_the_action_head() -> None:
    log = pl.DataFrame({"user": ["u"] * 4, "item": ["a", "a", "b", "a"], "event": ["pv", "cart", "pv", "buy"]})
    labels = derive_intents(log, pl.DataFrame({"item": ["a", "b"]}))
    head = labels.head("action")
    assert head.classes == ("pv", "buy", "cart") and head.source == "event type"
    assert labels.frame["intent_action"].to_list() == [0, 2, 0, 1]


def test_heads_without_inputs_are_disabled_with_a_reason() -> None:
    log = pl.DataFrame({"user": ["u", "u"], "item": ["a", "b"]})
    items = pl.DataFrame({"item": ["a", "b"], "format": ["film", "film"]})
    labels = derive_intents(log, items)
    assert [h.name for h in labels.heads] == ["action"]
    assert labels.disabled == {
        "genre": "the catalogue has no genres or attributes",
        "format": "every item has the same format (film): nothing to predict",
        "recency": "the log has no timestamps",
    }
    assert "intent_genre" not in labels.frame.columns


def test_year_precision_release_dates_disable_recency() -> None:
    labels = derive_intents(LOG, ITEMS, release_precision="year")
    assert "year" in labels.disabled["recency"]


def test_unknown_genres_and_release_dates_are_null_labels() -> None:
    items = ITEMS.with_columns(
        pl.when(pl.col("item") == "f2").then(None).otherwise(pl.col("genres")).alias("genres"),
        pl.when(pl.col("item") == "f2").then(None).otherwise(pl.col("release_date")).alias("release_date"),
    )
    f = derive_intents(LOG, items).frame
    assert f["intent_genre"][4] is None and f["intent_recency"][4] is None


def test_config_rejects_unknown_heads() -> None:
    with pytest.raises(ValueError, match=r"unknown intent head\(s\) \['mood'\]"):
        IntentConfig(heads=("action", "mood"))
