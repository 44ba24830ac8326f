"""Ingest readers: a source file -> batches of records, whatever its format, compression and encoding.

Format detection (`source_format`), decoding (gzip/zstd from the bytes, `--encoding` through a
transcoder), one batch reader per format (CSV/TSV, plain and labelled lines, JSON Lines, Parquet),
`_frame` to turn a batch into a polars frame, and `_prefetch` to read ahead in a thread.
"""

from __future__ import annotations

import codecs
import json
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from pipeline.errors import InputError
from pipeline.ingest.options import EMPTY_TEXT, FORMATS, MALFORMED, UNDECODABLE, IngestConfig

# A reader yields `_Batch`es: every record it saw, good or bad, in file order, with its line.
# Bad records already carry a reason (malformed, undecodable); validation gives the rest theirs.

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
