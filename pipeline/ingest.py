"""Ingest: raw files -> a date partition of the lake, with every bad row quarantined and counted.

Each source is read in record batches (bounded memory), cleaned, validated, and split: good rows
go to `lake/texts/date=D/part-00000.parquet`, bad rows with a reason to `lake/quarantine/date=D/`.
The manifest's counts always add up: rows_read == rows_kept + rows_quarantined.

`line` is the 1-based record number in the source file (a CSV header is record 1), which is the line
number unless quoted fields span lines.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from pipeline import lake
from pipeline.errors import InputError
from pipeline.schema import LAKE_SCHEMA_VERSION, QUARANTINE_SCHEMA, TEXTS_SCHEMA

log = logging.getLogger(__name__)

# Reasons a row is quarantined.
EMPTY_TEXT = "empty_text"
MALFORMED = "malformed"
UNKNOWN_LABEL = "unknown_label"
DUPLICATE_ID = "duplicate_id"
TOO_LONG = "too_long"

# The cleaning applied to every text; recorded in each manifest and applied again when scoring.
CLEANING = {
    "version": 1,
    "unicode": "NFKC",
    "control_chars": "to space",
    "whitespace": "collapsed and stripped",
    "artefacts": "HTML entity remnants (#39; quot; amp; ...) decoded, backslash line breaks to space",
}
_ENTITIES = [  # (regex, replacement): AG News style remnants, with or without the leading `&`
    (r"&?#39;", "'"),
    (r"&?#36;", "$"),
    (r"&?#151;", "—"),
    (r"&?#145;|&?#146;", "'"),
    (r"&?#147;|&?#148;", '"'),
    (r"&quot;|\bquot;", '"'),
    (r"&amp;|\bamp;", "&"),
    (r"&lt;|\blt;", "<"),
    (r"&gt;|\bgt;", ">"),
    (r"&nbsp;", " "),
]


@dataclass(frozen=True)
class IngestConfig:
    text_column: str = "text"
    label_column: str = "label"  # optional in the source
    id_column: str = "id"  # optional in the source
    classes: tuple[str, ...] | None = None  # when set, other labels are quarantined
    max_text_chars: int = 10_000
    max_bad_fraction: float = 1.0
    batch_rows: int = 65_536


def clean_expr(text: pl.Expr) -> pl.Expr:
    """The cleaning step, as one polars expression over a string column."""
    e = text.str.normalize("NFKC")
    for pattern, repl in _ENTITIES:
        e = e.str.replace_all(pattern, repl)
    return (
        e.str.replace_all("\\", " ", literal=True)
        .str.replace_all(r"\p{Cc}", " ")
        .str.replace_all(r"\s+", " ")
        .str.strip_chars()
    )


def clean_text(texts: pl.Series) -> pl.Series:
    return pl.DataFrame({"t": texts}).select(clean_expr(pl.col("t")))["t"]


# ---------------------------------------------------------------------------- readers

_Batch = tuple[pl.DataFrame, list[dict[str, object]]]  # (id, text, label, line) rows; quarantined rows


def _read_csv(path: Path, cfg: IngestConfig, delimiter: str) -> Iterator[_Batch]:
    bad: list[pacsv.InvalidRow] = []

    def on_invalid(row: pacsv.InvalidRow) -> str:
        bad.append(row)
        return "skip"

    read_options = pacsv.ReadOptions(use_threads=False, block_size=8 << 20)
    parse_options = pacsv.ParseOptions(
        delimiter=delimiter, newlines_in_values=True, invalid_row_handler=on_invalid
    )
    try:
        # Open once to learn the header, then again reading every column as text: ids like 007
        # and labels like 1 must stay as written.
        with pacsv.open_csv(path, read_options=read_options, parse_options=parse_options) as probe:
            names = probe.schema.names
        bad.clear()
        _check_columns(path, names, cfg)
        reader = pacsv.open_csv(
            path,
            read_options=read_options,
            parse_options=parse_options,
            convert_options=pacsv.ConvertOptions(
                column_types={n: pa.string() for n in names}, strings_can_be_null=False
            ),
        )
    except pa.ArrowInvalid as e:
        msg = f"{path}: cannot read as CSV ({e}); hint: is it a delimited text file with a header row?"
        raise InputError(msg) from None
    next_line = 2  # record 1 is the header
    bad_seen = 0
    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            break
        except pa.ArrowInvalid as e:
            msg = f"{path}: after line {next_line}: {e}; hint: check the file's encoding and quoting"
            raise InputError(msg) from None
        new_bad, bad_seen = bad[bad_seen:], len(bad)
        bad_lines = {int(r.number) for r in new_bad if r.number is not None}
        lines = []
        while len(lines) < batch.num_rows:
            if next_line not in bad_lines:
                lines.append(next_line)
            next_line += 1
        quarantined = [
            {
                "line": r.number,
                "reason": MALFORMED,
                "detail": f"expected {r.expected_columns} columns, got {r.actual_columns}",
                "raw": r.text,
            }
            for r in new_bad
        ]
        yield _select(pl.from_arrow(batch), cfg, lines), quarantined
        next_line = max([next_line, *[n + 1 for n in bad_lines]])


def _read_parquet(path: Path, cfg: IngestConfig) -> Iterator[_Batch]:
    try:
        pf = pq.ParquetFile(path)
    except pa.ArrowInvalid as e:
        msg = f"{path}: cannot read as Parquet ({e})"
        raise InputError(msg) from None
    _check_columns(path, pf.schema_arrow.names, cfg)
    start = 1
    for batch in pf.iter_batches(batch_size=cfg.batch_rows):
        df = pl.from_arrow(batch)
        assert isinstance(df, pl.DataFrame)
        yield _select(df, cfg, list(range(start, start + df.height))), []
        start += df.height


def _check_columns(path: Path, names: list[str], cfg: IngestConfig) -> None:
    if cfg.text_column not in names:
        msg = (
            f"{path}: no column `{cfg.text_column}` (the text column); it has {names}; "
            f"hint: choose the text column with --text-column"
        )
        raise InputError(msg)


def _select(df: pl.DataFrame, cfg: IngestConfig, lines: list[int]) -> pl.DataFrame:
    def col(name: str) -> pl.Expr:
        if name in df.columns:
            return pl.col(name).cast(pl.String)
        return pl.lit(None, dtype=pl.String)

    return df.select(
        col(cfg.id_column).alias("id"),
        col(cfg.text_column).alias("raw"),
        col(cfg.label_column).str.strip_chars().alias("label"),
        pl.Series("line", lines, dtype=pl.Int64),
    )


def _read_source(path: Path, cfg: IngestConfig) -> Iterator[_Batch]:
    name = path.name.lower()
    if name.endswith(".parquet"):
        return _read_parquet(path, cfg)
    if name.endswith((".csv", ".csv.gz")):
        return _read_csv(path, cfg, ",")
    if name.endswith((".tsv", ".tsv.gz")):
        return _read_csv(path, cfg, "\t")
    msg = f"{path}: unknown format; hint: use a .csv, .tsv or .parquet file"
    raise InputError(msg)


# ---------------------------------------------------------------------------- validation


def validate(df: pl.DataFrame, cfg: IngestConfig, *, id_prefix: str, seen: set[str]) -> pl.DataFrame:
    """Clean `raw` into `text`, fill missing ids, and give each row a `reason` (null = keep)."""
    df = df.with_columns(
        clean_expr(pl.col("raw")).alias("text"),
        pl.coalesce(
            pl.col("id").str.strip_chars().replace("", None),
            pl.format("{}-{}", pl.lit(id_prefix), pl.col("line")),
        ).alias("id"),
        pl.col("label").replace("", None),
    )
    reason = (
        pl.when(pl.col("text").is_null() | (pl.col("text") == ""))
        .then(pl.lit(EMPTY_TEXT))
        .when(pl.col("text").str.len_chars() > cfg.max_text_chars)
        .then(pl.lit(TOO_LONG))
    )
    if cfg.classes is not None:
        reason = reason.when(pl.col("label").is_not_null() & ~pl.col("label").is_in(list(cfg.classes))).then(
            pl.lit(UNKNOWN_LABEL)
        )
    df = df.with_columns(reason.otherwise(pl.lit(None, dtype=pl.String)).alias("reason"))
    # Duplicate ids: within the batch (first one wins) and against earlier batches and sources.
    dup = df["id"].is_duplicated() & ~df["id"].is_first_distinct() | df["id"].is_in(list(seen))
    df = df.with_columns(
        pl.when(pl.col("reason").is_null() & dup)
        .then(pl.lit(DUPLICATE_ID))
        .otherwise("reason")
        .alias("reason")
    )
    seen.update(df.filter(pl.col("reason").is_null())["id"].to_list())
    return df


# ---------------------------------------------------------------------------- the stage


def ingest(sources: list[Path], date: str, data: lake.DataDir, cfg: IngestConfig) -> dict[str, object]:
    """Ingest `sources` into the lake partition for `date`, replacing it; return its manifest."""
    if not sources:
        msg = f"no source files for {date}; hint: put files in {data.raw(date)} or name them"
        raise InputError(msg)
    for p in sources:
        if not p.is_file():
            msg = f"{p}: no such file; hint: check the path (sources are files, not folders)"
            raise InputError(msg)
    source_infos = []
    seen: set[str] = set()
    reasons: Counter[str] = Counter()
    kept_total = read_total = 0
    with lake.publish_dir(data.quarantine(date)) as qdir, lake.publish_dir(data.texts(date)) as tdir:
        texts_path, q_path = tdir / "part-00000.parquet", qdir / "part-00000.parquet"
        with (
            pq.ParquetWriter(texts_path, TEXTS_SCHEMA, compression="zstd") as tw,
            pq.ParquetWriter(q_path, QUARANTINE_SCHEMA, compression="zstd") as qw,
        ):
            for path in sources:
                sha = lake.sha256_file(path)
                shown = _display_path(path, data)
                src_read = src_kept = 0
                for df, bad in _read_source(path, cfg):
                    v = validate(df, cfg, id_prefix=sha[:12], seen=seen)
                    keep = v.filter(pl.col("reason").is_null())
                    drop = v.filter(pl.col("reason").is_not_null())
                    tw.write_table(
                        keep.select("id", "text", "label", pl.lit(shown).alias("source"), "line")
                        .to_arrow()
                        .cast(TEXTS_SCHEMA)
                    )
                    qrows = pl.concat(
                        [
                            drop.select(
                                pl.lit(shown).alias("source"),
                                "line",
                                "reason",
                                pl.lit(None, dtype=pl.String).alias("detail"),
                                "raw",
                            ),
                            pl.DataFrame(
                                [{"source": shown, **b} for b in bad],
                                schema={
                                    "source": pl.String,
                                    "line": pl.Int64,
                                    "reason": pl.String,
                                    "detail": pl.String,
                                    "raw": pl.String,
                                },
                            ),
                        ]
                    ).sort("line", nulls_last=True)
                    if qrows.height:
                        qw.write_table(qrows.to_arrow().cast(QUARANTINE_SCHEMA))
                    reasons.update(qrows["reason"].to_list())
                    src_read += v.height + len(bad)
                    src_kept += keep.height
                source_infos.append(
                    {
                        "path": shown,
                        "size": path.stat().st_size,
                        "sha256": sha,
                        "rows_read": src_read,
                        "rows_kept": src_kept,
                        "rows_quarantined": src_read - src_kept,
                    }
                )
                read_total += src_read
                kept_total += src_kept
                log.info("%s: %d rows read, %d kept", shown, src_read, src_kept)
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
            "sources": source_infos,
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


def _config_record(cfg: IngestConfig) -> dict[str, object]:
    d = asdict(cfg)
    d.pop("batch_rows")
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
    """The raw files of a date, in name order (hidden and underscore files are ignored)."""
    folder = data.raw(date)
    if not folder.is_dir():
        return []
    return [p for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith((".", "_"))]
