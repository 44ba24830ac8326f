"""Ingest: raw files -> a date partition of the lake, with every bad row quarantined and counted.

    pipeline ingest SOURCE... --date D [--format F] [--no-header] [--text-column C ...] [--classes FILE] ...

Each source is streamed in record batches, in bounded memory: a thread reads batches ahead, a few
threads clean and validate them, and polars' Parquet sink encodes the kept rows on its own threads.
Good rows go to `lake/texts/date=D/part-00000.parquet`, bad rows with a reason to
`lake/quarantine/date=D/`. Repeated ids are found from the ids' hashes once every row has been seen;
a partition that has some is read a second time, to quarantine them in file order (`stream`).
The manifest's counts always add up: rows_read == rows_kept + rows_quarantined.

Formats: CSV/TSV (header or not, columns by name or 1-based position, several text columns joined
with a space), JSON Lines, plain text lines, `LABEL<sep>text` lines (fastText, `label<TAB>text`,
TREC's `COARSE:fine text`) and Parquet; gzip or zstd compressed (detected from the bytes); any
encoding Python knows (`--encoding`). `line` is the 1-based physical line where the record starts
(a CSV header is line 1; a quoted field spanning lines moves the next record down); Parquet: row number.

The package: `options` (IngestConfig, reasons, formats, the command line and `_ingest.toml`), `clean`
(the text cleaning), `decoding` (compression, `--encoding`, undecodable bytes, files that are not what
their name says), `readers` (format detection, one batch reader per format; CSV/TSV in `delimited`),
`batch` (what a reader yields, and its polars frame), `validation` (reasons and duplicate ids) and
`stream` (one pass over the sources, on every core; or each source read and cleaned on a worker of
a cluster, `stage_source`, then merged in order). This module runs the stage, writes the manifests
and re-exports the public names.

Bad input never stops an ingest with anything but an `InputError` naming the file and giving a hint,
and then only when the file as a whole cannot be read (not decompressible, binary, another encoding,
no such column); every other problem is a row in the quarantine (tests/test_bad_input.py).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np

from pipeline import lake
from pipeline.errors import InputError
from pipeline.ingest.clean import CLEANING, NFKC_STABLE, clean_expr, clean_series
from pipeline.ingest.options import (
    DUPLICATE_ID,
    EMPTY_TEXT,
    FOLDER_CONFIG,
    FORMATS,
    MALFORMED,
    MAX_LINE_BYTES,
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
from pipeline.ingest.readers import check_source, source_format
from pipeline.ingest.stream import split_sources, stage_source
from pipeline.ingest.validation import repeated, validate
from pipeline.schema import LAKE_SCHEMA_VERSION

__all__ = [
    "CLEANING",
    "DUPLICATE_ID",
    "EMPTY_TEXT",
    "FOLDER_CONFIG",
    "FORMATS",
    "MALFORMED",
    "MAX_LINE_BYTES",
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
    "ingest",
    "ingest_config",
    "ingest_config_from_args",
    "load_folder_config",
    "raw_sources",
    "read_classes",
    "source_format",
    "stage_source",
    "validate",
]

log = logging.getLogger(__name__)


StageSources = Callable[[list[tuple[Path, Path]], IngestConfig], object]


def ingest(
    sources: list[Path],
    date: str,
    data: lake.DataDir,
    cfg: IngestConfig,
    *,
    stage_sources: StageSources | None = None,
) -> dict[str, object]:
    """Ingest `sources` into the lake partition for `date`, replacing it; return its manifest.

    With `stage_sources`, the sources are read, cleaned and validated elsewhere, in parallel: it is
    given (source, folder) pairs and returns once `stage_source` has filled every folder (one task a
    source on a cluster); the partition is then merged here from the folders, in source order, into
    the same bytes as a local ingest. The folders live beside the partition and are removed after.
    """
    if not sources:
        msg = f"no source files for {date}; hint: put files in {data.raw(date)} or name them"
        raise InputError(msg)
    check_sources(sources, cfg)
    if stage_sources is None:
        return _ingest(sources, date, data, cfg, None)
    base = data.texts(date).with_name(f".{data.texts(date).name}.staging")
    staged = {p: base / f"source-{i:05d}" for i, p in enumerate(sources)}
    try:
        stage_sources(list(staged.items()), cfg)
        return _ingest(sources, date, data, cfg, staged)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _ingest(
    sources: list[Path], date: str, data: lake.DataDir, cfg: IngestConfig, staged: dict[Path, Path] | None
) -> dict[str, object]:
    with lake.publish_dir(data.quarantine(date)) as qdir, lake.publish_dir(data.texts(date)) as tdir:
        texts_path, q_path = tdir / "part-00000.parquet", qdir / "part-00000.parquet"
        named = [(p, _display_path(p, data)) for p in sources]
        split = split_sources(named, cfg, texts_path, q_path, duplicates=None, staged=staged)
        duplicates = repeated(np.concatenate([np.zeros(0, np.uint64), *split.hashes]))
        if duplicates is not None:  # rare: once more, now knowing which rows repeat an id
            log.info(
                "%s: %d rows repeat an earlier id; a second pass quarantines them", date, duplicates.sum()
            )
            split = split_sources(named, cfg, texts_path, q_path, duplicates=duplicates, staged=staged)
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
            "config": config_record(cfg),
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


def config_record(cfg: IngestConfig) -> dict[str, object]:
    """The options a lake manifest records (`block_bytes` changes how it is read, not what is kept)."""
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
