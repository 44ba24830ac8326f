"""Score: a lake partition -> Arrow IPC prediction shards (schema version 1) + manifest.

The partition is read in windows of rows; each window is tokenised and encoded vectorised, sorted
by length so batches carry little padding, run through the model under `torch.inference_mode`,
and put back in input order before it is written. Memory is bounded by the window, not the partition.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from pipeline import lake, registry
from pipeline.config import ScoreConfig
from pipeline.model import TextClassifier, batch_from_flat
from pipeline.schema import PREDICTIONS_SCHEMA_VERSION, predictions_schema
from pipeline.vocab import encode

log = logging.getLogger(__name__)

WINDOW_ROWS = 65_536


def predict_proba(
    model: TextClassifier, ids: np.ndarray, offsets: np.ndarray, *, batch_size: int, device: str = "cpu"
) -> np.ndarray:
    """Probabilities (N, C) float64 for a flat encoding, in input order.

    Rows are sorted by length and cut into batches, so each batch has almost no padding;
    the results are scattered back to their input positions.
    """
    n = len(offsets) - 1
    order = np.argsort(np.diff(offsets), kind="stable")
    out = np.empty((n, model.head.out_features), dtype=np.float64)
    with torch.inference_mode():
        for s in range(0, n, batch_size):
            rows = order[s : s + batch_size]
            x, lengths = batch_from_flat(ids, offsets, rows)
            logits = model(x.to(device), lengths)
            out[rows] = torch.softmax(logits.double(), dim=1).cpu().numpy()
    return out


def score_partition(
    data: lake.DataDir, date: str, cfg: ScoreConfig, *, model_version: str | None = None
) -> dict[str, Any]:
    """Score the lake partition of `date` with a model (default `latest`); skip if up to date."""
    texts_dir = data.texts(date)
    lake_manifest = lake.require_manifest(texts_dir, hint=f"run `pipeline ingest ... --date {date}` first")
    version = registry.resolve_version(data.models, model_version)
    inputs = {"lake": [f["sha256"] for f in lake_manifest["files"]], "model": version}
    out_dir = data.predictions(date)
    existing = lake.read_manifest(out_dir)
    if existing is not None and existing.get("inputs") == inputs:
        log.info("predictions for %s are up to date (model %s); nothing to score", date, version)
        return {**existing, "skipped": True}

    device = registry.to_device()
    lm = registry.load_model(data.models, version, device=device)
    schema = predictions_schema(
        lm.labels, model_version=version, vocab_version=lm.vocab.version, partition=date
    )
    scored_at = dt.datetime.now(dt.UTC).replace(microsecond=0)
    scored_us = int(scored_at.timestamp()) * 1_000_000
    labels = pa.array(lm.labels, pa.string())
    shards: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    rows_total = 0
    with lake.publish_dir(out_dir) as tmp:
        writer: pa.ipc.RecordBatchFileWriter | None = None
        shard_rows = 0

        def close_shard() -> None:
            nonlocal writer
            if writer is not None:
                writer.close()
                p = tmp / shards[-1]["name"]
                shards[-1].update(rows=shard_rows, bytes=p.stat().st_size, sha256=lake.sha256_file(p))
                writer = None

        for f in lake_manifest["files"]:
            for batch in pq.ParquetFile(texts_dir / f["name"]).iter_batches(
                batch_size=WINDOW_ROWS, columns=["id", "text"]
            ):
                text = batch.column("text")
                ids, offsets = encode(_series(text), lm.vocab, max_len=lm.config.max_len)
                probs = predict_proba(lm.model, ids, offsets, batch_size=cfg.batch_size, device=device)
                label_id = probs.argmax(1).astype(np.int32)
                n = len(label_id)
                rb = pa.RecordBatch.from_arrays(
                    [
                        batch.column("id"),
                        text,
                        labels.take(pa.array(label_id)),
                        pa.array(label_id, pa.int32()),
                        pa.array(probs[np.arange(n), label_id], pa.float64()),
                        pa.FixedSizeListArray.from_arrays(
                            pa.array(probs.ravel(), pa.float64()), len(lm.labels)
                        ),
                        pa.array([version] * n, pa.string()),
                        pa.array(np.full(n, scored_us, dtype=np.int64), pa.timestamp("us", tz="UTC")),
                    ],
                    schema=schema,
                )
                pos = 0
                while pos < n:
                    if writer is None:
                        shards.append({"name": f"part-{len(shards):05d}.arrow"})
                        writer = pa.ipc.new_file(tmp / shards[-1]["name"], schema)
                        shard_rows = 0
                    take = min(cfg.shard_rows - shard_rows, n - pos)
                    writer.write_batch(rb.slice(pos, take))
                    shard_rows += take
                    pos += take
                    if shard_rows >= cfg.shard_rows:
                        close_shard()
                rows_total += n
                log.info(
                    "%s: %d rows scored (%.0f rows/s)",
                    date,
                    rows_total,
                    rows_total / (time.perf_counter() - t0),
                )
        if writer is None:  # an empty partition still gets one (empty) file with the schema
            shards.append({"name": "part-00000.arrow"})
            writer = pa.ipc.new_file(tmp / shards[-1]["name"], schema)
            shard_rows = 0
        close_shard()
        manifest = {
            "schema_version": PREDICTIONS_SCHEMA_VERSION,
            "date": date,
            "rows": rows_total,
            "model_version": version,
            "vocab_version": lm.vocab.version,
            "labels": lm.labels,
            "scored_at": scored_at.isoformat().replace("+00:00", "Z"),
            "inputs": inputs,
            "shards": shards,
        }
        assert sum(s["rows"] for s in shards) == rows_total == lake_manifest["rows_kept"]
        lake.write_json(tmp / lake.MANIFEST, manifest)
    log.info("%s: %d rows scored with model %s into %s", date, rows_total, version, out_dir)
    return {**manifest, "skipped": False}


def _series(arr: pa.Array) -> pl.Series:
    s = pl.from_arrow(arr)
    assert isinstance(s, pl.Series)
    return s


def prediction_files(folder: Path) -> list[Path]:
    return lake.list_files(folder, ".arrow")
