"""The model registry: `models/<version>/` folders, published whole, and `models/latest`.

A model folder holds `model.safetensors` (weights only: nothing is ever unpickled), `config.json`
(architecture, labels, vocabulary version, training config), `vocab.json`, `metrics.json`,
`confusion.png`, `curves.png` and `card.md`. `latest` is a symlink swapped atomically, and only once
the folder it names is complete.

Loading trusts nothing in the folder: `latest` must name a plain folder beside it, the config's values
must have their types and ranges, the vocabulary must be JSON with `<pad>` and `<unk>` first, and the
tensors the config, vocabulary and labels imply must match the weights' names, shapes and dtypes, all
checked from the safetensors header before a tensor (or a model) is allocated; then every weight must be
finite (a diverged training's NaNs would score every row NaN).
"""

from __future__ import annotations

import logging
import os
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from pipeline import lake, settings
from pipeline.errors import ConfigError, DamagedFileError, InputError, ModelError
from pipeline.ingest.clean import SAME_TOKENS
from pipeline.model import ModelConfig, TextClassifier, nonfinite_tensors
from pipeline.schema import LAKE_SCHEMA_VERSION
from pipeline.vocab import PAD, UNK, Vocab, load_vocab

log = logging.getLogger(__name__)

MODEL_FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
REQUIRED = ("model.safetensors", "config.json", "vocab.json", "metrics.json")


@dataclass
class LoadedModel:
    version: str
    model: TextClassifier
    config: ModelConfig
    labels: list[str]
    vocab: Vocab
    meta: dict[str, Any]


def write_model_files(folder: Path, model: TextClassifier, meta: dict[str, Any]) -> None:
    """Weights and config into `folder` (a temporary folder that the caller publishes)."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / WEIGHTS))
    config = {"format_version": MODEL_FORMAT_VERSION, **asdict(model.cfg), **meta}
    lake.write_json(folder / "config.json", config)


def is_complete(folder: Path) -> bool:
    return folder.is_dir() and all((folder / f).is_file() for f in REQUIRED)


def set_latest(models: Path, version: str) -> None:
    """Point `models/latest` at `version`, atomically (a new symlink renamed over the old one)."""
    if not is_complete(models / lake.check_name(version, "model")):
        msg = f"{models / version}: model is incomplete; refusing to make it latest"
        raise ModelError(msg)
    tmp = models / f".latest.tmp-{uuid.uuid4().hex[:8]}"
    os.symlink(version, tmp)
    os.replace(tmp, models / "latest")


def resolve_version(models: Path, version: str | None) -> str:
    if version in (None, "latest"):
        link = models / "latest"
        if not link.is_symlink():
            msg = f"{models}: no `latest` model; hint: run `pipeline train` first or pass --model VERSION"
            raise ModelError(msg)
        version = os.readlink(link)
        try:
            lake.check_name(version, "model")
        except InputError:
            msg = f"{link}: points at {version!r}, not a model folder beside it; hint: `pipeline models`"
            raise ModelError(msg) from None
    lake.check_name(version, "model")
    if (models / version).is_symlink():
        msg = f"{models / version}: a symbolic link, not a model folder; hint: `pipeline models` lists them"
        raise ModelError(msg)
    if not is_complete(models / version):
        msg = f"{models / version}: no complete model {version!r}; hint: `pipeline models` lists them"
        raise ModelError(msg)
    return version


def load_model(models: Path, version: str | None = None, *, device: str = "cpu") -> LoadedModel:
    """A model folder, checked whole (see the module doc) before anything is allocated."""
    version = resolve_version(models, version)
    folder = models / version
    meta = _read_config(folder)
    cfg = _model_config(meta, folder)
    vocab = _read_vocab(folder / "vocab.json")
    if vocab.version != meta["vocab_version"]:
        msg = f"{folder}: vocabulary {vocab.version} does not match the model's {meta['vocab_version']}"
        raise ModelError(msg)
    labels = list(meta["labels"])
    expected = _expected_shapes(cfg, len(vocab), len(labels))
    _check_weights(folder / WEIGHTS, expected, len(vocab), len(labels))
    state = load_file(str(folder / WEIGHTS))
    bad = nonfinite_tensors(state)
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        msg = (
            f"{folder / WEIGHTS}: `{bad[0]}`{more} holds NaN or infinite weights, so every score would be "
            f"NaN; model {version} will not be used; hint: retrain it with a lower `train.lr`, and "
            "`pipeline models promote VERSION` a sound model if it is `latest`"
        )
        raise ModelError(msg)
    model = TextClassifier(cfg, len(vocab), len(labels))
    model.load_state_dict(state)
    model.to(device).eval()
    return LoadedModel(version=version, model=model, config=cfg, labels=labels, vocab=vocab, meta=meta)


def _read_config(folder: Path) -> dict[str, Any]:
    path = folder / "config.json"
    try:
        meta = lake.read_json(path)
    except (DamagedFileError, UnicodeDecodeError) as e:
        msg = f"{path}: not a model config ({e}); hint: retrain, or restore the model folder"
        raise ModelError(msg) from None
    if not isinstance(meta, dict):
        msg = f"{path}: not a model config (a JSON object); hint: retrain, or restore the model folder"
        raise ModelError(msg)
    if meta.get("format_version") != MODEL_FORMAT_VERSION:
        msg = f"{folder}: model format {meta.get('format_version')}, this code reads {MODEL_FORMAT_VERSION}"
        raise ModelError(msg)
    labels = meta.get("labels")
    if (
        not isinstance(labels, list)
        or not labels
        or not all(isinstance(x, str) for x in labels)
        or len(set(labels)) != len(labels)
    ):
        msg = f"{path}: `labels` must be a non-empty list of distinct names, got {labels!r}"
        raise ModelError(msg)
    if not isinstance(meta.get("vocab_version"), str):
        msg = f"{path}: `vocab_version` must be a string, got {meta.get('vocab_version')!r}"
        raise ModelError(msg)
    return meta


def _model_config(meta: dict[str, Any], folder: Path) -> ModelConfig:
    """The architecture in config.json, every setting present and checked by ModelConfig's declaration."""
    path = folder / "config.json"
    missing = [k for k in settings.fields(ModelConfig) if k not in meta]
    if missing:
        msg = f"{path}: `{missing[0]}` is missing; hint: retrain the model"
        raise ModelError(msg)
    try:
        values = {k: meta[k] for k in settings.fields(ModelConfig)}
        return settings.build(ModelConfig, values, where=str(path))
    except ConfigError as e:
        raise ModelError(f"{e}; retrain the model, or restore its folder") from None


def _read_vocab(path: Path) -> Vocab:
    """The model's vocabulary: JSON only (never unpickled), `<pad>` and `<unk>` first, distinct tokens."""
    try:
        vocab = load_vocab(path)
    except ModelError:
        raise
    except (UnicodeDecodeError, KeyError, TypeError, AttributeError, DamagedFileError) as e:
        msg = f"{path}: not a vocabulary JSON file ({e!r}); it will not be unpickled; hint: retrain"
        raise ModelError(msg) from None
    tokens = vocab.tokens
    if (
        not isinstance(tokens, list)
        or tokens[:2] != [PAD, UNK]
        or not all(isinstance(t, str) for t in tokens)
        or len(set(tokens)) != len(tokens)
    ):
        msg = f"{path}: `tokens` must be distinct strings starting with {PAD}, {UNK}; hint: retrain"
        raise ModelError(msg)
    return vocab


def _expected_shapes(cfg: ModelConfig, vocab_size: int, num_labels: int) -> dict[str, tuple[int, ...]]:
    """The weights the config implies (name -> shape), from a model on the meta device: no memory."""
    with torch.device("meta"):
        model = TextClassifier(cfg, vocab_size, num_labels)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


_FLOATS = {"F16", "BF16", "F32", "F64"}


def _check_weights(
    path: Path, expected: dict[str, tuple[int, ...]], vocab_size: int, num_labels: int
) -> None:
    """The safetensors header against the expected tensors; nothing but the header is read."""
    try:
        with safe_open(str(path), framework="pt") as f:
            found = {k: f.get_slice(k) for k in f.keys()}
            shapes = {k: tuple(v.get_shape()) for k, v in found.items()}
            dtypes = {k: v.get_dtype() for k, v in found.items()}
    except (SafetensorError, OSError, ValueError) as e:
        msg = f"{path}: not a safetensors weights file ({e}); it will not be unpickled"
        raise ModelError(msg) from None
    problems = []
    for name in sorted(set(expected) | set(shapes)):
        if name not in shapes:
            problems.append(f"`{name}` is missing")
        elif name not in expected:
            problems.append(f"`{name}` is not part of this architecture")
        elif shapes[name] != expected[name]:
            problems.append(f"`{name}` is {list(shapes[name])}, the config implies {list(expected[name])}")
        elif dtypes[name] not in _FLOATS:
            problems.append(f"`{name}` holds {dtypes[name]}, not floating point")
    if problems:
        more = f" (and {len(problems) - 4} more)" if len(problems) > 4 else ""
        msg = (
            f"{path}: the weights do not match config.json ({vocab_size} tokens in vocab.json, "
            f"{num_labels} labels): {'; '.join(problems[:4])}{more}; "
            "hint: config.json, vocab.json and model.safetensors must come from the same training run"
        )
        raise ModelError(msg)


def check_compatible(lm: LoadedModel, lake_manifest: dict[str, Any], *, where: Path) -> None:
    """Refuse to score lake data the model was not built for: another lake schema or text cleaning."""
    expected = lm.meta.get("lake_schema_version", LAKE_SCHEMA_VERSION)
    if lake_manifest.get("schema_version") != expected:
        msg = (
            f"{where}: lake schema version {lake_manifest.get('schema_version')}, but model {lm.version} "
            f"was trained on version {expected}; hint: re-ingest the partition, or train on the new schema"
        )
        raise ModelError(msg)
    cleaning = lm.meta.get("cleaning_version")
    got = (lake_manifest.get("cleaning") or {}).get("version")
    if cleaning is not None and got != cleaning and {got, cleaning} not in SAME_TOKENS:
        msg = (
            f"{where}: texts cleaned with cleaning version {got}, but model {lm.version} was trained on "
            f"version {cleaning}; hint: re-ingest the partition so training and scoring see the same text"
        )
        raise ModelError(msg)


def list_models(models: Path) -> list[dict[str, Any]]:
    """Complete models, oldest first, with their headline metrics."""
    if not models.is_dir():
        return []
    latest = os.readlink(models / "latest") if (models / "latest").is_symlink() else None
    rows = []
    for p in models.iterdir():
        if p.is_symlink() or p.name.startswith(".") or not is_complete(p):
            continue
        try:
            meta = lake.read_json(p / "config.json")
            m = lake.read_json(p / "metrics.json")
            row = {
                "version": p.name,
                "created": str(meta.get("created", "")),
                "rnn_type": str(meta["rnn_type"]),
                "accuracy": float(m["validation"]["accuracy"]),
                "macro_f1": float(m["validation"]["macro_f1"]),
                "latest": p.name == latest,
            }
        except (DamagedFileError, UnicodeDecodeError, KeyError, TypeError, ValueError, AttributeError) as e:
            log.warning("%s: skipped, its config.json or metrics.json is damaged (%r)", p, e)
            continue
        rows.append(row)
    return sorted(rows, key=lambda r: (r["created"], r["version"]))


def to_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"
