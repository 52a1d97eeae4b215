"""Typed, frozen run configuration read from TOML; an unknown key or a wrong type is an error naming it.

A run configuration has four tables::

    [data]    where the data is, its format, and [data.sequence] (how sequences are built and split)
    [model]   which model (kind) and its hyperparameters
    [train]   optimiser, schedule, early stopping, seed
    [eval]    evaluation protocol

Every key has a default, so a file names only what it changes. ``--set model.d=128`` overrides a key
on the command line (the value is read as TOML, falling back to a plain string). ``${VAR}`` in
``data.path`` is expanded from the environment; ``INTENTREC_SHARED_DATA`` defaults to ``../shared/data``.
The resolved configuration is written to each run folder as ``config.toml``.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import tomli_w

from intentrec.data.sequences import SequenceConfig
from intentrec.data.synthetic import WorldConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "ModelConfig",
    "RunConfig",
    "TrainConfig",
    "from_dict",
    "load_config",
    "parse_overrides",
    "to_dict",
    "write_config",
]

ModelKind = Literal["intentrec", "sasrec", "bert4rec", "gru4rec", "popularity", "recent"]


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the file and key."""


@dataclass(frozen=True)
class DataConfig:
    """Where the data comes from. With ``synthetic`` set, a world is generated instead of read."""

    path: str = ""  # file or folder; ${VAR} is expanded
    format: str = "synthetic"  # one of intentrec.data.FORMATS
    on_bad_rows: Literal["error", "skip"] = "error"
    synthetic: WorldConfig | None = None  # generate this world into the run folder
    columns: dict[str, str] | None = None  # csv/parquet: canonical column -> source column
    items: str | None = None  # csv/parquet: an item catalogue file
    item_columns: dict[str, str] | None = None  # csv/parquet: catalogue column -> source column
    separator: str | None = None  # csv: field separator
    timestamp_format: str | None = None  # csv: strftime format of date-time timestamps
    sequence: SequenceConfig = field(default_factory=SequenceConfig)
    deletions: tuple[str, ...] = ()  # service databases whose deleted users are left out (${VAR} expanded)

    def reader_options(self) -> dict[str, Any]:
        """Options for `intentrec.data.read_dataset`, with paths expanded."""
        options: dict[str, Any] = {}
        for name in ("columns", "item_columns", "separator", "timestamp_format"):
            if getattr(self, name) is not None:
                options[name] = getattr(self, name)
        if self.items is not None:
            options["items"] = expand_path(self.items)
        return options


@dataclass(frozen=True)
class ModelConfig:
    """The model and its hyperparameters; keys that a kind does not use are ignored by it."""

    kind: ModelKind = "intentrec"
    variant: Literal["V0", "V1", "V2", "V3"] = "V3"  # intentrec: V0 none, V1 flat, V2 hierarchical, V3 + window
    d: int = 64  # hidden size
    n_blocks: int = 2  # Transformer blocks per encoder (intentrec, sasrec, bert4rec); GRU layers (gru4rec)
    n_heads: int = 2  # attention heads
    ffn_mult: int = 4  # Transformer feed-forward width as a multiple of d (the SASRec paper and RePlay: 1)
    window_blocks: int = 1  # intentrec V3: blocks of the short-term window encoder
    dropout: float = 0.2
    max_len: int = 50  # interactions of history the model reads
    # "ce" full softmax, "bce" BCE with one sampled negative, "sampled" softmax over the target and
    # n_negatives uniform negatives per position (intentrec, sasrec, gru4rec)
    item_loss: Literal["ce", "bce", "sampled"] = "ce"
    n_negatives: int = 256
    # item_loss = "sampled": negatives drawn for each position ("per_position", as RecTools) or once per
    # batch and shared by every position ("shared", as TensorFlow's sampled_softmax_loss; far faster)
    negatives: Literal["per_position", "shared"] = "per_position"
    # item_loss = "bce": the negative drawn from the items the row does not hold (its inputs and targets),
    # as S3-Rec's trainer draws them, instead of from every item but the target
    unseen_negatives: bool = False
    intent_lambda: float = 0.3  # intentrec: weight of the summed intent losses
    heads: tuple[str, ...] | None = None  # intentrec: intent heads to use (default: every enabled one)
    head_weights: dict[str, float] = field(default_factory=dict)  # intentrec: per-head loss weight (default 1)
    use_genres: bool = True  # intentrec: item genres as an input feature
    use_time_gaps: bool = True  # intentrec: time gap to the previous interaction as an input feature
    use_side_features: bool = True  # intentrec: per-interaction categorical fields (event, device, hour, ...)
    mask_prob: float = 0.2  # bert4rec: share of interactions masked for the cloze task
    mask_last: float = 0.0  # bert4rec: share of training rows that mask only their latest interaction
    # intentrec, sasrec, bert4rec: "scaled" (item embeddings N(0, 1/d), times sqrt(d) except in bert4rec;
    # PyTorch defaults elsewhere), "small" (BERT's, as S3-Rec and RecBole: every weight N(0, 0.02), items
    # unscaled) or "xavier" (RecTools': every weight matrix and embedding Xavier-normal, items unscaled)
    init: Literal["scaled", "small", "xavier"] = "scaled"
    output_genres: bool = False  # intentrec: items scored with their genre embedding added to the id embedding
    # intentrec, sasrec: the continue/discover mixture (`intentrec.models.intentrec`): a gate predicts whether
    # the next item is one already in the history, and a pointer over the history scores which one
    repeat: bool = False
    # intentrec: the pointer's keys from each interaction's features (event type, fields, time gap) too
    repeat_features: bool = False
    # intentrec, sasrec: learned positions counted from the first real interaction ("from_first") or back
    # from the last ("from_last", as the original SASRec's and S3-Rec's left padding to a fixed width)
    positions: Literal["from_first", "from_last"] = "from_first"
    # intentrec, sasrec: a linear layer and LayerNorm between the (joined) inputs and each encoder (false:
    # none, as the SASRec paper and RecTools; IntentRec V2 and V3 then sum their inputs)
    input_projection: bool = True

    def __post_init__(self) -> None:
        for name in ("d", "n_blocks", "n_heads", "ffn_mult", "max_len", "n_negatives"):
            if getattr(self, name) < 1:
                raise ConfigError(f"model.{name} must be at least 1, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout must be in [0, 1), got {self.dropout}")
        if self.intent_lambda < 0:
            raise ConfigError(f"model.intent_lambda cannot be negative, got {self.intent_lambda}")
        if self.init not in ("scaled", "small", "xavier"):
            raise ConfigError(f"model.init must be scaled, small or xavier, got {self.init!r}")
        if self.init != "scaled" and self.kind not in ("intentrec", "sasrec", "bert4rec"):
            raise ConfigError(f"model.init applies to intentrec, sasrec and bert4rec, not {self.kind}")
        if self.negatives not in ("per_position", "shared"):
            raise ConfigError(f"model.negatives must be per_position or shared, got {self.negatives!r}")
        if self.negatives != "per_position" and self.item_loss != "sampled":
            raise ConfigError('model.negatives applies to model.item_loss = "sampled"')
        if self.unseen_negatives and self.item_loss != "bce":
            raise ConfigError('model.unseen_negatives applies to model.item_loss = "bce"')
        if self.unseen_negatives and self.kind not in ("intentrec", "sasrec", "gru4rec"):
            raise ConfigError(f"model.unseen_negatives applies to intentrec, sasrec and gru4rec, not {self.kind}")
        if self.positions not in ("from_first", "from_last"):
            raise ConfigError(f"model.positions must be from_first or from_last, got {self.positions!r}")
        if self.positions != "from_first" and self.kind not in ("intentrec", "sasrec"):
            raise ConfigError(f"model.positions applies to intentrec and sasrec, not {self.kind}")
        if not self.input_projection and self.kind not in ("intentrec", "sasrec"):
            raise ConfigError(f"model.input_projection applies to intentrec and sasrec, not {self.kind}")
        if not 0 < self.mask_prob < 1:
            raise ConfigError(f"model.mask_prob must be between 0 and 1, got {self.mask_prob}")
        if not 0 <= self.mask_last <= 1:
            raise ConfigError(f"model.mask_last must be between 0 and 1, got {self.mask_last}")
        if self.mask_last and self.kind != "bert4rec":
            raise ConfigError(f"model.mask_last applies to bert4rec, not {self.kind}")
        if self.repeat and self.kind not in ("intentrec", "sasrec"):
            raise ConfigError(f"model.repeat applies to intentrec and sasrec, not {self.kind}")
        if self.repeat and self.item_loss != "ce":
            raise ConfigError('model.repeat needs model.item_loss = "ce" (the mixture is a full softmax)')
        if self.repeat_features and not self.repeat:
            raise ConfigError("model.repeat_features needs model.repeat = true (it changes the pointer's keys)")
        if self.repeat_features and self.kind != "intentrec":
            raise ConfigError(f"model.repeat_features applies to intentrec (sasrec has no features), not {self.kind}")


@dataclass(frozen=True)
class TrainConfig:
    """How the model is trained (see intentrec.train.loop)."""

    epochs: int = 50
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 20
    # after the warm-up, the learning rate falls linearly to 0 at train.epochs ("linear"), or stays at
    # train.lr ("constant", as RecTools and transformer_benchmark train)
    lr_schedule: Literal["linear", "constant"] = "linear"
    clip_norm: float = 1.0  # gradient norm clipped to this; 0: not clipped
    patience: int = 5  # epochs without a better validation NDCG@10 before stopping
    seed: int = 0
    eval_batch_size: int = 512
    stop_after_epochs: int | None = None  # end the run after this many epochs (to test resuming)
    # each batch computed as up to this many groups of rows of similar length, losses weighted by their
    # share of the batch's targets: the same update as the whole batch, less padding (Batch.split_by_length)
    length_groups: int = 1
    # a training row: each user's latest window (max_len + 1 training interactions) with a target at every
    # position ("sequences"), or each of those targets alone at the last position of its own history
    # ("prefixes", as FMLP-Rec's, BSARec's and WEARec's trainers on S3-Rec's files): every prediction made
    # as at inference; an epoch sees the same targets, in steps of batch_size targets instead of users
    samples: Literal["sequences", "prefixes"] = "sequences"
    # the arithmetic of training steps: "fp32" throughout, or "bf16": autocast, the matrix products in
    # bfloat16 with float32 weights, softmax, losses and optimiser; evaluation and serving stay fp32.
    # Needs bfloat16 hardware (AVX512-BF16 or AMX on a CPU, or a GPU) and large products: on 2 EPYC
    # cores an ML-100K epoch takes 0.65 of the time (50-long histories), but a Beauty IntentRec epoch
    # (histories of 6, in length groups: many small products, each with its casts) 1.5 times as long
    precision: Literal["fp32", "bf16"] = "fp32"

    def __post_init__(self) -> None:
        if self.length_groups < 1:
            raise ConfigError(f"train.length_groups must be at least 1, got {self.length_groups}")
        if self.lr_schedule not in ("linear", "constant"):
            raise ConfigError(f"train.lr_schedule must be linear or constant, got {self.lr_schedule!r}")
        if self.clip_norm < 0:
            raise ConfigError(f"train.clip_norm must be >= 0 (0: no clipping), got {self.clip_norm}")


@dataclass(frozen=True)
class EvalConfig:
    exclude_seen: bool = False  # leave-one-out default: seen items stay rankable (RecBole, RePlay, S3-Rec)
    k: int = 10  # list length for coverage, genre entropy and popularity percentile


@dataclass(frozen=True)
class RunConfig:
    name: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


# -- reading ------------------------------------------------------------------------------------------


def _describe(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def _convert(value: Any, hint: Any, key: str) -> Any:
    """Check ``value`` against the type ``hint`` and convert it (lists to tuples, tables to dataclasses)."""
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        if value is None and type(None) in args:
            return None
        errors = []
        for option in options:
            try:
                return _convert(value, option, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0])
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key} must be one of {list(args)}, got {value!r}")
        return value
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key} must be a table, got {_describe(value)}")
        return from_dict(hint, value, prefix=f"{key}.")  # type: ignore[arg-type]
    if origin is tuple:
        if not isinstance(value, Sequence) or isinstance(value, str):
            raise ConfigError(f"{key} must be a list, got {_describe(value)}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{key} must have {len(args)} values, got {len(value)}")
        return tuple(_convert(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key} must be a table, got {_describe(value)}")
        return {str(k): _convert(v, args[1], f"{key}.{k}") for k, v in value.items()}
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {_describe(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {_describe(value)}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key} must be a number, got {_describe(value)}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {_describe(value)}")
        return value
    raise ConfigError(f"{key}: unsupported type {hint}")  # pragma: no cover - a bug in a config class


def from_dict(cls: type[Any], values: Mapping[str, Any], *, prefix: str = "") -> Any:
    """Build the frozen dataclass ``cls`` from ``values``; unknown keys and wrong types name the key."""
    hints = get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = [k for k in values if k not in known]
    if unknown:
        raise ConfigError(f"unknown key {prefix}{unknown[0]!s}; known keys of {prefix or 'the top level'}: {known}")
    converted = {k: _convert(v, hints[k], f"{prefix}{k}") for k, v in values.items()}
    try:
        return cls(**converted)
    except ConfigError:
        raise
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{prefix.rstrip('.') or cls.__name__}: {exc}") from exc


def parse_overrides(pairs: Sequence[str]) -> dict[str, Any]:
    """``["model.d=128", "train.lr=3e-4"]`` -> a nested dictionary; values are read as TOML."""
    nested: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set expects KEY=VALUE, got {pair!r}")
        try:
            value = tomllib.loads(f"v = {raw.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw.strip()
        node = nested
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {key}: {part} is not a table")
        node[parts[-1]] = value
    return nested


def _merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def load_config(path: Path | None, overrides: Sequence[str] = ()) -> RunConfig:
    """Read a TOML run configuration (or the defaults when ``path`` is None) and apply overrides."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            values = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such configuration file") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    values = _merge(values, parse_overrides(overrides))
    try:
        config: RunConfig = from_dict(RunConfig, values)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}" if path is not None else str(exc)) from None
    return config


def expand_path(raw: str) -> Path:
    """Expand ``${VAR}`` (``INTENTREC_SHARED_DATA`` defaults to ``../shared/data``) and ``~``."""

    def lookup(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name in os.environ:
            return os.environ[name]
        if name == "INTENTREC_SHARED_DATA":
            return str(Path("..", "shared", "data"))
        raise ConfigError(f"data.path uses ${{{name}}}, which is not set")

    return Path(re.sub(r"\$\{(\w+)\}|\$(\w+)", lookup, raw)).expanduser()


# -- writing ------------------------------------------------------------------------------------------


def to_dict(config: Any) -> dict[str, Any]:
    """A TOML-ready dictionary: None values are left out, tuples become lists."""

    def clean(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items() if v is not None}
        if isinstance(value, list | tuple):
            return [clean(v) for v in value]
        return value

    result: dict[str, Any] = clean(dataclasses.asdict(config))
    return result


def write_config(config: RunConfig, path: Path, header: str = "") -> None:
    text = tomli_w.dumps(to_dict(config))
    lines = "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines())
    path.write_text(lines + text, encoding="utf-8")
