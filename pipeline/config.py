"""Configuration: frozen dataclasses composed into one `PipelineConfig`.

Resolution order: defaults in code, then an optional TOML file, then `--set section.key=value`
overrides. Unknown sections or keys are errors. No side effects: nothing here touches the disk
except reading the TOML file it is given.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pipeline.errors import ConfigError, PipelineError
from pipeline.model import ModelConfig
from pipeline.vocab import VocabConfig


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 0  # upper bound; 0 = chosen by data size (see `resolve_for_data`)
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.0
    clip_norm: float = 1.0
    val_fraction: float = 0.1
    seed: int = 13
    patience: int = 0  # epochs without validation improvement before stopping; 0 = by data size
    lr_schedule: Literal["plateau", "none"] = "plateau"
    # the TF-IDF head (model.wide_buckets) is fitted to convergence on its own (pipeline/tfidf.py); its
    # inverse regularisation strength C: 0 = the best on validation of 4, 16, 64
    wide_c: float = 0.0


@dataclass(frozen=True)
class PretrainConfig:
    """Word vectors learnt from every lake text up to the training range (pipeline/pretrain.py)."""

    epochs: int = 5  # passes of skip-gram over the corpus; 0 = no pretraining (random embedding)
    window: int = 5  # context reach, in tokens, either side
    negatives: int = 5  # noise tokens per positive pair
    subsample: float = 1e-4  # frequent-token subsampling threshold
    lr: float = 0.01
    batch_size: int = 4096
    max_texts: int = 200_000  # the most recent texts, at most (news-length: about 3 min an epoch, 2 cores)
    freeze_epochs: int = 1  # classifier epochs with the pretrained embedding frozen, before it is tuned

    def __post_init__(self) -> None:
        for name in ("epochs", "freeze_epochs"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"pretrain.{name}: expected an integer >= 0, got {value!r}")
        for name in ("window", "negatives", "batch_size", "max_texts"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"pretrain.{name}: expected a positive integer, got {value!r}")
        for name in ("subsample", "lr"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"pretrain.{name}: expected a positive number, got {value!r}")


@dataclass(frozen=True)
class ScoreConfig:
    batch_size: int = 256  # rows per model call (rows of one length; see pipeline/infer.py)
    shard_rows: int = 1_000_000  # rows per Arrow file
    workers: int = 1  # 1: an inference thread beside tokenisation; N>1: N processes (pipeline/score.py)
    precision: Literal["fp32", "bf16", "int8"] = "fp32"  # fp32 is exact; the others are measured options

    def __post_init__(self) -> None:
        for name in ("batch_size", "shard_rows", "workers"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                msg = f"score.{name}: expected a positive integer, got {value!r}"
                raise ConfigError(msg)


@dataclass(frozen=True)
class ExportConfig:
    # where `run` / `backfill` also load predictions: mysql://USER@HOST[:PORT]/DATABASE[?table=NAME];
    # "" = nowhere. $PIPELINE_MYSQL_URL wins over it. Never a password (see pipeline/mysql_client.py).
    mysql_url: str = ""

    def __post_init__(self) -> None:
        if self.mysql_url:
            from pipeline.mysql_client import parse_url  # pymysql only when a URL is given

            try:
                parse_url(self.mysql_url)
            except PipelineError as e:
                raise ConfigError(f"export.mysql_url: {e}") from None


@dataclass(frozen=True)
class ReportConfig:
    """The night's report (`pipeline/nightreport.py`) and its drift alerts (`pipeline/drift.py`)."""

    psi_class_mix: float = 0.2  # a night whose predicted class mix has a PSI above this is flagged
    psi_score: float = 0.2  # ... or whose `score` distribution has a PSI above this
    confidence: float = 0.5  # rows whose `score` is below this are counted as low-confidence
    fail_on_drift: bool = False  # a flagged night fails the run (exit 1), after every output is written
    nights: int = 30  # nights shown in a date's trend

    def __post_init__(self) -> None:
        for name in ("psi_class_mix", "psi_score"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
                msg = f"report.{name}: expected a positive number, got {value!r}"
                raise ConfigError(msg)
        if not isinstance(self.confidence, int | float) or not 0 < self.confidence < 1:
            msg = f"report.confidence: expected a number between 0 and 1, got {self.confidence!r}"
            raise ConfigError(msg)
        if not isinstance(self.nights, int) or isinstance(self.nights, bool) or not 1 <= self.nights <= 366:
            msg = f"report.nights: expected an integer from 1 to 366, got {self.nights!r}"
            raise ConfigError(msg)


@dataclass(frozen=True)
class PipelineConfig:
    vocab: VocabConfig = field(default_factory=VocabConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    report: ReportConfig = field(default_factory=ReportConfig)


def load_config(path: Path | None = None, overrides: list[str] | None = None) -> PipelineConfig:
    """Defaults <- TOML file <- `section.key=value` overrides."""
    raw: dict[str, dict[str, Any]] = {}
    if path is not None:
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            msg = f"{path}: config file not found"
            raise ConfigError(msg) from None
        except tomllib.TOMLDecodeError as e:
            msg = f"{path}: not valid TOML ({e})"
            raise ConfigError(msg) from None
    for item in overrides or []:
        key, sep, value = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot:
            msg = f"--set {item!r}: expected SECTION.KEY=VALUE, e.g. train.epochs=5"
            raise ConfigError(msg)
        raw.setdefault(section, {})[name] = _parse_value(value.strip())
    return from_dict(raw, source=str(path) if path else "--set")


def from_dict(raw: dict[str, Any], *, source: str = "config") -> PipelineConfig:
    sections = {f.name: f for f in dataclasses.fields(PipelineConfig)}
    built: dict[str, Any] = {}
    for name, values in raw.items():
        if name not in sections:
            msg = f"{source}: unknown section `{name}`; known: {sorted(sections)}"
            raise ConfigError(msg)
        if not isinstance(values, dict):
            msg = f"{source}: `{name}` must be a table of keys"
            raise ConfigError(msg)
        cls = _section_class(name)
        built[name] = _build(cls, values, f"{source}: {name}")
    return PipelineConfig(**built)


def to_dict(cfg: PipelineConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def model_settings(cfg: PipelineConfig) -> dict[str, Any]:
    """The settings a model is made from (part of its version): all but `[score]` (how predictions are
    computed: batch size, workers, precision), `[report]`, which only reads them, and `[export]`, which says
    where they are loaded; changing any of those never retrains."""
    return {k: v for k, v in to_dict(cfg).items() if k not in ("score", "report", "export")}


def _section_class(name: str) -> type:
    hints = typing.get_type_hints(PipelineConfig)
    return hints[name]


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    out = {}
    for key, value in values.items():
        if key not in fields:
            msg = f"{where}: unknown key `{key}`; known: {sorted(fields)}"
            raise ConfigError(msg)
        out[key] = _check_type(value, hints[key], f"{where}.{key}")
    return cls(**out)


def _check_type(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin is Literal:
        if value not in typing.get_args(tp):
            msg = f"{where}: {value!r} is not one of {list(typing.get_args(tp))}"
            raise ConfigError(msg)
        return value
    if origin in (types.UnionType, typing.Union):
        for arg in typing.get_args(tp):
            try:
                return _check_type(value, arg, where)
            except ConfigError:
                continue
        msg = f"{where}: {value!r} does not match {tp}"
        raise ConfigError(msg)
    if tp is type(None):
        if value is not None:
            raise ConfigError(f"{where}: expected nothing")
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str, bool) and not (
        isinstance(value, tp) and not (tp is int and isinstance(value, bool))
    ):
        msg = f"{where}: expected {tp.__name__}, got {value!r}"
        raise ConfigError(msg)
    return value


def _parse_value(text: str) -> Any:
    """A TOML literal (5, 0.1, true, "x"), or the bare text as a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def resolve_for_data(cfg: PipelineConfig, *, rows: int) -> PipelineConfig:
    """Fill the settings left at 0 ("auto") from the size of the training data.

    Small data sets need more passes and tolerate rarer tokens; large ones converge in a few epochs
    and gain nothing from singleton tokens. The resolved values are what the model records.
    """
    train = cfg.train
    if train.epochs == 0:
        train = dataclasses.replace(train, epochs=max(6, min(30, round(300_000 / max(rows, 1)))))
    if train.patience == 0:
        train = dataclasses.replace(train, patience=3 if rows < 50_000 else 2)
    vocab = cfg.vocab
    if vocab.min_count == 0:
        vocab = dataclasses.replace(vocab, min_count=1 if rows < 200_000 else 2)
    return dataclasses.replace(cfg, train=train, vocab=vocab)
