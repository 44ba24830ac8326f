"""The training loop of the sequence head: epochs, early stopping, the LR schedule, each head's validation
accuracy and weight, and a checkpoint after every epoch that a cut run resumes from.

The TF-IDF head is fitted before the loop, on its own (`pipeline/tfidf.py`); the loop never changes it.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from pipeline import lake
from pipeline.config import TrainConfig
from pipeline.dataset import eval_batches, length_batches
from pipeline.errors import TrainingError
from pipeline.model import TextClassifier, batch_from_flat, nonfinite_tensors

log = logging.getLogger(__name__)


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
    for step, rows in enumerate(bar, 1):
        x, lengths = batch_from_flat(ids, offsets, rows)
        target = torch.from_numpy(y[rows]).to(device)
        logits = model.sequence_logits(x.to(device), lengths)
        loss = loss_fn(logits, target)
        value = loss.item()
        if not math.isfinite(value):  # one step more would carry it into every weight
            lr = optimizer.param_groups[0]["lr"]
            raise _diverged(f"{desc}, step {step} of {len(batches)}: the training loss is {value}", lr)
        optimizer.zero_grad()
        (loss / len(rows)).backward()
        nn.utils.clip_grad_norm_(model.sequence_parameters(), clip_norm)
        optimizer.step()
        total_loss += value
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


def _diverged(where: str, lr: float) -> TrainingError:
    msg = (
        f"training diverged at {where} (learning rate {lr:g}); nothing was published; "
        "hint: lower `train.lr` (or `train.clip_norm`) and train again"
    )
    return TrainingError(msg)


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
    epoch the two are weighed on validation (`evaluate_heads`) for the record. A loss or a weight that
    becomes NaN or infinite stops it with a `TrainingError`, so no epoch's weights are ever non-finite.

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
        bad = nonfinite_tensors(model.state_dict())
        if bad or not math.isfinite(va_loss):
            what = f"`{bad[0]}` holds NaN or infinite weights" if bad else f"the validation loss is {va_loss}"
            raise _diverged(f"epoch {epoch}: {what}", optimizer.param_groups[0]["lr"])
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
    path: Path,
    model: TextClassifier,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.ReduceLROnPlateau | None,
    history: list[dict[str, float]],
    best_acc: float,
    best_epoch: int,
    best_state: dict[str, torch.Tensor] | None,
    rng: np.random.Generator,
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
