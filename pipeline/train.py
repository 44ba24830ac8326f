"""Train: labelled lake rows -> vocabulary -> classifier -> a complete, versioned model folder.

The model version is a hash of everything that determines the weights (the lake files, the
vocabulary, the config and the seed), so training again on the same inputs finds the model already
there and does no work. Same data, config and seed give the same weights on the CPU.

Three steps: `prepare` (rows, vocabulary, pretraining, version), `fit_model` (the heads; the loop itself
is `pipeline/trainloop.py`, the data helpers `pipeline/dataset.py`) and `publish_model` (the folder).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from pipeline import lake, promotion, registry, report
from pipeline.config import PipelineConfig, model_settings, resolve_for_data
from pipeline.dataset import eval_batches, lake_files, read_lake, stratified_split
from pipeline.errors import InputError, TrainingError
from pipeline.ingest import CLEANING
from pipeline.model import TextClassifier, document_frequencies
from pipeline.pretrain import pretrain_on_lake
from pipeline.schema import LAKE_SCHEMA_VERSION
from pipeline.tfidf import C_GRID, TfidfFit, fit_tfidf_head
from pipeline.trainloop import fit, head_logits
from pipeline.vocab import Vocab, build_vocab, encode, save_vocab

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prepared:
    """What a model is made from: the labelled rows, the settings resolved for their size, the vocabulary,
    the pretrained embedding (if any) and the version that names them all."""

    files: list[tuple[str, Path, str]]
    labelled: pl.DataFrame
    cfg: PipelineConfig
    vocab: Vocab
    labels: list[str]
    embedding: torch.Tensor | None
    pretrain: dict[str, Any] | None
    pretrain_seconds: float
    version: str


def train(
    data: lake.DataDir,
    cfg: PipelineConfig,
    *,
    start: str | None = None,
    end: str | None = None,
    promote: promotion.Promote = "if-better",
) -> dict[str, Any]:
    """Train on every labelled lake row in [start, end]; publish the model; move `latest` to it as
    `promote` says (`pipeline/promotion.py`)."""
    p = prepare(data, cfg, start=start, end=end)
    folder = data.model(p.version)
    if registry.is_complete(folder):
        log.info("model %s is up to date (same lake, vocabulary and config); nothing to train", p.version)
        decision = promotion.after_training(data, p.version, promote=promote)
        return {"version": p.version, "skipped": True, "promotion": decision, **_summary(folder)}
    save_vocab(p.vocab, data.vocab)
    with lake.locked(data, f"train-{p.version}"):  # `pipeline gc` leaves its checkpoint and folder alone
        fitted = fit_model(data, p)
        publish_model(folder, p, fitted)
    decision = promotion.after_training(data, p.version, promote=promote)
    fitted.checkpoint.unlink(missing_ok=True)
    m = fitted.metrics
    log.info("model %s: validation accuracy %.4f, macro-F1 %.4f", p.version, m["accuracy"], m["macro_f1"])
    return {"version": p.version, "skipped": False, "promotion": decision, **_summary(folder)}


def prepare(data: lake.DataDir, cfg: PipelineConfig, *, start: str | None, end: str | None) -> Prepared:
    """The labelled rows in [start, end], the vocabulary of every text there, pretraining, the version."""
    files = lake_files(data, start, end)
    df = read_lake(files)
    labelled = df.filter(pl.col("label").is_not_null())
    if labelled.height < 2 or labelled["label"].n_unique() < 2:
        msg = (
            f"{data.root / 'lake'}: {labelled.height} labelled rows in {len(files)} partitions between "
            f"{start or 'the first date'} and {end or 'the last'}; training needs at least two classes; "
            "hint: ingest labelled files (a `label` column) first"
        )
        raise InputError(msg)
    cfg = resolve_for_data(cfg, rows=labelled.height)
    vocab = build_vocab(df.lazy().select("text"), cfg.vocab)
    labels = sorted(labelled["label"].unique().to_list())
    t0 = time.perf_counter()
    corpus = lake_files(data, None, end)  # pretraining: every text up to the end, before `start` too
    embedding, pre = pretrain_on_lake(data, corpus, vocab, cfg) if cfg.pretrain.epochs else (None, None)
    pretrain_seconds = time.perf_counter() - t0
    version = lake.sha256_json(
        {
            "lake": [sha for _, _, sha in files],
            "vocab": vocab.version,
            "config": model_settings(cfg),
            "labels": labels,
            "pretrain": pre and pre["sha256"],  # what was learnt, by its content
        }
    )[:12]
    return Prepared(files, labelled, cfg, vocab, labels, embedding, pre, pretrain_seconds, version)


@dataclass(frozen=True)
class Fitted:
    """A trained model, the record of its fit, and its predictions on the validation rows."""

    model: TextClassifier
    history: list[dict[str, float]]
    best_epoch: int
    tfidf: TfidfFit | None
    train_idx: np.ndarray
    val_idx: np.ndarray
    y: np.ndarray
    preds: np.ndarray  # (N,) predicted class of each labelled row (filled for the validation rows)
    scores: np.ndarray  # (N,) its probability, as scoring writes `score` (drift.py)
    metrics: dict[str, Any]
    seconds: float
    device: str
    checkpoint: Path


def fit_model(data: lake.DataDir, p: Prepared) -> Fitted:
    """Split, fit the TF-IDF head (if any) then the sequence head (`pipeline/trainloop.py`), keep the best
    epoch's weights and measure them on the validation rows."""
    cfg = p.cfg
    device = registry.to_device()
    torch.manual_seed(cfg.train.seed)
    y = (
        p.labelled["label"]
        .replace_strict(p.labels, list(range(len(p.labels))), return_dtype=pl.Int64)
        .to_numpy()
    )
    enc = encode(p.labelled["text"], p.vocab, max_len=cfg.model.max_len)
    train_idx, val_idx = stratified_split(y, cfg.train.val_fraction, cfg.train.seed)
    if len(val_idx) == 0:
        val_idx = train_idx
    model = TextClassifier(cfg.model, len(p.vocab), len(p.labels))
    if p.embedding is not None:
        with torch.no_grad():
            model.embedding.weight.copy_(p.embedding)
    tfidf = None
    if cfg.model.wide_buckets:  # fitted first, on its own; the sequence head's epochs never touch it
        doc_freq = document_frequencies(*enc, train_idx, cfg.model.wide_buckets)
        model.wide.set_idf(doc_freq, len(train_idx))
        grid = (cfg.train.wide_c,) if cfg.train.wide_c else C_GRID
        tfidf = fit_tfidf_head(model.wide, enc, y, train_idx, val_idx, grid)
        log.info(
            "TF-IDF head: C=%g, validation accuracy %.4f, %.1f s", tfidf.c, tfidf.val_accuracy, tfidf.seconds
        )
    model.to(device)
    log.info(
        "training %s on %d rows (%d validation), %d classes, vocabulary %d, device %s",
        p.version,
        len(train_idx),
        len(val_idx),
        len(p.labels),
        len(p.vocab),
        device,
    )
    t0 = time.perf_counter()
    data.models.mkdir(parents=True, exist_ok=True)
    checkpoint = data.models / f".ckpt-{p.version}.pt"
    try:
        best_state, history, best_epoch = fit(
            model,
            enc,
            y,
            train_idx,
            val_idx,
            cfg.train,
            device=device,
            checkpoint=checkpoint,
            freeze_embedding=cfg.pretrain.freeze_epochs if p.embedding is not None else 0,
        )
    except TrainingError:
        checkpoint.unlink(missing_ok=True)  # the same settings would only diverge again from it
        raise
    seconds = time.perf_counter() - t0
    model.load_state_dict(best_state)
    val_batches = eval_batches(enc, val_idx)
    with torch.no_grad():
        probs = torch.softmax(model.combine(head_logits(model, enc, val_batches, device)).double(), 1).numpy()
    rows = np.concatenate(val_batches)
    preds, scores = np.zeros(len(y), dtype=np.int64), np.zeros(len(y))
    preds[rows], scores[rows] = probs.argmax(1), probs.max(1)
    metrics = report.compute_metrics(y[val_idx], preds[val_idx], p.labels)
    return Fitted(
        model,
        history,
        best_epoch,
        tfidf,
        train_idx,
        val_idx,
        y,
        preds,
        scores,
        metrics,
        seconds,
        device,
        checkpoint,
    )


def publish_model(folder: Path, p: Prepared, f: Fitted) -> None:
    """The model folder, whole or not at all: weights and config, the vocabulary, the pretrained vectors,
    metrics, validation predictions, the confusion matrix, training curves and the model card."""
    labels, val_idx = p.labels, f.val_idx
    with lake.publish_dir(folder) as tmp:
        meta = {
            "version": p.version,
            "labels": labels,
            "vocab_version": p.vocab.version,
            "train": asdict(p.cfg.train),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "dates": sorted({d for d, _, _ in p.files}),
            "lake_schema_version": LAKE_SCHEMA_VERSION,
            "cleaning_version": CLEANING["version"],
            "pretrain_sha256": p.pretrain and p.pretrain["sha256"],
        }
        registry.write_model_files(tmp, f.model, meta)
        if (
            p.pretrain is not None
        ):  # the pretrained word vectors it started from, by the content its version holds
            shutil.copyfile(p.pretrain["path"], tmp / "embedding.safetensors")
        save_vocab(p.vocab, tmp).rename(tmp / "vocab.json")
        lake.write_json(
            tmp / "metrics.json",
            {
                "validation": f.metrics,
                "history": f.history,
                "best_epoch": f.best_epoch,
                "heads": _heads_record(f.history, f.best_epoch, f.tfidf),
                "pretrain": p.pretrain and {k: v for k, v in p.pretrain.items() if k != "path"},
                "seconds": {
                    "pretrain": p.pretrain_seconds,
                    "tfidf": f.tfidf.seconds if f.tfidf else 0.0,
                    "sequence": f.seconds,
                },
            },
        )
        pl.DataFrame(
            {
                "id": p.labelled["id"].gather(val_idx),
                "label": [labels[i] for i in f.y[val_idx]],
                "predicted": [labels[i] for i in f.preds[val_idx]],
                "score": f.scores[val_idx],
                "text": p.labelled["text"].gather(val_idx),  # the promotion gate scores them with `latest`
            }
        ).write_parquet(tmp / "validation_predictions.parquet")
        report.plot_confusion(f.metrics, tmp / "confusion.png")
        report.plot_curves(f.history, tmp / "curves.png")
        report.write_card(
            tmp / "card.md",
            {
                "version": p.version,
                "dates": meta["dates"],
                "rows_train": len(f.train_idx),
                "rows_val": len(val_idx),
                "vocab_version": p.vocab.version,
                "vocab_size": len(p.vocab),
                "metrics": f.metrics,
                "config_json": json.dumps(model_settings(p.cfg), indent=2),
                "best_epoch": f.best_epoch,
                "epochs_run": len(f.history),
                "train_seconds": f.seconds,
                "device": f.device,
            },
        )


def _heads_record(history: list[dict[str, float]], best_epoch: int, tfidf: TfidfFit | None) -> dict[str, Any]:
    """Each head's validation accuracy and weight at the kept epoch, and how the TF-IDF head was fitted."""
    best = next(h for h in history if h["epoch"] == best_epoch)
    out: dict[str, Any] = {"val_acc_sequence": best["val_acc_sequence"]}
    if tfidf is not None:
        out |= {k: best[k] for k in ("val_acc_tfidf", "weight_sequence", "weight_tfidf")}
        out["tfidf"] = asdict(tfidf) | {"tried": {str(c): a for c, a in tfidf.tried.items()}}
    return out


def _summary(folder: Path) -> dict[str, Any]:
    metrics = lake.read_json(folder / "metrics.json")
    m = metrics["validation"]
    return {
        "path": str(folder),
        "val_accuracy": m["accuracy"],
        "val_macro_f1": m["macro_f1"],
        "val_rows": m["rows"],
        "heads": metrics.get("heads"),
        "seconds": metrics.get("seconds"),
    }
