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

ESCAPE_BASE = 0x10FC00  # undecodable byte b -> chr(ESCAPE_BASE + b): U+10FC00..U+10FCFF, private use
_ESCAPE = "pipeline-ingest-escape"
_ESCAPE_RE = "[\U0010fc00-\U0010fcff]"
_ESCAPE_PY = re.compile(_ESCAPE_RE)
_ESCAPE_PREFIX = chr(ESCAPE_BASE).encode()[:2]  # the first two UTF-8 bytes of every escape


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


def open_text(path: Path, encoding: str, quote: str = "") -> Utf8Stream:
    """The bytes of a text source, decompressed, as valid UTF-8 (see `Utf8Stream`)."""
    return Utf8Stream(pa.input_stream(str(path), compression=compression(path)), encoding, quote)


class Utf8Stream:
    """A read-only byte stream: `raw` decoded from `encoding`, as valid UTF-8 with escaped bad bytes.

    Valid UTF-8 input is passed through as is (only checked, by Arrow). `escaped` says whether a
    byte may have been escaped so far, so readers look for escapes only once there may be some;
    `quoted` whether `quote` has appeared so far (CSV: only a quoted value can hold a newline);
    `tail` holds the last bytes read (CSV: was the last quote closed?).
    """

    _CHUNK = 1 << 20

    def __init__(self, raw: Any, encoding: str, quote: str = "") -> None:
        self._raw = raw
        self._quote = quote.encode()
        self._utf8 = is_utf8(encoding)
        self._dec = None if self._utf8 else codecs.getincrementaldecoder(encoding)(errors=_ESCAPE)
        self._rest = b""  # UTF-8: an incomplete character at the end of the last chunk
        self._buf = b""
        self._eof = False
        self.escaped = False
        self.quoted = False
        self.tail = b""
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
            out = self._convert(chunk)
            parts.append(out)
            size += len(out)
        data = parts[-1] if len(parts) == 2 and not parts[0] else b"".join(parts)  # no copy if one part
        out, self._buf = (data, b"") if n < 0 or len(data) <= n else (data[:n], data[n:])
        if out:
            self.tail = (self.tail + out[-8:])[-8:]
            self.quoted = self.quoted or (bool(self._quote) and self._quote in out)
        return out

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


def show(value: bytes | str) -> str:
    """A raw value for the quarantine: valid text as is, escaped and invalid bytes as `\\xNN`."""
    text = value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else value
    return _ESCAPE_PY.sub(lambda m: f"\\x{ord(m.group()) - ESCAPE_BASE:02x}", text)
