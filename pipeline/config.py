"""Configuration: the settings of every stage, composed into one `PipelineConfig`.

Each section is declared once (`pipeline/settings.py`): `[vocab]` in vocab.py and `[model]` beside the
model, the others here. Resolution order: defaults in code, then an optional TOML file, then
`--set section.key=value` overrides, then a subcommand's own flags (`pipeline score --batch-size`).
Unknown sections or keys, and values of the wrong type or out of range, are errors that name the key,
the file and a hint. `pipeline config` prints the resolved configuration, `pipeline config --schema`
its JSON Schema. No side effects: nothing here touches the disk except reading the TOML file it is given.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import tomllib
import typing
from dataclasses import field
from pathlib import Path
from typing import Any, Literal

from pipeline.errors import ConfigError, PipelineError
from pipeline.infer import Precision
from pipeline.model import ModelConfig
from pipeline.settings import build, json_schema, setting, settings
from pipeline.vocab import VocabConfig

# Sections that decide how a model's predictions are computed, where they go, how they are read or how long
# they are kept, never the weights: they are no part of a model's version (`model_settings`).
NOT_IN_MODEL_VERSION = ("score", "export", "report", "retention")


@settings
class TrainConfig:
    """How the sequence head is trained (`pipeline/trainloop.py`), and the TF-IDF head's regularisation."""

    epochs: int = setting(0, "the most passes over the training rows; 0 = chosen by data size", ge=0)
    batch_size: int = setting(64, "rows per optimiser step", ge=1)
    lr: float = setting(2e-3, "Adam's learning rate", gt=0)
    weight_decay: float = setting(0.0, "Adam's L2 penalty", ge=0)
    clip_norm: float = setting(1.0, "gradients are clipped to this norm", gt=0)
    val_fraction: float = setting(0.1, "the share of each class kept for validation", ge=0, lt=1)
    seed: int = setting(13, "seeds the split, the batches and the initial weights")
    patience: int = setting(
        0, "epochs without validation improvement before stopping; 0 = chosen by data size", ge=0
    )
    lr_schedule: Literal["plateau", "none"] = setting(
        "plateau", "plateau: halve the learning rate when validation accuracy stalls"
    )
    wide_c: float = setting(
        0.0,
        "the TF-IDF head's inverse regularisation strength C (pipeline/tfidf.py); "
        "0 = the best on validation of 4, 16, 64",
        ge=0,
    )


@settings
class PretrainConfig:
    """Word vectors learnt from every lake text up to the training range (pipeline/pretrain.py)."""

    epochs: int = setting(
        5, "passes of skip-gram over the corpus; 0 = no pretraining (random embedding)", ge=0
    )
    window: int = setting(5, "context reach, in tokens, either side", ge=1)
    negatives: int = setting(5, "noise tokens per positive pair", ge=1)
    subsample: float = setting(1e-4, "frequent-token subsampling threshold", gt=0)
    lr: float = setting(0.01, "skip-gram's learning rate", gt=0)
    batch_size: int = setting(4096, "pairs per step", ge=1)
    max_texts: int = setting(
        200_000, "the most recent texts, at most (news-length: about 3 min an epoch, 2 cores)", ge=1
    )
    freeze_epochs: int = setting(
        1, "classifier epochs with the pretrained embedding frozen, before it is tuned", ge=0
    )


@settings
class ScoreConfig:
    """How predictions are computed (`pipeline/score.py`): never part of a model's version."""

    batch_size: int = setting(256, "rows per model call (rows of one length; see pipeline/infer.py)", ge=1)
    shard_rows: int = setting(1_000_000, "rows per Arrow file", ge=1)
    workers: int = setting(1, "1: an inference thread beside tokenisation; N>1: N processes", ge=1)
    precision: Precision = setting(
        "fp32", "fp32 (exact), bf16 autocast, int8 (onnxruntime dynamic quantisation)"
    )


@settings
class ExportConfig:
    """Where predictions go besides the JSON files."""

    mysql_url: str = setting(
        "",
        "where `run` / `backfill` also load predictions: mysql://USER@HOST[:PORT]/DATABASE[?table=NAME]; "
        '"" = nowhere; $PIPELINE_MYSQL_URL wins over it; never a password (pipeline/mysql_client.py)',
    )

    def __post_init__(self) -> None:
        if self.mysql_url:
            from pipeline.mysql_client import parse_url  # pymysql only when a URL is given

            try:
                parse_url(self.mysql_url)
            except PipelineError as e:
                raise ConfigError(f"export.mysql_url: {e}") from None


@settings
class ReportConfig:
    """The night's report (`pipeline/nightreport.py`) and its drift alerts (`pipeline/drift.py`)."""

    psi_class_mix: float = setting(
        0.2, "a night whose predicted class mix has a PSI above this is flagged", gt=0
    )
    psi_score: float = setting(0.2, "... or whose `score` distribution has a PSI above this", gt=0)
    confidence: float = setting(
        0.5, "rows whose `score` is below this are counted as low-confidence", gt=0, lt=1
    )
    fail_on_drift: bool = setting(
        False, "a flagged night fails the run (exit 1), after every output is written"
    )
    nights: int = setting(30, "nights shown in a date's trend", ge=1, le=366)


@settings
class RetentionConfig:
    """What `pipeline gc` removes (`pipeline/retention.py`), and whether `run` applies it."""

    days: int = setting(
        90,
        "predictions, exports and reports of nights this many days or more before the newest night "
        "are removed (the lake keeps every night's rows)",
        ge=1,
    )
    models: int = setting(
        5,
        "the last N distinct versions in models/history.jsonl are kept; so are `latest` and the models "
        "that kept nights were scored with",
        ge=0,
    )
    after_run: bool = setting(
        False, "`run` applies this policy after a successful night (off: only `pipeline gc` removes)"
    )


@settings
class PipelineConfig:
    vocab: VocabConfig = field(default_factory=VocabConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)


SECTIONS: dict[str, type] = typing.get_type_hints(PipelineConfig)  # section name -> its settings class


def load_config(path: Path | None = None, overrides: list[str] | None = None) -> PipelineConfig:
    """Defaults <- TOML file <- `section.key=value` overrides (each checked where it comes from)."""
    try:
        return _load_config(path, overrides or [])
    except RecursionError:  # tomllib (and a validator) recurse once per nested table or array
        where = f"{path} with --set" if path and overrides else str(path) if path else "--set"
        msg = (
            f"{where}: its tables or arrays nest too deeply to read; "
            "hint: a setting is a plain value (a number, a string, true or false, a flat list)"
        )
        raise ConfigError(msg) from None


def _load_config(path: Path | None, overrides: list[str]) -> PipelineConfig:
    raw: dict[str, dict[str, Any]] = {}
    if path is not None:
        raw = _read_toml(path)
        from_dict(raw, source=str(path))
    sets: dict[str, dict[str, Any]] = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot:
            msg = f"--set {item!r}: expected SECTION.KEY=VALUE, e.g. train.epochs=5"
            raise ConfigError(msg)
        sets.setdefault(section, {})[name] = _parse_value(value.strip())
    from_dict(sets, source="--set")
    for section, values in sets.items():
        raw[section] = {**raw.get(section, {}), **values}
    return from_dict(raw, source=f"{path} with --set" if path and sets else str(path) if path else "--set")


def _read_toml(path: Path) -> dict[str, Any]:
    hint = "hint: --config takes a TOML file, UTF-8 text; `pipeline config` prints one to start from"
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        msg = f"{path}: config file not found; hint: check the path given to --config"
    except IsADirectoryError:
        msg = f"{path}: a folder, not a config file; {hint}"
    except UnicodeDecodeError as e:
        line = e.object[: e.start].count(b"\n") + 1
        msg = f"{path}: not UTF-8 text (line {line}, byte {e.start}: 0x{e.object[e.start]:02x}); {hint}"
    except OSError as e:
        msg = f"{path}: cannot read it ({e.strerror}); {hint}"
    except tomllib.TOMLDecodeError as e:
        msg = f"{path}: not valid TOML ({e}); hint: mend the line and column it names"
    raise ConfigError(msg)


def from_dict(raw: dict[str, Any], *, source: str = "config") -> PipelineConfig:
    """A `PipelineConfig` from tables of settings (a TOML file's, a loaded model's), every key checked."""
    built: dict[str, Any] = {}
    for name, values in raw.items():
        if name not in SECTIONS:
            close = difflib.get_close_matches(name, list(SECTIONS), n=1)
            hint = f"did you mean [{close[0]}]?" if close else f"known: {', '.join(SECTIONS)}"
            msg = f"{source}: unknown section [{name}]; hint: {hint}"
            raise ConfigError(msg)
        if not isinstance(values, dict):
            msg = f"{source}: `{name}` must be a table of keys; hint: [{name}] then key = value lines"
            raise ConfigError(msg)
        built[name] = build(SECTIONS[name], values, where=source, section=name)
    return PipelineConfig(**built)


def to_dict(cfg: PipelineConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def model_settings(cfg: PipelineConfig) -> dict[str, Any]:
    """The settings a model is made from (part of its version): all but `NOT_IN_MODEL_VERSION`: `[score]`
    (how predictions are computed: batch size, workers, precision), `[report]`, which only reads them,
    `[export]`, which says where they are loaded, and `[retention]`, which says when they are removed;
    changing any of those never retrains."""
    return {k: v for k, v in to_dict(cfg).items() if k not in NOT_IN_MODEL_VERSION}


def to_toml(cfg: PipelineConfig) -> str:
    """The configuration as a TOML file that `load_config` reads back to the same configuration."""
    lines = []
    for section, values in to_dict(cfg).items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {_toml_value(value)}" for key, value in values.items()]
        lines.append("")
    return "\n".join(lines).rstrip("\n")


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)  # a JSON string is a TOML basic string
    return "[" + ", ".join(_toml_value(x) for x in v) + "]"


def config_schema() -> dict[str, Any]:
    """The JSON Schema of a configuration file (every section and key, its type, range and meaning)."""
    return json_schema(PipelineConfig)


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
