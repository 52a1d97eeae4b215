from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from intentrec.data.batching import SequenceStore, gap_bucket, length_groups
from intentrec.data.schema import make_dataset
from intentrec.data.sequences import SequenceConfig, build_sequences, kcore, window_lengths
from intentrec.data.synthetic import WorldConfig, generate


def dataset(rows: list[tuple[str, str, int]]):  # type: ignore[no-untyped-def]
    frame = pl.DataFrame(rows, schema=["user", "item", "timestamp"], orient="row")
    return make_dataset("t", frame)


def test_time_order_with_ties_in_file_order_and_natural_id_maps() -> None:
    ds = dataset([("10", "b", 5), ("2", "z", 9), ("10", "a", 1), ("10", "c", 5), ("2", "y", 9)])
    p = build_sequences(ds)
    assert p.users.select("user", "user_idx").rows() == [("2", 1), ("10", 2)]  # numeric order, not text
    items = dict(p.items.select("item", "item_idx").iter_rows())
    assert items == {"a": 1, "b": 2, "c": 3, "y": 4, "z": 5}
    seq = p.interactions.select("user_idx", "item_idx").rows()
    assert seq == [(1, 5), (1, 4), (2, 1), (2, 2), (2, 3)]  # ties (5, 5) and (9, 9) keep file order


def test_leave_one_out_split() -> None:
    rows = [("u", f"i{k}", k) for k in range(5)] + [("v", "i0", 1), ("v", "i1", 2)]
    p = build_sequences(dataset(rows))
    assert p.users.select("user", "n", "train_end", "valid_end").rows() == [("u", 5, 3, 4), ("v", 2, 2, 2)]


def test_temporal_split_invariants_on_the_synthetic_world() -> None:
    world = generate(WorldConfig(users=150, seed=3))
    ds = make_dataset("w", world.interactions, world.items)
    p = build_sequences(ds, SequenceConfig(split="temporal"))
    frame = p.interactions.join(p.users, on="user_idx")
    part = (
        pl.when(pl.col("position") < pl.col("train_end")).then(pl.lit("train"))
        .when(pl.col("position") < pl.col("valid_end")).then(pl.lit("valid"))
        .otherwise(pl.lit("test"))
    )  # fmt: skip
    spans = (
        frame.with_columns(part.alias("part"))
        .group_by("part")
        .agg(pl.col("timestamp").min().alias("lo"), pl.col("timestamp").max().alias("hi"))
    )
    s = {r["part"]: r for r in spans.iter_rows(named=True)}
    assert s["train"]["hi"] <= s["valid"]["lo"] and s["valid"]["hi"] <= s["test"]["lo"]
    shares = frame.with_columns(part.alias("part"))["part"].value_counts(normalize=True)
    test_share = shares.filter(pl.col("part") == "test")["proportion"][0]
    assert 0.07 < test_share < 0.13


def test_nothing_of_valid_or_test_in_training_batches() -> None:
    world = generate(WorldConfig(users=80, seed=1))
    p = build_sequences(make_dataset("w", world.interactions, world.items))
    store = SequenceStore(p)
    valid_targets = set(store.targets("valid").tolist())
    test_targets = set(store.targets("test").tolist())
    seen_positions: set[tuple[int, int]] = set()
    for batch in store.train_batches(batch_size=16, max_len=1000, shuffle=False):
        users = batch.users.numpy()
        mask = batch.mask.numpy()
        target_mask = batch.target_items.numpy() > 0
        counts = mask.sum(axis=1) + 1  # inputs plus the final target
        for row, user in enumerate(users):
            seen_positions.update((int(user), k) for k in range(counts[row]))
            assert target_mask[row].sum() == counts[row] - 1
    flat = {
        (int(p.interactions["user_idx"][i]), int(p.interactions["position"][i])) for i in valid_targets | test_targets
    }
    assert not (flat & seen_positions)
    assert len(valid_targets) == len(test_targets) == int((store.n >= 3).sum())


def test_kcore_reaches_a_fixed_point() -> None:
    frame = pl.DataFrame({"user": ["a", "a", "b", "b", "c"], "item": ["x", "y", "x", "y", "x"]})
    out = kcore(frame, 2, 2)
    assert sorted(out.rows()) == [("a", "x"), ("a", "y"), ("b", "x"), ("b", "y")]


def test_window_lengths_match_brute_force() -> None:
    rng = np.random.default_rng(0)
    users = np.sort(rng.integers(0, 20, size=400))
    ts = np.concatenate([np.sort(rng.integers(0, 10 * 86_400, size=(users == u).sum())) for u in np.unique(users)])
    fast = window_lengths(users, ts, hours=24, items=5)
    slow = [sum(1 for j in range(i + 1) if users[j] == users[i] and ts[i] - ts[j] <= 86_400) for i in range(len(users))]
    assert fast.tolist() == slow
    no_time = window_lengths(users, None, hours=24, items=5)
    positions = [sum(1 for j in range(i + 1) if users[j] == users[i]) for i in range(len(users))]
    assert no_time.tolist() == [min(p, 5) for p in positions]


def two_users() -> tuple[SequenceStore, list[int], list[int]]:
    """u watches i0..i4 100 s apart, v i9 i8 i7 i6; the store and each user's item indices in order."""
    rows = [("u", f"i{k}", 100 * k) for k in range(5)] + [("v", f"i{k}", 14 - k) for k in (9, 8, 7, 6)]
    p = build_sequences(dataset(rows))
    item = dict(p.items.select("item", "item_idx").iter_rows())
    return SequenceStore(p), [item[f"i{k}"] for k in range(5)], [item[f"i{k}"] for k in (9, 8, 7, 6)]


def test_training_and_evaluation_batches_by_hand() -> None:
    store, u, v = two_users()
    batch = next(store.train_batches(batch_size=8, max_len=4, shuffle=False))
    # u trains on its first 3 interactions (inputs i0 i1, targets i1 i2), v on 2: the batch is as wide
    # as its longest row, 2 columns, not max_len
    assert batch.items.shape == (2, 2) and batch.categorical.shape[:2] == (2, 2)
    assert batch.items.tolist() == [[u[0], u[1]], [0, v[0]]]
    assert batch.target_items.tolist() == [[u[1], u[2]], [0, v[1]]]
    assert batch.mask.tolist() == [[True, True], [False, True]]
    assert batch.intent_targets["action"].shape == (2, 2)
    wide = next(store.train_batches(batch_size=8, max_len=1, shuffle=False))  # max_len still caps the width
    assert wide.items.tolist() == [[u[1]], [v[0]]] and wide.target_items.tolist() == [[u[2]], [v[1]]]
    valid = next(store.eval_batches("valid", batch_size=8, max_len=4))
    assert valid.items.tolist() == [[u[0], u[1], u[2]], [0, v[0], v[1]]]
    assert valid.target_items.tolist() == [[0, 0, u[3]], [0, 0, v[2]]]
    test = next(store.eval_batches("test", batch_size=8, max_len=3))
    assert test.items[0].tolist() == [u[1], u[2], u[3]]  # truncated to the latest 3
    assert test.target_items[0, -1].item() == u[4]
    assert test.window_len[0].tolist() == [1, 2, 3]  # all within a week, capped at what the batch holds
    assert test.time_gaps[0].tolist() == gap_bucket(np.array([100.0, 100.0, 100.0])).tolist()


def test_prefix_training_batches_by_hand() -> None:
    store, u, v = two_users()
    # u trains on i0 i1 i2 (targets i1, i2), v on i9 i8 (target i8): three rows, each target at the end
    assert store.train_steps(8, 4, "prefixes") == 1 and store.train_steps(2, 4, "prefixes") == 2
    assert store.train_steps(8, 4) == 1 and store.train_steps(1, 4) == 2  # users
    assert store.train_steps(1, 1, "prefixes") == 2  # u's window at max_len 1 holds one target, i2
    batch = next(store.train_batches(8, max_len=4, shuffle=False, samples="prefixes"))
    assert batch.items.tolist() == [[0, u[0]], [u[0], u[1]], [0, v[0]]]
    assert batch.target_items.tolist() == [[0, u[1]], [0, u[2]], [0, v[1]]]
    assert batch.mask.tolist() == [[False, True], [True, True], [False, True]]
    assert batch.intent_target_mask["action"][:, 0].tolist() == [False, False, False]
    short = next(store.train_batches(8, max_len=1, shuffle=False, samples="prefixes"))  # the windows' targets
    assert short.items.tolist() == [[u[1]], [v[0]]] and short.target_items.tolist() == [[u[2]], [v[1]]]


@pytest.mark.parametrize("max_len", [1000, 7])  # 7: long histories are cut to their latest window
def test_prefix_batches_hold_the_windows_targets_once_and_nothing_else(max_len: int) -> None:
    world = generate(WorldConfig(users=80, seed=1))
    store = SequenceStore(build_sequences(make_dataset("w", world.interactions, world.items)))
    by_sequence = [
        (int(user), int(t)) for b in store.train_batches(16, max_len, shuffle=False)
        for user, row in zip(b.users, b.target_items, strict=True) for t in row if t > 0
    ]  # fmt: skip
    batches = list(store.train_batches(16, max_len, seed=3, samples="prefixes"))
    by_prefix = [(int(user), int(row[-1])) for b in batches for user, row in zip(b.users, b.target_items, strict=True)]
    assert sorted(by_prefix) == sorted(by_sequence) and len(batches) == store.train_steps(16, max_len, "prefixes")
    assert all(int((b.target_items[:, :-1] > 0).sum()) == 0 for b in batches)  # only the last position has one
    assert max(b.items.shape[1] for b in batches) == min(max_len, int(store.train_end.max()) - 1)
    again = [b.target_items[:, -1].tolist() for b in store.train_batches(16, max_len, seed=3, samples="prefixes")]
    assert again == [b.target_items[:, -1].tolist() for b in batches]  # the seed fixes the shuffle
    assert by_prefix != sorted(by_prefix)  # and it does shuffle across users


def test_window_is_capped_by_truncation() -> None:
    rows = [("u", f"i{k}", k) for k in range(8)]
    store = SequenceStore(build_sequences(dataset(rows)))
    batch = store.history(0, max_len=4)
    assert batch.window_len[0].tolist() == [1, 2, 3, 4]


def test_config_errors() -> None:
    with pytest.raises(ValueError, match="split must be leave_one_out or temporal"):
        SequenceConfig(split="random")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="the temporal split needs timestamps"):
        build_sequences(
            make_dataset("t", pl.DataFrame({"user": ["a"] * 3, "item": ["x", "y", "z"]})),
            SequenceConfig(split="temporal"),
        )


def test_length_groups_cover_every_row_once_at_the_least_padding() -> None:
    import itertools

    rng = np.random.default_rng(0)

    def least(lengths: np.ndarray, groups: int) -> int:  # every way to cut the sorted rows, by brute force
        s, n, best = np.sort(lengths), len(lengths), 10**9
        for k in range(1, groups + 1):
            for cuts in itertools.combinations(range(1, n), k - 1):
                b = [0, *cuts, n]
                best = min(best, sum((b[i + 1] - b[i]) * int(s[b[i + 1] - 1]) for i in range(k)))
        return best

    for _ in range(100):
        lengths = rng.integers(1, 12, size=int(rng.integers(1, 9)))
        groups = int(rng.integers(1, 5))
        parts = length_groups(lengths, groups)
        assert sorted(np.concatenate(parts).tolist()) == list(range(len(lengths))) and len(parts) <= groups
        assert sum(len(p) * int(lengths[p].max()) for p in parts) == least(lengths, groups)
    # by hand: 2, 2, 2, 9 in two groups -> {2, 2, 2} and {9}: 3 x 2 + 1 x 9 = 15 cells instead of 36
    assert [sorted(p.tolist()) for p in length_groups(np.array([2, 9, 2, 2]), 2)] == [[0, 2, 3], [1]]


def test_length_order_sorts_targets_by_history_length() -> None:
    world = generate(WorldConfig(users=80, seed=3, titles=40))
    store = SequenceStore(build_sequences(make_dataset("w", world.interactions, world.items)))
    order = store.length_order("test", max_len=10)
    assert sorted(order.tolist()) == list(range(len(store.targets("test"))))
    widths = [b.items.shape[1] for b in store.eval_batches("test", 8, 10, order=order)]
    assert widths == sorted(widths) and widths[-1] == 10


def test_genre_targets_come_from_the_catalogue_and_match_each_interactions_labels() -> None:
    world = generate(WorldConfig(users=50, seed=4, titles=40))
    prepared = build_sequences(make_dataset("w", world.interactions, world.items))
    store = SequenceStore(prepared)
    assert store.item_labels == {"genre"} and "genre" not in store.labels  # no (interactions x G) array
    genre = next(h for h in prepared.heads if h.name == "genre")
    hot = np.zeros((prepared.interactions.height, len(genre.classes)), dtype=np.float32)
    lists = prepared.interactions[genre.column]
    lengths = lists.list.len().fill_null(0).to_numpy()
    hot[np.repeat(np.arange(len(lengths)), lengths), lists.explode().drop_nulls().to_numpy().astype(np.int64)] = 1
    users = store.train_users()
    for n, batch in enumerate(store.train_batches(16, 20, shuffle=False)):
        rows = users[16 * n : 16 * (n + 1)]
        idx, valid = store._gather(
            store.offsets[rows] + store.train_end[rows], np.minimum(store.train_end[rows], 21), batch.items.shape[1] + 1
        )
        expected = hot[np.where(valid[:, 1:], idx[:, 1:], 0)] * (valid[:, 1:] & valid[:, :-1])[..., None]
        np.testing.assert_array_equal(batch.intent_targets["genre"].numpy(), expected)


def test_stats_report_the_short_term_window_where_the_test_item_is_predicted() -> None:
    from intentrec.data.prepare import stats

    # u: 4 interactions 4 days apart, its test item predicted from positions 0..2, of which a week's window
    # (or the last 2) holds 2: not the whole history; v: 3 interactions a second apart, predicted from
    # positions 0..1, both in the window; w: 1 interaction, no test item
    day = 86_400
    rows = [("u", f"i{k}", 4 * day * k) for k in range(4)] + [("v", f"i{k}", k) for k in range(3)]
    ds = dataset([*rows, ("w", "i0", 0)])
    window = stats(ds, build_sequences(ds, SequenceConfig(window_items=2)))["short_term_window"]
    assert window == {"rule": "168 hours", "users": 2, "median": 2.0, "whole_history": 0.5}
    ds = make_dataset("t", ds.interactions.drop("timestamp"))
    window = stats(ds, build_sequences(ds, SequenceConfig(window_items=2)))["short_term_window"]
    assert window == {"rule": "last 2 interactions", "users": 2, "median": 2.0, "whole_history": 0.5}
