"""Ingest readers: a source file -> batches of records, whatever its format, compression and encoding.

Format detection (`source_format`, `check_source`) and one batch reader per format over the decoded
bytes of `decoding`: plain and labelled lines, JSON Lines and Parquet here, CSV/TSV in `delimited`;
`read_source` picks one. A reader never raises anything but `InputError`: a row it cannot parse is a
bad record with its reason, a file it cannot read an error. The batch itself is `batch.ReaderBatch`.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.errors import InputError
from pipeline.ingest import decoding
from pipeline.ingest.batch import ReaderBatch, resolve_columns
from pipeline.ingest.decoding import cut_rows, decode, drop_values, open_text, show, show_cut
from pipeline.ingest.delimited import csv_batches
from pipeline.ingest.options import (
    EMPTY_TEXT,
    FORMATS,
    LONG_LINE,
    LONG_VALUE,
    MALFORMED,
    MAX_LINE_BYTES,
    TOO_LONG,
    UNDECODABLE,
    IngestConfig,
)

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


def check_source(path: Path, cfg: IngestConfig) -> str:
    """The format of `path`, once its first bytes are known to be readable as that format."""
    fmt = source_format(path, cfg)
    decoding.check_source(path, fmt, cfg.encoding)
    return fmt


def _line_blocks(path: Path, cfg: IngestConfig) -> Iterator[tuple[pa.Array, int, bool, bool]]:
    """(lines as binary without their end of line, number of the first line, escaped, cut) per block.

    A line longer than `MAX_LINE_BYTES` arrives cut, ending in `CUT` (`Utf8Stream`): what is held of
    a line is bounded, however long the line is.
    """
    with open_text(path, cfg.encoding) as stream:
        parts: list[bytes] = []  # the line begun in earlier blocks
        first, start = True, 1
        while True:
            buf = stream.read(cfg.block_bytes)
            if first:
                buf, first = buf.removeprefix(codecs.BOM_UTF8), False
            end = buf.rfind(b"\n")
            if buf and end < 0:
                parts.append(buf)
                continue
            head = buf[:end] if buf else b""
            block = b"".join([*parts, head]) if any(parts) else head
            parts = [buf[end + 1 :]] if buf else []
            if buf or block:
                lines = pc.split_pattern(pa.array([block], pa.large_binary()), pattern=b"\n").flatten()
                yield lines, start, stream.escaped, stream.cut > 0
                start += len(lines)
            if not buf:
                return


def _text_batches(path: Path, cfg: IngestConfig, fmt: str) -> Iterator[ReaderBatch]:
    names = ["label", "text"] if fmt in ("labelled", "fasttext") else ["text"]
    if fmt == "text" and cfg.text_columns == ("text",):
        names = ["text"]
    resolve_columns(path, names, replace(cfg, id_column=None))
    sep = cfg.label_sep
    prefix = cfg.label_prefix or ("__label__" if fmt == "fasttext" else "")
    for lines, start, escaped, cut in _line_blocks(path, cfg):
        n = len(lines)
        reason: list[str | None] = [None] * n
        detail: list[str | None] = [None] * n
        raw: list[str | None] = [None] * n
        if cut:
            lines = _quarantine_cut(lines, reason, detail, raw)
        text, bad_bytes = decode(lines, escaped=escaped)
        s = pl.Series("l", text).str.strip_suffix("\r")
        for i in np.flatnonzero(bad_bytes).tolist():
            reason[i], detail[i], raw[i] = UNDECODABLE, "not valid " + cfg.encoding, show(lines[i].as_py())
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
                no_label = f"no label: no {sep!r}" if sep else "no label: no whitespace"
                detail[i] = "blank line" if blank else no_label + (f" or no {prefix!r}" if prefix else "")
                raw[i] = s[i]
            cols["label"], cols["text0"] = label.to_arrow(), parts["text"].to_arrow()
        yield ReaderBatch(np.arange(start, start + n, dtype=np.int64), cols, reason, detail, raw)


def _quarantine_cut(
    lines: pa.Array, reason: list[str | None], detail: list[str | None], raw: list[str | None]
) -> pa.Array:
    """Give the lines `Utf8Stream` cut their reason; `lines` without them (null: nothing to parse)."""
    hit = cut_rows(lines)
    for i in np.flatnonzero(hit).tolist():
        reason[i], detail[i], raw[i] = TOO_LONG, LONG_LINE, show_cut(_head(lines.slice(i, 1))[0].as_py())
    return drop_values(lines, hit)


def _re_escape(s: str) -> str:
    return "".join(c if c.isalnum() else f"\\x{{{ord(c):X}}}" for c in s)


_SURROGATE = re.compile("[\ud800-\udfff]")


def _json_value(obj: dict[str, Any], key: str | None) -> str | None:
    """A field of a JSON Lines record as text: strings as they are, numbers and booleans as JSON."""
    v = obj.get(key) if key else None
    if v is None:
        return None
    if isinstance(v, dict | list):
        msg = f"`{key}` is not a string or number"
        raise ValueError(msg)
    s = v if isinstance(v, str) else json.dumps(v)
    if m := _SURROGATE.search(s):
        msg = f"`{key}` holds a lone surrogate \\u{ord(m.group()):04x}: an escape that is no character"
        raise ValueError(msg)
    return s


def _jsonl_batches(path: Path, cfg: IngestConfig) -> Iterator[ReaderBatch]:
    keys: dict[str, str | None] = {f"text{i}": c for i, c in enumerate(cfg.text_columns)}
    keys |= {"label": cfg.label_column, "id": cfg.id_column}
    seen_text = False
    for lines, start, escaped, cut in _line_blocks(path, cfg):
        n = len(lines)
        reason: list[str | None] = [None] * n
        detail: list[str | None] = [None] * n
        raw: list[str | None] = [None] * n
        if cut:
            lines = _quarantine_cut(lines, reason, detail, raw)
        text, bad_bytes = decode(lines, escaped=escaped)
        vals: dict[str, list[str | None]] = {k: [None] * n for k in keys}
        for i, t in enumerate(text.to_pylist()):
            if reason[i] is not None:
                continue
            if bad_bytes[i]:
                reason[i], detail[i], raw[i] = (
                    UNDECODABLE,
                    f"not valid {cfg.encoding}",
                    show(lines[i].as_py()),
                )
                continue
            if not t.strip():
                reason[i], detail[i], raw[i] = EMPTY_TEXT, "blank line", t
                continue
            try:
                obj = json.loads(t)
                if not isinstance(obj, dict):
                    raise ValueError(f"not a JSON object but {type(obj).__name__}")
                row = {role: _json_value(obj, key) for role, key in keys.items()}
            except ValueError as e:
                reason[i], detail[i], raw[i] = MALFORMED, str(e)[:200], t
                continue
            except RecursionError:
                reason[i], detail[i], raw[i] = MALFORMED, "nested too deeply", t[:10_000]
                continue
            for role, v in row.items():
                vals[role][i] = v
            if all(obj.get(c) is None for c in cfg.text_columns):
                detail[i] = f"no field {' or '.join(f'`{c}`' for c in cfg.text_columns)}"
            else:
                seen_text = True
        if not seen_text and any(r is None for r in reason):
            msg = (
                f"{path}: no line of the first {start + n - 1} has a field {list(cfg.text_columns)}; "
                f"hint: choose the text field with --text-column"
            )
            raise InputError(msg)
        cols = {role: pa.array(v, pa.string()) for role, v in vals.items() if keys[role]}
        yield ReaderBatch(np.arange(start, start + n, dtype=np.int64), cols, reason, detail, raw)


def _is_scalar(t: pa.DataType) -> bool:
    """A column type whose values read as one text each (not a list, struct, map or union)."""
    if pa.types.is_dictionary(t):
        return _is_scalar(t.value_type)
    return not pa.types.is_nested(t)


def _parquet_batches(path: Path, cfg: IngestConfig) -> Iterator[ReaderBatch]:
    """Batches of 65,536 rows. pyarrow decodes a value whole, so its memory bound is the file's
    largest page, not `MAX_LINE_BYTES`: a longer value is quarantined and dropped as soon as read."""
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as e:
        msg = f"{path}: cannot read as Parquet ({e}); hint: check --format"
        raise InputError(msg) from None
    schema = pf.schema_arrow
    roles = {r: schema.names[i] for r, i in resolve_columns(path, schema.names, cfg).items()}
    for role, name in roles.items():
        t = schema.field(name).type
        if not _is_scalar(t):
            what = "a text column" if role.startswith("text") else f"the {role} column"
            msg = f"{path}: column `{name}` ({what}) holds {t}, not text; hint: choose another column"
            raise InputError(msg)
    start = 1
    with pf:
        for batch in pf.iter_batches(batch_size=65_536, columns=sorted(set(roles.values()))):
            n = batch.num_rows
            cols = {r: _as_text(batch.column(c)) for r, c in roles.items()}
            reason: list[str | None] = [None] * n
            detail: list[str | None] = [None] * n
            raw: list[str | None] = [None] * n
            long = np.zeros(n, dtype=bool)  # a value over the cap: quarantined, dropped before cleaning
            for r, c in cols.items():
                over = pc.fill_null(pc.greater(pc.binary_length(c), MAX_LINE_BYTES), False)
                over = over.to_numpy(zero_copy_only=False)
                for i in np.flatnonzero(over & ~long).tolist():
                    reason[i], detail[i] = TOO_LONG, f"`{roles[r]}`: {LONG_VALUE}"
                    raw[i] = show_cut(_head(c.slice(i, 1))[0].as_py())
                long |= over
            if long.any():
                cols = {r: drop_values(c, long) for r, c in cols.items()}
            yield ReaderBatch(np.arange(start, start + n, dtype=np.int64), cols, reason, detail, raw)
            start += n


def _head(values: pa.Array) -> pa.Array:
    """The first 1,000 characters (or 4,000 bytes) of each value, for the quarantine."""
    if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
        return pc.utf8_slice_codeunits(values, 0, 1000)
    return pc.binary_slice(values, 0, 4000)


def _as_text(col: pa.Array) -> pa.Array:
    """A Parquet column as strings, or as binary when it is binary (`batch_frame` checks its UTF-8)."""
    if pa.types.is_dictionary(col.type):
        col = col.dictionary_decode()
    t = col.type
    if any(f(t) for f in (pa.types.is_binary, pa.types.is_large_binary, pa.types.is_binary_view)):
        return col.cast(pa.large_binary())
    if pa.types.is_fixed_size_binary(t):
        return col.cast(pa.binary()).cast(pa.large_binary())
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        return col
    return pc.cast(col, pa.string())


def read_source(path: Path, cfg: IngestConfig) -> Iterator[ReaderBatch]:
    """The batches of one source; anything but a bad row is an `InputError` naming the file."""
    fmt = source_format(path, cfg)
    if fmt == "parquet":
        batches = _parquet_batches(path, cfg)
    elif fmt in ("csv", "tsv"):
        batches = csv_batches(path, cfg, "," if fmt == "csv" else "\t")
    elif fmt == "jsonl":
        batches = _jsonl_batches(path, cfg)
    else:
        batches = _text_batches(path, cfg, fmt)
    try:
        yield from batches
    except (OSError, pa.ArrowException) as e:
        msg = f"{path}: cannot read it as {fmt} ({e}); hint: the file may be damaged or cut short"
        raise InputError(msg) from None
