"""Evaluate: score a labelled lake partition with a model and write its metrics and confusion matrix.

Reports go to `reports/<model version>/date=D/` (metrics.json, confusion.png), published whole.
Rows whose label the model does not know are counted and reported, not silently scored as wrong.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import polars as pl

from pipeline import lake, registry, report
from pipeline.errors import InputError
from pipeline.infer import build_scorer
from pipeline.vocab import encode

log = logging.getLogger(__name__)


def predict_labels(lm: registry.LoadedModel, texts: pl.Series, *, batch_size: int = 256) -> np.ndarray:
    """Predicted class index per text, in input order, through the scoring engine's own kernel."""
    ids, offsets = encode(texts, lm.vocab, max_len=lm.config.max_len)
    device = str(next(lm.model.parameters()).device)
    scorer = build_scorer(lm.model, batch_size=batch_size, device=device)
    return scorer.predict_proba(ids, offsets).argmax(1)


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
    out = data.evaluation(lm.version, date)
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
