"""Ingest: raw files -> a date partition of the lake, with every bad row quarantined and counted.

    pipeline ingest SOURCE... --date D [--format F] [--no-header] [--text-column C ...] [--classes FILE] ...

Each source is streamed in record batches (bounded memory: a prefetch thread reads the next batch
while this one is cleaned, validated and written), and split: good rows go to
`lake/texts/date=D/part-00000.parquet`, bad rows with a reason to `lake/quarantine/date=D/`.
The manifest's counts always add up: rows_read == rows_kept + rows_quarantined.

Formats: CSV/TSV (header or not, columns by name or 1-based position, several text columns joined
with a space), JSON Lines, plain text lines, `LABEL<sep>text` lines (fastText, `label<TAB>text`,
TREC's `COARSE:fine text`) and Parquet; gzip or zstd compressed (detected from the bytes); any
encoding Python knows (`--encoding`). `line` is the 1-based physical line where the record starts
(a CSV header is line 1; a quoted field spanning lines moves the next record down); Parquet: row number.
"""

from __future__ import annotations

import argparse
import codecs
import json
import logging
import queue
import threading
import tomllib
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from pipeline import lake
from pipeline.errors import ConfigError, InputError
from pipeline.schema import LAKE_SCHEMA_VERSION, QUARANTINE_SCHEMA, TEXTS_SCHEMA

log = logging.getLogger(__name__)

# Reasons a row is quarantined.
EMPTY_TEXT = "empty_text"
MALFORMED = "malformed"
UNDECODABLE = "undecodable"
UNKNOWN_LABEL = "unknown_label"
DUPLICATE_ID = "duplicate_id"
TOO_LONG = "too_long"
REASONS = (EMPTY_TEXT, MALFORMED, UNDECODABLE, UNKNOWN_LABEL, DUPLICATE_ID, TOO_LONG)

Format = Literal["auto", "csv", "tsv", "jsonl", "text", "labelled", "fasttext", "parquet"]
FORMATS: tuple[str, ...] = ("auto", "csv", "tsv", "jsonl", "text", "labelled", "fasttext", "parquet")
_EXTENSIONS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".txt": "text",
    ".parquet": "parquet",
    ".pq": "parquet",
}
FOLDER_CONFIG = "_ingest.toml"  # per raw/<date>/ options; files starting with `_` or `.` are not sources

# The cleaning applied to every text; recorded in each manifest and applied again when scoring.
CLEANING = {
    "version": 2,
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
# Characters that NFKC leaves alone whatever surrounds them (tests/test_ingest_clean.py proves it):
# a text made only of these skips the normaliser, which is most of the cost of cleaning.
NFKC_STABLE = [(0x00, 0x7F), (0xC0, 0xFF), (0x3001, 0x3002), (0x3400, 0x4DBF), (0x4E00, 0x9FFF)]
_NFKC_UNSTABLE_RE = "[^" + "".join(rf"\x{{{a:X}}}-\x{{{b:X}}}" for a, b in NFKC_STABLE) + "]"
# Backslash, whitespace and control characters: every run becomes one space (a lone space is left be).
_SPACES_RE = r"[\\\s\p{Cc}]{2,}|[\\\p{Cc}]|[^\S ]"


@dataclass(frozen=True)
class IngestConfig:
    """How to read and validate sources. Columns are names, or 1-based positions as strings ("2")."""

    format: Format = "auto"  # auto: from the file name (.csv .tsv .jsonl .txt .parquet, after .gz/.zst)
    text_columns: tuple[str, ...] = ("text",)  # several are joined with a space
    label_column: str | None = "label"  # the default may be absent from a source: rows are unlabelled
    id_column: str | None = "id"  # the default may be absent: ids are derived from sha256 and line
    header: bool = True  # CSV/TSV: first line names the columns; without it, columns are "1", "2", ...
    delimiter: str | None = None  # CSV "," and TSV tab unless given
    quote: str | None = None  # CSV '"', TSV none unless given; "" turns quoting off
    encoding: str = "utf-8"
    label_sep: str | None = None  # labelled lines: label, this separator, text; None = first whitespace
    label_prefix: str = ""  # removed from labels, required when set (fastText: "__label__")
    label_coarse_sep: str | None = None  # keep the label up to this separator (TREC "DESC:manner" -> DESC)
    label_index: Literal[0, 1] | None = None  # labels are 0- or 1-based indices into `classes`
    classes: tuple[str, ...] | None = None  # when set, other labels are quarantined
    max_text_chars: int = 10_000
    max_bad_fraction: float = 1.0
    block_bytes: int = 8 << 20  # bytes read per batch from text formats

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            msg = f"`format` must be one of {', '.join(FORMATS)}, got {self.format!r}"
            raise ConfigError(msg)
        if not self.text_columns:
            msg = "`text_columns` is empty; hint: name at least one text column"
            raise ConfigError(msg)
        if self.label_index is not None and self.classes is None:
            msg = "`label_index` needs `classes` (the class-names file the indices point into)"
            raise ConfigError(msg)
        if self.label_index not in (None, 0, 1):
            msg = f"`label_index` must be 0 or 1, got {self.label_index!r}"
            raise ConfigError(msg)
        if not 0.0 <= self.max_bad_fraction <= 1.0 or self.max_text_chars < 1:
            msg = "`max_bad_fraction` must be in [0, 1] and `max_text_chars` >= 1"
            raise ConfigError(msg)
        try:
            codecs.lookup(self.encoding)
        except LookupError:
            msg = f"`encoding` {self.encoding!r} is unknown; hint: e.g. utf-8, iso-8859-1, cp1252, gb18030"
            raise ConfigError(msg) from None


# ---------------------------------------------------------------------------- cleaning


def clean_expr(text: pl.Expr) -> pl.Expr:
    """The cleaning step, as a polars expression over a string column (see `clean_series`)."""
    return text.map_batches(clean_series, return_dtype=pl.String)


def clean_series(s: pl.Series) -> pl.Series:
    """NFKC, then the entity fixes, then backslash/control/whitespace runs to one space, then strip.

    Each costly step runs only on the rows it can change (gathered, fixed, scattered back): NFKC on
    rows with a character outside `NFKC_STABLE`, the entity fixes on rows with a `;`, the spaces on
    rows with something to collapse or strip. tests/test_ingest_clean.py checks it against the plain steps.
    """
    s = s.cast(pl.String).clone()

    def fix(mask: pl.Series, step: Any) -> None:
        nonlocal s
        idx = np.flatnonzero(mask.fill_null(False).to_numpy())
        if len(idx):
            s = s.scatter(idx, step(s.gather(idx)))

    nonascii = np.flatnonzero((s.str.len_bytes() != s.str.len_chars()).fill_null(False).to_numpy())
    if len(nonascii):
        unstable = s.gather(nonascii).str.contains(_NFKC_UNSTABLE_RE).fill_null(False).to_numpy()
        idx = nonascii[unstable]
        if len(idx):
            s = s.scatter(idx, s.gather(idx).str.normalize("NFKC"))

    def entities(x: pl.Series) -> pl.Series:
        for pattern, repl in _ENTITIES:
            x = x.str.replace_all(pattern, repl)
        return x

    fix(s.str.contains(";", literal=True), entities)
    fix(s.str.contains(_SPACES_RE + "|^ | $"), lambda x: x.str.replace_all(_SPACES_RE, " ").str.strip_chars())
    return s


def clean_text(texts: pl.Series) -> pl.Series:
    return clean_series(texts)


# ---------------------------------------------------------------------------- streams and readers
#
# A reader yields `_Batch`es: every record it saw, good or bad, in file order, with its line.
# Bad records already carry a reason (malformed, undecodable); validation gives the rest theirs.


@dataclass
class _Batch:
    line: np.ndarray  # int64, one per record
    cols: dict[str, pa.Array]  # role (text0, text1, ..., label, id) -> binary/string values
    reason: list[str | None]  # reader verdict per record (None: parsed fine)
    detail: list[str | None]
    raw: list[str | None]  # what to show in the quarantine for reader-rejected records


_GZIP, _ZSTD = b"\x1f\x8b", b"\x28\xb5\x2f\xfd"


def _compression(path: Path) -> str | None:
    with open(path, "rb") as f:
        head = f.read(4)
    return "gzip" if head[:2] == _GZIP else "zstd" if head == _ZSTD else None


def _base_name(path: Path) -> str:
    name = path.name.lower()
    for ext in (".gz", ".gzip", ".zst", ".zstd"):
        name = name.removesuffix(ext)
    return name


def source_format(path: Path, cfg: IngestConfig) -> str:
    """The format of `path`: `cfg.format`, or guessed from its name."""
    if cfg.format != "auto":
        return cfg.format
    fmt = _EXTENSIONS.get(Path(_base_name(path)).suffix)
    if fmt is None:
        msg = (
            f"{path}: cannot tell the format from the name; hint: pass --format "
            f"({', '.join(FORMATS[1:])}); .csv .tsv .jsonl .txt .parquet are recognised"
        )
        raise InputError(msg)
    return fmt


class _Transcoder:
    """A read-only byte stream: `raw` decoded from `encoding`, re-encoded as UTF-8.

    Undecodable bytes become lone surrogates (surrogateescape), which are invalid UTF-8 once
    re-encoded, so the row holding them fails the UTF-8 check and is quarantined as undecodable.
    """

    def __init__(self, raw: Any, encoding: str) -> None:
        self._raw = raw
        self._dec = codecs.getincrementaldecoder(encoding)(errors="surrogateescape")
        self._buf = b""
        self._eof = False
        self.closed = False

    def read(self, n: int = -1) -> bytes:
        while not self._eof and (n < 0 or len(self._buf) < n):
            chunk = self._raw.read(1 << 20)
            self._eof = not chunk
            self._buf += self._dec.decode(chunk, final=self._eof).encode("utf-8", "surrogatepass")
        out, self._buf = (self._buf, b"") if n < 0 else (self._buf[:n], self._buf[n:])
        return out

    def close(self) -> None:
        self.closed = True
        self._raw.close()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def __enter__(self) -> _Transcoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _open(path: Path, cfg: IngestConfig) -> Any:
    stream = pa.input_stream(str(path), compression=_compression(path))
    if codecs.lookup(cfg.encoding).name != "utf-8":
        return _Transcoder(stream, cfg.encoding)
    return stream


def _resolve(path: Path, names: list[str], cfg: IngestConfig) -> dict[str, str]:
    """Map each role (text0.., label, id) to a column name; a clear error for a wrong choice."""

    def find(spec: str) -> str | None:
        if spec in names:
            return spec
        if spec.isdigit() and 1 <= int(spec) <= len(names):
            return names[int(spec) - 1]
        return None

    roles: dict[str, str] = {}
    for i, spec in enumerate(cfg.text_columns):
        name = find(spec)
        if name is None:
            msg = (
                f"{path}: no column `{spec}` (a text column); it has {names}; hint: choose it with "
                f"--text-column NAME or a 1-based position (--no-header when there is no header row)"
            )
            raise InputError(msg)
        roles[f"text{i}"] = name
    for role, spec, flag in (
        ("label", cfg.label_column, "--label-column"),
        ("id", cfg.id_column, "--id-column"),
    ):
        if not spec:
            continue
        name = find(spec)
        if name is None and spec != role:  # the defaults "label" and "id" are optional
            msg = f"{path}: no column `{spec}` (the {role} column); it has {names}; hint: check {flag}"
            raise InputError(msg)
        if name is not None:
            roles[role] = name
    return roles


def _csv_batches(path: Path, cfg: IngestConfig, delimiter: str) -> Iterator[_Batch]:
    bad: list[pacsv.InvalidRow] = []

    def on_invalid(row: pacsv.InvalidRow) -> str:
        bad.append(row)
        return "skip"

    quote = cfg.quote if cfg.quote is not None else ('"' if delimiter == "," else "")
    parse = pacsv.ParseOptions(
        delimiter=cfg.delimiter or delimiter,
        quote_char=quote or False,
        newlines_in_values=bool(quote),
        ignore_empty_lines=False,
        invalid_row_handler=on_invalid,
    )
    try:
        with (
            _open(path, cfg) as s,
            pacsv.open_csv(
                s,
                read_options=pacsv.ReadOptions(
                    use_threads=False, block_size=1 << 16, autogenerate_column_names=not cfg.header
                ),
                parse_options=parse,
            ) as probe,
        ):
            width = len(probe.schema.names)
            names = probe.schema.names if cfg.header else [str(i + 1) for i in range(width)]
    except pa.ArrowInvalid as e:
        if "Empty CSV file" in str(e):
            return
        msg = f"{path}: cannot read as delimited text ({e}); hint: check --format, --delimiter and --encoding"
        raise InputError(msg) from None
    roles = _resolve(path, names, cfg)
    bad.clear()
    stream = _open(path, cfg)
    reader = pacsv.open_csv(
        stream,
        read_options=pacsv.ReadOptions(
            use_threads=False, block_size=cfg.block_bytes, column_names=names, skip_rows=int(cfg.header)
        ),
        parse_options=parse,
        convert_options=pacsv.ConvertOptions(
            column_types={n: pa.binary() for n in names},
            quoted_strings_can_be_null=False,
            strings_can_be_null=False,
        ),
    )
    # Records are counted by pyarrow (`InvalidRow.number`, header included); lines by counting the
    # newlines inside each record (every column is read, as binary, so that count is exact).
    record = 1 + int(cfg.header)
    line = 1 + (sum(n.count("\n") for n in names) + 1 if cfg.header else 0)
    pending: list[pacsv.InvalidRow] = []
    try:
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                batch = None
            pending += bad
            bad.clear()
            n_good = 0 if batch is None else batch.num_rows
            take = 0
            pending.sort(key=lambda r: r.number)
            while take < len(pending) and (batch is None or pending[take].number < record + n_good + take):
                take += 1
            mine, pending = pending[:take], pending[take:]
            total = n_good + len(mine)
            if total:
                out, nl = _csv_batch(batch, roles, mine, record, line, total)
                yield out
                record += total
                line += total + nl
            if batch is None:
                break
    except pa.ArrowInvalid as e:
        msg = f"{path}: after line {line}: {e}; hint: check the file's --encoding, --delimiter and --quote"
        raise InputError(msg) from None
    finally:
        reader.close()
        stream.close()


def _csv_batch(
    batch: pa.RecordBatch | None,
    roles: dict[str, str],
    bad: list[pacsv.InvalidRow],
    record: int,
    line: int,
    total: int,
) -> tuple[_Batch, int]:
    """One reader batch plus the newlines inside its records (lines = records + newlines)."""
    is_bad = np.zeros(total, dtype=bool)
    nl = np.zeros(total, dtype=np.int64)
    bad_pos = np.array([r.number - record for r in bad], dtype=np.int64)
    is_bad[bad_pos] = True
    nl[bad_pos] = [r.text.count("\n") for r in bad]
    good_pos = np.flatnonzero(~is_bad)
    if batch is not None and len(good_pos):
        per_row = np.zeros(len(good_pos), dtype=np.int64)
        for c in batch.columns:
            per_row += pc.count_substring(c, pattern=b"\n").to_numpy(zero_copy_only=False)
        nl[good_pos] = per_row
    lines = line + np.arange(total, dtype=np.int64) + np.concatenate([[0], np.cumsum(nl)[:-1]])
    reason: list[str | None] = [None] * total
    detail: list[str | None] = [None] * total
    raw: list[str | None] = [None] * total
    for pos, r in zip(bad_pos.tolist(), bad, strict=True):
        blank = r.text.strip() == ""
        reason[pos] = EMPTY_TEXT if blank else MALFORMED
        detail[pos] = (
            "blank line" if blank else f"expected {r.expected_columns} columns, got {r.actual_columns}"
        )
        raw[pos] = r.text
    cols = {}
    for role, name in roles.items():
        vals = batch.column(name) if batch is not None else pa.array([], pa.binary())
        cols[role] = _scatter(vals, good_pos, total)
    return _Batch(lines, cols, reason, detail, raw), int(nl.sum())


def _scatter(values: pa.Array, pos: np.ndarray, total: int) -> pa.Array:
    """`values` placed at `pos` in an array of `total` nulls."""
    if len(pos) == total:
        return values
    idx = np.full(total, -1, dtype=np.int64)
    idx[pos] = np.arange(len(pos))
    return pc.take(values, pa.array(idx, mask=idx < 0))


def _line_blocks(path: Path, cfg: IngestConfig) -> Iterator[tuple[pa.Array, int]]:
    """(lines as binary without their end of line, number of the first line) per block."""
    with _open(path, cfg) as stream:
        rest, first, start = b"", True, 1
        while True:
            buf = stream.read(cfg.block_bytes)
            if first:
                buf, first = buf.removeprefix(codecs.BOM_UTF8), False
            data = rest + buf
            cut = data.rfind(b"\n") if buf else len(data)
            if cut < 0:
                rest = data
                continue
            block, rest = data[:cut], data[cut + 1 :]
            if buf or block:
                lines = pc.split_pattern(pa.array([block], pa.large_binary()), pattern=b"\n").flatten()
                yield lines, start
                start += len(lines)
            if not buf:
                return


def _text_batches(path: Path, cfg: IngestConfig, fmt: str) -> Iterator[_Batch]:
    names = ["label", "text"] if fmt in ("labelled", "fasttext") else ["text"]
    if fmt == "text" and cfg.text_columns == ("text",):
        names = ["text"]
    _resolve(path, names, replace(cfg, id_column=None))
    sep = cfg.label_sep
    prefix = cfg.label_prefix or ("__label__" if fmt == "fasttext" else "")
    for lines, start in _line_blocks(path, cfg):
        n = len(lines)
        text, bad_bytes = _decode(lines)
        s = pl.Series("l", text).str.strip_suffix("\r")
        reason: list[str | None] = [UNDECODABLE if b else None for b in bad_bytes]
        detail: list[str | None] = ["not valid " + cfg.encoding if b else None for b in bad_bytes]
        raw = [_show(lines[i].as_py()) if b else None for i, b in enumerate(bad_bytes)]
        cols: dict[str, pa.Array] = {}
        if fmt == "text":
            cols["text0"] = s.to_arrow()
        else:
            pattern = r"(?s)^(\S+)\s(.*)$" if sep is None else rf"(?s)^(.+?){_re_escape(sep)}(.*)$"
            parts = pl.DataFrame({"l": s}).select(
                pl.col("l").str.extract(pattern, 1).alias("label"),
                pl.col("l").str.extract(pattern, 2).alias("text"),
            )
            label = parts["label"]
            ok = label.is_not_null()
            if prefix:
                ok = ok & label.str.starts_with(prefix)
                label = label.str.strip_prefix(prefix)
            for i in np.flatnonzero(~ok.fill_null(False).to_numpy() & s.is_not_null().to_numpy()).tolist():
                blank = not (s[i] or "").strip()
                reason[i] = EMPTY_TEXT if blank else MALFORMED
                detail[i] = (
                    "blank line" if blank else f"no label: no {sep or 'whitespace'!r} or no {prefix!r}"
                )
                raw[i] = s[i]
            cols["label"], cols["text0"] = label.to_arrow(), parts["text"].to_arrow()
        yield _Batch(np.arange(start, start + n, dtype=np.int64), cols, reason, detail, raw)


def _re_escape(s: str) -> str:
    return "".join(c if c.isalnum() else f"\\x{{{ord(c):X}}}" for c in s)


def _jsonl_batches(path: Path, cfg: IngestConfig) -> Iterator[_Batch]:
    keys: dict[str, str | None] = {f"text{i}": c for i, c in enumerate(cfg.text_columns)}
    keys |= {"label": cfg.label_column, "id": cfg.id_column}
    seen_text = False
    for lines, start in _line_blocks(path, cfg):
        text, bad_bytes = _decode(lines)
        n = len(lines)
        vals: dict[str, list[str | None]] = {k: [None] * n for k in keys}
        reason: list[str | None] = [None] * n
        detail: list[str | None] = [None] * n
        raw: list[str | None] = [None] * n
        for i, t in enumerate(text.to_pylist()):
            if bad_bytes[i]:
                reason[i], detail[i], raw[i] = (
                    UNDECODABLE,
                    f"not valid {cfg.encoding}",
                    _show(lines[i].as_py()),
                )
                continue
            if not t.strip():
                reason[i], detail[i], raw[i] = EMPTY_TEXT, "blank line", t
                continue
            try:
                obj = json.loads(t)
                if not isinstance(obj, dict):
                    raise ValueError("not a JSON object")
                for role, key in keys.items():
                    v = obj.get(key) if key else None
                    if isinstance(v, dict | list):
                        raise ValueError(f"`{key}` is not a string or number")
                    vals[role][i] = None if v is None else v if isinstance(v, str) else json.dumps(v)
                seen_text = seen_text or any(obj.get(c) is not None for c in cfg.text_columns)
            except ValueError as e:
                reason[i], detail[i], raw[i] = MALFORMED, str(e)[:200], t
        if not seen_text and any(r is None for r in reason):
            msg = (
                f"{path}: no line of the first {start + n - 1} has a field {list(cfg.text_columns)}; "
                f"hint: choose the text field with --text-column"
            )
            raise InputError(msg)
        cols = {role: pa.array(v, pa.string()) for role, v in vals.items() if keys[role]}
        yield _Batch(np.arange(start, start + n, dtype=np.int64), cols, reason, detail, raw)


def _parquet_batches(path: Path, cfg: IngestConfig) -> Iterator[_Batch]:
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as e:
        msg = f"{path}: cannot read as Parquet ({e}); hint: check --format"
        raise InputError(msg) from None
    roles = _resolve(path, pf.schema_arrow.names, cfg)
    start = 1
    with pf:
        for batch in pf.iter_batches(batch_size=65_536, columns=sorted(set(roles.values()))):
            n = batch.num_rows
            cols = {r: pc.cast(batch.column(c), pa.string()) for r, c in roles.items()}
            yield _Batch(
                np.arange(start, start + n, dtype=np.int64), cols, [None] * n, [None] * n, [None] * n
            )
            start += n


def _decode(values: pa.Array) -> tuple[pa.Array, list[bool]]:
    """Binary -> UTF-8 strings; undecodable values become null and are flagged."""
    try:
        return values.cast(pa.large_string()), [False] * len(values)
    except pa.ArrowInvalid:
        out, bad = [], []
        for v in values.to_pylist():
            try:
                out.append(None if v is None else v.decode("utf-8"))
                bad.append(False)
            except UnicodeDecodeError:
                out.append(None)
                bad.append(True)
        return pa.array(out, pa.large_string()), bad


def _show(b: bytes) -> str:
    """Raw bytes for the quarantine: valid text as is, the rest as \\x escapes."""
    return b.decode("utf-8", "backslashreplace")


def _read_source(path: Path, cfg: IngestConfig) -> Iterator[_Batch]:
    fmt = source_format(path, cfg)
    if fmt == "parquet":
        return _parquet_batches(path, cfg)
    if fmt in ("csv", "tsv"):
        return _csv_batches(path, cfg, "," if fmt == "csv" else "\t")
    if fmt == "jsonl":
        return _jsonl_batches(path, cfg)
    return _text_batches(path, cfg, fmt)


def _frame(b: _Batch, n_text: int) -> pl.DataFrame:
    """A reader batch as one frame: line, id, raw text, label, reader reason/detail/raw."""
    n = len(b.line)
    cols: dict[str, Any] = {"line": pl.Series(b.line, dtype=pl.Int64)}
    undecodable = np.zeros(n, dtype=bool)
    for role in (*[f"text{i}" for i in range(n_text)], "label", "id"):
        if role not in b.cols:
            cols[role] = pl.Series([None] * n, dtype=pl.String)
            continue
        arr = b.cols[role]
        if pa.types.is_binary(arr.type) or pa.types.is_large_binary(arr.type):
            arr, bad = _decode(arr)
            undecodable |= np.array(bad, dtype=bool)
        cols[role] = pl.Series(arr).cast(pl.String)
    reason, detail, raw = list(b.reason), list(b.detail), list(b.raw)
    for i in np.flatnonzero(undecodable).tolist():
        if reason[i] is None:
            reason[i], detail[i] = UNDECODABLE, "not valid UTF-8 (after --encoding)"
            raw[i] = "\t".join(_show(b.cols[r][i].as_py() or b"") for r in b.cols)
    texts = [pl.col(f"text{i}") for i in range(n_text)]
    return pl.DataFrame(cols).select(
        "line",
        pl.col("id"),
        (pl.concat_str(texts, separator=" ", ignore_nulls=True) if n_text > 1 else texts[0]).alias("raw"),
        pl.col("label"),
        pl.Series("reason", reason, dtype=pl.String),
        pl.Series("detail", detail, dtype=pl.String),
        pl.Series("reader_raw", raw, dtype=pl.String),
    )


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


# ---------------------------------------------------------------------------- validation


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
        try:
            with open(p, "rb"):
                pass
        except OSError as e:
            msg = f"{p}: cannot open ({e.strerror}); hint: check its permissions"
            raise InputError(msg) from None
        source_format(p, cfg)  # fail early on an unknown format
    source_infos = []
    seen = _SeenIds()
    reasons: Counter[str] = Counter()
    kept_total = read_total = 0
    with lake.publish_dir(data.quarantine(date)) as qdir, lake.publish_dir(data.texts(date)) as tdir:
        texts_path, q_path = tdir / "part-00000.parquet", qdir / "part-00000.parquet"
        with (
            pq.ParquetWriter(
                texts_path, TEXTS_SCHEMA, compression="zstd", use_dictionary=["label", "source"]
            ) as tw,
            pq.ParquetWriter(q_path, QUARANTINE_SCHEMA, compression="zstd") as qw,
            ThreadPoolExecutor(1, thread_name_prefix="ingest-write") as writer,
        ):
            pending: Future[None] | None = None
            for path in sources:
                sha = lake.sha256_file(path)
                shown = _display_path(path, data)
                src_read = src_kept = 0
                for b in _prefetch(_read_source(path, cfg)):
                    # the previous batch's Parquet encoding (GIL released) overlaps this one's cleaning
                    v = validate(_frame(b, len(cfg.text_columns)), cfg, id_prefix=sha[:12], seen=seen)
                    keep = v.filter(pl.col("reason").is_null())
                    drop = v.filter(pl.col("reason").is_not_null())
                    if keep.height:
                        table = (
                            keep.select("id", "text", "label", pl.lit(shown).alias("source"), "line")
                            .to_arrow()
                            .cast(TEXTS_SCHEMA)
                        )
                        if pending is not None:
                            pending.result()
                        pending = writer.submit(tw.write_table, table)
                    if drop.height:
                        q = drop.select(
                            pl.lit(shown).alias("source"),
                            "line",
                            "reason",
                            "detail",
                            pl.coalesce("reader_raw", "raw").alias("raw"),
                        )
                        qw.write_table(q.to_arrow().cast(QUARANTINE_SCHEMA))
                        reasons.update(drop["reason"].to_list())
                    src_read += v.height
                    src_kept += keep.height
                source_infos.append(
                    {
                        "path": shown,
                        "size": path.stat().st_size,
                        "sha256": sha,
                        "format": source_format(path, cfg),
                        "rows_read": src_read,
                        "rows_kept": src_kept,
                        "rows_quarantined": src_read - src_kept,
                    }
                )
                read_total += src_read
                kept_total += src_kept
            if pending is not None:
                pending.result()
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


# ---------------------------------------------------------------------------- configuration


def read_classes(path: Path) -> tuple[str, ...]:
    """A class-names file: one name a line, blank lines ignored."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        msg = f"{path}: classes file not found; hint: one class name a line"
        raise InputError(msg) from None
    except (OSError, UnicodeDecodeError) as e:
        msg = f"{path}: cannot read the classes file ({e}); hint: a UTF-8 text file, one name a line"
        raise InputError(msg) from None
    classes = tuple(x.strip() for x in text.splitlines() if x.strip())
    if not classes:
        msg = f"{path}: the classes file is empty; hint: one class name a line"
        raise InputError(msg)
    return classes


def ingest_config(options: dict[str, Any], *, base: Path, where: str) -> IngestConfig:
    """An `IngestConfig` from a table of options (TOML keys = field names; `classes` may be a file)."""
    known = {f.name for f in fields(IngestConfig)} - {"block_bytes"}
    unknown = sorted(set(options) - known)
    if unknown:
        msg = f"{where}: unknown ingest option(s) {unknown}; known: {sorted(known)}"
        raise ConfigError(msg)
    opts = dict(options)
    if isinstance(opts.get("text_columns"), str):
        opts["text_columns"] = [opts["text_columns"]]
    if "text_columns" in opts:
        opts["text_columns"] = tuple(str(c) for c in opts["text_columns"])
    for key in ("label_column", "id_column"):
        if key in opts and opts[key] is not None:
            opts[key] = str(opts[key]) or None
    if isinstance(opts.get("classes"), str):
        opts["classes"] = read_classes(base / opts["classes"])
    elif opts.get("classes") is not None:
        opts["classes"] = tuple(str(c) for c in opts["classes"])
    try:
        return IngestConfig(**opts)
    except (TypeError, ConfigError) as e:
        msg = f"{where}: {e}"
        raise ConfigError(msg) from None


def load_folder_config(folder: Path) -> IngestConfig:
    """The options of a raw folder: `<folder>/_ingest.toml` if present, else the defaults.

    A nightly drop of AG News style files, for example:

        format = "csv"
        header = false
        label_column = "1"
        text_columns = ["2", "3"]
        label_index = 1
        classes = "_classes.txt"   # relative to the folder; `_` keeps it from being ingested
    """
    path = folder / FOLDER_CONFIG
    if not path.is_file():
        return IngestConfig()
    try:
        options = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        msg = f"{path}: not valid TOML ({e})"
        raise ConfigError(msg) from None
    return ingest_config(options, base=folder, where=str(path))


def _unescape(s: str) -> str:
    return s.encode("latin-1", "backslashreplace").decode("unicode_escape") if "\\" in s else s


def add_ingest_arguments(parser: argparse.ArgumentParser) -> None:
    """The ingest options of `pipeline ingest` (SOURCE... and --date are added by the caller)."""
    d = IngestConfig()
    g = parser.add_argument_group("reading")
    g.add_argument("--format", choices=FORMATS, default="auto", help="default: from the file name")
    g.add_argument("--no-header", dest="header", action="store_false", help="CSV/TSV: no header row")
    g.add_argument("--delimiter", help="CSV/TSV field separator (default , or tab; \\t understood)")
    g.add_argument("--quote", help="CSV quote character (default \" for CSV, none for TSV; '' for none)")
    g.add_argument("--encoding", default=d.encoding, help="e.g. iso-8859-1 (default utf-8)")
    g = parser.add_argument_group("columns (a name, or a 1-based position)")
    g.add_argument(
        "--text-column",
        dest="text_columns",
        action="append",
        metavar="COL",
        help="repeat to join several with a space (default: text)",
    )
    g.add_argument(
        "--label-column", default=d.label_column, metavar="COL", help="'' for none (default: label)"
    )
    g.add_argument("--id-column", default=d.id_column, metavar="COL", help="'' to derive ids (default: id)")
    g = parser.add_argument_group("labels")
    g.add_argument("--classes", type=Path, help="class names, one a line; other labels are quarantined")
    g.add_argument(
        "--label-index", type=int, choices=[0, 1], help="labels are 0/1-based indices into --classes"
    )
    g.add_argument(
        "--label-sep", help="labelled lines: separator after the label (default: first whitespace)"
    )
    g.add_argument(
        "--label-prefix", default="", help="removed from labels, e.g. __label__ (fasttext sets it)"
    )
    g.add_argument("--label-coarse-sep", metavar="SEP", help="keep the label up to SEP (TREC: ':')")
    g = parser.add_argument_group("validation")
    g.add_argument(
        "--max-text-chars", type=int, default=d.max_text_chars, help="longer texts are quarantined"
    )
    g.add_argument(
        "--max-bad-fraction", type=float, default=d.max_bad_fraction, help="fail (publish nothing) above this"
    )


def ingest_config_from_args(args: argparse.Namespace) -> IngestConfig:
    """The `IngestConfig` of parsed `pipeline ingest` arguments (reads the --classes file)."""
    try:
        return IngestConfig(
            format=args.format,
            text_columns=tuple(args.text_columns or ("text",)),
            label_column=args.label_column or None,
            id_column=args.id_column or None,
            header=args.header,
            delimiter=_unescape(args.delimiter) if args.delimiter else None,
            quote=args.quote,
            encoding=args.encoding,
            label_sep=_unescape(args.label_sep) if args.label_sep else None,
            label_prefix=args.label_prefix,
            label_coarse_sep=args.label_coarse_sep,
            label_index=args.label_index,
            classes=read_classes(args.classes) if args.classes is not None else None,
            max_text_chars=args.max_text_chars,
            max_bad_fraction=args.max_bad_fraction,
        )
    except ConfigError as e:
        raise InputError(str(e)) from None
