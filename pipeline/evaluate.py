"""Evaluate: score a labelled lake partition with a model and write its metrics and confusion matrix.

Reports go to `reports/<model version>/date=D/` (metrics.json, confusion.png), published whole.
Rows whose label the model does not know are counted and reported, not silently scored as wrong.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import polars as pl
import torch

from pipeline import lake, registry, report
from pipeline.errors import InputError
from pipeline.model import batch_from_flat
from pipeline.vocab import encode

log = logging.getLogger(__name__)


def predict_labels(lm: registry.LoadedModel, texts: pl.Series, *, batch_size: int = 256) -> np.ndarray:
    """Predicted class index per text, in input order (length-sorted batches inside)."""
    ids, offsets = encode(texts, lm.vocab, max_len=lm.config.max_len)
    order = np.argsort(np.diff(offsets), kind="stable")
    out = np.empty(len(texts), dtype=np.int64)
    device = next(lm.model.parameters()).device
    with torch.inference_mode():
        for s in range(0, len(order), batch_size):
            rows = order[s : s + batch_size]
            x, lengths = batch_from_flat(ids, offsets, rows)
            out[rows] = lm.model(x.to(device), lengths).argmax(1).cpu().numpy()
    return out


def evaluate_partition(data: lake.DataDir, date: str, *, model_version: str | None = None) -> dict[str, Any]:
    folder = data.texts(date)
    m = lake.require_manifest(folder, hint=f"run `pipeline ingest ... --date {date}` first")
    lm = registry.load_model(data.models, model_version, device=registry.to_device())
    df = pl.concat([pl.read_parquet(folder / f["name"], columns=["text", "label"]) for f in m["files"]])
    df = df.filter(pl.col("label").is_not_null())
    known = df.filter(pl.col("label").is_in(lm.labels))
    if known.height == 0:
        msg = (
            f"{folder}: no labelled rows with a class the model {lm.version} knows ({lm.labels}); "
            "hint: evaluate a labelled partition ingested with the same classes"
        )
        raise InputError(msg)
    y = (
        known["label"]
        .replace_strict(lm.labels, list(range(len(lm.labels))), return_dtype=pl.Int64)
        .to_numpy()
    )
    pred = predict_labels(lm, known["text"])
    metrics = report.compute_metrics(y, pred, lm.labels)
    metrics.update(model_version=lm.version, date=date, rows_unknown_label=df.height - known.height)
    out = data.root / "reports" / lm.version / f"date={date}"
    with lake.publish_dir(out) as tmp:
        lake.write_json(tmp / "metrics.json", metrics)
        report.plot_confusion(metrics, tmp / "confusion.png", title=f"{lm.version} on {date}")
    log.info(
        "%s with model %s: accuracy %.4f, macro-F1 %.4f",
        date,
        lm.version,
        metrics["accuracy"],
        metrics["macro_f1"],
    )
    return {**metrics, "path": str(out)}
