"""Ingest readers: a source file -> batches of records, whatever its format, compression and encoding.

Format detection (`source_format`, `check_source`), one batch reader per format (CSV/TSV, plain and
labelled lines, JSON Lines, Parquet) over the decoded bytes of `decoding`, `_frame` to turn a batch
into a polars frame, `_prefetch` to read ahead in a thread and `_ordered_map` to work on several
batches at once. A reader never raises anything but `InputError`: a row it cannot parse is a bad
record with its reason, a file it cannot read an error.
"""

from __future__ import annotations

import codecs
import json
import queue
import re
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
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
from pipeline.ingest import decoding
from pipeline.ingest.decoding import decode, open_text, show
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
    escaped: bool = False  # the stream escaped undecodable bytes: values may hold escapes


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


def _resolve(path: Path, names: list[str], cfg: IngestConfig) -> dict[str, int]:
    """Map each role (text0.., label, id) to a column index; a clear error for a wrong choice."""

    def find(spec: str, what: str) -> int | None:
        if names.count(spec) > 1:
            msg = (
                f"{path}: the header names {what} `{spec}` {names.count(spec)} times; "
                f"hint: choose one by its 1-based position"
            )
            raise InputError(msg)
        if spec in names:
            return names.index(spec)
        if spec.isdigit() and 1 <= int(spec) <= len(names):
            return int(spec) - 1
        return None

    hint = ""
    if any("\x00" in n for n in names):
        hint = "; the header holds NUL bytes: is the file UTF-16? (--encoding utf-16)"
    roles: dict[str, int] = {}
    for i, spec in enumerate(cfg.text_columns):
        idx = find(spec, "the text column")
        if idx is None:
            msg = (
                f"{path}: no column `{spec}` (a text column); it has {names}; hint: choose it with "
                f"--text-column NAME or a 1-based position (--no-header when there is no header row){hint}"
            )
            raise InputError(msg)
        roles[f"text{i}"] = idx
    for role, spec, flag in (
        ("label", cfg.label_column, "--label-column"),
        ("id", cfg.id_column, "--id-column"),
    ):
        if not spec:
            continue
        idx = find(spec, f"the {role} column")
        if idx is None and spec != role:  # the defaults "label" and "id" are optional
            msg = f"{path}: no column `{spec}` (the {role} column); it has {names}; hint: check {flag}{hint}"
            raise InputError(msg)
        if idx is not None:
            roles[role] = idx
    return roles


def _csv_error(path: Path, e: Exception, where: str, block: int) -> InputError:
    if "straddl" in str(e):  # pyarrow: a record longer than the block it reads
        msg = (
            f"{path}: {where}: a record is longer than the read block ({block:,} bytes); "
            f"hint: a text that long is over --max-text-chars anyway: split or remove it, or check "
            f"--quote (an unclosed quote makes the rest of the file one record)"
        )
    else:
        msg = f"{path}: {where}: {e}; hint: check --format, --delimiter, --quote and --encoding"
    return InputError(msg)


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
    block = max(cfg.block_bytes, 1 << 16)  # the header probe
    try:
        with (
            open_text(path, cfg.encoding) as s,
            pacsv.open_csv(
                s,
                read_options=pacsv.ReadOptions(
                    use_threads=False, block_size=block, autogenerate_column_names=not cfg.header
                ),
                parse_options=parse,
            ) as probe,
        ):
            width = len(probe.schema.names)
            names = probe.schema.names if cfg.header else [str(i + 1) for i in range(width)]
    except pa.ArrowInvalid as e:
        if "Empty CSV file" in str(e):
            return
        raise _csv_error(path, e, "cannot read the first rows as delimited text", block) from None
    roles = {r: f"c{i}" for r, i in _resolve(path, names, cfg).items()}
    internal = [f"c{i}" for i in range(width)]  # header names may repeat; positions do not
    bad.clear()
    # Records are counted by pyarrow (`InvalidRow.number`, header included); lines by counting the
    # newlines inside each record (every column is read, so that count is exact). Columns are read as
    # strings unchecked: `open_text` gives valid UTF-8 (bad bytes escaped), and fields split at ASCII.
    record = 1 + int(cfg.header)
    line = 1 + (sum(n.count("\n") for n in names) + 1 if cfg.header else 0)
    pending: list[pacsv.InvalidRow] = []
    held: _Batch | None = None  # the last batch waits: its last record may hold an unclosed quote
    last_value: str | None = None  # the last field of the last record, when that record parsed
    with open_text(path, cfg.encoding, quote) as stream:
        try:
            reader = pacsv.open_csv(
                stream,
                read_options=pacsv.ReadOptions(
                    use_threads=False,
                    block_size=cfg.block_bytes,
                    column_names=internal,
                    skip_rows=int(cfg.header),
                ),
                parse_options=parse,
                convert_options=pacsv.ConvertOptions(
                    column_types={n: pa.string() for n in internal},
                    check_utf8=False,
                    quoted_strings_can_be_null=False,
                    strings_can_be_null=False,
                ),
            )
        except pa.ArrowInvalid as e:
            raise _csv_error(path, e, f"after line {line}", cfg.block_bytes) from None
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
                while take < len(pending) and (
                    batch is None or pending[take].number < record + n_good + take
                ):
                    take += 1
                mine, pending = pending[:take], pending[take:]
                total = n_good + len(mine)
                if total:
                    out, nl = _csv_batch(batch, roles, mine, record, line, total, stream.quoted)
                    out.escaped = stream.escaped
                    if held is not None:
                        yield held
                    held = out
                    last_bad = bool(mine) and mine[-1].number == record + total - 1
                    last_value = None if batch is None or last_bad else batch.column(width - 1)[-1].as_py()
                    record += total
                    line += total + nl
                if batch is None:
                    break
        except pa.ArrowInvalid as e:
            raise _csv_error(path, e, f"after line {line}", cfg.block_bytes) from None
        finally:
            reader.close()
        if held is not None:
            if quote and last_value is not None and _unclosed(last_value, stream.tail, quote.encode()):
                held.reason[-1], held.raw[-1] = MALFORMED, show(last_value)
                held.detail[-1] = f"a {quote} opened in this record is never closed (it runs to the end)"
            yield held


def _unclosed(last_value: str, tail: bytes, quote: bytes) -> bool:
    """Whether the file ended inside a quoted last field (pyarrow reads that as a field, to the end).

    A field holding a newline was quoted. Closed, it ends in an odd run of quotes (escaped pairs,
    then the closing one), the file's last bytes but line ends; unclosed, in an even run, maybe none.
    """
    if "\n" not in last_value and "\r" not in last_value:
        return False
    end = tail.rstrip(b"\r\n")
    run = len(end) - len(end.rstrip(quote))
    return run % 2 == 0 and run < len(end)


def _csv_batch(
    batch: pa.RecordBatch | None,
    roles: dict[str, str],
    bad: list[pacsv.InvalidRow],
    record: int,
    line: int,
    total: int,
    quoted: bool,
) -> tuple[_Batch, int]:
    """One reader batch plus the newlines inside its records (lines = records + newlines).

    Only a quoted value can hold a newline: values are looked at only once the file has shown a quote.
    """
    is_bad = np.zeros(total, dtype=bool)
    nl = np.zeros(total, dtype=np.int64)
    bad_pos = np.array([r.number - record for r in bad], dtype=np.int64)
    is_bad[bad_pos] = True
    nl[bad_pos] = [r.text.count("\n") for r in bad]
    good_pos = np.flatnonzero(~is_bad)
    if batch is not None and len(good_pos) and quoted:
        per_row = np.zeros(len(good_pos), dtype=np.int64)
        for c in batch.columns:
            if _has_newline(c):  # rare: a quoted value spanning lines; counting per value is slow
                per_row += pc.count_substring(c, pattern="\n").to_numpy(zero_copy_only=False)
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
        raw[pos] = show(r.text)
    cols = {}
    for role, name in roles.items():
        vals = batch.column(name) if batch is not None else pa.array([], pa.string())
        cols[role] = _scatter(vals, good_pos, total)
    return _Batch(lines, cols, reason, detail, raw), int(nl.sum())


def _has_newline(values: pa.Array) -> bool:
    """Whether any value of a string array holds a newline: one vectorised scan of its bytes."""
    assert pa.types.is_string(values.type)
    _, offsets, data = values.buffers()
    off = np.frombuffer(offsets, np.int32)[values.offset : values.offset + len(values) + 1]
    if data is None or not len(off) or off[-1] == off[0]:
        return False
    return bool((np.frombuffer(data, np.uint8)[off[0] : off[-1]] == ord("\n")).any())


def _scatter(values: pa.Array, pos: np.ndarray, total: int) -> pa.Array:
    """`values` placed at `pos` in an array of `total` nulls."""
    if len(pos) == total:
        return values
    idx = np.full(total, -1, dtype=np.int64)
    idx[pos] = np.arange(len(pos))
    return pc.take(values, pa.array(idx, mask=idx < 0))


def _line_blocks(path: Path, cfg: IngestConfig) -> Iterator[tuple[pa.Array, int, bool]]:
    """(lines as binary without their end of line, number of the first line, escaped) per block."""
    with open_text(path, cfg.encoding) as stream:
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
                yield lines, start, stream.escaped
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
    for lines, start, escaped in _line_blocks(path, cfg):
        n = len(lines)
        text, bad_bytes = decode(lines, escaped=escaped)
        s = pl.Series("l", text).str.strip_suffix("\r")
        reason: list[str | None] = [UNDECODABLE if b else None for b in bad_bytes]
        detail: list[str | None] = ["not valid " + cfg.encoding if b else None for b in bad_bytes]
        raw = [show(lines[i].as_py()) if b else None for i, b in enumerate(bad_bytes)]
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
        yield _Batch(np.arange(start, start + n, dtype=np.int64), cols, reason, detail, raw)


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


def _jsonl_batches(path: Path, cfg: IngestConfig) -> Iterator[_Batch]:
    keys: dict[str, str | None] = {f"text{i}": c for i, c in enumerate(cfg.text_columns)}
    keys |= {"label": cfg.label_column, "id": cfg.id_column}
    seen_text = False
    for lines, start, escaped in _line_blocks(path, cfg):
        text, bad_bytes = decode(lines, escaped=escaped)
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
        yield _Batch(np.arange(start, start + n, dtype=np.int64), cols, reason, detail, raw)


def _is_scalar(t: pa.DataType) -> bool:
    """A column type whose values read as one text each (not a list, struct, map or union)."""
    if pa.types.is_dictionary(t):
        return _is_scalar(t.value_type)
    return not pa.types.is_nested(t)


def _parquet_batches(path: Path, cfg: IngestConfig) -> Iterator[_Batch]:
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as e:
        msg = f"{path}: cannot read as Parquet ({e}); hint: check --format"
        raise InputError(msg) from None
    schema = pf.schema_arrow
    roles = {r: schema.names[i] for r, i in _resolve(path, schema.names, cfg).items()}
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
            yield _Batch(
                np.arange(start, start + n, dtype=np.int64), cols, [None] * n, [None] * n, [None] * n
            )
            start += n


def _as_text(col: pa.Array) -> pa.Array:
    """A Parquet column as strings, or as binary when it is binary (`_frame` checks its UTF-8)."""
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


def _read_source(path: Path, cfg: IngestConfig) -> Iterator[_Batch]:
    """The batches of one source; anything but a bad row is an `InputError` naming the file."""
    fmt = source_format(path, cfg)
    if fmt == "parquet":
        batches = _parquet_batches(path, cfg)
    elif fmt in ("csv", "tsv"):
        batches = _csv_batches(path, cfg, "," if fmt == "csv" else "\t")
    elif fmt == "jsonl":
        batches = _jsonl_batches(path, cfg)
    else:
        batches = _text_batches(path, cfg, fmt)
    try:
        yield from batches
    except (OSError, pa.ArrowException) as e:
        msg = f"{path}: cannot read it as {fmt} ({e}); hint: the file may be damaged or cut short"
        raise InputError(msg) from None


def _frame(b: _Batch, n_text: int) -> pl.DataFrame:
    """A reader batch as one frame: line, id, raw text, label, reader reason/detail/raw."""
    cols: dict[str, Any] = {"line": pl.Series(b.line, dtype=pl.Int64)}
    undecodable = np.zeros(len(b.line), dtype=bool)
    for role, arr in b.cols.items():
        if pa.types.is_binary(arr.type) or pa.types.is_large_binary(arr.type) or b.escaped:
            arr, bad = decode(arr, escaped=b.escaped)
            if any(bad):
                undecodable |= np.array(bad, dtype=bool)
        cols[role] = pl.Series(arr).cast(pl.String)
    reason, detail, raw = list(b.reason), list(b.detail), list(b.raw)
    for i in np.flatnonzero(undecodable).tolist():
        if reason[i] is None:
            reason[i], detail[i] = UNDECODABLE, "not valid UTF-8 (after --encoding)"
            raw[i] = "\t".join(show(b.cols[r][i].as_py() or b"") for r in b.cols)

    def col(role: str) -> pl.Expr:
        return pl.col(role) if role in cols else pl.lit(None, dtype=pl.String).alias(role)

    texts = [col(f"text{i}") for i in range(n_text)]
    return pl.DataFrame(cols).select(
        "line",
        col("id"),
        (pl.concat_str(texts, separator=" ", ignore_nulls=True) if n_text > 1 else texts[0]).alias("raw"),
        col("label"),
        *(_strings(name, v) for name, v in (("reason", reason), ("detail", detail), ("reader_raw", raw))),
    )


def _strings(name: str, values: list[str | None]) -> pl.Series | pl.Expr:
    if values.count(None) == len(values):  # the common case, without a Python object per row
        return pl.lit(None, dtype=pl.String).alias(name)
    return pl.Series(name, values, dtype=pl.String)


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
