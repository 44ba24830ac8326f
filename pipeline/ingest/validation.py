"""Ingest validation: clean each row, map its label, fill its id, and give every bad row its reason.

Duplicate ids are found across batches and sources from the 64-bit hashes of the ids (`id_hashes`,
`repeated`); `mark_duplicates` quarantines them. Two different ids share a hash with probability
about n^2 / 2^65 (1e-5 for 20M rows); such a row would be quarantined as a duplicate, not lost.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import polars as pl

from pipeline.ingest.clean import clean_series
from pipeline.ingest.options import (
    DUPLICATE_ID,
    EMPTY_TEXT,
    MALFORMED,
    TOO_LONG,
    UNKNOWN_LABEL,
    IngestConfig,
)
from pipeline.schema import MAX_ID_CHARS

# A text of nothing but format characters (zero-width spaces, direction marks, a BOM) is empty too.
_INVISIBLE = r"^[\p{Cf}\s]*$"
# Ids are keys, not text: one over the contract's length, or holding a control character (a tab, a
# NUL, an escape), is quarantined rather than changed, so an id always matches the source's row and
# reads back the same from every sink (surrounding whitespace alone is stripped).
_ID_TOO_LONG = pl.col("id").str.len_chars() > MAX_ID_CHARS
_ID_CONTROL = pl.col("id").str.contains(r"\p{Cc}")


def validate(df: pl.DataFrame, cfg: IngestConfig, *, id_prefix: str | Callable[[], str]) -> pl.DataFrame:
    """Clean `raw` into `text`, map labels, fill missing ids, and give each row a `reason` (null = keep).

    A missing id becomes `{id_prefix}-{line}`; `id_prefix` may be a function, called only then (the
    ingest loop passes the source's hash, computed while the first batches are read). Duplicate ids
    are not looked at here: they depend on every row before (`repeated`, `mark_duplicates`). An id over
    `MAX_ID_CHARS` is too long, one holding a control character malformed.
    """
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
    ids = df["id"].str.strip_chars().replace("", None)
    if ids.null_count():  # derived ids, only when needed: formatting every row is not free
        prefix = id_prefix() if callable(id_prefix) else id_prefix
        ids = df.select(pl.coalesce(ids, pl.format("{}-{}", pl.lit(prefix), pl.col("line")))).to_series()
    text = clean_series(df["raw"], backslash_breaks=cfg.backslash_breaks)
    df = df.with_columns(text.alias("text"), ids.alias("id"), label.alias("label"))
    reason = (
        pl.when(pl.col("reason").is_not_null())
        .then(pl.col("reason"))
        .when(_ID_TOO_LONG)
        .then(pl.lit(TOO_LONG))
        .when(_ID_CONTROL)
        .then(pl.lit(MALFORMED))
        .when(_invisible(text))
        .then(pl.lit(EMPTY_TEXT))
        .when(pl.col("text").str.len_chars() > cfg.max_text_chars)
        .then(pl.lit(TOO_LONG))
    )
    if cfg.classes is not None:
        reason = reason.when(pl.col("label").is_not_null() & ~pl.col("label").is_in(list(cfg.classes))).then(
            pl.lit(UNKNOWN_LABEL)
        )
    df = df.with_columns(reason.otherwise(None).alias("reason"))
    if df["reason"].null_count() < df.height:
        df = _explain(df, cfg)
    return df


def _invisible(text: pl.Series) -> pl.Series:
    """Which cleaned texts are null, empty or nothing but format characters and spaces. Cleaning strips
    spaces, so a pure ASCII text is only ever the second kind: the search runs on the other rows."""
    rows = np.flatnonzero((text.str.len_bytes() != text.str.len_chars()).fill_null(False).to_numpy())
    out = (text.str.len_bytes() == 0).fill_null(True).to_numpy()
    out[rows] = text.gather(rows).str.contains(_INVISIBLE).to_numpy()
    return pl.Series(out)


def id_hashes(df: pl.DataFrame) -> np.ndarray:
    """The 64-bit hashes of the ids of the rows a validated batch keeps (no reason yet), in order."""
    return df["id"].filter(df["reason"].is_null()).hash(seed=0).to_numpy()


def repeated(hashes: np.ndarray) -> np.ndarray | None:
    """Which of these id hashes, in order, repeat an earlier one (the first one wins); None if none do.

    Counting distinct values is parallel and cheap; finding which repeat is not, and is rarely needed.
    """
    s = pl.Series(hashes, dtype=pl.UInt64)
    if s.n_unique() == len(s):
        return None
    return (~s.is_first_distinct()).to_numpy()


def mark_duplicates(df: pl.DataFrame, dup: np.ndarray) -> pl.DataFrame:
    """Quarantine the rows of a validated batch whose id appeared earlier: `dup` has one flag for each
    row the batch keeps (as `id_hashes` lists them), from `repeated`."""
    if not dup.any():
        return df
    flags = np.zeros(df.height, dtype=bool)
    flags[np.flatnonzero(df["reason"].is_null().to_numpy())] = dup
    hit = pl.Series(flags)
    return df.with_columns(
        pl.when(hit).then(pl.lit(DUPLICATE_ID)).otherwise("reason").alias("reason"),
        pl.when(hit).then(pl.lit("the id appeared earlier")).otherwise("detail").alias("detail"),
    )


def _explain(df: pl.DataFrame, cfg: IngestConfig) -> pl.DataFrame:
    """The `detail` of each row with a reason (the reader's, if it gave one)."""
    return df.with_columns(
        pl.when(pl.col("detail").is_not_null())
        .then("detail")
        .when((pl.col("reason") == EMPTY_TEXT) & pl.col("raw").is_null())
        .then(pl.lit("no text"))
        .when(pl.col("reason") == EMPTY_TEXT)
        .then(pl.lit("nothing visible left after cleaning"))
        .when(pl.col("reason") == UNKNOWN_LABEL)
        .then(pl.format("label `{}` is not one of the classes", "label"))
        .when((pl.col("reason") == TOO_LONG) & _ID_TOO_LONG)
        .then(pl.format("the id has {} characters, over {}", pl.col("id").str.len_chars(), MAX_ID_CHARS))
        .when(pl.col("reason") == TOO_LONG)
        .then(pl.format("{} characters, over {}", pl.col("text").str.len_chars(), pl.lit(cfg.max_text_chars)))
        .when((pl.col("reason") == MALFORMED) & _ID_CONTROL)
        .then(pl.lit("the id holds a control character (U+0000-U+001F, U+007F-U+009F)"))
        .alias("detail")
    )
