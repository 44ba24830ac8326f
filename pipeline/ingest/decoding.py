"""Ingest decoding: a source's bytes -> a stream of valid UTF-8, whatever its compression and encoding.

Compression (gzip, zstd) is detected from the bytes. Every text source is read through `Utf8Stream`,
which decodes `--encoding` and passes valid UTF-8 through untouched; a byte that is not valid becomes
an escape character (`ESCAPE_BASE + byte`, in Unicode's last private-use plane), so that what reaches
pyarrow and polars is always valid UTF-8 (pyarrow cannot even report a bad CSV row holding invalid
bytes). `decode` then flags each value holding an escape as undecodable, and `show` writes the
original bytes back as `\\xNN` for the quarantine.

`check_source` looks at the first bytes before anything is written: a file that cannot be
decompressed, a binary file (Parquet, Arrow, zip) named as text, or UTF-16/32 read as UTF-8 is a
clear error naming the file, not thousands of undecodable rows.
"""

from __future__ import annotations

import codecs
import re
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.errors import InputError
from pipeline.ingest.options import MAX_LINE_BYTES

ESCAPE_BASE = 0x10FC00  # undecodable byte b -> chr(ESCAPE_BASE + b): U+10FC00..U+10FCFF, private use
_ESCAPE = "pipeline-ingest-escape"
_ESCAPE_RE = "[\U0010fc00-\U0010fcff]"
_ESCAPE_PY = re.compile(_ESCAPE_RE)
_ESCAPE_PREFIX = chr(ESCAPE_BASE).encode()[:2]  # the first two UTF-8 bytes of every escape
# Ends a line `Utf8Stream` cut at MAX_LINE_BYTES: U+10FD00, the private-use character after the escapes.
CUT = chr(ESCAPE_BASE + 0x100)
_KEEP = MAX_LINE_BYTES - 8  # bytes of a cut line passed on: with CUT and a quote, no line is longer


def _escape_error(e: UnicodeError) -> tuple[str, int]:
    """Codec error handler: each undecodable byte, or each byte of an unencodable character, escaped."""
    if isinstance(e, UnicodeDecodeError):
        bad = e.object[e.start : e.end]
    elif isinstance(e, UnicodeEncodeError):  # a lone surrogate a codec produced: its bytes, escaped
        bad = e.object[e.start : e.end].encode("utf-8", "surrogatepass")
    else:
        raise e
    return "".join(chr(ESCAPE_BASE + b) for b in bad), e.end


codecs.register_error(_ESCAPE, _escape_error)

_GZIP, _ZSTD = b"\x1f\x8b", b"\x28\xb5\x2f\xfd"
# Binary formats that are sometimes named .csv or .txt: (magic bytes, what it is, hint)
_MAGIC = [
    (b"PAR1", "a Parquet file", "pass --format parquet or name it .parquet"),
    (b"ARROW1", "an Arrow IPC file", "convert it to Parquet or CSV"),
    (b"PK\x03\x04", "a zip archive (a spreadsheet?)", "unzip it, or save the sheet as CSV"),
    (b"%PDF", "a PDF document", "extract its text first"),
]
_BOMS = [
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
]


def compression(path: Path) -> str | None:
    with open(path, "rb") as f:
        head = f.read(4)
    return "gzip" if head[:2] == _GZIP else "zstd" if head == _ZSTD else None


def is_utf8(encoding: str) -> bool:
    return codecs.lookup(encoding).name == "utf-8"


def check_source(path: Path, fmt: str, encoding: str) -> None:
    """Fail early, naming the file, on what no row of it could survive (see the module doc)."""
    kind = compression(path)
    try:
        with pa.input_stream(str(path), compression=kind) as s:
            head = s.read(8)
    except (OSError, pa.ArrowInvalid) as e:
        msg = f"{path}: cannot decompress it as {kind} ({e}); hint: the file is damaged or cut short"
        raise InputError(msg) from None
    if fmt == "parquet":
        return
    for magic, what, hint in _MAGIC:
        if head.startswith(magic):
            msg = f"{path}: this is {what}, not {fmt}; hint: {hint}"
            raise InputError(msg)
    if is_utf8(encoding):
        for bom, name in _BOMS:
            if head.startswith(bom):
                msg = f"{path}: starts with a {name.upper()} byte-order mark; hint: pass --encoding {name}"
                raise InputError(msg)


def open_text(path: Path, encoding: str, quote: str = "", *, line_ends: bytes = b"\n") -> Utf8Stream:
    """The bytes of a text source, decompressed, as valid UTF-8 with its long lines cut (`Utf8Stream`)."""
    raw = pa.input_stream(str(path), compression=compression(path))
    return Utf8Stream(raw, encoding, quote, line_ends=line_ends)


class Utf8Stream:
    """A read-only byte stream: `raw` decoded from `encoding`, as valid UTF-8 with escaped bad bytes,
    and no line longer than `MAX_LINE_BYTES`.

    Valid UTF-8 input is passed through as is (only checked, by Arrow). `escaped` says whether a
    byte may have been escaped so far, so readers look for escapes only once there may be some;
    `quoted` whether `quote` has appeared so far (CSV: only a quoted value can hold a newline);
    `tail` holds the last bytes read (CSV: was the last quote closed?).

    A line (up to any byte of `line_ends`) longer than `MAX_LINE_BYTES` comes out as its first
    `MAX_LINE_BYTES - 8` bytes and `CUT`, then its end of line; the rest of it is read and dropped,
    a chunk at a time, so no reader ever holds more of it. `cut` counts such lines: a reader looks for
    `CUT` once there is one (`cut_rows`). Where the dropped part held an odd number of `quote`s, one
    follows `CUT`, so the records after it are quoted as they were.
    """

    _CHUNK = 1 << 20

    def __init__(self, raw: Any, encoding: str, quote: str = "", *, line_ends: bytes = b"\n") -> None:
        self._raw = raw
        self._quote = quote.encode()
        self._utf8 = is_utf8(encoding)
        self._dec = None if self._utf8 else codecs.getincrementaldecoder(encoding)(errors=_ESCAPE)
        self._rest = b""  # UTF-8: an incomplete character at the end of the last chunk
        self._buf = b""
        self._eof = False
        self._ends = [bytes([b]) for b in line_ends]
        self._line = 0  # bytes of the current line passed on so far (at most _KEEP)
        self._held = b""  # bytes of the current line past _KEEP, passed on once it ends in time
        self._skipping = False  # dropping the rest of a cut line
        self._quotes = 0  # quotes in what was dropped of it
        self.escaped = False
        self.quoted = False
        self.tail = b""
        self.cut = 0
        self.closed = False

    def _convert(self, chunk: bytes) -> bytes:
        final = not chunk
        if self._dec is not None:
            text = self._dec.decode(chunk, final=final)
        else:
            data = self._rest + chunk
            n = len(data) if final else _complete(data)
            if _valid_utf8(data, n):  # the common case, checked by Arrow (several times Python's speed)
                self._rest = data[n:]
                return data[:n]
            text, n = codecs.utf_8_decode(data, _ESCAPE, final)
            self._rest = data[n:]
        out = text.encode("utf-8", _ESCAPE)
        self.escaped = self.escaped or _ESCAPE_PREFIX in out  # a cheap test; `decode` looks closer
        return out

    def read(self, n: int = -1) -> bytes:
        parts, size = [self._buf], len(self._buf)
        while not self._eof and (n < 0 or size < n):
            chunk = self._raw.read(self._CHUNK if n < 0 else max(n - size, self._CHUNK))
            self._eof = not chunk
            out = self._cap_lines(self._convert(chunk), final=self._eof)
            parts.append(out)
            size += len(out)
        data = parts[-1] if len(parts) == 2 and not parts[0] else b"".join(parts)  # no copy if one part
        out, self._buf = (data, b"") if n < 0 or len(data) <= n else (data[:n], data[n:])
        if out:
            self.tail = (self.tail + out[-8:])[-8:]
            self.quoted = self.quoted or (bool(self._quote) and self._quote in out)
        return out

    def _cap_lines(self, out: bytes, *, final: bool) -> bytes:
        """`out` (the next converted bytes) with every line over `MAX_LINE_BYTES` cut (see the class).

        Each step looks for the last line end within the bytes the current line may still have: one
        search (from the end back) per `MAX_LINE_BYTES` of input, not one per line.
        """
        if self._held:
            out, self._held = self._held + out, b""
        pieces: list[bytes] = []
        p = start = 0  # p: where the current line goes on in `out`; start: what is not passed on yet
        if self._skipping:
            q = self._find_end(out, 0)
            if q < 0:
                self._quotes += out.count(self._quote) if self._quote else 0
                return self._cut_mark() if final else b""
            self._quotes += out.count(self._quote, 0, q) if self._quote else 0
            pieces.append(self._cut_mark())
            p = start = q
        while True:
            room = MAX_LINE_BYTES - self._line  # bytes the current line may still have
            q = self._rfind_end(out, p, min(len(out), p + room + 1))
            if q >= 0:
                p, self._line = q + 1, 0
                continue
            if len(out) - p <= room:  # `out` ends inside a line that is not too long (yet)
                keep = len(out) if final else min(len(out), p + _KEEP - self._line)
                keep = _char_start(out, keep, p)
                pieces.append(out[start:keep])
                self._line += keep - p
                self._held = out[keep:]
                break
            cut = _char_start(out, p + _KEEP - self._line, p)  # too long: its first _KEEP bytes are kept
            pieces.append(out[start:cut])
            self.cut += 1
            self._line, self._quotes = 0, 0
            q = self._find_end(out, p + room + 1)
            if q < 0:
                self._skipping = True
                self._quotes = out.count(self._quote, cut) if self._quote else 0
                if final:
                    pieces.append(self._cut_mark())
                break
            self._quotes = out.count(self._quote, cut, q) if self._quote else 0
            pieces.append(self._cut_mark())
            p = start = q
        return out if len(pieces) == 1 and len(pieces[0]) == len(out) else b"".join(pieces)

    def _cut_mark(self) -> bytes:
        mark = CUT.encode() + (self._quote if self._quotes % 2 else b"")
        self._skipping, self._quotes = False, 0
        return mark

    def _find_end(self, data: bytes, start: int) -> int:
        found = [i for i in (data.find(e, start) for e in self._ends) if i >= 0]
        return min(found, default=-1)

    def _rfind_end(self, data: bytes, start: int, stop: int) -> int:
        return max(data.rfind(e, start, stop) for e in self._ends)

    def close(self) -> None:
        self.closed = True
        self._raw.close()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def __enter__(self) -> Utf8Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _complete(data: bytes) -> int:
    """The length of `data` less an incomplete UTF-8 character at its end (kept for the next chunk)."""
    for i in range(1, min(4, len(data)) + 1):
        b = data[-i]
        if b < 0x80:
            break
        if b >= 0xC0:  # the lead byte of a character of 2, 3 or 4 bytes
            need = 2 if b < 0xE0 else 3 if b < 0xF0 else 4
            return len(data) - i if i < need else len(data)
    return len(data)  # what is left is either complete or invalid: validation tells


def _char_start(data: bytes, i: int, low: int) -> int:
    """`i`, or the start of the UTF-8 character `data[i]` is inside of (not before `low`)."""
    while low < i < len(data) and data[i] & 0xC0 == 0x80:
        i -= 1
    return i


def _valid_utf8(data: bytes, n: int) -> bool:
    """Whether `data[:n]` is valid UTF-8, checked without copying it."""
    offsets = pa.py_buffer(np.array([0, n], dtype=np.int64))
    try:
        pa.Array.from_buffers(pa.large_string(), 1, [None, offsets, pa.py_buffer(data)]).validate(full=True)
    except pa.ArrowInvalid:
        return False
    return True


def decode(values: pa.Array, *, escaped: bool) -> tuple[pa.Array, list[bool]]:
    """Binary or string values -> UTF-8 strings; undecodable values (invalid bytes, escapes) become null.

    `escaped`: the stream they came from escaped some bytes, so look for escapes.
    """
    try:
        out = values.cast(pa.large_string())
    except pa.ArrowInvalid:  # invalid UTF-8 that did not come through a Utf8Stream (a Parquet column)
        texts: list[str | None] = []
        flags: list[bool] = []
        for v in values.to_pylist():
            try:
                texts.append(None if v is None else v.decode("utf-8"))
                flags.append(False)
            except UnicodeDecodeError:
                texts.append(None)
                flags.append(True)
        return pa.array(texts, pa.large_string()), flags
    if not escaped:
        return out, [False] * len(values)
    hit = pc.fill_null(pc.match_substring_regex(out, _ESCAPE_RE), False)
    if not pc.any(hit).as_py():
        return out, [False] * len(values)
    return pc.if_else(hit, pa.scalar(None, pa.large_string()), out), hit.to_pylist()


def cut_rows(values: pa.Array) -> np.ndarray:
    """Which values (binary or string) hold `CUT`: a line `Utf8Stream` cut, or a record holding one."""
    return pc.fill_null(pc.match_substring(values, CUT), False).to_numpy(zero_copy_only=False)


def drop_values(values: pa.Array, hit: np.ndarray | pa.Array) -> pa.Array:
    """`values` with those where `hit` is true null: a new array, without their bytes."""
    hit = pa.array(hit, pa.bool_())
    return pc.replace_with_mask(values, hit, pa.nulls(pc.sum(hit).as_py() or 0, values.type))


def show_cut(value: bytes | str) -> str:
    """What the quarantine shows of a cut line: its first 1,000 characters, as `show` writes them."""
    text = value[:4000].decode("utf-8", "backslashreplace") if isinstance(value, bytes) else value[:1000]
    return show(text[:1000].replace(CUT, "")) + "..."


def show(value: bytes | str) -> str:
    """A raw value for the quarantine: valid text as is, escaped and invalid bytes as `\\xNN`."""
    text = value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else value
    return _ESCAPE_PY.sub(lambda m: f"\\x{ord(m.group()) - ESCAPE_BASE:02x}", text)
