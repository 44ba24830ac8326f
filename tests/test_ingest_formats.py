"""Every input format, every quarantine reason, the errors a user sees, and the options plumbing."""

import argparse
import gzip
import random
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from conftest import write

from pipeline import ingest as ing
from pipeline.errors import ConfigError, InputError
from pipeline.ingest import decoding, stream, validation

DATE = "2026-01-01"
FIXTURES = Path(__file__).parent / "fixtures" / "ingest"


def run(data, sources, **kw):
    """Ingest and return (manifest, kept rows, quarantined rows), checking the counts add up."""
    m = ing.ingest([Path(s) for s in sources], DATE, data, ing.IngestConfig(**kw))
    kept = pl.read_parquet(data.texts(DATE) / "part-00000.parquet")
    q = pl.read_parquet(data.quarantine(DATE) / "part-00000.parquet")
    assert m["rows_read"] == m["rows_kept"] + m["rows_quarantined"]
    assert (m["rows_kept"], m["rows_quarantined"]) == (kept.height, q.height)
    assert sum(m["quarantined_by_reason"].values()) == q.height
    return m, kept, q


def reasons(q: pl.DataFrame) -> dict[int, str]:
    return dict(zip(q["line"].to_list(), q["reason"].to_list(), strict=True))


def test_csv_without_header_by_position_with_two_text_columns_and_1_based_labels(tmp_path, data):
    src = write(
        tmp_path / "ag.csv", '"3","Title one","Body \\ one"\n"1","T2","B2"\n"5","T3","B3"\n"x","T4","B4"\n'
    )
    m, kept, q = run(
        data,
        [src],
        header=False,
        label_column="1",
        text_columns=("2", "3"),
        label_index=1,
        classes=("World", "Sports", "Business", "Sci/Tech"),
        backslash_breaks=True,
    )
    assert kept["text"].to_list() == ["Title one Body one", "T2 B2"]
    assert kept["label"].to_list() == ["Business", "World"]
    assert kept["line"].to_list() == [1, 2]
    assert reasons(q) == {3: "unknown_label", 4: "unknown_label"}
    assert q["detail"].to_list() == [
        "label `index 5` is not one of the classes",
        "label `index x` is not one of the classes",
    ]
    assert m["config"]["text_columns"] == ["2", "3"] and m["cleaning"]["version"] == 3


def test_tsv_without_quoting_and_0_based_labels(tmp_path, data):
    src = write(tmp_path / "t.txt", '他说"好"\t1\n标题\t0\n')
    _, kept, _ = run(
        data,
        [src],
        format="tsv",
        header=False,
        text_columns=("1",),
        label_column="2",
        label_index=0,
        classes=("finance", "realty"),
    )
    assert kept["text"].to_list() == ['他说"好"', "标题"]
    assert kept["label"].to_list() == ["realty", "finance"]


def test_undecodable_bytes_are_quarantined_per_row(tmp_path, data):
    src = tmp_path / "b.csv"
    src.write_bytes(b"id,text\n1,good\n2,bad \xff\xfe bytes\n3,also good\n")
    _, kept, q = run(data, [src])
    assert kept["id"].to_list() == ["1", "3"]
    assert reasons(q) == {3: "undecodable"}
    assert "\\xff\\xfe" in q["raw"].item()


def test_blank_lines_and_multiline_records_keep_true_line_numbers_across_batches(tmp_path, data):
    rows = ["id,text"]
    for i in range(400):
        rows.append(f'{i},"row {i}\nsecond line"' if i % 7 == 0 else f"{i},row {i}")
        if i % 50 == 0:
            rows.append("")
    src = write(tmp_path / "m.csv", "\n".join(rows) + "\n")
    _, kept, q = run(data, [src], block_bytes=1 << 10)  # many small batches
    physical = {}  # id -> line where its record starts
    n = 1
    for r in rows:
        if r and r[0].isdigit():
            physical[r.split(",")[0]] = n
        n += r.count("\n") + 1
    assert dict(zip(kept["id"].to_list(), kept["line"].to_list(), strict=True)) == physical
    assert set(q["reason"].to_list()) == {"empty_text"} and q.height == 8


def test_jsonl_fields_and_every_kind_of_bad_line(data):
    _, kept, q = run(data, [FIXTURES / "rows.jsonl"], text_columns=("body",), label_column="tag")
    assert kept["id"].to_list() == ["j1", "j2", "j6"]
    assert kept["label"].to_list() == ["A", "2", "B"]
    assert reasons(q) == {
        3: "malformed",  # not json
        4: "malformed",  # not an object
        5: "empty_text",  # blank line
        6: "malformed",  # nested text
        7: "empty_text",  # no text field
        8: "undecodable",
    }


def test_jsonl_with_a_wrong_field_name_is_an_error(data):
    with pytest.raises(InputError, match=r"rows\.jsonl: no line .* has a field \['text'\].*--text-column"):
        ing.ingest([FIXTURES / "rows.jsonl"], DATE, data, ing.IngestConfig(format="jsonl"))


def test_fasttext_lines(data):
    _, kept, q = run(data, [FIXTURES / "reviews.ft"], format="fasttext", classes=("pos", "neg"))
    assert kept["text"].to_list() == ["great movie", 'awful, "truly"', "中文 ok"]
    assert kept["label"].to_list() == ["pos", "neg", "pos"]
    assert reasons(q) == {3: "malformed", 4: "empty_text"}
    assert q["raw"].to_list()[0] == "no label here"


def test_trec_lines_in_a_legacy_encoding_with_coarse_labels(data):
    _, kept, q = run(
        data, [FIXTURES / "questions.label"], format="labelled", encoding="cp1252", label_coarse_sep=":"
    )
    assert kept["label"].to_list() == ["DESC", "ENTY"]
    assert kept["text"].to_list() == ["How did it happen ?", "What films featured Popeye ?"]
    assert reasons(q) == {3: "malformed", 4: "undecodable"}


def test_label_tab_text_lines_and_plain_text_lines(tmp_path, data):
    src = write(tmp_path / "l.txt", "sports\tgoal scored\tlate\nworld\t\n")
    _, kept, q = run(data, [src], format="labelled", label_sep="\t")
    assert kept["text"].to_list() == ["goal scored late"] and kept["label"].to_list() == ["sports"]
    assert reasons(q) == {2: "empty_text"}
    _, kept, q = run(data, [write(tmp_path / "p.txt", "one\r\n\r\ntwo\n")])
    assert kept["text"].to_list() == ["one", "two"] and kept["label"].to_list() == [None, None]
    assert reasons(q) == {2: "empty_text"}


def test_zstd_and_gzip_are_detected_from_the_bytes(tmp_path, data):
    body = b"id,text\n1,compressed\n"
    z = tmp_path / "a.csv.zst"
    with pa.CompressedOutputStream(str(z), "zstd") as f:
        f.write(body)
    g = tmp_path / "b.csv"  # gzip without the .gz suffix
    g.write_bytes(gzip.compress(b"id,text\n2,zipped\n"))
    _, kept, _ = run(data, [z, g])
    assert kept["text"].to_list() == ["compressed", "zipped"]


def test_parquet_columns_by_name_and_non_string_ids(tmp_path, data):
    src = tmp_path / "a.parquet"
    pl.DataFrame({"key": [7, 8], "body": ["one", "two"], "y": ["A", "B"]}).write_parquet(src)
    _, kept, _ = run(data, [src], text_columns=("body",), id_column="key", label_column="y")
    assert kept.select("id", "text", "label", "line").rows() == [("7", "one", "A", 1), ("8", "two", "B", 2)]


def test_duplicate_ids_across_batches_and_sources(tmp_path, data):
    a = write(tmp_path / "a.csv", "id,text\n" + "".join(f"{i},t{i}\n" for i in range(300)) + "5,again\n")
    b = write(tmp_path / "b.csv", "id,text\n299,dup\nnew,fresh\n")
    m, kept, q = run(data, [a, b], block_bytes=256)
    assert kept.height == 301
    assert q.select("source", "line", "reason").rows() == [
        (str(a), 302, "duplicate_id"),
        (str(b), 2, "duplicate_id"),
    ]
    assert [s["rows_read"] for s in m["sources"]] == [301, 2]


def test_sources_are_read_twice_only_when_an_id_repeats(tmp_path, data, monkeypatch):
    reads: list[str] = []
    real = stream.read_source

    def counted(path, cfg):
        reads.append(path.name)
        return real(path, cfg)

    monkeypatch.setattr(stream, "read_source", counted)
    a = write(tmp_path / "a.csv", "id,text\n1,x\n2,y\n")
    b = write(tmp_path / "b.csv", "id,text\n3,z\n")
    run(data, [a, b])
    assert reads == ["a.csv", "b.csv"]
    reads.clear()
    c = write(tmp_path / "c.csv", "id,text\n3,again\n")
    _, kept, q = run(data, [a, b, c])
    assert reads == ["a.csv", "b.csv", "c.csv"] * 2
    assert kept["id"].to_list() == ["1", "2", "3"]
    assert q.select("source", "line", "reason", "raw").rows() == [(str(c), 2, "duplicate_id", "again")]


def test_repeated_flags_every_id_after_its_first_and_nothing_else():
    rng = np.random.default_rng(0)
    h = rng.integers(0, 300, size=1000).astype(np.uint64)
    seen: set[int] = set()
    expected = []
    for x in h.tolist():
        expected.append(x in seen)
        seen.add(x)
    dup = validation.repeated(h)
    assert dup is not None and dup.tolist() == expected
    assert validation.repeated(np.unique(h)) is None
    assert validation.repeated(np.zeros(0, np.uint64)) is None


@pytest.mark.parametrize(
    ("kw", "pattern"),
    [
        (
            {"text_columns": ("body",)},
            r"in\.csv: no column `body` \(a text column\); it has \['id', 'text'\]",
        ),
        ({"text_columns": ("3",)}, r"no column `3`.*1-based position"),
        ({"label_column": "tag"}, r"no column `tag` \(the label column\).*--label-column"),
        ({"id_column": "key"}, r"no column `key` \(the id column\).*--id-column"),
    ],
)
def test_wrong_column_choices_name_the_file_and_the_choice(tmp_path, data, kw, pattern):
    src = write(tmp_path / "in.csv", "id,text\n1,x\n")
    with pytest.raises(InputError, match=pattern):
        ing.ingest([src], DATE, data, ing.IngestConfig(**kw))
    assert not data.texts(DATE).exists()


def test_unknown_format_and_unreadable_files_are_clear_errors(tmp_path, data):
    with pytest.raises(InputError, match=r"x\.dat: cannot tell the format.*--format"):
        ing.ingest([write(tmp_path / "x.dat", "a\n")], DATE, data, ing.IngestConfig())
    with pytest.raises(InputError, match=r"bad\.parquet: cannot read as Parquet.*--format"):
        ing.ingest([write(tmp_path / "bad.parquet", "not parquet")], DATE, data, ing.IngestConfig())
    with pytest.raises(InputError, match=r"folder: no such file"):
        ing.ingest([tmp_path / "folder"], DATE, data, ing.IngestConfig())
    with pytest.raises(ConfigError, match=r"`encoding` 'klingon' is unknown"):
        ing.IngestConfig(encoding="klingon")
    with pytest.raises(ConfigError, match=r"`label_index` needs `classes`"):
        ing.IngestConfig(label_index=1)


def test_empty_file_reads_zero_rows(tmp_path, data):
    m, kept, _ = run(data, [write(tmp_path / "e.csv", "")])
    assert m["rows_read"] == 0 and kept.height == 0


def test_crash_mid_write_leaves_the_earlier_partition(tmp_path, data, monkeypatch):
    src = write(tmp_path / "a.csv", "id,text\n" + "".join(f"{i},t{i}\n" for i in range(200)))
    ing.ingest([src], DATE, data, ing.IngestConfig())
    before = {p.name: p.read_bytes() for p in data.texts(DATE).iterdir()}
    calls = []
    real = stream.validate

    def crash(*a, **kw):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # the process dies mid-write
        return real(*a, **kw)

    monkeypatch.setattr(stream, "validate", crash)
    with pytest.raises(KeyboardInterrupt):
        ing.ingest([src], DATE, data, ing.IngestConfig(block_bytes=256))
    assert {p.name: p.read_bytes() for p in data.texts(DATE).iterdir()} == before
    assert pl.read_parquet(data.texts(DATE) / "part-00000.parquet").height == 200


def test_folder_config_file_and_its_classes(tmp_path, data):
    folder = data.raw(DATE)
    write(
        folder / "_ingest.toml",
        'header = false\nlabel_column = "1"\ntext_columns = ["2", "3"]\nlabel_index = 1\n'
        'classes = "_classes.txt"\n',
    )
    write(folder / "_classes.txt", "World\nSports\n")
    write(folder / "drop.csv", '"2","Cup final","won 2-1"\n"1","Summit","held"\n')
    assert [p.name for p in ing.raw_sources(data, DATE)] == ["drop.csv"]
    cfg = ing.load_folder_config(folder)
    assert cfg.classes == ("World", "Sports") and cfg.text_columns == ("2", "3")
    _, kept, _ = run(
        data, ing.raw_sources(data, DATE), **{k: getattr(cfg, k) for k in ing.config_record(cfg)}
    )
    assert kept.select("text", "label").rows() == [("Cup final won 2-1", "Sports"), ("Summit held", "World")]
    assert ing.load_folder_config(tmp_path) == ing.IngestConfig()
    write(folder / "_ingest.toml", "colour = 1\n")
    with pytest.raises(ConfigError, match=r"_ingest\.toml: unknown key `colour`; hint: known keys:"):
        ing.load_folder_config(folder)


def test_command_line_options(tmp_path):
    classes = write(tmp_path / "c.txt", "a\nb\n\n")
    p = argparse.ArgumentParser()
    ing.add_ingest_arguments(p)
    argv = ["--no-header", "--text-column", "2", "--text-column", "3", "--label-column", "1"]
    argv += ["--id-column", ""]
    argv += ["--label-index", "1", "--classes", str(classes), "--delimiter", "\\t", "--max-text-chars", "9"]
    args = p.parse_args(argv)
    cfg = ing.ingest_config_from_args(args)
    assert cfg == ing.IngestConfig(
        header=False,
        text_columns=("2", "3"),
        label_column="1",
        id_column=None,
        label_index=1,
        classes=("a", "b"),
        delimiter="\t",
        max_text_chars=9,
    )
    assert ing.ingest_config_from_args(p.parse_args([])) == ing.IngestConfig()
    with pytest.raises(InputError, match=r"nope\.txt: classes file not found"):
        ing.ingest_config_from_args(p.parse_args(["--classes", str(tmp_path / "nope.txt")]))


def cut_reference(data: bytes, cap: int, quote: bytes, ends: bytes) -> bytes:
    """`Utf8Stream`'s line cap, the plain way: split at every end, cut each line over `cap`."""
    out, line = bytearray(), bytearray()
    for b in [*data, None]:
        if b is not None and b not in ends:
            line.append(b)
            continue
        if len(line) > cap:
            k = cap - 8
            while line[k] & 0xC0 == 0x80:  # not inside a character
                k -= 1
            odd = quote and line[k:].count(quote) % 2
            line[k:] = decoding.CUT.encode() + (quote if odd else b"")
        out += line + (bytes([b]) if b is not None else b"")
        line.clear()
    return bytes(out)


class Trickle:
    """A raw stream that returns a random number of bytes per read (chunk boundaries anywhere)."""

    def __init__(self, data: bytes, rng: random.Random) -> None:
        self.data, self.rng = data, rng

    def read(self, n: int) -> bytes:
        k = min(n, self.rng.choice([1, 3, 7, 16, 40, 1000]))
        out, self.data = self.data[:k], self.data[k:]
        return out

    def close(self) -> None:
        pass


def test_long_lines_are_cut_the_same_whatever_the_chunks(monkeypatch):
    """With a cap of 16 bytes: lines of every length around it, multibyte characters and quotes,
    read through chunks of random sizes, come out as the plain reference cuts them."""
    cap = 16
    monkeypatch.setattr(decoding, "MAX_LINE_BYTES", cap)
    monkeypatch.setattr(decoding, "_KEEP", cap - 8)
    rng = random.Random(7)
    for _ in range(2000):
        quote, ends = rng.choice([b"", b'"']), rng.choice([b"\n", b"\r\n"])
        pieces = []
        for _ in range(rng.randint(0, 6)):
            n = rng.choice([0, 1, cap // 4, cap - 1, cap, cap + 1, 3 * cap, rng.randint(0, 5 * cap)])
            pieces.append("".join(rng.choice('aé中"𝄞') for _ in range(n)).encode())
            pieces.append(rng.choice([b"\n", b"\r", b"\r\n", b""]))
        raw = b"".join(pieces)
        s = decoding.Utf8Stream(Trickle(raw, rng), "utf-8", quote.decode(), line_ends=ends)
        got = []
        while part := s.read(rng.choice([1, 5, cap, 4 * cap])):
            got.append(part)
        assert b"".join(got) == cut_reference(raw, cap, quote, ends), raw
        assert s.cut == b"".join(got).count(decoding.CUT.encode())
