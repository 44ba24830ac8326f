"""Ingest validation: clean each row, map its label, fill its id, and give every bad row its reason.

Duplicate ids are caught across batches and sources by `_SeenIds`, a compact set of id hashes.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from pipeline.ingest.clean import clean_series
from pipeline.ingest.options import DUPLICATE_ID, EMPTY_TEXT, TOO_LONG, UNKNOWN_LABEL, IngestConfig


class _SeenIds:
    """Ids seen so far, as sorted runs of 64-bit hashes merged like a log-structured tree.

    8 bytes per kept row, no Python object per id. Two different ids share a hash with probability
    about n^2 / 2^65 (1e-5 for 20M rows); such a row would be quarantined as a duplicate, not lost.
    """

    def __init__(self) -> None:
        self.runs: list[np.ndarray] = []

    def contains(self, h: np.ndarray) -> np.ndarray:
        found = np.zeros(len(h), dtype=bool)
        for run in self.runs:
            i = np.searchsorted(run, h).clip(max=len(run) - 1)
            found |= run[i] == h
        return found

    def add(self, h: np.ndarray) -> None:
        if not len(h):
            return
        run = np.sort(h, kind="stable")
        while self.runs and len(self.runs[-1]) <= 2 * len(run):
            run = np.sort(np.concatenate([self.runs.pop(), run]), kind="stable")  # a merge of two runs
        self.runs.append(run)


def validate(df: pl.DataFrame, cfg: IngestConfig, *, id_prefix: str, seen: _SeenIds) -> pl.DataFrame:
    """Clean `raw` into `text`, map labels, fill missing ids, and give each row a `reason` (null = keep)."""
    label = pl.col("label").str.strip_chars().replace("", None)
    if cfg.label_coarse_sep:
        label = label.str.split(cfg.label_coarse_sep).list.first()
    if cfg.label_index is not None and cfg.classes is not None:
        # an index outside the file is kept as "index 7", so the class check below quarantines it
        idx = range(cfg.label_index, cfg.label_index + len(cfg.classes))
        mapped = label.cast(pl.Int64, strict=False).replace_strict(
            list(idx), list(cfg.classes), default=None, return_dtype=pl.String
        )
        label = pl.when(mapped.is_not_null()).then(mapped).otherwise(pl.format("index {}", label))
    df = df.with_columns(
        clean_series(df["raw"]).alias("text"),
        pl.coalesce(
            pl.col("id").str.strip_chars().replace("", None),
            pl.format("{}-{}", pl.lit(id_prefix), pl.col("line")),
        ).alias("id"),
        label.alias("label"),
    )
    reason = (
        pl.when(pl.col("reason").is_not_null())
        .then(pl.col("reason"))
        .when(pl.col("text").is_null() | (pl.col("text") == ""))
        .then(pl.lit(EMPTY_TEXT))
        .when(pl.col("text").str.len_chars() > cfg.max_text_chars)
        .then(pl.lit(TOO_LONG))
    )
    if cfg.classes is not None:
        reason = reason.when(pl.col("label").is_not_null() & ~pl.col("label").is_in(list(cfg.classes))).then(
            pl.lit(UNKNOWN_LABEL)
        )
    df = df.with_columns(reason.otherwise(None).alias("reason"), pl.col("id").hash(seed=0).alias("h"))
    df = df.with_columns(
        pl.when(pl.col("detail").is_not_null())
        .then("detail")
        .when(pl.col("reason") == UNKNOWN_LABEL)
        .then(pl.format("label `{}` is not one of the classes", "label"))
        .when(pl.col("reason") == TOO_LONG)
        .then(pl.format("{} characters, over {}", pl.col("text").str.len_chars(), pl.lit(cfg.max_text_chars)))
        .alias("detail")
    )
    # Duplicate ids: within the batch (first one wins) and against earlier batches and sources.
    ok = df["reason"].is_null().to_numpy()
    h = df["h"].to_numpy()
    dup = np.zeros(len(df), dtype=bool)
    cand = np.flatnonzero(ok)
    first = pl.Series(h[cand]).is_first_distinct().to_numpy()
    order = np.argsort(h[cand], kind="stable")  # sorted needles: cache-friendly searchsorted
    found = np.empty(len(cand), dtype=bool)
    found[order] = seen.contains(h[cand][order])
    dup[cand] = ~first | found
    seen.add(h[cand][~dup[cand]])
    return df.with_columns(
        pl.when(pl.Series(dup)).then(pl.lit(DUPLICATE_ID)).otherwise("reason").alias("reason"),
        pl.when(pl.Series(dup)).then(pl.lit("the id appeared earlier")).otherwise("detail").alias("detail"),
    ).drop("h")
