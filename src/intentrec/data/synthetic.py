"""A synthetic streaming world with known ground truth: the built-in default data.

The generative story
--------------------
*Catalogue.* Films and series (series are split into episodes, one item each, sharing a ``series``
id). Each title has a primary genre and sometimes a second one, a base popularity drawn from a Zipf
law, a running time, and a release date: most titles predate the simulated period, the rest arrive
while it runs, so "new" (<= 7 days), "recent" (<= 30 days) and "evergreen" titles exist at every
moment. A series' episodes are released together.

*Users.* Each user has an archetype (binger, explorer, new-release chaser, rewatcher, genre
enthusiast, casual viewer) that sets the mean of their intent distributions: action (continue /
discover / rewatch), format (film / series), recency (new / recent / evergreen), how peaked their
genre taste is, how many sessions they have and how long they last. The user's own distributions are
Dirichlet draws around the archetype's means (no two users alike), and their genre taste drifts
linearly from one Dirichlet draw to another over the period (drift).

*Sessions.* A user's sessions start at random days, near their preferred hour of day, on their
preferred device most of the time. Each session draws one latent intent:

* action from the user's action distribution, with impossible values moved to "discover" (no series
  in progress: no continue; nothing watched yet: no rewatch);
* recency from the user's recency distribution;
* genre from a mix of "same genre as my last session" (stickiness) and the current taste, restricted,
  for a discover session that wants something new or recent, to genres with a title released in that
  window; a continue session's genre is its series' genre;
* format from the user's format distribution (continue: series).

The distribution each intent was drawn from is stored with the session, so the Bayes accuracy (the
best any model could do knowing the generator's state) is known: ``mean(max p)``.

*Events.* A session has 1 + Poisson events. Each event, with probability ``noise``, ignores the
intent and picks a popular released title; otherwise it follows the intent: continue plays the next
episode of the series in progress; rewatch replays something watched, of the session genre if
possible; discover picks an unwatched released title matching genre, format and recency, by
popularity. A session that wants something new or recent draws its genre from the genres with
titles released in that window (few genres have a new title at any moment); when nothing matches, it
relaxes format before recency, an "evergreen" session recency before format. Nothing left: a popular
title (counted as noise). The watch fraction
(the engagement weight) is higher for intent-driven events than for noise.

Written files: ``interactions.parquet`` (user, item, timestamp, weight, device, session),
``items.parquet`` (the catalogue), ``ground_truth/sessions.parquet`` (intents and their generator
probabilities), ``ground_truth/users.parquet`` (archetypes and parameters), ``world.json``. Models
never read ``ground_truth/``.
"""

from __future__ import annotations

import bisect
import json
import math
import random
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import polars as pl

from intentrec.data.schema import Dataset, make_dataset
from intentrec.data.textio import DataFormatError, OnBadRows

__all__ = ["ACTIONS", "ARCHETYPES", "GENRES", "RECENCY", "World", "WorldConfig", "generate", "read", "write"]

GENRES = (
    "Drama", "Comedy", "Action", "Thriller", "Documentary", "Kids",
    "Anime", "Romance", "Sci-Fi", "Horror", "Crime", "Reality",
)  # fmt: skip
ACTIONS = ("continue", "discover", "rewatch")
FORMATS = ("film", "series")
RECENCY = ("new", "recent", "evergreen")
DEVICES = ("tv", "mobile", "web", "tablet")
DAY = 86_400


@dataclass(frozen=True)
class Archetype:
    action: tuple[float, float, float]  # continue, discover, rewatch
    format: tuple[float, float]  # film, series
    recency: tuple[float, float, float]  # new, recent, evergreen
    genre_concentration: float  # Dirichlet alpha of the genre taste: small = one dominant genre
    sessions: float  # mean sessions over the period
    session_length: float  # mean events per session
    share: float  # share of users


ARCHETYPES: dict[str, Archetype] = {
    "binger": Archetype((0.75, 0.20, 0.05), (0.10, 0.90), (0.15, 0.25, 0.60), 0.8, 22, 4.5, 0.18),
    "explorer": Archetype((0.05, 0.90, 0.05), (0.55, 0.45), (0.20, 0.30, 0.50), 5.0, 20, 2.5, 0.18),
    "new_release_chaser": Archetype((0.15, 0.80, 0.05), (0.50, 0.50), (0.75, 0.20, 0.05), 1.0, 16, 2.0, 0.16),
    "rewatcher": Archetype((0.10, 0.20, 0.70), (0.65, 0.35), (0.05, 0.15, 0.80), 0.8, 16, 2.0, 0.14),
    "genre_enthusiast": Archetype((0.20, 0.70, 0.10), (0.50, 0.50), (0.15, 0.25, 0.60), 0.08, 16, 3.0, 0.16),
    "casual": Archetype((0.20, 0.70, 0.10), (0.65, 0.35), (0.20, 0.30, 0.50), 1.0, 4, 1.3, 0.18),
}


@dataclass(frozen=True)
class WorldConfig:
    """Parameters of the generator; the defaults make the quick-start world."""

    users: int = 3000
    seed: int = 0
    days: int = 180
    start: str = "2026-01-01"
    titles: int | None = None  # films + series; default max(300, users // 4)
    series_share: float = 0.35
    episodes: tuple[int, int] = (4, 12)
    new_title_share: float = 0.3  # titles released during the period
    noise: float = 0.15  # probability an event ignores the session intent
    genre_stickiness: float = 0.35  # probability a session keeps the previous session's genre
    drift: float = 0.5  # how far genre taste moves from its first to its second draw by the end
    user_spread: float = 30.0  # Dirichlet concentration around the archetype means (higher: closer)

    def __post_init__(self) -> None:
        if self.users < 1:
            raise ValueError(f"users must be at least 1, got {self.users}")
        if self.days < 1:
            raise ValueError(f"days must be at least 1, got {self.days}")
        for name in ("series_share", "new_title_share", "noise", "genre_stickiness", "drift"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")

    @property
    def n_titles(self) -> int:
        return self.titles if self.titles is not None else max(300, self.users // 4)


@dataclass(frozen=True)
class World:
    interactions: pl.DataFrame
    items: pl.DataFrame
    sessions: pl.DataFrame
    users: pl.DataFrame
    config: WorldConfig


_ADJECTIVES = (
    "Silent", "Crimson", "Hidden", "Broken", "Golden", "Last", "Midnight", "Wild", "Distant", "Frozen", "Electric",
    "Lost", "Iron", "Velvet", "Hollow", "Bright", "Secret", "Burning", "Paper", "Quiet",
)  # fmt: skip
_NOUNS = (
    "Harbor", "Code", "Garden", "Empire", "Signal", "River", "Kingdom", "Witness", "Orbit", "Country", "Machine",
    "Summer", "Station", "Frontier", "Mirror", "Island", "Protocol", "Symphony", "Valley", "Horizon",
)  # fmt: skip


def _catalogue(cfg: WorldConfig, rng: np.random.Generator, start_ts: int) -> dict[str, np.ndarray]:
    n = cfg.n_titles
    end_ts = start_ts + cfg.days * DAY
    is_series = rng.random(n) < cfg.series_share
    genre_weights = rng.dirichlet(np.full(len(GENRES), 3.0))
    primary = rng.choice(len(GENRES), size=n, p=genre_weights)
    second = np.where(rng.random(n) < 0.4, rng.integers(0, len(GENRES), size=n), -1)
    second = np.where(second == primary, -1, second)
    popularity = 1.0 / np.arange(1, n + 1) ** 1.05
    popularity = popularity[rng.permutation(n)]
    arrives = rng.random(n) < cfg.new_title_share
    release = np.where(
        arrives,
        rng.integers(start_ts, end_ts - DAY, size=n),
        rng.integers(start_ts - 10 * 365 * DAY, start_ts - 31 * DAY, size=n),
    )
    release = (release // DAY) * DAY  # titles come out at midnight UTC
    episodes = np.where(is_series, rng.integers(cfg.episodes[0], cfg.episodes[1] + 1, size=n), 1)
    duration = np.where(is_series, rng.integers(25, 61, size=n), rng.integers(85, 150, size=n)).astype(float)
    return {
        "is_series": is_series, "primary": primary, "second": second, "popularity": popularity,
        "release": release, "episodes": episodes, "duration": duration,
    }  # fmt: skip


def generate(cfg: WorldConfig | None = None) -> World:
    """Generate the world; the same config (seed included) always gives the same world."""
    cfg = cfg or WorldConfig()
    rng = np.random.default_rng(cfg.seed)
    py = random.Random(cfg.seed)
    start_ts = int(datetime.fromisoformat(cfg.start).replace(tzinfo=timezone.utc).timestamp())
    end_ts = start_ts + cfg.days * DAY
    cat = _catalogue(cfg, rng, start_ts)
    n_titles = cfg.n_titles

    # Items: one per film, one per episode; `first_item[t]` is title t's first item.
    first_item = np.concatenate([[0], np.cumsum(cat["episodes"])[:-1]]).astype(np.int64)
    n_items = int(cat["episodes"].sum())
    item_title = np.repeat(np.arange(n_titles), cat["episodes"])

    # Discover index: per (genre, format), titles sorted by release with cumulative popularity.
    index: dict[tuple[int, int], tuple[list[int], list[int], list[float]]] = {}
    for g in range(len(GENRES)):
        for f in range(2):
            has_genre = (cat["primary"] == g) | (cat["second"] == g)
            chosen = np.flatnonzero(has_genre & (cat["is_series"] == bool(f)))
            chosen = chosen[np.argsort(cat["release"][chosen], kind="stable")]
            index[(g, f)] = (
                chosen.tolist(),
                cat["release"][chosen].tolist(),
                np.cumsum(cat["popularity"][chosen]).tolist(),
            )
    by_release = np.argsort(cat["release"], kind="stable")
    all_titles = (
        by_release.tolist(),
        cat["release"][by_release].tolist(),
        np.cumsum(cat["popularity"][by_release]).tolist(),
    )

    names = list(ARCHETYPES)
    shares = np.array([ARCHETYPES[a].share for a in names])
    archetype_of = rng.choice(len(names), size=cfg.users, p=shares / shares.sum())
    preferred_device = rng.choice(len(DEVICES), size=cfg.users, p=[0.5, 0.25, 0.15, 0.1])
    preferred_hour = rng.normal(20.5, 2.5, size=cfg.users)

    events: dict[str, list] = {k: [] for k in ("user", "item", "timestamp", "weight", "device", "session")}
    sess: dict[str, list] = {
        k: [] for k in ("session", "user", "start", "action", "genre", "format", "recency", "noise_free")
    }
    p_cols: dict[str, list] = {f"p_action_{a}": [] for a in ACTIONS}
    p_cols.update({f"p_format_{f}": [] for f in FORMATS})
    p_cols.update({f"p_recency_{r}": [] for r in RECENCY})
    p_cols.update({f"p_genre_{g}": [] for g in GENRES})
    user_rows: dict[str, list] = {
        k: []
        for k in (
            "user", "archetype", "top_genre", "p_continue", "p_discover", "p_rewatch", "p_series", "p_new",
            "p_evergreen", "top_genre_share", "sessions", "session_length",
        )
    }  # fmt: skip

    def pick(titles: tuple[list[int], list[int], list[float]], lo_ts: int, hi_ts: int, watched: set[int]) -> int:
        ids, releases, cum = titles
        lo = bisect.bisect_left(releases, lo_ts)
        hi = bisect.bisect_right(releases, hi_ts)
        if hi <= lo:
            return -1
        base = cum[lo - 1] if lo else 0.0
        for _ in range(6):
            k = bisect.bisect_left(cum, base + py.random() * (cum[hi - 1] - base), lo, hi)
            title = ids[min(k, hi - 1)]
            if title not in watched:
                return title
        return -1

    recency_window = {0: (7, 0), 1: (30, 7), 2: (100_000, 30)}
    session_id = 0
    for u in range(cfg.users):
        arch = ARCHETYPES[names[archetype_of[u]]]
        p_action = rng.dirichlet(np.array(arch.action) * cfg.user_spread + 0.05)
        p_format = rng.dirichlet(np.array(arch.format) * cfg.user_spread + 0.05)
        p_recency = rng.dirichlet(np.array(arch.recency) * cfg.user_spread + 0.05)
        taste_a = rng.dirichlet(np.full(len(GENRES), arch.genre_concentration))
        taste_b = rng.dirichlet(np.full(len(GENRES), arch.genre_concentration))
        n_sessions = 1 + rng.poisson(arch.sessions * rng.lognormal(0.0, 0.4))
        session_length = arch.session_length * rng.lognormal(0.0, 0.25)  # mean events per session
        days = np.sort(rng.random(n_sessions)) * cfg.days
        user = str(u + 1)
        user_rows["user"].append(user)
        user_rows["archetype"].append(names[archetype_of[u]])
        user_rows["top_genre"].append(GENRES[int(np.argmax(taste_a))])
        user_rows["p_continue"].append(float(p_action[0]))
        user_rows["p_discover"].append(float(p_action[1]))
        user_rows["p_rewatch"].append(float(p_action[2]))
        user_rows["p_series"].append(float(p_format[1]))
        user_rows["p_new"].append(float(p_recency[0]))
        user_rows["p_evergreen"].append(float(p_recency[2]))
        user_rows["top_genre_share"].append(float(taste_a.max()))
        user_rows["sessions"].append(int(n_sessions))
        user_rows["session_length"].append(float(session_length))

        watched: set[int] = set()  # titles
        watched_items: list[int] = []
        progress: dict[int, int] = {}  # series title -> next episode index
        in_progress: list[int] = []  # series titles with episodes left, most recent last
        last_genre = -1
        clock = start_ts
        for day in days:
            hour = (preferred_hour[u] + py.gauss(0.0, 1.5)) % 24
            t = max(int(start_ts + math.floor(day) * DAY + hour * 3600), clock + 600)
            if t >= end_ts:
                break
            frac = min(1.0, max(0.0, (t - start_ts) / (cfg.days * DAY)))
            taste = (1 - cfg.drift * frac) * taste_a + cfg.drift * frac * taste_b
            pa = p_action.copy()
            if not in_progress:
                pa[1] += pa[0]
                pa[0] = 0.0
            if not watched:
                pa[1] += pa[2]
                pa[2] = 0.0
            action = _draw(py, pa)
            recency = _draw(py, p_recency)
            if action == 0:
                series_title = in_progress[-1]
                genre = int(cat["primary"][series_title])
                pg = np.zeros(len(GENRES))
                pg[genre] = 1.0
                pf = np.array([0.0, 1.0])
                fmt = 1
            else:
                pg = taste * (1 - cfg.genre_stickiness)
                if last_genre >= 0:
                    pg[last_genre] += cfg.genre_stickiness
                else:
                    pg = taste.copy()
                if action == 1 and recency != 2:  # something new: the genre comes from what is new now
                    newest, oldest = recency_window[recency]
                    fresh = np.array([
                        any(_released(index[(g, f)][1], t - newest * DAY, t - oldest * DAY) for f in range(2))
                        for g in range(len(GENRES))
                    ])  # fmt: skip
                    if (pg * fresh).sum() > 0:
                        pg = pg * fresh / (pg * fresh).sum()
                genre = _draw(py, pg)
                pf = p_format
                fmt = _draw(py, pf)
            device = int(preferred_device[u]) if py.random() < 0.8 else py.randrange(len(DEVICES))
            session_id += 1
            sess["session"].append(session_id)
            sess["user"].append(user)
            sess["start"].append(t)
            sess["action"].append(ACTIONS[action])
            sess["genre"].append(GENRES[genre])
            sess["format"].append(FORMATS[fmt])
            sess["recency"].append(RECENCY[recency])
            for prefix, values, probabilities in (
                ("action", ACTIONS, pa), ("format", FORMATS, pf), ("recency", RECENCY, p_recency), ("genre", GENRES, pg)
            ):  # fmt: skip
                for value, probability in zip(values, probabilities, strict=True):
                    p_cols[f"p_{prefix}_{value}"].append(float(probability))
            last_genre = genre

            length = 1 + _poisson(py, session_length - 1)
            followed = 0
            for _ in range(length):
                noisy = py.random() < cfg.noise
                title = -1
                item = -1
                if not noisy:
                    if action == 0 and in_progress:
                        title = in_progress[-1]
                    elif action == 2 and watched_items:
                        same = [i for i in watched_items[-50:] if cat["primary"][item_title[i]] == genre]
                        item = py.choice(same) if same else py.choice(watched_items)
                    else:
                        newest, oldest = recency_window[recency]
                        tries = [(fmt, True), (fmt, False), (1 - fmt, False)]
                        if recency != 2:  # few titles are new in one genre and format: recency outranks format
                            tries.insert(1, (1 - fmt, True))
                        for want_format, by_recency in tries:
                            lo_ts = t - newest * DAY if by_recency else 0
                            hi_ts = t - oldest * DAY if by_recency else t
                            title = pick(index[(genre, want_format)], lo_ts, hi_ts, watched)
                            if title >= 0:
                                break
                if item < 0 and title < 0:
                    title = pick(all_titles, 0, t, watched)
                    noisy = True
                    if title < 0:
                        continue
                if item < 0:
                    if cat["is_series"][title]:
                        episode = progress.get(title, 0)
                        if episode >= cat["episodes"][title]:
                            episode = 0
                        item = int(first_item[title] + episode)
                        progress[title] = episode + 1
                        if title in in_progress:
                            in_progress.remove(title)
                        if episode + 1 < cat["episodes"][title]:
                            in_progress.append(title)
                    else:
                        item = int(first_item[title])
                followed += not noisy
                watched.add(int(item_title[item]))
                watched_items.append(item)
                minutes = float(cat["duration"][item_title[item]])
                fraction = 0.6 + 0.4 * py.random() if not noisy else 0.1 + 0.5 * py.random()
                events["user"].append(user)
                events["item"].append(item + 1)
                events["timestamp"].append(t)
                events["weight"].append(round(fraction, 3))
                events["device"].append(DEVICES[device])
                events["session"].append(session_id)
                t += int(minutes * fraction * 60) + py.randrange(60, 900)
            sess["noise_free"].append(followed)
            clock = t

    interactions = pl.DataFrame(
        {
            "user": events["user"],
            "item": pl.Series(events["item"], dtype=pl.Int64).cast(pl.String),
            "timestamp": pl.Series(events["timestamp"], dtype=pl.Int64),
            "weight": pl.Series(events["weight"], dtype=pl.Float64),
            "device": events["device"],
            "session": pl.Series(events["session"], dtype=pl.Int64).cast(pl.String),
        }
    )
    items = _items_frame(cat, item_title, first_item, n_items, rng)
    sessions = pl.DataFrame({**sess, **p_cols}).with_columns(pl.col("session").cast(pl.String))
    users = pl.DataFrame(user_rows)
    return World(interactions, items, sessions, users, cfg)


def _released(releases: list[int], lo_ts: int, hi_ts: int) -> bool:
    """Whether any title of a release-sorted list came out in [lo_ts, hi_ts]."""
    return bisect.bisect_right(releases, hi_ts) > bisect.bisect_left(releases, lo_ts)


def _draw(py: random.Random, probabilities: np.ndarray) -> int:
    u = py.random() * float(probabilities.sum())
    acc = 0.0
    for i, p in enumerate(probabilities):
        acc += float(p)
        if u < acc:
            return i
    return int(np.flatnonzero(probabilities > 0)[-1])


def _poisson(py: random.Random, mean: float) -> int:
    if mean <= 0:
        return 0
    limit, k, product = math.exp(-mean), 0, py.random()
    while product > limit:
        k += 1
        product *= py.random()
    return k


def _items_frame(
    cat: dict[str, np.ndarray],
    item_title: np.ndarray,
    first_item: np.ndarray,
    n_items: int,
    rng: np.random.Generator,
) -> pl.DataFrame:
    n_titles = len(cat["primary"])
    adjectives = rng.integers(0, len(_ADJECTIVES), size=n_titles)
    nouns = rng.integers(0, len(_NOUNS), size=n_titles)
    names = [f"{_ADJECTIVES[a]} {_NOUNS[b]}" for a, b in zip(adjectives, nouns, strict=True)]
    repeats = Counter(names)
    names = [f"{n} ({i + 1})" if repeats[n] > 1 else n for i, n in enumerate(names)]
    epoch = date(1970, 1, 1)
    titles, genres, formats, series, releases = [], [], [], [], []
    for item in range(n_items):
        t = int(item_title[item])
        is_series = bool(cat["is_series"][t])
        episode = item - int(first_item[t]) + 1
        titles.append(f"{names[t]}: Episode {episode}" if is_series else names[t])
        g = [GENRES[int(cat["primary"][t])]] + ([GENRES[int(cat["second"][t])]] if cat["second"][t] >= 0 else [])
        genres.append(g)
        formats.append("series" if is_series else "film")
        series.append(f"s{t + 1}" if is_series else None)
        releases.append(epoch + timedelta(days=int(cat["release"][t]) // DAY))
    return pl.DataFrame(
        {
            "item": [str(i + 1) for i in range(n_items)],
            "title": titles,
            "genres": genres,
            "format": formats,
            "series": series,
            "release_date": releases,
            "duration": cat["duration"][item_title],
        },
        schema_overrides={"series": pl.String, "release_date": pl.Date},
    )


def write(world: World, out: Path) -> Path:
    """Write the world as a folder readable with ``--format synthetic``."""
    out = Path(out)
    (out / "ground_truth").mkdir(parents=True, exist_ok=True)
    world.interactions.write_parquet(out / "interactions.parquet")
    world.items.write_parquet(out / "items.parquet")
    world.sessions.write_parquet(out / "ground_truth" / "sessions.parquet")
    world.users.write_parquet(out / "ground_truth" / "users.parquet")
    meta = {
        "generator": "intentrec.data.synthetic",
        "config": asdict(world.config),
        "counts": {
            "users": world.users.height,
            "items": world.items.height,
            "interactions": world.interactions.height,
            "sessions": world.sessions.height,
        },
        "bayes_accuracy": bayes_accuracy(world.sessions),
    }
    (out / "world.json").write_text(json.dumps(meta, indent=2) + "\n")
    return out


def bayes_accuracy(sessions: pl.DataFrame) -> dict[str, float]:
    """Best achievable accuracy of each session intent knowing the generator's state: mean(max p)."""
    out = {}
    for field_name, values in (
        ("action", ACTIONS),
        ("format", FORMATS),
        ("recency", RECENCY),
        ("genre", GENRES),
    ):
        cols = [f"p_{field_name}_{v}" for v in values]
        best = sessions.select(pl.max_horizontal(cols) / pl.sum_horizontal(cols)).to_series()
        out[field_name] = round(float(best.mean() or 0.0), 4) if sessions.height else 0.0  # type: ignore[arg-type]
    return out


def read(path: Path, *, on_bad_rows: OnBadRows = "error") -> Dataset:
    """Read a folder written by `write` (the ground truth is not read)."""
    path = Path(path)
    files = (path / "interactions.parquet", path / "items.parquet")
    for f in files:
        if not f.exists():
            raise DataFormatError(f, "no such file (write a world with `intentrec data synth --out DIR`)")
    from intentrec.data.readers.tabular import read_parquet

    dataset = read_parquet(files[0], items=files[1], on_bad_rows=on_bad_rows)
    return make_dataset(
        path.name,
        dataset.interactions,
        dataset.items,
        bad_rows=dataset.bad_rows,
        sources=files,
        options={"format": "synthetic", "release_precision": "day"},
    )
