"""The CSV/TSV reader: pyarrow's streaming CSV parser over the decoded bytes of `decoding`.

Malformed records (a wrong column count, broken quoting) are caught by pyarrow's `invalid_row_handler`
and kept, in order, as bad records; physical line numbers count the newlines inside quoted values; an
unclosed final quote is told apart from a closed one (`_unclosed`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from pipeline.errors import InputError
from pipeline.ingest.batch import ReaderBatch, resolve_columns
from pipeline.ingest.decoding import CUT, cut_rows, drop_values, open_text, show, show_cut
from pipeline.ingest.options import EMPTY_TEXT, LONG_LINE, MALFORMED, TOO_LONG, IngestConfig

_LINE_ENDS = b"\r\n"  # a record ends at either (pyarrow's rule): so does a line `Utf8Stream` may cut


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


def csv_batches(path: Path, cfg: IngestConfig, delimiter: str) -> Iterator[ReaderBatch]:
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
            open_text(path, cfg.encoding, line_ends=_LINE_ENDS) as s,
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
    roles = {r: f"c{i}" for r, i in resolve_columns(path, names, cfg).items()}
    internal = [f"c{i}" for i in range(width)]  # header names may repeat; positions do not
    bad.clear()
    # Records are counted by pyarrow (`InvalidRow.number`, header included); lines by counting the
    # newlines inside each record (every column is read, so that count is exact). Columns are read as
    # strings unchecked: `open_text` gives valid UTF-8 (bad bytes escaped), and fields split at ASCII.
    record = 1 + int(cfg.header)
    line = 1 + (sum(n.count("\n") for n in names) + 1 if cfg.header else 0)
    pending: list[pacsv.InvalidRow] = []
    held: ReaderBatch | None = None  # the last batch waits: its last record may hold an unclosed quote
    last_value: str | None = None  # the last field of the last record, when that record parsed
    with open_text(path, cfg.encoding, quote, line_ends=_LINE_ENDS) as stream:
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
                    if stream.cut:
                        _quarantine_cut(out)
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


def _quarantine_cut(b: ReaderBatch) -> None:
    """Records holding a line `Utf8Stream` cut (parsed or not) are too long; their values go."""
    hit = np.array([r is not None and CUT in r for r in b.raw], dtype=bool)
    for arr in b.cols.values():
        hit |= cut_rows(arr)
    for i in np.flatnonzero(hit).tolist():
        values = [b.raw[i]] if b.raw[i] is not None else [a[i].as_py() for a in b.cols.values()]
        b.reason[i], b.detail[i] = TOO_LONG, LONG_LINE
        b.raw[i] = show_cut(next(v for v in values if v is not None and CUT in v))
    if hit.any():
        b.cols = {r: drop_values(a, hit) for r, a in b.cols.items()}


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
) -> tuple[ReaderBatch, int]:
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
    return ReaderBatch(lines, cols, reason, detail, raw), int(nl.sum())


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
