"""A corpus of bad raw files and rows, each kind one row of a table, through the real ingest entry point.

Every kind ends one of two ways: the file is read and every row is kept or quarantined with its reason
(rows_read == kept + quarantined), or, where the file as a whole cannot be read, an `InputError` that
names the file and gives a hint, with nothing published. Never another exception. A few go through the
`pipeline` command (in subprocesses) too, to show that the user sees a message, not a traceback.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import REPO

from pipeline import ingest as ing
from pipeline import lake
from pipeline.__main__ import main
from pipeline.errors import ConfigError, InputError

DATE = "2026-01-01"
MB3 = b"x" * (3 << 20)  # a line of 3 MB: read whole, then quarantined as too_long
OVER = b"y" * (ing.MAX_LINE_BYTES + 1)  # a line over the cap: cut, never held whole, quarantined


def parquet(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def zstd(data: bytes) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.CompressedOutputStream(sink, "zstd") as f:
        f.write(data)
    return sink.getvalue().to_pybytes()


MANY_ROWS = b"id,text\n" + b"".join(b"%d,row number %d\n" % (i, i) for i in range(5000))


@dataclass(frozen=True)
class Kind:
    """One kind of bad input: the file (name and bytes), the options, and how it must end.

    `quarantined` maps reason -> rows; `error` is a regex of the `InputError` when the file as a whole
    cannot be read (then nothing is published). `lines` optionally pins line -> reason.
    """

    id: str
    name: str
    raw: bytes
    kept: int = 0
    quarantined: dict[str, int] = field(default_factory=dict)
    opts: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    lines: dict[int, str] | None = None
    make: Callable[[Path], Path] | None = None  # for kinds that are not plain files


CLASSES = {"classes": ("World", "Sports")}

KINDS = [
    # ---- byte-order marks and encodings
    Kind("utf8_bom_csv", "a.csv", b"\xef\xbb\xbfid,text\n1,hello\n", kept=1),
    Kind("utf8_bom_jsonl", "a.jsonl", b'\xef\xbb\xbf{"text": "hello"}\n', kept=1),
    Kind("utf8_bom_text", "a.txt", b"\xef\xbb\xbfhello\nworld\n", kept=2),
    Kind(
        "utf16_bom_read_as_utf8",
        "a.csv",
        "id,text\n1,hello\n".encode("utf-16"),
        error=r"UTF-16 byte-order mark; hint: pass --encoding utf-16",
    ),
    Kind(
        "utf32_bom_read_as_utf8",
        "a.txt",
        "hello\n".encode("utf-32"),
        error=r"UTF-32 byte-order mark; hint: pass --encoding utf-32",
    ),
    Kind(
        "utf16_with_encoding",
        "a.csv",
        "id,text\n1,héllo\n".encode("utf-16"),
        kept=1,
        opts={"encoding": "utf-16"},
    ),
    Kind(
        "utf16_without_bom_read_as_utf8",
        "a.csv",
        "id,text\n1,hello\n".encode("utf-16-le"),
        error=r"no column `text`.*NUL bytes: is the file UTF-16\? \(--encoding utf-16\)",
    ),
    Kind(
        "latin1_read_as_utf8",
        "a.csv",
        "id,text\n1,café\n2,ok\n".encode("latin-1"),
        kept=1,
        quarantined={"undecodable": 1},
        lines={2: "undecodable"},
    ),
    Kind(
        "invalid_utf8_mid_row",
        "a.csv",
        b"id,text\n1,ab\xff\xfecd\n2,ok\n3,tail \xe2\x82\n",
        kept=1,
        quarantined={"undecodable": 2},
    ),
    Kind("invalid_utf8_in_label", "a.csv", b"id,text,label\n1,fine,\xff\n", quarantined={"undecodable": 1}),
    Kind(
        "invalid_utf8_in_a_row_of_wrong_width",  # pyarrow itself cannot report such a row: escaped first
        "a.csv",
        b"id,text\n1,ok\n2,caf\xe9,extra\n3,good\n",
        kept=2,
        quarantined={"malformed": 1},
        lines={3: "malformed"},
    ),
    Kind("utf8_encoded_surrogate", "a.csv", b"id,text\n1,\xed\xa0\x80\n", quarantined={"undecodable": 1}),
    Kind("overlong_utf8", "a.csv", b"id,text\n1,\xc0\xaf\n", quarantined={"undecodable": 1}),
    Kind(
        "byte_undefined_in_cp1252",
        "a.csv",
        b"id,text\n1,ok \x81\n2,caf\xe9\n",
        kept=1,
        quarantined={"undecodable": 1},
        opts={"encoding": "cp1252"},
    ),
    Kind(
        "lone_surrogate_in_utf16",
        "a.txt",
        "hello\n".encode("utf-16-le") + b"\x00\xd8" + "x\nok\n".encode("utf-16-le"),
        kept=2,
        quarantined={"undecodable": 1},
        opts={"encoding": "utf-16-le"},
    ),
    Kind(
        "binary_garbage_as_text", "a.txt", bytes(range(256)), quarantined={"empty_text": 1, "undecodable": 1}
    ),
    # ---- NUL and control characters, line ends
    Kind(
        "nul_bytes_in_text",
        "a.csv",
        b"id,text\n1,a\x00b\n2,\x00\x00\n",
        kept=1,
        quarantined={"empty_text": 1},
    ),
    Kind(
        "nul_bytes_in_header",
        "a.csv",
        b"id,te\x00xt\n1,a\n",
        error=r"no column `text`.*NUL bytes",
    ),
    Kind("control_characters", "a.csv", b"id,text\n1,a\x01\x1b[31mb\x7f\n", kept=1),
    Kind("only_control_characters", "a.csv", b"id,text\n1,\x01\x02\x7f\n", quarantined={"empty_text": 1}),
    Kind("crlf_line_ends", "a.csv", b"id,text\r\n1,a\r\n2,b\r\n", kept=2),
    Kind("cr_line_ends", "a.csv", b"id,text\r1,a\r2,b\r", kept=2),
    Kind("crlf_text_lines", "a.txt", b"one\r\n\r\ntwo\r\n", kept=2, quarantined={"empty_text": 1}),
    Kind("cr_text_lines_are_one_line", "a.txt", b"a\rb\rc", kept=1),  # text lines end at \n only
    # ---- long lines
    Kind(
        "line_of_megabytes_csv",
        "a.csv",
        b"id,text\n1," + MB3 + b"\n2,ok\n",
        kept=1,
        quarantined={"too_long": 1},
    ),
    Kind(
        "line_of_megabytes_jsonl",
        "a.jsonl",
        b'{"text": "' + MB3 + b'"}\n{"text": "ok"}\n',
        kept=1,
        quarantined={"too_long": 1},
    ),
    Kind(
        "line_of_megabytes_text",
        "a.txt",
        MB3 + b"\nok\n",
        kept=1,
        quarantined={"too_long": 1},
        opts={"block_bytes": 1 << 20},
    ),
    Kind(
        "line_over_the_cap_text",
        "a.txt",
        b"one\n" + OVER + b"\ntwo\n",
        kept=2,
        quarantined={"too_long": 1},
        lines={2: "too_long"},
    ),
    Kind(
        "line_over_the_cap_labelled",
        "a.txt",
        b"A one\nB " + OVER + b"\nC two\n",
        kept=2,
        quarantined={"too_long": 1},
        lines={2: "too_long"},
        opts={"format": "labelled"},
    ),
    Kind(
        "line_over_the_cap_jsonl_gz",
        "a.jsonl.gz",
        gzip.compress(b'{"text": "one"}\n{"text": "' + OVER + b'"}\n{"text": "two"}\n'),
        kept=2,
        quarantined={"too_long": 1},
        lines={2: "too_long"},
    ),
    Kind(  # the cut part holds the closing quote: the records after it are read as they are
        "line_over_the_cap_csv_zst",
        "a.csv.zst",
        zstd(b'id,text\n1,one\n2,"' + OVER + b'"\n3,two\n'),
        kept=2,
        quarantined={"too_long": 1},
        lines={3: "too_long"},
    ),
    Kind(
        "csv_record_over_the_read_block",
        "a.csv",
        b"id,text\n1," + b"y" * 200_000 + b"\n",
        error=r"a record is longer than the read block \(65,536 bytes\); hint: .*--max-text-chars",
        opts={"block_bytes": 1 << 14},
    ),
    # ---- quotes and columns
    Kind(
        "unclosed_quote_to_the_end",
        "a.csv",
        b'id,text\n1,fine\n2,"open\n3,swallowed\n',
        kept=1,
        quarantined={"malformed": 1},
        lines={3: "malformed"},
    ),
    Kind(
        "unclosed_quote_of_wrong_width",
        "a.csv",
        b'id,text,label\n1,"open\n2,b,c\n',
        quarantined={"malformed": 1},
    ),
    Kind("closed_multiline_quote_at_the_end", "a.csv", b'id,text\n1,"a\r\nb"""\r\n', kept=1),
    Kind("stray_quote_inside_a_field", "a.csv", b'id,text\n1,a 5" screen\n', kept=1),
    Kind("extra_columns", "a.csv", b"id,text\n1,a,b\n2,ok\n", kept=1, quarantined={"malformed": 1}),
    Kind(
        "missing_columns", "a.csv", b"id,text,label\n1,a\n2,ok,World\n", kept=1, quarantined={"malformed": 1}
    ),
    Kind(
        "tsv_with_quotes_and_extra_tabs",
        "a.tsv",
        b'id\ttext\n1\t"quoted\n2\ta\tb\n',
        kept=1,
        quarantined={"malformed": 1},
    ),
    Kind(
        "duplicate_header_names",
        "a.csv",
        b"id,text,text\n1,a,b\n",
        error=r"names the text column `text` 2 times",
    ),
    Kind(
        "wrong_header", "a.csv", b"a,b\n1,2\n", error=r"no column `text`.*hint: choose it with --text-column"
    ),
    # ---- empty things
    Kind("empty_csv", "a.csv", b""),
    Kind("empty_jsonl", "a.jsonl", b""),
    Kind("empty_text_file", "a.txt", b""),
    Kind("header_only", "a.csv", b"id,text\n"),
    Kind("header_only_without_newline", "a.csv", b"id,text"),
    Kind("blank_lines_after_header", "a.csv", b"id,text\n\n\n1,ok\n", kept=1, quarantined={"empty_text": 2}),
    Kind(
        "whitespace_only_text",
        "a.csv",
        "id,text\n1,   \t \n2,\u3000\u00a0\n3,ok\n".encode(),
        kept=1,
        quarantined={"empty_text": 2},
    ),
    Kind(
        "invisible_only_text",
        "a.csv",
        "id,text\n1,\u200b\u202e\ufeff\n".encode(),
        quarantined={"empty_text": 1},
    ),
    Kind("entity_remnants_only", "a.csv", b"id,text\n1,&nbsp;\n", quarantined={"empty_text": 1}),
    Kind("empty_parquet_file", "a.parquet", b"", error=r"cannot read as Parquet.*hint: check --format"),
    # ---- JSON Lines
    Kind(
        "jsonl_values_that_are_not_objects",
        "a.jsonl",
        b'[1, 2]\n3\nnull\n"a string"\ntrue\n{"text": "ok"}\n',
        kept=1,
        quarantined={"malformed": 5},
    ),
    Kind(
        "jsonl_truncated",
        "a.jsonl",
        b'{"text": "ok"}\n{"text": "cut sh',
        kept=1,
        quarantined={"malformed": 1},
    ),
    Kind("jsonl_text_is_a_number", "a.jsonl", b'{"text": 42}\n{"text": 1.5e3}\n', kept=2),
    Kind(
        "jsonl_text_missing",
        "a.jsonl",
        b'{"id": "1"}\n{"text": "ok"}\n',
        kept=1,
        quarantined={"empty_text": 1},
    ),
    Kind(
        "jsonl_text_is_an_object",
        "a.jsonl",
        b'{"text": {"a": 1}}\n{"text": "ok"}\n',
        kept=1,
        quarantined={"malformed": 1},
    ),
    Kind(
        "jsonl_lone_surrogate_escape",
        "a.jsonl",
        b'{"text": "a\\ud800b"}\n{"text": "ok", "label": "\\udfff"}\n{"text": "\\ud83d\\ude00 ok"}\n',
        kept=1,
        quarantined={"malformed": 2},
    ),
    Kind(
        "jsonl_nested_too_deeply",
        "a.jsonl",
        b'{"text": ' + b"[" * 100_000 + b"]" * 100_000 + b'}\n{"text": "ok"}\n',
        kept=1,
        quarantined={"malformed": 1},
    ),
    Kind(
        "jsonl_integer_of_5000_digits",
        "a.jsonl",
        b'{"text": ' + b"9" * 5000 + b"}\n",
        quarantined={"malformed": 1},
    ),
    Kind(
        "jsonl_without_the_text_field",
        "a.jsonl",
        b'{"body": "x"}\n',
        error=r"no line of the first 1 has a field \['text'\]; hint: choose the text field",
    ),
    # ---- labels
    Kind(
        "labels_not_in_the_classes",
        "a.csv",
        b"id,text,label\n1,a,World\n2,b,Weather\n3,c,world\n4,d, Sports \n",
        kept=2,
        quarantined={"unknown_label": 2},
        opts=CLASSES,
    ),
    Kind(
        "numeric_labels_and_indices_out_of_range",
        "a.jsonl",
        b'{"text": "a", "label": 1}\n{"text": "b", "label": "2"}\n{"text": "c", "label": 3}\n'
        b'{"text": "d", "label": 0}\n{"text": "e", "label": -1}\n{"text": "f", "label": 1.0}\n'
        b'{"text": "g", "label": "x"}\n',
        kept=2,
        quarantined={"unknown_label": 5},
        opts={**CLASSES, "label_index": 1},
    ),
    Kind(
        "parquet_integer_labels_0_based",
        "a.parquet",
        parquet(pa.table({"text": ["a", "b", "c"], "label": [0, 1, 2]})),
        kept=2,
        quarantined={"unknown_label": 1},
        opts={**CLASSES, "label_index": 0},
    ),
    Kind(
        "fasttext_without_prefix",
        "a.txt",
        b"__label__a hi\nno label\n__label__\n",
        kept=1,
        quarantined={"malformed": 2},
        opts={"format": "fasttext"},
    ),
    Kind(
        "labelled_without_separator",
        "a.txt",
        b"a\tb\nnosep\n",
        kept=1,
        quarantined={"malformed": 1},
        opts={"format": "labelled", "label_sep": "\t"},
    ),
    # ---- ids
    Kind(
        "duplicate_ids", "a.csv", b"id,text\n1,a\n2,b\n1,c\n 2 ,d\n", kept=2, quarantined={"duplicate_id": 2}
    ),
    # ---- files that are not what their name says
    Kind("gzip_name_plain_bytes", "a.csv.gz", b"id,text\n1,a\n", kept=1),
    Kind("gzip_bytes_no_gz_name", "a.csv", gzip.compress(b"id,text\n1,a\n"), kept=1),
    Kind("gzip_truncated", "a.csv.gz", gzip.compress(MANY_ROWS)[:300], error=r"cut short"),
    Kind(
        "gzip_magic_then_garbage",
        "a.jsonl.gz",
        b"\x1f\x8b" + bytes(range(100)),
        error=r"cannot decompress it as gzip",
    ),
    Kind(
        "zstd_truncated", "a.csv.zst", zstd(MANY_ROWS)[:300], error=r"cannot decompress it as zstd.*cut short"
    ),
    Kind("zstd_magic_only", "a.txt", b"\x28\xb5\x2f\xfd", error=r"cannot decompress it as zstd"),
    Kind("parquet_name_csv_bytes", "a.parquet", b"id,text\n1,a\n", error=r"cannot read as Parquet"),
    Kind(
        "csv_name_parquet_bytes",
        "a.csv",
        parquet(pa.table({"text": ["a"]})),
        error=r"this is a Parquet file, not csv; hint: pass --format parquet",
    ),
    Kind("jsonl_name_parquet_bytes", "a.jsonl", parquet(pa.table({"text": ["a"]})), error=r"Parquet file"),
    Kind("csv_name_zip_bytes", "a.csv", b"PK\x03\x04" + bytes(range(200)), error=r"a zip archive"),
    Kind("text_name_arrow_bytes", "a.txt", b"ARROW1\x00\x00" + bytes(64), error=r"an Arrow IPC file"),
    Kind(
        "unknown_extension",
        "a.dat",
        b"hello\n",
        error=r"cannot tell the format from the name; hint: pass --format",
    ),
    Kind(
        "parquet_truncated",
        "a.parquet",
        parquet(pa.table({"text": ["a"] * 100}))[:-20],
        error=r"cannot read as Parquet",
    ),
    Kind(
        "parquet_list_column",
        "a.parquet",
        parquet(pa.table({"text": [["a"], None]})),
        error=r"column `text` \(a text column\) holds list<",
    ),
    Kind(
        "parquet_binary_invalid_utf8",
        "a.parquet",
        parquet(pa.table({"text": pa.array([b"ok", b"\xff\xfe"], pa.binary())})),
        kept=1,
        quarantined={"undecodable": 1},
    ),
    Kind(
        "parquet_null_texts",
        "a.parquet",
        parquet(pa.table({"text": ["a", None, ""]})),
        kept=1,
        quarantined={"empty_text": 2},
    ),
    Kind(
        "parquet_fixed_size_binary_invalid_utf8",
        "a.parquet",
        parquet(pa.table({"text": pa.array([b"\xff\xfe", b"ok"], pa.binary(2))})),
        kept=1,
        quarantined={"undecodable": 1},
    ),
    Kind(
        "parquet_column_of_nulls_only",
        "a.parquet",
        parquet(pa.table({"text": pa.array([None, None], pa.null())})),
        quarantined={"empty_text": 2},
    ),
    Kind(
        "parquet_struct_column",
        "a.parquet",
        parquet(pa.table({"text": [{"a": 1}]})),
        error=r"holds struct<a: int64>, not text; hint: choose another column",
    ),
    # ---- things that are not regular files
    Kind(
        "folder_given_as_a_file",
        "folder.csv",
        b"",
        error=r"is a folder, not a file; hint:",
        make=lambda d: (d / "folder.csv").mkdir() or d / "folder.csv",
    ),
    Kind(
        "symlink_to_a_file",
        "link.csv",
        b"",
        kept=1,
        make=lambda d: _link(d / "link.csv", _put(d / "target.csv", b"id,text\n1,linked\n")),
    ),
    Kind(
        "broken_symlink",
        "link.csv",
        b"",
        error=r"a broken symbolic link; hint:",
        make=lambda d: _link(d / "link.csv", d / "gone.csv"),
    ),
    Kind(
        "named_pipe",
        "pipe.csv",
        b"",
        error=r"not a regular file; hint:",
        make=lambda d: os.mkfifo(d / "pipe.csv") or d / "pipe.csv",
    ),
]


def _put(path: Path, raw: bytes) -> Path:
    path.write_bytes(raw)
    return path


def _link(link: Path, target: Path) -> Path:
    link.symlink_to(target)
    return link


def write_kind(kind: Kind, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return kind.make(folder) if kind.make else _put(folder / kind.name, kind.raw)


def read(data: lake.DataDir, kind: str) -> pl.DataFrame:
    folder = data.texts(DATE) if kind == "texts" else data.quarantine(DATE)
    return pl.read_parquet(folder / "part-00000.parquet")


def test_the_corpus_has_at_least_30_kinds():
    assert len(KINDS) >= 30 and len({k.id for k in KINDS}) == len(KINDS)
    assert {r for k in KINDS for r in k.quarantined} == set(ing.REASONS)  # every reason, some kind


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.id)
def test_every_row_is_kept_or_quarantined_or_the_file_refused(tmp_path, data, kind):
    src = write_kind(kind, tmp_path / "in")
    cfg = ing.IngestConfig(**kind.opts)
    if kind.error:
        with pytest.raises(InputError) as e:
            ing.ingest([src], DATE, data, cfg)
        msg = str(e.value)
        assert re.search(kind.error, msg), msg
        assert msg.startswith(str(src)) and "hint:" in msg, msg
        assert not data.texts(DATE).exists() and not data.quarantine(DATE).exists()
        return
    m = ing.ingest([src], DATE, data, cfg)
    kept, q = read(data, "texts"), read(data, "quarantine")
    assert (
        m["rows_read"] == m["rows_kept"] + m["rows_quarantined"] == kind.kept + sum(kind.quarantined.values())
    )
    assert (
        (m["rows_kept"], m["rows_quarantined"])
        == (kept.height, q.height)
        == (
            kind.kept,
            sum(kind.quarantined.values()),
        )
    )
    assert dict(Counter(q["reason"].to_list())) == kind.quarantined == m["quarantined_by_reason"]
    assert q["detail"].null_count() == 0 and q["line"].null_count() == 0  # every reason is explained
    if kind.lines is not None:
        assert dict(zip(q["line"].to_list(), q["reason"].to_list(), strict=True)) == kind.lines
    assert kept["id"].n_unique() == kept.height
    for text in kept["text"].to_list():  # what is kept is clean text
        assert text and text == text.strip() and not re.search(r"[\x00-\x1f\x7f\U0010fc00-\U0010fcff]", text)


LONG_LINE_KINDS = [k for k in KINDS if k.id.startswith("line_over_the_cap")]


@pytest.mark.parametrize("kind", LONG_LINE_KINDS, ids=lambda k: k.id)
def test_a_line_over_the_cap_is_quarantined_naming_the_cap(tmp_path, data, kind):
    src = write_kind(kind, tmp_path / "in")
    ing.ingest([src], DATE, data, ing.IngestConfig(**kind.opts))
    assert read(data, "texts")["text"].to_list() == ["one", "two"]  # the lines after it are read
    (row,) = read(data, "quarantine").rows(named=True)
    assert row["reason"] == "too_long" and row["detail"] == "line longer than 8 MiB"
    assert re.fullmatch(r'(B |{"text": ")?y{980,1000}\.\.\.', row["raw"]), row["raw"][:20]  # its start


def test_a_parquet_value_over_the_cap_is_quarantined_naming_it(tmp_path, data):
    src = _put(tmp_path / "a.parquet", parquet(pa.table({"text": ["one", OVER.decode(), "two"]})))
    ing.ingest([src], DATE, data, ing.IngestConfig())
    assert read(data, "texts")["text"].to_list() == ["one", "two"]
    assert read(data, "quarantine").select("line", "reason", "detail").rows() == [
        (2, "too_long", "`text`: value longer than 8 MiB")
    ]


def run_watched(cmd: list[str], log: Path, limit: int) -> tuple[int, int]:
    """Run `cmd`: its exit code and its own peak RSS in bytes (from wait4). It is killed once its RSS
    is seen over `limit`, so that a reader without a bound fails the test rather than the machine."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return proc.returncode, usage.ru_maxrss * 1024
        with open(f"/proc/{proc.pid}/status") as f:
            rss = next((int(x.split()[1]) * 1024 for x in f if x.startswith("VmRSS:")), 0)  # 0: exited
        if rss > limit:
            proc.kill()
        time.sleep(0.05)


INGEST_ONE = """import sys
from pathlib import Path
from pipeline import ingest as ing, lake
ing.ingest([Path(sys.argv[1])], sys.argv[3], lake.DataDir.at(Path(sys.argv[2])), ing.IngestConfig())
"""


@pytest.mark.slow
def test_a_gibibyte_line_in_gzip_is_quarantined_in_bounded_memory(tmp_path, data):
    """Issue 26: one line of 1 GiB in a .gz of a few MB; the ingest, in a process of its own, stays
    under 1.5 GB of RSS (its own high-water mark) and quarantines the line."""
    src = tmp_path / "one-line.txt.gz"
    block = b"z" * (16 << 20)
    with gzip.open(src, "wb", compresslevel=1) as f:  # written as a stream: never 1 GiB in memory here
        f.write(b"before\n")
        for _ in range(64):
            f.write(block)
        f.write(b"\nafter\n")
    cmd = [sys.executable, "-c", INGEST_ONE, str(src), str(data.root), DATE]
    code, peak = run_watched(cmd, tmp_path / "log", limit=3 << 30)
    assert code == 0, (tmp_path / "log").read_text()[-3000:]
    assert peak < 1.5e9, f"peak RSS {peak / 2**30:.2f} GiB"
    assert read(data, "texts")["text"].to_list() == ["before", "after"]
    assert read(data, "quarantine").select("line", "reason", "detail").rows() == [
        (2, "too_long", "line longer than 8 MiB")
    ]


def test_quarantine_shows_undecodable_bytes_as_escapes(tmp_path, data):
    src = _put(tmp_path / "a.csv", b"id,text\n1,caf\xe9 \xff\n2,x,\xfe\n")
    ing.ingest([src], DATE, data, ing.IngestConfig())
    assert read(data, "quarantine").select("reason", "raw").rows() == [
        ("undecodable", "caf\\xe9 \\xff\t1"),  # text, then id
        ("malformed", "2,x,\\xfe"),
    ]


def test_unclosed_quote_keeps_the_rest_of_the_file_in_the_quarantine(tmp_path, data):
    src = _put(tmp_path / "a.csv", b'id,text\n1,fine\n2,"open\n3,swallowed\n')
    ing.ingest([src], DATE, data, ing.IngestConfig())
    row = read(data, "quarantine").row(0, named=True)
    assert row["raw"] == "open\n3,swallowed\n" and "never closed" in row["detail"]


def test_the_whole_readable_corpus_at_once(tmp_path, data):
    """Every readable kind with default options in one ingest: the counts of each source add up."""
    kinds = [k for k in KINDS if not k.error and not k.opts and not k.make]
    sources = [write_kind(k, tmp_path / k.id) for k in kinds]
    m = ing.ingest(sources, DATE, data, ing.IngestConfig())
    for k, s in zip(kinds, m["sources"], strict=True):
        assert s["rows_read"] == k.kept + sum(k.quarantined.values()), k.id
    assert m["rows_read"] == m["rows_kept"] + m["rows_quarantined"]
    q = read(data, "quarantine")
    assert q.height == m["rows_quarantined"] and read(data, "texts")["id"].n_unique() == m["rows_kept"]


def start_cli(*args: str | Path, cwd: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "pipeline", "--data-dir", str(cwd / "data"), *map(str, args)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd, env=env)


CLI_KINDS = ["csv_name_parquet_bytes", "folder_given_as_a_file"]


def test_command_line_reports_unreadable_files_without_a_traceback(tmp_path):
    """`pipeline ingest` in subprocesses (run side by side): exit 1 and one line naming the file."""
    runs = []
    for kind in (k for k in KINDS if k.id in CLI_KINDS):
        src = write_kind(kind, tmp_path / kind.id)
        runs.append((kind, src, start_cli("ingest", src, "--date", DATE, cwd=tmp_path / kind.id)))
    for kind, src, proc in runs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 1, err
        assert "Traceback" not in err + out
        line = err.strip().splitlines()[-1]
        assert line.startswith(f"pipeline: error: {src}: ") and "hint:" in line, line
        assert re.search(kind.error or "", line), line
        assert not (tmp_path / kind.id / "data" / "lake").exists()
    assert len(runs) == len(CLI_KINDS)


@pytest.mark.usefixtures("prefect_harness")
def test_command_line_ingests_the_corpus_without_a_traceback(tmp_path, capfd):
    """The corpus through `main` and its Prefect flow; then too many bad rows, an error inside the flow."""
    kinds = [k for k in KINDS if not k.error and not k.opts and not k.make and len(k.raw) < 1 << 20]
    sources = [str(write_kind(k, tmp_path / k.id)) for k in kinds]
    argv = ["--data-dir", str(tmp_path / "data"), "ingest", *sources, "--date", DATE]
    assert main(argv) == 0
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err
    brief, _ = json.JSONDecoder().raw_decode(out[out.index("{") :])
    assert brief["rows_read"] == brief["rows_kept"] + brief["rows_quarantined"]
    assert brief["rows_read"] == sum(k.kept + sum(k.quarantined.values()) for k in kinds)

    assert main([*argv, "--max-bad-fraction", "0.1"]) == 1
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err  # Prefect logs a failed flow's traceback; not for a PipelineError
    assert err.strip().splitlines()[-1].startswith(f"pipeline: error: {DATE}: ")
    assert "over --max-bad-fraction 0.1" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--delimiter", ";;"], r"`delimiter` must be one ASCII character"),
        (["--delimiter", "é"], r"`delimiter` must be one ASCII character"),
        (["--delimiter", "\\x"], r"'\\\\x' is not a valid escape"),
        (["--quote", "ab"], r"`quote` must be one ASCII character"),
        (["--quote", ",", "--delimiter", ","], r"`quote` and `delimiter` are both ','"),
        (["--label-sep", "\\n"], None),  # a line end cannot separate a label in a line, but it is legal
        (["--max-text-chars", "0"], r"`max_text_chars`: input should be greater than or equal to 1, got 0"),
        (["--max-bad-fraction", "2"], r"`max_bad_fraction`: input should be less than or equal to 1, got 2"),
        (["--encoding", "klingon"], r"`encoding` 'klingon' is unknown"),
    ],
)
def test_bad_command_line_options_are_clear_errors(argv, message):
    p = argparse.ArgumentParser()
    ing.add_ingest_arguments(p)
    args = p.parse_args(argv)
    if message is None:
        ing.ingest_config_from_args(args)
        return
    with pytest.raises(InputError, match=message):
        ing.ingest_config_from_args(args)


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("text_columns = 5", None),  # one column by position
        ("text_columns = [[1]]", r"`text_columns`: input should be a valid string, got \[1\]"),
        ("classes = 5", r"`classes`: input should be a valid tuple, got 5"),
        ('header = "no"', r"`header`: input should be a valid boolean, got 'no'"),
        ("label_index = 1.5\nclasses = ['a']", r"`label_index`: input should be a valid integer, got 1\.5"),
        ("label_index = true\nclasses = ['a']", r"`label_index`: input should be a valid integer, got True"),
        ("max_bad_fraction = true", r"`max_bad_fraction`: input should be a valid number, got True"),
        ("format = 'xlsx'", r"`format`: input should be 'auto', 'csv', .* got 'xlsx'"),
        ("colour = 1", r"_ingest\.toml: unknown key `colour`; hint: known keys: backslash_breaks, block_"),
        ("encodng = 'latin-1'", r"unknown key `encodng`; hint: did you mean `encoding`\?"),
        ("block_bytes = 0", r"`block_bytes`: input should be greater than or equal to 1"),
        ("header = ", r"not valid TOML"),
    ],
)
def test_bad_folder_options_are_clear_errors(data, toml, message):
    folder = data.raw(DATE)
    folder.mkdir(parents=True)
    (folder / ing.FOLDER_CONFIG).write_text(toml + "\n")
    if message is None:
        assert ing.load_folder_config(folder).text_columns == ("5",)
        return
    with pytest.raises(ConfigError, match=message):
        ing.load_folder_config(folder)
