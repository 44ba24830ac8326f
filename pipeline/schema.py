"""Column names, Arrow schemas and versions: the contract between stages and with downstream readers."""

from __future__ import annotations

import json

import pyarrow as pa

LAKE_SCHEMA_VERSION = 1
PREDICTIONS_SCHEMA_VERSION = 1

# The longest id, in characters: the contract's `id.maxLength` (prediction_result.schema.json) and the
# MySQL sink's VARCHAR(255). Ingest quarantines a longer id, so no later stage meets one.
MAX_ID_CHARS = 255

# lake/texts: one row per kept input row. `label` is null for unlabelled rows. Written by polars,
# whose strings are large (64-bit offsets); in Parquet they are plain UTF-8 byte arrays either way.
TEXTS_SCHEMA = pa.schema(
    [
        pa.field("id", pa.large_string(), nullable=False),
        pa.field("text", pa.large_string(), nullable=False),
        pa.field("label", pa.large_string()),
        pa.field("source", pa.large_string(), nullable=False),
        pa.field("line", pa.int64(), nullable=False),
    ]
)

# lake/quarantine: one row per rejected input row, with what it held and why.
QUARANTINE_SCHEMA = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),
        pa.field("line", pa.int64()),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("detail", pa.string()),
        pa.field("raw", pa.string()),
    ]
)

# Schema metadata keys of prediction files (go-exporter reads them).
META_SCHEMA_VERSION = b"pipeline.schema_version"
META_CLASSES = b"pipeline.classes"
META_MODEL = b"pipeline.model_version"
META_VOCAB = b"pipeline.vocab_version"
META_PARTITION = b"pipeline.partition"


def predictions_schema(
    classes: list[str], *, model_version: str, vocab_version: str, partition: str
) -> pa.Schema:
    """Predictions schema version 1, with the class names (the order of `probs`) in its metadata."""
    fields = [
        pa.field("id", pa.string(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
        pa.field("label", pa.string(), nullable=False),
        pa.field("label_id", pa.int32(), nullable=False),
        pa.field("score", pa.float64(), nullable=False),
        pa.field("probs", pa.list_(pa.float64(), len(classes)), nullable=False),
        pa.field("model_version", pa.string(), nullable=False),
        pa.field("scored_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
    meta = {
        META_SCHEMA_VERSION: str(PREDICTIONS_SCHEMA_VERSION).encode(),
        META_CLASSES: json.dumps(classes, ensure_ascii=False).encode(),
        META_MODEL: model_version.encode(),
        META_VOCAB: vocab_version.encode(),
        META_PARTITION: partition.encode(),
    }
    return pa.schema(fields, metadata=meta)
