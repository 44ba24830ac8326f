"""The demo's settings and its summary (the corpus itself is in `corpus.py`)."""

from __future__ import annotations

from typing import Any

import polars as pl

from pipeline import lake

# The foundation model: embedding -> LSTM -> last hidden state -> linear.
DEMO_OVERRIDES = [
    "model.rnn_type=lstm",
    "model.embed_dim=64",
    "model.hidden_dim=128",
    "model.bidirectional=false",
    "model.pooling=last",
    "model.dropout=0.0",
    "model.ngram_buckets=0",
    "model.wide_buckets=0",
    "train.epochs=12",
    "train.patience=4",
]


def summarize(
    data: lake.DataDir, ingested: list[dict[str, Any]], trained: dict[str, Any], night: dict[str, Any]
) -> dict[str, Any]:
    """Rows in and out, validation accuracy overall and on the word-order slice, the export's path."""
    val = pl.read_parquet(data.model(trained["version"]) / "validation_predictions.parquet")
    order = val.filter(pl.col("id").str.contains("-order-"))
    day = night["dates"][0]
    return {
        "rows_ingested": sum(m["rows_kept"] for m in ingested) + day["ingest"]["rows_kept"],
        "rows_quarantined": sum(m["rows_quarantined"] for m in ingested) + day["ingest"]["rows_quarantined"],
        "model_version": trained["version"],
        "val_accuracy": float((val["label"] == val["predicted"]).mean()),
        "val_accuracy_order_slice": float((order["label"] == order["predicted"]).mean()),
        "val_rows_order_slice": order.height,
        "rows_scored": day["score"]["rows"],
        "export": str(data.root / day["export"]["path"]),
        "report": str(data.root / day["report"]["path"]),
    }


def format_summary(s: dict[str, Any]) -> str:
    return "\n".join(
        [
            "demo summary",
            f"  rows ingested          {s['rows_ingested']}",
            f"  rows quarantined       {s['rows_quarantined']}",
            f"  model                  {s['model_version']}",
            f"  validation accuracy    {s['val_accuracy']:.3f}",
            f"  ... on the order slice {s['val_accuracy_order_slice']:.3f}"
            f" ({s['val_rows_order_slice']} rows)",
            f"  rows scored            {s['rows_scored']}",
            f"  export                 {s['export']}",
            f"  report                 {s['report']}",
        ]
    )
