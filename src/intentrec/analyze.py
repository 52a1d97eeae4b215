"""Intent insights from a trained IntentRec run: user segments, their names, and explanations.

* Each user's intent profile: the intent embedding Z (the attention-weighted sum of the projected
  intent heads, V2/V3), the per-head intent weights and the predicted intent distributions, averaged
  over every position of the user's history, run in windows of ``max_len`` (one position alone
  reflects a single next session; the average is the user's habit, and the whole history is more
  evidence than its latest window), in batches; ``span="latest"`` keeps the latest window only.
* K-means++ (scikit-learn) on the user's intent profile (the default) or on the raw embedding Z;
  silhouette scores over a range of K so a user can choose. The profile is what the model predicts a
  user comes for, without which genre: the mean predicted distribution of every head except genre,
  how concentrated the predicted genre taste is (entropy and top share), the mean head weights, and
  activity from the log (log events, log active days, events per active day). Each group is
  standardised and weighted by 1/sqrt(its width) so that no group wins by having more columns. The
  raw Z mostly encodes *which* genre a user likes (most of its variance), so on it k-means splits
  users by genre rather than by how they behave. Each segment is named from its predicted intents
  and behaviour against the whole population (the largest lift wins): continue / discover / rewatch
  shares (or the log's event types), genre concentration, new-release preference, activity.
* On a synthetic world the planted archetypes are known: the adjusted Rand index of segments against
  them is reported.
* `explain`: one user's predicted intents and head weights, and the recent events that drove them,
  measured by occlusion (remove one event, see how far the predicted intents move).

Paper: Oh et al., IntentRec (arXiv 2408.05353), section on intent-based user clustering.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from tqdm import tqdm

from intentrec.data.intents import DAY
from intentrec.runs import Run

__all__ = ["UserIntents", "analyze", "explain", "extract", "head_meaning", "name_segments"]


SEGMENT_NAMES = {
    "continue": "Continue-watchers",
    "continue (previous genre)": "Genre-followers",  # no series: continue = shares a genre with the last item
    "discover": "Explorers",
    "rewatch": "Rewatchers",
    "buy": "Buyers",
    "cart": "Cart-fillers",
    "fav": "Favouriters",
    "pv": "Browsers",
}


@dataclass
class UserIntents:
    """Per user (U users, in store row order): embedding, head weights, predicted intent distributions."""

    rows: np.ndarray  # (U,) store rows
    users: list[str]  # (U,) source user ids
    embedding: np.ndarray  # (U, D) mean Z over the positions used (V1: mean concatenated head probabilities)
    weights: np.ndarray | None  # (U, n_heads) mean per-head intent weights (V2/V3)
    head_names: list[str]
    probabilities: dict[str, np.ndarray]  # head -> (U, K_f)
    history_length: np.ndarray  # (U,)
    active_days: np.ndarray  # (U,) distinct days with an event (= history length without timestamps)


SPANS = ("history", "latest")


def _windows(n: np.ndarray, max_len: int, span: str) -> tuple[np.ndarray, np.ndarray]:
    """(rows, stops) of the windows to run: every user's latest ``max_len`` interactions, and with span
    "history" also the earlier ones, back to the first interaction, in non-overlapping windows."""
    rows = np.arange(len(n))
    if span == "latest":
        return rows, n.copy()
    count = np.maximum(-(-n // max_len), 1)  # windows per user; a user without history gets one empty window
    row = np.repeat(rows, count)
    back = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)  # 0 = the latest window
    return row, np.maximum(n[row] - back * max_len, 0)


@torch.no_grad()
def extract(run: Run, *, span: str = "history", batch_size: int = 512) -> UserIntents:
    """Every user's intent embedding, head weights and predicted intents, averaged over every position
    of the user's history (``span="history"``, in windows of ``max_len``) or of the latest window only."""
    if span not in SPANS:
        raise ValueError(f"span must be one of {', '.join(SPANS)}, got {span!r}")
    model = run.model
    if not model.heads:
        raise ValueError(
            f"{run.path}: the model ({run.config.model.kind}, variant {run.config.model.variant}) has no intent "
            "heads; analyze needs an IntentRec V1, V2 or V3 run"
        )
    model.eval()
    n_users = len(run.store.n)
    window_rows, stops = _windows(run.store.n, model.max_len, span)
    sums: dict[str, np.ndarray] = {}  # name -> (U, X) sums over positions
    positions = np.zeros(n_users)
    starts = range(0, len(window_rows), batch_size)
    for start in tqdm(starts, desc="users", unit="batch", leave=False, disable=None):
        rows = window_rows[start : start + batch_size]
        batch = run.store.histories(rows, stops[start : start + batch_size], model.max_len).to(model.device)
        output = model(batch)
        mask = batch.mask[..., None].float()  # (B, L, 1)
        parts = {f"p:{h.name}": output.intent_logits[h.name].softmax(-1) for h in model.heads}
        z = output.intent_embedding if output.intent_embedding is not None else torch.cat(list(parts.values()), -1)
        parts["z"] = z
        if output.intent_weights is not None:
            parts["w"] = output.intent_weights
        for name, t in parts.items():
            summed = (t * mask).sum(1).cpu().numpy()  # (B, L, X) -> (B, X)
            np.add.at(sums.setdefault(name, np.zeros((n_users, summed.shape[1]))), rows, summed)
        np.add.at(positions, rows, mask.sum((1, 2)).cpu().numpy())
    mean = {name: v / np.maximum(positions, 1)[:, None] for name, v in sums.items()}
    users = run.prepared.users["user"].to_numpy().tolist()  # every user, in store row order
    lengths = run.store.n
    active_days = lengths.copy()
    if run.prepared.has_timestamps:
        day = run.prepared.interactions["timestamp"].to_numpy() // DAY
        new_day = np.r_[True, day[1:] != day[:-1]]  # interactions are in time order within a user
        new_day[run.store.offsets] = True
        active_days = np.add.reduceat(new_day, run.store.offsets) if len(day) else np.zeros(0, dtype=np.int64)
    return UserIntents(
        rows=np.arange(n_users),
        users=[str(u) for u in users],
        embedding=mean["z"],
        weights=mean.get("w"),
        head_names=[h.name for h in model.heads],
        probabilities={h.name: mean[f"p:{h.name}"] for h in model.heads},
        history_length=lengths,
        active_days=active_days,
    )


FEATURES = ("profile", "embedding")


def profile(intents: UserIntents) -> np.ndarray:
    """The intent profile each user is clustered on (see the module docstring): (U, F)."""
    from sklearn.preprocessing import StandardScaler

    groups = [p for head, p in intents.probabilities.items() if head != "genre"]
    if "genre" in intents.probabilities:
        genre = intents.probabilities["genre"]
        genre = genre / np.maximum(genre.sum(1, keepdims=True), 1e-12)
        entropy = -(genre * np.log(np.maximum(genre, 1e-12))).sum(1)
        groups.append(np.c_[entropy, genre.max(1)])
    if intents.weights is not None:
        groups.append(intents.weights)
    n = intents.history_length.astype(np.float64)
    days = np.maximum(intents.active_days.astype(np.float64), 1.0)
    groups.append(np.c_[np.log(n), np.log(days), n / days])
    parts = [StandardScaler().fit_transform(g) / np.sqrt(g.shape[1]) for g in groups]
    return np.concatenate(parts, 1)


def features_of(intents: UserIntents, kind: str) -> np.ndarray:
    """Clustering input: the intent profile or the standardised raw embedding."""
    from sklearn.preprocessing import StandardScaler

    if kind == "profile":
        return profile(intents)
    if kind == "embedding":
        return StandardScaler().fit_transform(intents.embedding)
    raise ValueError(f"features must be one of {', '.join(FEATURES)}, got {kind!r}")


def _cluster(features: np.ndarray, k: int, seed: int) -> np.ndarray:
    from sklearn.cluster import KMeans

    labels: np.ndarray = KMeans(n_clusters=k, init="k-means++", n_init=10, random_state=seed).fit_predict(features)
    return labels


def _silhouettes(features: np.ndarray, ks: range, seed: int, sample: int = 4000) -> dict[int, float]:
    from sklearn.metrics import silhouette_score

    rng = np.random.default_rng(seed)
    pick = rng.choice(len(features), size=min(sample, len(features)), replace=False)
    out = {}
    for k in ks:
        if k >= len(pick):
            break
        labels = _cluster(features[pick], k, seed)
        out[k] = float(silhouette_score(features[pick], labels))
    return out


def name_segments(run: Run, intents: UserIntents, labels: np.ndarray) -> list[dict[str, Any]]:
    """Describe and name each segment by its intents and behaviour relative to the whole population."""
    heads = {h.name: h for h in run.store.heads}
    cuts = np.quantile(intents.history_length, [1 / 3, 2 / 3])
    by_genre = "action" in heads and "previous genre" in heads["action"].source
    shop = "action" in heads and heads["action"].source == "event type"
    segments = []
    for segment in range(int(labels.max()) + 1):
        members = labels == segment
        if not members.any():
            continue
        candidates: list[tuple[float, str]] = []
        facts: list[str] = []
        dominant: dict[str, Any] = {}
        if "action" in intents.probabilities:
            p = intents.probabilities["action"]
            share, overall = p[members].mean(0), p.mean(0)
            classes = heads["action"].classes
            top = int(np.argmax(share / np.maximum(overall, 1e-9)))
            dominant["action"] = {c: round(float(v), 3) for c, v in zip(classes, share, strict=True)}
            facts.append(", ".join(f"{share[i]:.0%} {classes[i]}" for i in np.argsort(-share)[:2]))
            if share[top] < 0.3:  # a lift on a rare behaviour is not what a segment is about
                top = int(np.argmax(share))
            key = "continue (previous genre)" if by_genre and classes[top] == "continue" else classes[top]
            candidates.append((share[top] / max(overall[top], 1e-9), SEGMENT_NAMES.get(key, key)))
        if "genre" in intents.probabilities:
            p = intents.probabilities["genre"]
            share, overall = p[members].mean(0), p.mean(0)
            classes = heads["genre"].classes
            order = np.argsort(-share)
            dominant["genre"] = {classes[i]: round(float(share[i]), 3) for i in order[:3]}
            normalised = share / share.sum()
            entropy = float(-(normalised * np.log2(np.maximum(normalised, 1e-12))).sum())
            kind = "categories" if shop else "genres"  # a shop's "genres" are its item categories
            broad = entropy > 0.85 * np.log2(len(classes))
            if broad:
                breadth = f"broad {kind}"
            elif classes[order[0]] == "other":  # the bucket of every value past the kept top ones
                breadth = f"mostly beyond the top {len(classes) - 1} {kind}"
            else:
                breadth = f"mostly {'category ' if shop else ''}{classes[order[0]]}"
            facts.append(f"{breadth} (top: {', '.join(classes[i] for i in order[:2])})")
            # one real genre (not the "other" bucket) holds a quarter of the genre mass or more
            if classes[order[0]] != "other" and normalised[order[0]] >= 0.25:
                lift = share[order[0]] / max(overall[order[0]], 1e-9)
                candidates.append((lift, f"{'Category ' if shop else ''}{classes[order[0]]} enthusiasts"))
        if "recency" in intents.probabilities:
            p = intents.probabilities["recency"]
            classes = heads["recency"].classes
            if "new" in classes:
                i = classes.index("new")
                share, overall = float(p[members, i].mean()), float(p[:, i].mean())
                dominant["recency"] = {"new": round(share, 3)}
                facts.append(f"{share:.0%} new releases")
                if share >= 0.15:
                    candidates.append((share / max(overall, 1e-9), "New-release chasers"))
        length = float(np.median(intents.history_length[members]))
        activity = "light" if length <= cuts[0] else "medium" if length <= cuts[1] else "heavy"
        facts.append(f"{activity} activity (median {length:.0f} events)")
        if activity == "light":
            overall_median = float(np.median(intents.history_length))
            candidates.append((overall_median / max(length, 1.0), "Occasional visitors" if shop else "Casual viewers"))
        name = max(candidates)[1] if candidates else f"Segment {segment}"
        mean_weights = (
            {h: round(float(w), 4) for h, w in zip(intents.head_names, intents.weights[members].mean(0), strict=True)}
            if intents.weights is not None
            else {}
        )
        examples = [intents.users[i] for i in np.flatnonzero(members)[:5]]
        segments.append(
            {
                "segment": segment,
                "name": name,
                "description": f"{name}: " + "; ".join(facts),
                "size": int(members.sum()),
                "share": float(members.mean()),
                "dominant_intents": dominant,
                "mean_head_weights": mean_weights,
                "median_history_length": length,
                "example_users": examples,
            }
        )
    _disambiguate(segments)
    return segments


def _disambiguate(segments: list[dict[str, Any]]) -> None:
    """Segments that would share a name get numbered by size ("Explorers 1", "Explorers 2")."""
    by_name: dict[str, list[dict[str, Any]]] = {}
    for s in segments:
        by_name.setdefault(s["name"], []).append(s)
    for same in by_name.values():
        if len(same) > 1:
            for i, s in enumerate(sorted(same, key=lambda s: -s["size"]), 1):
                s["name"] = f"{s['name']} {i}"
                s["description"] = f"{s['name']}:" + s["description"].split(":", 1)[1]


def _plots(out: Path, coords: np.ndarray, labels: np.ndarray, segments: list[dict[str, Any]], heads: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = {s["segment"]: s["name"] for s in segments}
    fig, ax = plt.subplots(figsize=(8, 7))
    cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    for i, (segment, name) in enumerate(sorted(names.items())):
        pick = labels == segment
        ax.scatter(coords[pick, 0], coords[pick, 1], s=6, alpha=0.7, color=cmap(i % cmap.N), label=name)
    ax.set(title="users by intent embedding (t-SNE), coloured by segment", xticks=[], yticks=[])
    ax.legend(markerscale=3, fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(out / "segments_map.png", dpi=120)
    plt.close(fig)
    if not segments or not segments[0]["mean_head_weights"]:
        return
    fig, ax = plt.subplots(figsize=(max(6, len(segments) * 0.9), 4.5))
    width = 0.8 / len(heads)
    x = np.arange(len(segments))
    for j, head in enumerate(heads):
        ax.bar(x + j * width, [s["mean_head_weights"][head] for s in segments], width, label=head)
    ax.set_xticks(x + 0.4 - width / 2, [s["name"] for s in segments], rotation=30, ha="right", fontsize=8)
    ax.set(title="mean intent-head weight per segment", ylabel="weight")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "head_weights.png", dpi=120)
    plt.close(fig)


def _world_of(run: Run) -> Path | None:
    """The synthetic world folder the run was trained on, when it has a ground truth."""
    from intentrec.config import expand_path

    worlds = [run.path / "world"]
    if run.config.data.format == "synthetic" and run.config.data.path:
        worlds.append(expand_path(run.config.data.path))
    return next((w for w in worlds if (w / "ground_truth" / "users.parquet").is_file()), None)


def _observed_behaviour(world: Path) -> pl.DataFrame | None:
    """Per user, the behaviour an ideal observer of the world would see: the shares of the sessions'
    true intents (continue, discover, rewatch, series, new, evergreen), the top genre's share of the
    sessions, log sessions and mean events per session. Clustering this is the most any model of the
    log could hope for: a model sees events, not the latent intents behind them."""
    sessions_file = world / "ground_truth" / "sessions.parquet"
    if not sessions_file.is_file():
        return None
    events = pl.read_parquet(world / "interactions.parquet", columns=["session"]).group_by("session").len("events")
    sessions = pl.read_parquet(sessions_file).join(events, on="session", how="left")
    return (
        sessions.group_by("user")
        .agg(
            *[(pl.col("action") == a).mean().alias(f"share_{a}") for a in ("continue", "discover", "rewatch")],
            (pl.col("format") == "series").mean().alias("share_series"),
            (pl.col("recency") == "new").mean().alias("share_new"),
            (pl.col("recency") == "evergreen").mean().alias("share_evergreen"),
            (pl.col("genre").value_counts().struct.field("count").max() / pl.len()).alias("top_genre_share"),
            pl.len().log().alias("log_sessions"),
            pl.col("events").fill_null(0).mean().alias("events_per_session"),
        )
        .with_columns(pl.col("user").cast(pl.String))
    )


def _archetype_agreement(world: Path, users: list[str], labels: np.ndarray, used: str, by_kind: dict[str, np.ndarray],
                         k: int, seed: int) -> dict[str, Any]:  # fmt: skip
    """Adjusted Rand index of the segments (``labels``, from the ``used`` input at K) against the planted
    archetypes; the same at K and at K = number of archetypes for every kind of clustering input
    (``by_kind``; the segments themselves are not clustered again); and two ceilings for scale:
    k-means on the generator's per-user parameters (how far the archetypes are separable at all) and on
    the behaviour an ideal observer of the sessions' true intents would see (`_observed_behaviour`)."""
    from sklearn.metrics import adjusted_rand_score
    from sklearn.preprocessing import StandardScaler

    truth = pl.read_parquet(world / "ground_truth" / "users.parquet").with_columns(pl.col("user").cast(pl.String))
    table = pl.DataFrame({"user": users}).join(truth, on="user", how="left", maintain_order="left")
    archetypes = table["archetype"].fill_null("unknown").to_list()
    n_archetypes = len(set(archetypes))

    def ceiling(frame: pl.DataFrame, columns: list[str]) -> dict[str, Any]:
        x = StandardScaler().fit_transform(frame.select(columns).fill_null(0).to_numpy())
        return {
            "columns": columns,
            **{f"k={kk}": float(adjusted_rand_score(archetypes, _cluster(x, kk, seed))) for kk in (k, n_archetypes)},
        }

    numeric = [c for c in truth.columns if c not in ("user", "archetype") and truth[c].dtype.is_numeric()]
    result: dict[str, Any] = {
        "archetypes": n_archetypes,
        "adjusted_rand_index": float(adjusted_rand_score(archetypes, labels)),
        "by_features": {
            kind: {
                f"k={kk}": float(
                    adjusted_rand_score(archetypes, labels if (kind, kk) == (used, k) else _cluster(x, kk, seed))
                )
                for kk in (k, n_archetypes)
            }
            for kind, x in by_kind.items()
        },
        "ceiling_from_true_parameters": ceiling(table, numeric),
    }
    observed = _observed_behaviour(world)
    if observed is not None:
        frame = pl.DataFrame({"user": users}).join(observed, on="user", how="left", maintain_order="left")
        result["ceiling_from_observed_sessions"] = ceiling(frame, [c for c in observed.columns if c != "user"])
    crosstab = pl.DataFrame({"segment": labels, "archetype": archetypes})
    result["crosstab"] = {
        str(segment): dict(crosstab.filter(pl.col("segment") == segment)["archetype"].value_counts().iter_rows())
        for segment in sorted(set(labels.tolist()))
    }
    return result


def analyze(
    run: Run,
    out: Path,
    *,
    k: int = 10,
    k_range: range = range(2, 16),
    seed: int = 0,
    features: str = "profile",
    span: str = "history",
) -> dict[str, Any]:
    """Segments, their names, plots and a report for every user of ``run``; written to ``out``.
    ``features``: cluster on the intent profile ("profile") or the raw intent embedding ("embedding");
    ``span``: average the model's outputs over the whole history or the latest window (`extract`)."""
    from sklearn.manifold import TSNE

    if features not in FEATURES:
        raise ValueError(f"features must be one of {', '.join(FEATURES)}, got {features!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    intents = extract(run, span=span)
    x = features_of(intents, features)
    if k > len(x):
        raise ValueError(f"--k {k} is more than the {len(x)} users")
    labels = _cluster(x, k, seed)
    silhouettes = _silhouettes(x, k_range, seed)
    segments = name_segments(run, intents, labels)
    pick = np.random.default_rng(seed).choice(len(x), size=min(5000, len(x)), replace=False)
    coords = np.full((len(x), 2), np.nan)
    perplexity = float(min(30, max(2, (len(pick) - 1) // 3)))
    coords[pick] = TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x[pick])
    pl.DataFrame(
        {"user": intents.users, "segment": labels.astype(np.int32), "x": coords[:, 0], "y": coords[:, 1]}
    ).write_parquet(out / "user_segments.parquet")
    _plots(out, coords[pick], labels[pick], segments, intents.head_names)
    shares = [
        list(seg["dominant_intents"]["action"].values()) for seg in segments if "action" in seg["dominant_intents"]
    ]
    result: dict[str, Any] = {
        "run": str(run.path),
        "users": len(intents.users),
        "largest_action_gap": float(np.ptp(np.array(shares), axis=0).max()) if shares else None,
        "k": k,
        "features": features,
        "span": span,
        "heads": {h.name: h.source for h in run.store.heads if h.name in intents.head_names},
        "disabled_heads": dict(run.prepared.disabled_heads),
        "silhouette": silhouettes,
        "segments": segments,
    }
    world = _world_of(run)
    if world is not None:
        by_kind = {kind: x if kind == features else features_of(intents, kind) for kind in FEATURES}
        result["archetypes"] = _archetype_agreement(world, intents.users, labels, features, by_kind, k, seed)
    (out / "segments.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "report.md").write_text(_report(run, result))
    return result


def _report(run: Run, result: dict[str, Any]) -> str:
    over = "their whole history" if result["span"] == "history" else "their latest interactions"
    shop = result["heads"].get("action") == "event type"
    verb, taste = ("shops", "category") if shop else ("watches", "genre")
    lines = [
        f"# Who {verb}, and why: {result['users']:,} users in {len(result['segments'])} segments",
        "",
        f"Run `{run.path}` ({run.config.model.kind} {run.config.model.variant}). Each user is placed by "
        + (
            f"their intent profile: the model's predicted intents averaged over {over} (what "
            f"the model believes they come for), how concentrated their {taste} taste is, the intent-head weights "
            "and how active they are"
            if result["features"] == "profile"
            else f"the model's intent embedding averaged over {over}"
        )
        + ", and grouped with k-means++. Segment names come from what stands out against everyone else.",
        "",
        "| segment | users | what stands out | strongest head |",
        "|---|---|---|---|",
    ]
    for s in sorted(result["segments"], key=lambda s: -s["size"]):
        weights = s["mean_head_weights"]
        strongest = max(weights, key=weights.get) if weights else "-"
        share = f"{s['size']:,} ({s['share']:.0%})"
        lines.append(f"| {s['name']} | {share} | {s['description'].split(': ', 1)[1]} | {strongest} |")
    gap = result["largest_action_gap"]
    if gap is not None:
        lines += ["", f"Largest difference between segments in any predicted action share: {gap:.0%} points."]
        if gap < 0.05:
            lines.append(
                "The segments barely differ in predicted intents: treat them as one population; the model "
                "does not (yet) tell these users apart."
            )
    lines += [
        "",
        "![users by segment](segments_map.png)",
        "",
        "![head weights by segment](head_weights.png)",
        "",
        "**How many segments?** Silhouette by K (higher separates better): "
        + ", ".join(f"K={k}: {v:.3f}" for k, v in result["silhouette"].items())
        + ".",
    ]
    if "archetypes" in result:
        a = result["archetypes"]
        n, k = a["archetypes"], result["k"]

        def at(scores: dict[str, Any]) -> str:
            return f"{scores['k=' + str(k)]:.3f} at K={k}, {scores['k=' + str(n)]:.3f} at K={n}"

        lines += [
            "",
            f"**Against the planted archetypes** (synthetic world, {n} archetypes): adjusted Rand index "
            f"{a['adjusted_rand_index']:.3f} for these segments (1 = the archetypes exactly, 0 = chance).",
            "",
            "| clustering input | adjusted Rand index |",
            "|---|---|",
            *(f"| {kind}{' (used here)' if kind == result['features'] else ''} | {at(v)} |"
              for kind, v in a["by_features"].items()),
            f"| ceiling: the generator's per-user parameters | {at(a['ceiling_from_true_parameters'])} |",
        ]  # fmt: skip
        if "ceiling_from_observed_sessions" in a:
            lines.append(
                "| ceiling: an ideal observer of every session's true intent | "
                f"{at(a['ceiling_from_observed_sessions'])} |"
            )
        lines += [
            "",
            "The profile is the model's predicted intents without genre identity, genre concentration, head "
            "weights and activity; the embedding is the raw intent embedding Z, whose variance is mostly "
            "*which* genre a user likes. More segments than archetypes split archetypes and lower the index.",
        ]
    lines += ["", "**What the intents mean in this data** (how each head's labels were derived from the log):", ""]
    lines += [f"- {name}: {head_meaning(name, source, shop)}" for name, source in result["heads"].items()]
    lines += [f"- {name}: not predicted ({reason})" for name, reason in result["disabled_heads"].items()]
    lines += [
        "",
        "What this does not show: segments describe predicted intents, not causes; a head this data cannot "
        "label is absent and nothing is said about it.",
    ]
    return "\n".join(lines) + "\n"


def head_meaning(head: str, source: str, shop: bool) -> str:
    """A head's label source (as the manifest records it) in words a product person reads."""
    if head == "action" and source.startswith("derived"):
        rule = source[source.find("(") + 1 : source.find(")")]
        cont = {
            "series": "continue = another title of a series the user has engaged with",
            "previous genre": "continue = an item sharing a genre or attribute with the user's previous one "
            "(this catalogue has no series)",
        }.get(rule, "continue: never (the catalogue has neither series nor genres)")
        return f"rewatch = an item the user engaged with before; {cont}; discover = anything else"
    if head == "action":
        return "the log's own event type"
    if head == "genre" and shop:
        return source.replace("genres/attributes", "item categories")
    return source


@torch.no_grad()
def explain(run: Run, user: str, *, recent: int = 10) -> dict[str, Any]:
    """A user's predicted intents, head weights, and the recent events that moved them most.

    Occlusion: each of the last ``recent`` events is removed from the history in turn (one batch holds
    every variant) and the change of each head's predicted distribution is measured as total variation
    distance."""
    row = run.user_row(user)
    model = run.model
    if not model.heads:
        raise ValueError(f"{run.path}: the model has no intent heads to explain")
    model.eval()
    n, start, L = int(run.store.n[row]), int(run.store.offsets[row]), model.max_len
    history = np.arange(start, start + n)
    last = min(recent, n - 1)
    variants = [history[-L:]] + [np.delete(history, n - 1 - back)[-L:] for back in range(last)]
    idx = np.full((len(variants), L), -1, dtype=np.int64)
    for i, v in enumerate(variants):
        idx[i, L - len(v) :] = v
    output = model(run.store.batch_of(np.full(len(variants), row), idx).to(model.device))
    probs = {h.name: output.intent_logits[h.name][:, -1].softmax(-1).cpu() for h in model.heads}  # (1 + R, K_f)
    intents, weights = run.intent_summary(output, top=5)
    columns = [c for c in ("item_idx", "item", "title", "genres") if c in run.prepared.items.columns]
    events = (
        run.prepared.interactions[start + n - last : start + n]
        .join(run.prepared.items.select(columns), on="item_idx", how="left", maintain_order="left")
        .reverse()
    )
    influence = []
    for back, event in enumerate(events.iter_rows(named=True)):
        shift = {name: round(float(0.5 * (p[back + 1] - p[0]).abs().sum()), 4) for name, p in probs.items()}
        entry = {k: event[k] for k in ("item", "title", "genres", "timestamp") if event.get(k) is not None}
        entry.update(events_ago=back, influence=shift, total_influence=round(sum(shift.values()), 4))
        influence.append(entry)
    return {
        "user": str(user),
        "history_length": n,
        "intents": intents,
        "intent_weights": weights,
        "driver": max(weights.items(), key=lambda t: t[1])[0] if weights else None,
        "recent_events": sorted(influence, key=lambda e: -e["total_influence"]),
    }
