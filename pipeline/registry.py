"""The model registry: `models/<version>/` folders, published whole, and `models/latest`.

A model folder holds `model.safetensors` (weights only: nothing is ever unpickled), `config.json`
(architecture, labels, vocabulary version, training config), `vocab.json`, `metrics.json`,
`confusion.png`, `curves.png` and `card.md`. `latest` is a symlink swapped atomically, and only once
the folder it names is complete.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from pipeline import lake
from pipeline.errors import ModelError
from pipeline.model import ModelConfig, TextClassifier
from pipeline.schema import LAKE_SCHEMA_VERSION
from pipeline.vocab import Vocab, load_vocab

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
    if not is_complete(models / version):
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
    lake.check_name(version, "model")
    if not is_complete(models / version):
        msg = f"{models / version}: no complete model {version!r}; hint: `pipeline models` lists them"
        raise ModelError(msg)
    return version


def load_model(models: Path, version: str | None = None, *, device: str = "cpu") -> LoadedModel:
    version = resolve_version(models, version)
    folder = models / version
    meta = lake.read_json(folder / "config.json")
    if meta.get("format_version") != MODEL_FORMAT_VERSION:
        msg = f"{folder}: model format {meta.get('format_version')}, this code reads {MODEL_FORMAT_VERSION}"
        raise ModelError(msg)
    cfg = ModelConfig(**{k: meta[k] for k in ModelConfig.__dataclass_fields__})
    vocab = load_vocab(folder / "vocab.json")
    if vocab.version != meta["vocab_version"]:
        msg = f"{folder}: vocabulary {vocab.version} does not match the model's {meta['vocab_version']}"
        raise ModelError(msg)
    labels = list(meta["labels"])
    model = TextClassifier(cfg, len(vocab), len(labels))
    try:
        state = load_file(str(folder / WEIGHTS))
    except (SafetensorError, OSError) as e:
        msg = f"{folder / WEIGHTS}: not a safetensors weights file ({e}); it will not be unpickled"
        raise ModelError(msg) from None
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    if expected != got:
        msg = f"{folder}: weights do not match config.json (expected {expected}, found {got})"
        raise ModelError(msg)
    model.load_state_dict(state)
    model.to(device).eval()
    return LoadedModel(version=version, model=model, config=cfg, labels=labels, vocab=vocab, meta=meta)


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
    if cleaning is not None and got != cleaning:
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
        meta = lake.read_json(p / "config.json")
        m = lake.read_json(p / "metrics.json")
        rows.append(
            {
                "version": p.name,
                "created": meta.get("created", ""),
                "rnn_type": meta["rnn_type"],
                "accuracy": m["validation"]["accuracy"],
                "macro_f1": m["validation"]["macro_f1"],
                "latest": p.name == latest,
            }
        )
    return sorted(rows, key=lambda r: (r["created"], r["version"]))


def to_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"
