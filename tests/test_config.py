"""Run configuration: typed, frozen, unknown keys and wrong types named, overrides, round trip."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from intentrec.config import ConfigError, RunConfig, expand_path, load_config, parse_overrides, write_config
from tests.conftest import write


def test_defaults_and_a_small_file(tmp_path: Path) -> None:
    path = write(tmp_path / "run.toml", '[model]\nkind = "sasrec"\nd = 32\n[train]\nlr = 3e-3\nepochs = 7\n')
    config = load_config(path)
    assert config.model.kind == "sasrec" and config.model.d == 32 and config.model.n_blocks == 2
    assert config.train.lr == 0.003 and config.train.epochs == 7 and config.train.batch_size == 128
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.model.d = 64  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[model]\ndpth = 3\n", "unknown key model.dpth"),
        ("[trian]\nlr = 1\n", "unknown key trian"),
        ("[data.sequence.intents]\ngenre_top = 5\n", "unknown key data.sequence.intents.genre_top"),
        ("[model]\nd = 'big'\n", "model.d must be an integer, got 'big'"),
        ("[model]\nd = 1.5\n", "model.d must be an integer"),
        ("[model]\nuse_genres = 1\n", "model.use_genres must be true or false"),
        ("[model]\nkind = 'transformer'\n", "model.kind must be one of"),
        ("[model]\ndropout = 1.5\n", "model.dropout must be in"),
        ("[model]\ninit = 'glorot'\n", "model.init must be one of"),
        (
            "[model]\nkind = 'gru4rec'\ninput_projection = false\n",
            "model.input_projection applies to intentrec and sasrec",
        ),
        (
            "[model]\nkind = 'gru4rec'\ninit = 'small'\n",
            "model.init applies to intentrec, sasrec and bert4rec, not gru4rec",
        ),
        ("[model]\npositions = 'from_middle'\n", "model.positions must be one of"),
        ("[model]\nkind = 'bert4rec'\npositions = 'from_last'\n", "model.positions applies to intentrec and sasrec"),
        ("[model]\nkind = 'bert4rec'\nmask_last = 1.5\n", "model.mask_last must be between 0 and 1"),
        ("[model]\nkind = 'bert4rec'\nmask_prob = 0.0\n", "model.mask_prob must be between 0 and 1"),
        ("[model]\nmask_last = 0.5\n", "model.mask_last applies to bert4rec, not intentrec"),
        ("[data.sequence]\nsplit = 'random'\n", "data.sequence.split must be one of"),
        ("[train]\nlr_schedule = 'cosine'\n", "train.lr_schedule must be one of"),
        ("[train]\nclip_norm = -1.0\n", "train.clip_norm must be >= 0"),
        ("[train]\nsamples = 'windows'\n", "train.samples must be one of"),
        ("[train]\nprecision = 'fp16'\n", "train.precision must be one of"),
        ("[data.synthetic]\nepisodes = [1]\n", "data.synthetic.episodes must have 2 values"),
        ("[data.synthetic]\nnoise = 2.0\n", "data.synthetic: noise must be in"),
        ("[model\n", "not valid TOML"),
    ],
)
def test_errors_name_the_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path / "bad.toml", text)
    with pytest.raises(ConfigError, match=message) as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such configuration file"):
        load_config(tmp_path / "nope.toml")


def test_overrides_are_typed_and_nested() -> None:
    assert parse_overrides(["model.d=128", "train.lr=3e-4", "data.format=movielens", "model.heads=['genre']"]) == {
        "model": {"d": 128, "heads": ["genre"]},
        "train": {"lr": 3e-4},
        "data": {"format": "movielens"},
    }
    config = load_config(None, ["model.head_weights={genre = 0.5}", "eval.exclude_seen=true"])
    assert config.model.head_weights == {"genre": 0.5} and config.eval.exclude_seen is True
    with pytest.raises(ConfigError, match=r"unknown key model\.width"):
        load_config(None, ["model.width=3"])
    with pytest.raises(ConfigError, match="--set expects KEY=VALUE"):
        parse_overrides(["model.d"])


def test_written_config_reads_back_identically(tmp_path: Path) -> None:
    config = load_config(
        None,
        ["data.synthetic={users = 50, seed = 3}", "model.heads=['action', 'genre']", "model.head_weights={genre = 2}"],
    )
    write_config(config, tmp_path / "config.toml", header="a header\nsecond line")
    text = (tmp_path / "config.toml").read_text()
    assert text.startswith("# a header\n# second line\n")
    assert load_config(tmp_path / "config.toml") == config
    assert load_config(tmp_path / "config.toml") != RunConfig()


def test_path_expansion(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INTENTREC_SHARED_DATA", "/data/shared")
    assert expand_path("${INTENTREC_SHARED_DATA}/movielens-100k") == Path("/data/shared/movielens-100k")
    monkeypatch.delenv("INTENTREC_SHARED_DATA")
    assert expand_path("${INTENTREC_SHARED_DATA}/x") == Path("../shared/data/x")
    with pytest.raises(ConfigError, match="NOT_SET_ANYWHERE"):
        expand_path("$NOT_SET_ANYWHERE/x")


CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*/*.toml"))


def test_there_is_a_frozen_config_per_data_set_and_model() -> None:
    data_sets = {p.parent.name for p in CONFIGS}
    models = {p.stem for p in CONFIGS}
    assert data_sets == {"ml-100k", "beauty", "toys", "lastfm", "taobao", "synthetic"}
    assert len(models) == 12 and len(CONFIGS) == len(data_sets) * len(models)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_frozen_configs_load_and_say_how_to_run_them(path: Path) -> None:
    config = load_config(path)
    assert config.name == f"{path.parent.name}-{path.stem}"
    text = path.read_text()
    assert text.startswith("# ") and f"intentrec train --config configs/{path.parent.name}/{path.stem}.toml" in text
    if config.data.synthetic is None:
        assert config.data.path.startswith("${INTENTREC_SHARED_DATA}/")
