"""One streaming pass of ingest over its sources, in bounded memory and on every core.

A thread reads a source's batches ahead (`_prefetch`), worker threads clean and validate them
(`_ordered_map`; polars and pyarrow release the GIL), and polars' Parquet sink pulls the kept rows
and encodes row groups on its own threads, while bad rows go to the quarantine (`split_sources`).

On a cluster, the reading, cleaning and validation of each source run on a worker instead
(`stage_source`: one Arrow IPC file per batch in a folder), and the pass reads those frames back, in
source order: everything after them, repeated ids included, is the same code on the same frames.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow.parquet as pq
from polars.io.plugins import register_io_source

from pipeline import lake
from pipeline.ingest.batch import ReaderBatch, batch_frame
from pipeline.ingest.options import IngestConfig
from pipeline.ingest.readers import read_source, source_format
from pipeline.ingest.validation import id_hashes, mark_duplicates, validate
from pipeline.schema import QUARANTINE_SCHEMA, TEXTS_SCHEMA

log = logging.getLogger(__name__)

# The kept rows as polars frames; `TEXTS_SCHEMA` is what the lake's Parquet files declare.
_KEPT = {"id": pl.String, "text": pl.String, "label": pl.String, "source": pl.String, "line": pl.Int64}
_ROW_GROUP = 1 << 18  # rows per Parquet row group of the lake
_WORKERS = max(1, min(4, os.cpu_count() or 1))  # batches cleaned and validated at once
STAGED = "_staged.json"  # a staged source's hash and format (`stage_source`)


def split_sources(
    sources: list[tuple[Path, str]],
    cfg: IngestConfig,
    texts: Path,
    quarantine: Path,
    duplicates: np.ndarray | None,
    staged: dict[Path, Path] | None = None,
) -> Split:
    """One pass over the sources: kept rows to `texts`, bad ones to `quarantine` (both replaced).

    With `staged` (source -> its folder from `stage_source`), the sources' cleaned and validated batches
    are read from there instead of being read and cleaned here: the same frames, so the same bytes.
    """
    with pq.ParquetWriter(quarantine, QUARANTINE_SCHEMA, compression="zstd") as qw:
        split = Split(cfg, qw, duplicates, staged)
        # polars pulls the kept rows from `split.kept` and encodes row groups on its own threads
        kept = register_io_source(lambda *_: split.kept(sources), schema=_KEPT)
        kept.sink_parquet(
            texts,
            compression="zstd",
            compression_level=1,
            row_group_size=_ROW_GROUP,
            arrow_schema=TEXTS_SCHEMA,
        )
    return split


class Split:
    """Every row of the sources, in order: kept ones yielded as frames, bad ones written to the
    quarantine, both counted per source (`sources`) and by reason (`reasons`).

    Per source, a thread reads batches ahead and `_WORKERS` threads clean and validate them (polars
    and pyarrow release the GIL). Duplicate ids need every row before them: a first pass collects the
    kept rows' id hashes (`hashes`); only if one repeats does a second pass, given `duplicates`
    (`repeated(hashes)`), quarantine them. Most partitions have none, and pay for one pass only.
    """

    def __init__(
        self,
        cfg: IngestConfig,
        quarantine: pq.ParquetWriter,
        duplicates: np.ndarray | None,
        staged: dict[Path, Path] | None = None,
    ) -> None:
        self.cfg, self.quarantine, self.duplicates, self.staged = cfg, quarantine, duplicates, staged
        self.hashes: list[np.ndarray] = []
        self.reasons: Counter[str] = Counter()
        self.sources: list[dict[str, object]] = []

    def kept(self, sources: list[tuple[Path, str]]) -> Iterator[pl.DataFrame]:
        cfg = self.cfg
        done = 0  # rows checked for a repeated id so far: an index into `duplicates`
        with ThreadPoolExecutor(1, thread_name_prefix="ingest-hash") as hasher:
            for path, shown in sources:
                if self.staged is not None:  # read and cleaned by `stage_source`, elsewhere
                    about = lake.read_json(self.staged[path] / STAGED)
                    sha, fmt = _done(about["sha256"]), about["format"]
                    prepared = _ordered_map(_hashed, _staged_frames(self.staged[path]), _WORKERS)
                else:
                    sha = hasher.submit(lake.sha256_file, path)  # the manifest's, and derived ids' prefix
                    fmt = source_format(path, cfg)
                    prepared = _ordered_map(_preparer(cfg, sha), _prefetch(read_source(path, cfg)), _WORKERS)
                n_read = n_kept = 0
                for v, h in prepared:
                    if self.duplicates is None:
                        self.hashes.append(h)
                    else:
                        v = mark_duplicates(v, self.duplicates[done : done + len(h)])
                    done += len(h)
                    if v["reason"].null_count() == v.height:  # the common case: no copy of the batch
                        keep, drop = v, v.clear()
                    else:
                        bad = pl.col("reason").is_not_null()
                        keep, drop = v.filter(~bad), v.filter(bad)
                    if drop.height:
                        q = drop.select(
                            pl.lit(shown).alias("source"),
                            "line",
                            "reason",
                            "detail",
                            pl.coalesce("reader_raw", "raw").alias("raw"),
                        )
                        self.quarantine.write_table(q.to_arrow().cast(QUARANTINE_SCHEMA))
                        self.reasons.update(drop["reason"].to_list())
                    n_read += v.height
                    n_kept += keep.height
                    if keep.height:
                        yield keep.select("id", "text", "label", pl.lit(shown).alias("source"), "line")
                self.sources.append(
                    {
                        "path": shown,
                        "size": path.stat().st_size,
                        "sha256": sha.result(),
                        "format": fmt,
                        "rows_read": n_read,
                        "rows_kept": n_kept,
                        "rows_quarantined": n_read - n_kept,
                    }
                )
                log.info("%s: %d rows read, %d kept", shown, n_read, n_kept)


def stage_source(path: Path, cfg: IngestConfig, folder: Path) -> dict[str, Any]:
    """Read, clean and validate one source into `folder` (replaced whole): one Arrow IPC file per batch,
    exactly the frames a local ingest would go on with, and `_staged.json` (its hash and format).

    This is the part of ingest that spreads over a cluster, one task a source; `split_sources` then
    merges the folders in source order, finding repeated ids across them as a local ingest does.
    """
    sha = lake.sha256_file(path)
    batches = _ordered_map(_preparer(cfg, _done(sha)), _prefetch(read_source(path, cfg)), _WORKERS)
    with lake.publish_dir(folder) as tmp:
        n = rows = 0
        for n, (v, _) in enumerate(batches, start=1):
            v.write_ipc(tmp / f"batch-{n:06d}.arrow", compression="uncompressed")
            rows += v.height
        lake.write_json(tmp / STAGED, {"sha256": sha, "format": source_format(path, cfg), "rows": rows})
    return {"source": str(path), "rows": rows, "batches": n}


def _preparer(
    cfg: IngestConfig, sha: Future[str]
) -> Callable[[ReaderBatch], tuple[pl.DataFrame, np.ndarray]]:
    def prepare(b: ReaderBatch) -> tuple[pl.DataFrame, np.ndarray]:
        v = validate(batch_frame(b, len(cfg.text_columns)), cfg, id_prefix=lambda: sha.result()[:12])
        return v, id_hashes(v)

    return prepare


def _hashed(v: pl.DataFrame) -> tuple[pl.DataFrame, np.ndarray]:
    return v, id_hashes(v)


def _staged_frames(folder: Path) -> Iterator[pl.DataFrame]:
    for f in sorted(folder.glob("batch-*.arrow")):
        yield pl.read_ipc(f)


def _done(value: str) -> Future[str]:
    f: Future[str] = Future()
    f.set_result(value)
    return f


def _prefetch(it: Iterator[Any], depth: int = 2) -> Iterator[Any]:
    """Run `it` in a thread, `depth` items ahead: reading overlaps cleaning and writing."""
    q: queue.Queue[tuple[Any, BaseException | None, bool]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: tuple[Any, BaseException | None, bool]) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        try:
            for x in it:
                if not put((x, None, False)):
                    return
            put((None, None, True))
        except BaseException as e:  # handed to the consumer
            put((None, e, True))

    t = threading.Thread(target=run, name="ingest-prefetch", daemon=True)
    t.start()
    try:
        while True:
            x, err, done = q.get()
            if err is not None:
                raise err
            if done:
                return
            yield x
    finally:
        stop.set()
        t.join()


def _ordered_map(fn: Callable[[Any], Any], items: Iterator[Any], workers: int) -> Iterator[Any]:
    """`fn` over `items` in `workers` threads, results in order, at most `workers` + 1 in flight.

    Unlike `Executor.map`, items are taken lazily (memory stays bounded) and a consumer that stops
    early cancels what has not started.
    """
    with ThreadPoolExecutor(workers, thread_name_prefix="ingest-work") as pool:
        pending: deque[Future[Any]] = deque()
        try:
            for x in items:
                pending.append(pool.submit(fn, x))
                if len(pending) > workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for f in pending:
                f.cancel()
