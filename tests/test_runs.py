"""Run folders end to end through the command line: train, evaluate, recommend, every model kind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from intentrec.cli import main
from intentrec.runs import load_run
from tests.conftest import write

TINY = """
[data.synthetic]
users = 80
seed = 4
titles = 60

[model]
d = 16
max_len = 20

[train]
epochs = 2
batch_size = 32
warmup_steps = 2
lr = 0.005
"""


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("run")
    config = write(folder / "tiny.toml", TINY)
    assert main(["train", "--config", str(config), "--set", "model.variant=V3", "--out", str(folder / "run")]) == 0
    return folder / "run"


def test_train_writes_a_self_contained_run(run_dir: Path) -> None:
    assert {p.name for p in run_dir.iterdir()} >= {
        "config.toml", "data", "world", "best.pt", "checkpoint.pt", "metrics.jsonl", "summary.json",
    }  # fmt: skip
    assert 'variant = "V3"' in (run_dir / "config.toml").read_text()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["model"] == "intentrec-V3" and summary["users"] == 80
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 2


def test_evaluate_json(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["evaluate", str(run_dir), "--split", "test", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {"ndcg@10", "hr@10", "mrr", "hr@1", "ndcg@20", "coverage@10", "genre_entropy@10"} <= set(result)
    assert set(result["intents"]) == {"action", "genre", "format", "recency"}
    assert {"accuracy", "macro_f1"} <= set(result["intents"]["action"])
    assert {"auc", "recall@3"} <= set(result["intents"]["genre"])
    targets = len(load_run(run_dir).store.targets("test"))  # one per user with at least 3 events
    assert 75 <= targets <= 80 and result["targets"] == targets
    slices = result["by_activity"]
    assert sum(slices[k]["targets"] for k in ("light", "medium", "heavy")) == targets
    weighted = sum(slices[k]["hr@10"] * slices[k]["targets"] for k in slices if slices[k]["targets"])
    assert weighted / targets == pytest.approx(result["hr@10"])
    slices = result["by_item_popularity"]
    assert sum(slices[k]["targets"] for k in ("tail", "torso", "head")) == targets
    weighted = sum(slices[k]["ndcg@10"] * slices[k]["targets"] for k in slices if slices[k]["targets"])
    assert weighted / targets == pytest.approx(result["ndcg@10"])
    assert main(["evaluate", str(run_dir), "--split", "valid"]) == 0
    text = capsys.readouterr().out
    assert "ndcg@10" in text and "heavy" in text and "tail" in text and "intent genre auc" in text


def test_evaluate_overrides_the_runs_seen_protocol(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--exclude-seen and --keep-seen each give the same numbers as the library call with that protocol,
    whatever the run's eval.exclude_seen says; neither gives the run's own."""
    run = load_run(run_dir)
    kept, excluded = run.evaluate("test", exclude_seen=False), run.evaluate("test", exclude_seen=True)
    assert not run.config.eval.exclude_seen and kept["mrr"] != excluded["mrr"]
    for flags, expected in (([], kept), (["--exclude-seen"], excluded), (["--keep-seen"], kept)):
        capsys.readouterr()
        assert main(["evaluate", str(run_dir), "--json", *flags]) == 0
        result = json.loads(capsys.readouterr().out)
        assert result["mrr"] == pytest.approx(expected["mrr"]) and result["targets"] == expected["targets"]
    assert main(["evaluate", str(run_dir)]) == 0
    assert "seen items kept" in capsys.readouterr().out
    assert main(["evaluate", str(run_dir), "--exclude-seen"]) == 0
    assert "seen items excluded" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # the two flags contradict each other
        main(["evaluate", str(run_dir), "--exclude-seen", "--keep-seen"])
    # a run whose config excludes seen items: --keep-seen is the only way to its seen-kept score
    config = write(tmp_path / "tiny.toml", TINY + "\n[eval]\nexclude_seen = true\n")
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "excluding")]) == 0
    excluding = load_run(tmp_path / "excluding")
    kept, excluded = excluding.evaluate("test", exclude_seen=False), excluding.evaluate("test", exclude_seen=True)
    assert kept["mrr"] != excluded["mrr"]
    for flags, expected in (([], excluded), (["--keep-seen"], kept)):
        capsys.readouterr()
        assert main(["evaluate", str(tmp_path / "excluding"), "--json", *flags]) == 0
        assert json.loads(capsys.readouterr().out)["mrr"] == pytest.approx(expected["mrr"])


def test_recommend(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["recommend", str(run_dir), "--user", "7", "--k", "5", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert len(result["items"]) == 5
    scores = [item["score"] for item in result["items"]]
    assert scores == sorted(scores, reverse=True)
    assert {"item", "title", "score"} <= set(result["items"][0])
    assert sum(result["intents"]["action"].values()) == pytest.approx(1.0, abs=1e-3)
    assert set(result["intent_weights"]) == {"action", "genre", "format", "recency"}
    assert sum(result["intent_weights"].values()) == pytest.approx(1.0, abs=1e-3)
    run = load_run(run_dir)
    history = set(run.store.items[run.store.offsets[run.user_row("7")] :][: run.store.n[run.user_row("7")]].tolist())
    unseen = run.recommend("7", 20, exclude_seen=True)
    picked = {
        int(i)
        for i in run.prepared.items.filter(run.prepared.items["item"].is_in([x["item"] for x in unseen["items"]]))[
            "item_idx"
        ]
    }
    assert not picked & history


def test_unknown_user_and_bad_config_are_clear(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert main(["recommend", str(run_dir), "--user", "nobody"]) == 2
    assert "user 'nobody' is not in this run's data (80 users" in capsys.readouterr().err
    bad = write(tmp_path / "bad.toml", "[model]\nlayers = 3\n")
    assert main(["train", "--config", str(bad), "--out", str(tmp_path / "r")]) == 2
    assert "unknown key model.layers" in capsys.readouterr().err
    assert main(["train", "--config", str(bad), "--set", "model.d=x", "--out", str(tmp_path / "r")]) == 2
    assert main(["evaluate", str(tmp_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err


def test_a_trained_run_is_not_overwritten(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write(tmp_path / "tiny.toml", TINY)
    assert main(["train", "--config", str(config), "--out", str(run_dir)]) == 2
    assert "already holds a trained run" in capsys.readouterr().err
    changed = ["train", "--config", str(config), "--set", "model.d=32", "--out", str(run_dir), "--resume"]
    assert main(changed) == 2
    assert "same configuration" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("kind", "extra"),
    [
        ("popularity", []),
        ("recent", []),
        ("sasrec", ["model.item_loss='bce'"]),
        ("gru4rec", []),
        ("bert4rec", []),
        ("intentrec", ["model.variant='V1'"]),
        ("intentrec", ["model.variant='V3'", "model.repeat=true"]),
        ("sasrec", ["model.repeat=true"]),
    ],
)
def test_every_model_kind_trains_in_the_same_harness(tmp_path: Path, kind: str, extra: list[str]) -> None:
    config = write(tmp_path / "tiny.toml", TINY)
    overrides = [x for pair in [f"model.kind='{kind}'", "train.epochs=1", *extra] for x in ("--set", pair)]
    assert main(["train", "--config", str(config), *overrides, "--out", str(tmp_path / "run")]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert 0.0 <= summary["test"]["ndcg@10"] <= summary["test"]["hr@10"] <= 1.0
    assert (summary["test"]["intents"] != {}) == (kind == "intentrec")


def test_a_repeat_model_scores_the_history_with_its_gate(tmp_path: Path) -> None:
    """With model.repeat the history items share the gate's probability; evaluation, recommend and the
    seen-excluded protocol all rank with the mixture's log-probabilities."""
    import torch

    config = write(tmp_path / "tiny.toml", TINY)
    overrides = ["--set", "model.variant='V0'", "--set", "model.repeat=true", "--set", "train.epochs=1"]
    assert main(["train", "--config", str(config), *overrides, "--out", str(tmp_path / "run")]) == 0
    run = load_run(tmp_path / "run")
    kept, excluded = run.evaluate("test", exclude_seen=False), run.evaluate("test", exclude_seen=True)
    assert excluded["hr@10"] >= kept["hr@10"] - 1e-9  # dropping rankable items never lowers a rank
    row = run.user_row("7")
    batch = run.store.history(row, run.model.max_len)
    with torch.no_grad():
        output = run.model(batch)
        scores = run.model.next_item_scores(batch, output)[0]
        gate = torch.sigmoid(run.model.repeat_gate(output.hidden[0, -1])).item()
    history = sorted(set(batch.items[0][batch.mask[0]].tolist()))
    assert scores[history].exp().sum().item() == pytest.approx(gate, rel=1e-4)
    top = run.recommend("7", 5, exclude_seen=False)["items"]
    assert [x["score"] for x in top] == sorted((x["score"] for x in top), reverse=True)
    assert top[0]["score"] == pytest.approx(float(scores.max()), rel=1e-5)
