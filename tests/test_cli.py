from __future__ import annotations

import json
from pathlib import Path

import pytest

from intentrec.cli import main
from intentrec.runs import load_run
from tests.conftest import write


def test_synth_then_stats_json_then_prepare(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    world = tmp_path / "world"
    assert main(["data", "synth", "--out", str(world), "--users", "60", "--seed", "2"]) == 0
    capsys.readouterr()
    assert main(["data", "stats", str(world), "--format", "synthetic", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert {"users", "items", "interactions", "bad_rows"} <= set(summary)
    assert summary["users"] == 60 and summary["bad_rows"] == 0
    assert set(summary["intents"]) == {"action", "genre", "format", "recency"}
    assert abs(sum(summary["intents"]["action"]["distribution"].values()) - 1) < 1e-3
    window = summary["short_term_window"]
    assert window["rule"] == "168 hours" and window["users"] == 60 and 0 <= window["whole_history"] <= 1
    assert main(["data", "stats", str(world), "--format", "synthetic"]) == 0
    assert f"the whole history for {window['whole_history']:.1%} of users" in capsys.readouterr().out
    out = tmp_path / "prepared"
    assert main(["data", "prepare", str(world), "--format", "synthetic", "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["interactions"] == summary["interactions"]
    assert [f["path"].rsplit("/", 1)[-1] for f in manifest["source"]["files"]] == [
        "interactions.parquet",
        "items.parquet",
    ]
    assert all(len(f["sha256"]) == 64 for f in manifest["source"]["files"])
    assert manifest["intentrec_version"] and manifest["config"]["split"] == "leave_one_out"


def test_prepared_folder_round_trips(tmp_path: Path) -> None:
    from intentrec.data import read_dataset
    from intentrec.data.prepare import load_prepared, prepare

    path = write(tmp_path / "Tiny.txt", "1 3 4 3\n2 4 5 6\n")
    p = prepare(read_dataset(path, "s3rec"), tmp_path / "prep", source_format="s3rec")
    back = load_prepared(tmp_path / "prep")
    assert back.interactions.equals(p.interactions) and back.users.equals(p.users)
    assert back.heads == p.heads and back.config == p.config


def test_bad_input_exits_2_with_the_location(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path / "UserBehavior.csv", "1,2,3,pv,100\n1,2,3,pv")
    assert main(["data", "stats", str(path), "--format", "taobao"]) == 2
    err = capsys.readouterr().err
    assert f"{path}:2: expected 5 fields" in err and "Traceback" not in err
    assert main(["data", "stats", str(path), "--format", "taobao", "--on-bad-rows", "skip", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["bad_rows"] == 1 and summary["bad_row_examples"][0]["line"] == 2


def test_csv_column_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path / "log.csv", "uid,sku,ts\n1,10,5\n1,11,6\n2,10,7\n")
    assert (
        main(
            [
                "data",
                "stats",
                str(path),
                "--format",
                "csv",
                "--column",
                "user=uid",
                "--column",
                "item=sku",
                "--column",
                "timestamp=ts",
                "--json",
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["interactions"] == 3
    assert main(["data", "stats", str(path), "--format", "csv", "--column", "user"]) == 2
    assert "--column expects NAME=SOURCE_COLUMN" in capsys.readouterr().err


def test_quickstart_trains_both_models_and_writes_a_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "qs"
    assert main(["quickstart", "--out", str(out), "--users", "80", "--epochs", "2"]) == 0
    printed = capsys.readouterr().out
    assert "| ndcg@10 |" in printed and "[4/4] report" in printed
    results = json.loads((out / "report" / "results.json").read_text())
    assert set(results["models"]) == {"SASRec", "IntentRec"}
    truth = results["models"]["IntentRec"]["true_intents"]
    assert set(truth) == {"action", "genre", "format", "recency"}
    targets = len(load_run(out / "runs" / "intentrec").store.targets("test"))  # users with at least 3 events
    assert targets >= 75
    assert all(t["targets"] == targets for t in truth.values()), "every test target is matched to its true session"
    assert all(0 <= t["majority_accuracy"] <= 1 and 0 <= t["bayes_accuracy"] <= 1 for t in truth.values())
    report = (out / "report" / "report.md").read_text()
    assert "| head | observed label | true intent |" in report
    assert (out / "report" / "training_curves.png").read_bytes()[:4] == b"\x89PNG"
