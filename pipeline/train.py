"""Train: labelled lake rows -> vocabulary -> classifier -> a complete, versioned model folder.

The model version is a hash of everything that determines the weights (the lake files, the
vocabulary, the config and the seed), so training again on the same inputs finds the model already
there and does no work. Same data, config and seed give the same weights on the CPU.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from torch import nn
from tqdm import tqdm

from pipeline import lake, promotion, registry, report
from pipeline.config import PipelineConfig, TrainConfig, model_settings, resolve_for_data
from pipeline.errors import InputError
from pipeline.ingest import CLEANING
from pipeline.model import TextClassifier, batch_from_flat, document_frequencies
from pipeline.pretrain import pretrain_on_lake
from pipeline.schema import LAKE_SCHEMA_VERSION
from pipeline.tfidf import C_GRID, TfidfFit, fit_tfidf_head
from pipeline.vocab import build_vocab, encode, save_vocab

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- data


def lake_files(data: lake.DataDir, start: str | None, end: str | None) -> list[tuple[str, Path, str]]:
    """(date, parquet file, sha256) of every complete lake partition in the range, in date order."""
    out = []
    for date in data.text_dates():
        if (start and date < start) or (end and date > end):
            continue
        m = lake.read_manifest(data.texts(date))
        assert m is not None
        out.extend((date, data.texts(date) / f["name"], f["sha256"]) for f in m["files"])
    return out


def read_lake(files: list[tuple[str, Path, str]]) -> pl.DataFrame:
    """All rows of the given files in a canonical order (date, source, line)."""
    if not files:
        return pl.DataFrame(schema={"id": pl.String, "text": pl.String, "label": pl.String})
    frames = [pl.read_parquet(p).with_columns(pl.lit(d).alias("date")) for d, p, _ in files]
    return pl.concat(frames).sort(["date", "source", "line"]).select("id", "text", "label")


def stratified_split(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val): each class keeps about `val_fraction` of its rows for validation."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_val = round(len(idx) * val_fraction) if len(idx) > 1 else 0
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def length_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator | None) -> list[np.ndarray]:
    """Batches of similar length (little padding). With `rng`, shuffled within pools and in order.

    Rows are shuffled, cut into pools of 50 batches, each pool sorted by length and cut into batches;
    the batch order is then shuffled, so each epoch sees different neighbours and order.
    """
    idx = rng.permutation(len(lengths)) if rng is not None else np.arange(len(lengths))
    pool = batch_size * 50
    batches = []
    for s in range(0, len(idx), pool):
        chunk = idx[s : s + pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    if rng is not None:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def eval_batches(enc: tuple[np.ndarray, np.ndarray], rows: np.ndarray) -> list[np.ndarray]:
    """`rows` in fixed batches of 256 of similar length, for scoring held-out rows (no shuffling)."""
    return [rows[b] for b in length_batches(np.diff(enc[1])[rows], 256, None)]


# ---------------------------------------------------------------------------- loop


def train_epoch(
    model: TextClassifier,
    enc: tuple[np.ndarray, np.ndarray],
    y: np.ndarray,
    batches: list[np.ndarray],
    *,
    optimizer: torch.optim.Optimizer,
    clip_norm: float,
    device: str,
    desc: str,
) -> tuple[float, float]:
    """One training pass of the sequence head (the TF-IDF head is fitted on its own, `pipeline/tfidf.py`).
    Returns its mean loss and accuracy."""
    ids, offsets = enc
    model.train()
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    total_loss, correct, seen, tokens = 0.0, 0, 0, 0
    t0 = time.perf_counter()
    bar = tqdm(batches, desc=desc, leave=False, disable=not sys.stderr.isatty(), unit="batch")
    for rows in bar:
        x, lengths = batch_from_flat(ids, offsets, rows)
        target = torch.from_numpy(y[rows]).to(device)
        logits = model.sequence_logits(x.to(device), lengths)
        loss = loss_fn(logits, target)
        optimizer.zero_grad()
        (loss / len(rows)).backward()
        nn.utils.clip_grad_norm_(model.sequence_parameters(), clip_norm)
        optimizer.step()
        total_loss += loss.item()
        correct += int((logits.argmax(1) == target).sum())
        seen += len(rows)
        tokens += int(lengths.sum())
        bar.set_postfix(
            loss=f"{total_loss / seen:.3f}",
            acc=f"{correct / seen:.3f}",
            tok_s=f"{tokens / (time.perf_counter() - t0):.0f}",
        )
    return total_loss / max(seen, 1), correct / max(seen, 1)


def head_logits(
    model: TextClassifier, enc: tuple[np.ndarray, np.ndarray], batches: list[np.ndarray], device: str
) -> list[torch.Tensor]:
    """Each head's logits (N, C) on the rows of `batches`, in their concatenated order, on the CPU."""
    model.eval()
    with torch.no_grad():
        out = [model.heads(*_to(batch_from_flat(*enc, rows), device)) for rows in batches]
    return [torch.cat([b[h] for b in out]).cpu() for h in range(len(out[0]))]


def evaluate_heads(
    model: TextClassifier, logits: list[torch.Tensor], target: torch.Tensor
) -> tuple[float, float, dict[str, float]]:
    """Held-out heads' logits -> (loss, accuracy) of the combined prediction, after weighing two heads
    on these rows, and each head's accuracy (with two heads, also its weight)."""
    heads = {
        f"val_acc_{name}": float((x.argmax(1) == target).double().mean())
        for name, x in zip(("sequence", "tfidf"), logits, strict=False)
    }
    if len(logits) > 1:
        model.weigh_heads(logits, target)
        heads["weight_sequence"], heads["weight_tfidf"] = model.head_weights.tolist()
    log.info("heads: %s", ", ".join(f"{k} {v:.4f}" for k, v in heads.items()))
    with torch.no_grad():
        combined = model.combine(logits)
    loss = float(nn.functional.cross_entropy(combined, target))
    return loss, float((combined.argmax(1) == target).double().mean()), heads


def _to(batch: tuple[torch.Tensor, torch.Tensor], device: str) -> tuple[torch.Tensor, torch.Tensor]:
    return batch[0].to(device), batch[1]


def fit(
    model: TextClassifier,
    enc: tuple[np.ndarray, np.ndarray],
    y: np.ndarray,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    cfg: TrainConfig,
    *,
    device: str,
    checkpoint: Path | None = None,
    freeze_embedding: int = 0,
) -> tuple[dict[str, torch.Tensor], list[dict[str, float]], int]:
    """The sequence head: Adam + cross-entropy + clipping + LR schedule, stopped early on its own validation
    accuracy; returns the best epoch's weights. A TF-IDF head, already fitted, is left as it is; after every
    epoch the two are weighed on validation (`evaluate_heads`) for the record.

    The embedding stays frozen for the first `freeze_embedding` epochs (a pretrained one is kept while the
    layers above it settle). With `checkpoint`, state is saved after every epoch and a run that finds one
    resumes from it.
    """
    lengths = np.diff(enc[1])
    optimizer = torch.optim.Adam(model.sequence_parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = (
        torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.5, patience=1)
        if cfg.lr_schedule == "plateau"
        else None
    )
    rng = np.random.default_rng(cfg.seed)
    history: list[dict[str, float]] = []
    best_acc, best_epoch, best_state, start = -1.0, 0, None, 1
    if checkpoint is not None and checkpoint.is_file():
        ck = torch.load(checkpoint, weights_only=True)
        model.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(ck["scheduler"])
        history = json.loads(ck["history"])
        best_acc, best_epoch, best_state = ck["best_acc"], ck["best_epoch"], ck["best_state"]
        rng.bit_generator.state = json.loads(ck["rng"])
        torch.set_rng_state(ck["torch_rng"])
        start = len(history) + 1
        log.info("resuming from %s at epoch %d", checkpoint, start)
    val_batches = eval_batches(enc, val_idx)
    val_target = torch.from_numpy(y[np.concatenate(val_batches)])
    for epoch in range(start, cfg.epochs + 1):
        if best_epoch and epoch - best_epoch > cfg.patience:
            log.info("early stop: no improvement of the sequence head for %d epochs", cfg.patience)
            break
        t0 = time.perf_counter()
        model.embedding.weight.requires_grad_(epoch > freeze_embedding)
        batches = [train_idx[b] for b in length_batches(lengths[train_idx], cfg.batch_size, rng)]
        tr_loss, tr_acc = train_epoch(
            model,
            enc,
            y,
            batches,
            optimizer=optimizer,
            clip_norm=cfg.clip_norm,
            device=device,
            desc=f"epoch {epoch}",
        )
        va_loss, va_acc, heads = evaluate_heads(
            model, head_logits(model, enc, val_batches, device), val_target
        )
        seq_acc = heads["val_acc_sequence"]
        secs = time.perf_counter() - t0
        tok = int(lengths[train_idx].sum())
        history.append(
            {
                "epoch": epoch,
                "train_loss": tr_loss,
                "train_acc": tr_acc,
                "val_loss": va_loss,
                "val_acc": va_acc,
                "lr": optimizer.param_groups[0]["lr"],
                "seconds": secs,
                **heads,
            }
        )
        log.info(
            "epoch %d: loss %.4f acc %.4f | val loss %.4f acc %.4f (sequence head %.4f) | %.0f tokens/s",
            epoch,
            tr_loss,
            tr_acc,
            va_loss,
            va_acc,
            seq_acc,
            tok / secs,
        )
        if seq_acc > best_acc:
            best_acc, best_epoch = seq_acc, epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if scheduler is not None:
            scheduler.step(seq_acc)
        if checkpoint is not None:
            _save_checkpoint(
                checkpoint, model, optimizer, scheduler, history, best_acc, best_epoch, best_state, rng
            )
    assert best_state is not None
    return best_state, history, best_epoch


def _save_checkpoint(
    path, model, optimizer, scheduler, history, best_acc, best_epoch, best_state, rng
) -> None:
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else {},
        "history": json.dumps(history),
        "best_acc": best_acc,
        "best_epoch": best_epoch,
        "best_state": best_state,
        "rng": json.dumps(rng.bit_generator.state),
        "torch_rng": torch.get_rng_state(),
    }
    with lake.atomic_path(path) as tmp:
        torch.save(state, tmp)


# ---------------------------------------------------------------------------- the stage


def build_lake_vocab(
    data: lake.DataDir, cfg: PipelineConfig, *, start: str | None = None, end: str | None = None
) -> dict[str, Any]:
    """The vocabulary stage: build from every lake text in [start, end] and save it under `vocab/`."""
    files = lake_files(data, start, end)
    df = read_lake(files)
    cfg = resolve_for_data(cfg, rows=df.filter(pl.col("label").is_not_null()).height)
    vocab = build_vocab(df.lazy().select("text"), cfg.vocab)
    path = save_vocab(vocab, data.vocab)
    return {"version": vocab.version, "size": len(vocab), "path": str(path), "partitions": len(files)}


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
    resolved = model_settings(cfg)
    t0 = time.perf_counter()
    corpus = lake_files(data, None, end)  # pretraining: every text up to the end, before `start` too
    embedding, pre = pretrain_on_lake(data, corpus, vocab, cfg) if cfg.pretrain.epochs else (None, None)
    pretrain_seconds = time.perf_counter() - t0
    version = lake.sha256_json(
        {
            "lake": [sha for _, _, sha in files],
            "vocab": vocab.version,
            "config": resolved,
            "labels": labels,
            "pretrain": pre and pre["sha256"],  # what was learnt, by its content
        }
    )[:12]
    folder = data.model(version)
    if registry.is_complete(folder):
        log.info("model %s is up to date (same lake, vocabulary and config); nothing to train", version)
        decision = promotion.after_training(data, version, promote=promote)
        return {"version": version, "skipped": True, "promotion": decision, **_summary(folder)}
    save_vocab(vocab, data.vocab)

    device = registry.to_device()
    torch.manual_seed(cfg.train.seed)
    y = labelled["label"].replace_strict(labels, list(range(len(labels))), return_dtype=pl.Int64).to_numpy()
    enc = encode(labelled["text"], vocab, max_len=cfg.model.max_len)
    train_idx, val_idx = stratified_split(y, cfg.train.val_fraction, cfg.train.seed)
    if len(val_idx) == 0:
        val_idx = train_idx
    model = TextClassifier(cfg.model, len(vocab), len(labels))
    if embedding is not None:
        with torch.no_grad():
            model.embedding.weight.copy_(embedding)
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
        version,
        len(train_idx),
        len(val_idx),
        len(labels),
        len(vocab),
        device,
    )
    t0 = time.perf_counter()
    data.models.mkdir(parents=True, exist_ok=True)
    checkpoint = data.models / f".ckpt-{version}.pt"
    best_state, history, best_epoch = fit(
        model,
        enc,
        y,
        train_idx,
        val_idx,
        cfg.train,
        device=device,
        checkpoint=checkpoint,
        freeze_embedding=cfg.pretrain.freeze_epochs if embedding is not None else 0,
    )
    train_seconds = time.perf_counter() - t0
    model.load_state_dict(best_state)
    val_batches = eval_batches(enc, val_idx)
    with torch.no_grad():
        probs = torch.softmax(model.combine(head_logits(model, enc, val_batches, device)).double(), 1).numpy()
    rows = np.concatenate(val_batches)
    preds, scores = np.zeros(len(y), dtype=np.int64), np.zeros(len(y))
    preds[rows], scores[rows] = probs.argmax(1), probs.max(1)  # `score` as scoring writes it (drift.py)
    metrics = report.compute_metrics(y[val_idx], preds[val_idx], labels)

    with lake.publish_dir(folder) as tmp:
        meta = {
            "version": version,
            "labels": labels,
            "vocab_version": vocab.version,
            "train": asdict(cfg.train),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "dates": sorted({d for d, _, _ in files}),
            "lake_schema_version": LAKE_SCHEMA_VERSION,
            "cleaning_version": CLEANING["version"],
            "pretrain_sha256": pre and pre["sha256"],
        }
        registry.write_model_files(tmp, model, meta)
        if pre is not None:  # the pretrained word vectors it started from, by the content its version holds
            shutil.copyfile(pre["path"], tmp / "embedding.safetensors")
        save_vocab(vocab, tmp).rename(tmp / "vocab.json")
        lake.write_json(
            tmp / "metrics.json",
            {
                "validation": metrics,
                "history": history,
                "best_epoch": best_epoch,
                "heads": _heads_record(history, best_epoch, tfidf),
                "pretrain": pre and {k: v for k, v in pre.items() if k != "path"},
                "seconds": {
                    "pretrain": pretrain_seconds,
                    "tfidf": tfidf.seconds if tfidf else 0.0,
                    "sequence": train_seconds,
                },
            },
        )
        pl.DataFrame(
            {
                "id": labelled["id"].gather(val_idx),
                "label": [labels[i] for i in y[val_idx]],
                "predicted": [labels[i] for i in preds[val_idx]],
                "score": scores[val_idx],
                "text": labelled["text"].gather(val_idx),  # the promotion gate scores them with `latest`
            }
        ).write_parquet(tmp / "validation_predictions.parquet")
        report.plot_confusion(metrics, tmp / "confusion.png")
        report.plot_curves(history, tmp / "curves.png")
        report.write_card(
            tmp / "card.md",
            {
                "version": version,
                "dates": meta["dates"],
                "rows_train": len(train_idx),
                "rows_val": len(val_idx),
                "vocab_version": vocab.version,
                "vocab_size": len(vocab),
                "metrics": metrics,
                "config_json": json.dumps(resolved, indent=2),
                "best_epoch": best_epoch,
                "epochs_run": len(history),
                "train_seconds": train_seconds,
                "device": device,
            },
        )
    decision = promotion.after_training(data, version, promote=promote)
    checkpoint.unlink(missing_ok=True)
    log.info(
        "model %s: validation accuracy %.4f, macro-F1 %.4f", version, metrics["accuracy"], metrics["macro_f1"]
    )
    return {"version": version, "skipped": False, "promotion": decision, **_summary(folder)}


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
