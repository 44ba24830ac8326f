"""Ingest validation: clean each row, map its label, fill its id, and give every bad row its reason.

Duplicate ids are caught across batches and sources by `_SeenIds`, a compact set of id hashes.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from pipeline.ingest.clean import clean_series
from pipeline.ingest.options import DUPLICATE_ID, EMPTY_TEXT, TOO_LONG, UNKNOWN_LABEL, IngestConfig

# A text of nothing but format characters (zero-width spaces, direction marks, a BOM) is empty too.
_INVISIBLE = r"^[\p{Cf}\s]*$"


class _SeenIds:
    """Ids seen so far, as 64-bit hashes: sorted runs merged like a log-structured tree, and a bitmap.

    The bitmap, indexed by a hash's top bits and kept at 16 bits per id, answers "not seen" for most
    new ids with one memory access; only the rest (about 1 in 16) are looked up in the runs, where a
    binary search in a large run costs tens of cache misses. About 10 bytes per kept row, no Python
    object per id. Two different ids share a hash with probability about n^2 / 2^65 (1e-5 for 20M
    rows); such a row would be quarantined as a duplicate, not lost.
    """

    def __init__(self) -> None:
        self.runs: list[np.ndarray] = []
        self.size = 0
        self._bits = np.zeros(1 << 13, dtype=np.uint8)  # 2^16 bits, doubled as ids come

    def contains(self, h: np.ndarray) -> np.ndarray:
        byte, bit = self._slots(h)
        found = (self._bits[byte] & bit) != 0  # maybe seen: look those up in the runs
        maybe = np.flatnonzero(found)
        maybe = maybe[np.argsort(h[maybe], kind="stable")]  # sorted needles: cache-friendly searches
        hit = np.zeros(len(maybe), dtype=bool)
        for run in self.runs:
            i = np.searchsorted(run, h[maybe]).clip(max=len(run) - 1)
            hit |= run[i] == h[maybe]
        found[maybe] = hit
        return found

    def add(self, h: np.ndarray) -> None:
        if not len(h):
            return
        run = np.sort(h)
        while self.runs and len(self.runs[-1]) <= 2 * len(run):
            run = np.sort(np.concatenate([self.runs.pop(), run]), kind="stable")  # a merge of two runs
        self.runs.append(run)
        self.size += len(h)
        if 8 * len(self._bits) >= 16 * self.size:
            self._mark(h)
            return
        n_bits = 8 * len(self._bits)
        while n_bits < 16 * self.size:
            n_bits *= 2
        self._bits = np.zeros(n_bits // 8, dtype=np.uint8)
        for run in self.runs:
            self._mark(run)

    def _slots(self, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The bitmap byte and bit of each hash: its top log2(bitmap bits) bits."""
        k = (8 * len(self._bits)).bit_length() - 1
        top = h >> np.uint64(64 - k)
        return top >> np.uint64(3), np.left_shift(1, top & np.uint64(7)).astype(np.uint8)

    def _mark(self, h: np.ndarray) -> None:
        byte, bit = self._slots(h)
        np.bitwise_or.at(self._bits, byte, bit)


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
    ids = df["id"].str.strip_chars().replace("", None)
    if ids.null_count():  # derived ids, only when needed: formatting every row is not free
        ids = df.select(pl.coalesce(ids, pl.format("{}-{}", pl.lit(id_prefix), pl.col("line")))).to_series()
    df = df.with_columns(clean_series(df["raw"]).alias("text"), ids.alias("id"), label.alias("label"))
    reason = (
        pl.when(pl.col("reason").is_not_null())
        .then(pl.col("reason"))
        .when(pl.col("text").is_null() | pl.col("text").str.contains(_INVISIBLE))
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
    # Duplicate ids: within the batch (first one wins) and against earlier batches and sources.
    ok = df["reason"].is_null().to_numpy()
    h = df["id"].hash(seed=0).to_numpy()
    dup = np.zeros(len(df), dtype=bool)
    cand = np.flatnonzero(ok)
    first = pl.Series(h[cand]).is_first_distinct().to_numpy()
    dup[cand] = ~first | seen.contains(h[cand])
    seen.add(h[cand][~dup[cand]])
    if not dup.any():
        return df
    return df.with_columns(
        pl.when(pl.Series(dup)).then(pl.lit(DUPLICATE_ID)).otherwise("reason").alias("reason"),
        pl.when(pl.Series(dup)).then(pl.lit("the id appeared earlier")).otherwise("detail").alias("detail"),
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
        .when(pl.col("reason") == TOO_LONG)
        .then(pl.format("{} characters, over {}", pl.col("text").str.len_chars(), pl.lit(cfg.max_text_chars)))
        .alias("detail")
    )
