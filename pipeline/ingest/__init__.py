"""Ingest: raw files -> a date partition of the lake, with every bad row quarantined and counted.

    pipeline ingest SOURCE... --date D [--format F] [--no-header] [--text-column C ...] [--classes FILE] ...

Each source is streamed in record batches, in bounded memory: a thread reads batches ahead, a few
threads clean and validate them, and polars' Parquet sink encodes the kept rows on its own threads.
Good rows go to `lake/texts/date=D/part-00000.parquet`, bad rows with a reason to
`lake/quarantine/date=D/`. Repeated ids are found from the ids' hashes once every row has been seen;
a partition that has some is read a second time, to quarantine them in file order (`_Split`).
The manifest's counts always add up: rows_read == rows_kept + rows_quarantined.

Formats: CSV/TSV (header or not, columns by name or 1-based position, several text columns joined
with a space), JSON Lines, plain text lines, `LABEL<sep>text` lines (fastText, `label<TAB>text`,
TREC's `COARSE:fine text`) and Parquet; gzip or zstd compressed (detected from the bytes); any
encoding Python knows (`--encoding`). `line` is the 1-based physical line where the record starts
(a CSV header is line 1; a quoted field spanning lines moves the next record down); Parquet: row number.

The package: `options` (IngestConfig, reasons, formats, the command line and `_ingest.toml`), `clean`
(the text cleaning), `decoding` (compression, `--encoding`, undecodable bytes, files that are not what
their name says), `readers` (format detection, one batch reader per format), `validation` (reasons and
duplicate ids). This module runs the stage and re-exports the public names.

Bad input never stops an ingest with anything but an `InputError` naming the file and giving a hint,
and then only when the file as a whole cannot be read (not decompressible, binary, another encoding,
no such column); every other problem is a row in the quarantine (tests/test_bad_input.py).
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq
from polars.io.plugins import register_io_source

from pipeline import lake
from pipeline.errors import InputError
from pipeline.ingest.clean import CLEANING, NFKC_STABLE, clean_expr, clean_series, clean_text
from pipeline.ingest.options import (
    DUPLICATE_ID,
    EMPTY_TEXT,
    FOLDER_CONFIG,
    FORMATS,
    MALFORMED,
    REASONS,
    TOO_LONG,
    UNDECODABLE,
    UNKNOWN_LABEL,
    Format,
    IngestConfig,
    add_ingest_arguments,
    ingest_config,
    ingest_config_from_args,
    load_folder_config,
    read_classes,
)
from pipeline.ingest.readers import (
    _Batch,
    _frame,
    _ordered_map,
    _prefetch,
    _read_source,
    check_source,
    source_format,
)
from pipeline.ingest.validation import id_hashes, mark_duplicates, repeated, validate
from pipeline.schema import LAKE_SCHEMA_VERSION, QUARANTINE_SCHEMA, TEXTS_SCHEMA

__all__ = [
    "CLEANING",
    "DUPLICATE_ID",
    "EMPTY_TEXT",
    "FOLDER_CONFIG",
    "FORMATS",
    "MALFORMED",
    "NFKC_STABLE",
    "REASONS",
    "TOO_LONG",
    "UNDECODABLE",
    "UNKNOWN_LABEL",
    "Format",
    "IngestConfig",
    "add_ingest_arguments",
    "check_sources",
    "clean_expr",
    "clean_series",
    "clean_text",
    "ingest",
    "ingest_config",
    "ingest_config_from_args",
    "load_folder_config",
    "raw_sources",
    "read_classes",
    "source_format",
    "validate",
]

log = logging.getLogger(__name__)


# The kept rows as polars frames; `TEXTS_SCHEMA` is what the lake's Parquet files declare.
_KEPT = {"id": pl.String, "text": pl.String, "label": pl.String, "source": pl.String, "line": pl.Int64}
_ROW_GROUP = 1 << 18  # rows per Parquet row group of the lake
_WORKERS = max(1, min(4, os.cpu_count() or 1))  # batches cleaned and validated at once


def ingest(sources: list[Path], date: str, data: lake.DataDir, cfg: IngestConfig) -> dict[str, object]:
    """Ingest `sources` into the lake partition for `date`, replacing it; return its manifest."""
    if not sources:
        msg = f"no source files for {date}; hint: put files in {data.raw(date)} or name them"
        raise InputError(msg)
    check_sources(sources, cfg)
    with lake.publish_dir(data.quarantine(date)) as qdir, lake.publish_dir(data.texts(date)) as tdir:
        texts_path, q_path = tdir / "part-00000.parquet", qdir / "part-00000.parquet"
        named = [(p, _display_path(p, data)) for p in sources]
        split = _split(named, cfg, texts_path, q_path, duplicates=None)
        duplicates = repeated(np.concatenate([np.zeros(0, np.uint64), *split.hashes]))
        if duplicates is not None:  # rare: once more, now knowing which rows repeat an id
            log.info(
                "%s: %d rows repeat an earlier id; a second pass quarantines them", date, duplicates.sum()
            )
            split = _split(named, cfg, texts_path, q_path, duplicates=duplicates)
        reasons = split.reasons
        read_total = sum(int(s["rows_read"]) for s in split.sources)
        kept_total = sum(int(s["rows_kept"]) for s in split.sources)
        bad_total = read_total - kept_total
        assert bad_total == sum(reasons.values()), "quarantine counts must add up"
        if read_total and bad_total / read_total > cfg.max_bad_fraction:
            worst = ", ".join(f"{r}: {n}" for r, n in reasons.most_common(3))
            msg = (
                f"{date}: {bad_total} of {read_total} rows are bad ({bad_total / read_total:.1%}), over "
                f"--max-bad-fraction {cfg.max_bad_fraction}; worst reasons: {worst}; nothing was published"
            )
            raise InputError(msg)
        manifest = {
            "schema_version": LAKE_SCHEMA_VERSION,
            "date": date,
            "sources": split.sources,
            "rows_read": read_total,
            "rows_kept": kept_total,
            "rows_quarantined": bad_total,
            "quarantined_by_reason": dict(sorted(reasons.items())),
            "cleaning": CLEANING,
            "config": _config_record(cfg),
            "files": [{"name": texts_path.name, "sha256": lake.sha256_file(texts_path), "rows": kept_total}],
        }
        lake.write_json(
            qdir / lake.MANIFEST,
            {"date": date, "rows": bad_total, "by_reason": manifest["quarantined_by_reason"]},
        )
        lake.write_json(tdir / lake.MANIFEST, manifest)
    log.info(
        "%s: %d rows read, %d kept, %d quarantined %s", date, read_total, kept_total, bad_total, dict(reasons)
    )
    return manifest


def _split(
    sources: list[tuple[Path, str]],
    cfg: IngestConfig,
    texts: Path,
    quarantine: Path,
    duplicates: np.ndarray | None,
) -> _Split:
    """One pass over the sources: kept rows to `texts`, bad ones to `quarantine` (both replaced)."""
    with pq.ParquetWriter(quarantine, QUARANTINE_SCHEMA, compression="zstd") as qw:
        split = _Split(cfg, qw, duplicates)
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


class _Split:
    """Every row of the sources, in order: kept ones yielded as frames, bad ones written to the
    quarantine, both counted per source (`sources`) and by reason (`reasons`).

    Per source, a thread reads batches ahead and `_WORKERS` threads clean and validate them (polars
    and pyarrow release the GIL). Duplicate ids need every row before them: a first pass collects the
    kept rows' id hashes (`hashes`); only if one repeats does a second pass, given `duplicates`
    (`repeated(hashes)`), quarantine them. Most partitions have none, and pay for one pass only.
    """

    def __init__(
        self, cfg: IngestConfig, quarantine: pq.ParquetWriter, duplicates: np.ndarray | None
    ) -> None:
        self.cfg, self.quarantine, self.duplicates = cfg, quarantine, duplicates
        self.hashes: list[np.ndarray] = []
        self.reasons: Counter[str] = Counter()
        self.sources: list[dict[str, object]] = []

    def kept(self, sources: list[tuple[Path, str]]) -> Iterator[pl.DataFrame]:
        cfg = self.cfg
        done = 0  # rows checked for a repeated id so far: an index into `duplicates`
        with ThreadPoolExecutor(1, thread_name_prefix="ingest-hash") as hasher:
            for path, shown in sources:
                sha = hasher.submit(lake.sha256_file, path)  # the manifest's, and derived ids' prefix

                def prepare(b: _Batch, sha: Future[str] = sha) -> tuple[pl.DataFrame, np.ndarray]:
                    v = validate(_frame(b, len(cfg.text_columns)), cfg, id_prefix=lambda: sha.result()[:12])
                    return v, id_hashes(v)

                n_read = n_kept = 0
                for v, h in _ordered_map(prepare, _prefetch(_read_source(path, cfg)), _WORKERS):
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
                        "format": source_format(path, cfg),
                        "rows_read": n_read,
                        "rows_kept": n_kept,
                        "rows_quarantined": n_read - n_kept,
                    }
                )
                log.info("%s: %d rows read, %d kept", shown, n_read, n_kept)


def check_sources(sources: list[Path], cfg: IngestConfig) -> None:
    """Fail early, before anything is written, on a source no row of which could be read.

    Each must be a readable regular file (a symbolic link to one is followed) of a known format whose
    first bytes fit it: decompressible, not a binary format named as text, not UTF-16 read as UTF-8.
    """
    for p in sources:
        _check_file(p)
        check_source(p, cfg)


def _check_file(p: Path) -> None:
    """A source must be a regular file (a symbolic link to one is followed) that this process can read."""
    if p.is_dir():
        msg = f"{p}: is a folder, not a file; hint: name the files in it (e.g. {p}/*.csv)"
        raise InputError(msg)
    if not p.is_file():
        what = "a broken symbolic link" if p.is_symlink() else "no such file" if not p.exists() else None
        msg = f"{p}: {what or 'not a regular file'}; hint: check the path (sources are files, not folders)"
        raise InputError(msg)
    try:
        with open(p, "rb"):
            pass
    except OSError as e:
        msg = f"{p}: cannot open ({e.strerror}); hint: check its permissions"
        raise InputError(msg) from None


def _config_record(cfg: IngestConfig) -> dict[str, object]:
    d = asdict(cfg)
    d.pop("block_bytes")
    d["text_columns"] = list(cfg.text_columns)
    d["classes"] = list(cfg.classes) if cfg.classes is not None else None
    return d


def _display_path(path: Path, data: lake.DataDir) -> str:
    """A path inside the data root is recorded relative to it: manifests do not depend on where it lives."""
    p = path.resolve()
    try:
        return str(p.relative_to(data.root))
    except ValueError:
        return str(p)


def raw_sources(data: lake.DataDir, date: str) -> list[Path]:
    """The raw files of a date, in name order (hidden and underscore files, e.g. `_ingest.toml`, are not)."""
    folder = data.raw(date)
    if not folder.is_dir():
        return []
    return [p for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith((".", "_"))]
