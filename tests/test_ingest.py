import gzip
import json
from pathlib import Path

import polars as pl
import pytest
from conftest import REPO, write

from pipeline import ingest as ing
from pipeline.errors import InputError
from pipeline.schema import MAX_ID_CHARS

DATE = "2026-01-01"
CONTRACT = REPO.parent / "shared" / "contracts" / "prediction_result.schema.json"

# One row per edge case; the comment says where it must end up.
BAD_CSV = (
    "id,text,label\n"
    "r1,Stocks rally as profits rise,Business\n"  # kept
    "r2,   ,World\n"  # empty_text
    "r3,,Sports\n"  # empty_text (missing)
    "r4,too many,World,extra\n"  # malformed (column count)
    "r5,Weather turns cold,Weather\n"  # unknown_label
    "r1,a repeated id,Sports\n"  # duplicate_id
    f"r6,{'x' * 60},World\n"  # too_long
    'r7,"Quoted, with comma\nand newline",Sports\n'  # kept (one record over two lines)
    "r8,中国队赢得冠军,Sports\n"  # kept
    "r9,Ünïcode ＡＢＣ &amp; #39;s\\ artefacts,World\n"  # kept, cleaned
    'r10,"unterminated quote,World\n'  # malformed (swallows the rest of the file)
)
# The same plus a row whose bytes are not UTF-8, as a file: every reason in one fixture.
EVERY_BAD_ROW = Path(__file__).parent / "fixtures" / "ingest" / "every_bad_row.csv"


def cfg(**kw):
    return ing.IngestConfig(classes=("Business", "Sci/Tech", "Sports", "World"), max_text_chars=50, **kw)


def read(data, kind):
    folder = data.texts(DATE) if kind == "texts" else data.quarantine(DATE)
    return pl.read_parquet(folder / "part-00000.parquet")


def test_every_bad_row_is_quarantined_with_its_reason(tmp_path, data):
    src = write(tmp_path / "in.csv", BAD_CSV)
    m = ing.ingest([src], DATE, data, cfg())
    kept = read(data, "texts")
    assert kept["id"].to_list() == ["r1", "r7", "r8", "r9"]
    q = read(data, "quarantine")
    assert dict(zip(q["line"].to_list(), q["reason"].to_list(), strict=True)) == {
        3: "empty_text",
        4: "empty_text",
        5: "malformed",
        6: "unknown_label",
        7: "duplicate_id",
        8: "too_long",
        13: "malformed",  # the physical line: r7 spans two
    }
    assert q.filter(pl.col("line") == 5)["raw"].item() == "r4,too many,World,extra"
    assert m["rows_read"] == m["rows_kept"] + m["rows_quarantined"] == 11
    assert m["quarantined_by_reason"] == {
        "duplicate_id": 1,
        "empty_text": 2,
        "malformed": 2,
        "too_long": 1,
        "unknown_label": 1,
    }
    assert m["sources"][0]["sha256"] and m["sources"][0]["size"] == src.stat().st_size


def test_cleaning_normalises_and_fixes_artefacts(tmp_path, data):
    src = write(tmp_path / "in.csv", BAD_CSV)
    for backslash_breaks, r9 in (
        (True, "Ünïcode ABC & 's artefacts"),
        (False, "Ünïcode ABC & 's\\ artefacts"),
    ):
        ing.ingest([src], DATE, data, cfg(backslash_breaks=backslash_breaks))
        texts = dict(read(data, "texts").select("id", "text").iter_rows())
        assert texts["r7"] == "Quoted, with comma and newline"
        assert texts["r9"] == r9  # the backslash: AG News' line break, or text


def test_reingest_gives_byte_identical_files(tmp_path, data):
    src = write(tmp_path / "in.csv", BAD_CSV)
    ing.ingest([src], DATE, data, cfg())
    first = {p.name: p.read_bytes() for p in data.texts(DATE).iterdir()}
    ing.ingest([src], DATE, data, cfg())
    assert {p.name: p.read_bytes() for p in data.texts(DATE).iterdir()} == first


def test_ids_are_derived_stably_when_absent(tmp_path, data):
    src = write(tmp_path / "in.csv", "text,label\nfirst,A\nsecond,B\n")
    ing.ingest([src], DATE, data, ing.IngestConfig())
    ids = read(data, "texts")["id"].to_list()
    assert len(set(ids)) == 2 and ids[0].endswith("-2") and ids[1].endswith("-3")
    ing.ingest([src], DATE, data, ing.IngestConfig())
    assert read(data, "texts")["id"].to_list() == ids


def test_an_id_over_the_contracts_length_is_quarantined(tmp_path, data):
    long, longest = "i" * 300, "é" * MAX_ID_CHARS  # characters, not bytes, as in the contract and MySQL
    ing.ingest([write(tmp_path / "in.csv", f"id,text\n{long},a\n{longest},b\n")], DATE, data, cfg())
    assert read(data, "texts")["id"].to_list() == [longest]
    assert read(data, "quarantine").select("line", "reason", "detail").rows() == [
        (2, "too_long", "the id has 300 characters, over 255")
    ]


def test_the_id_limit_is_the_contracts():
    if not CONTRACT.is_file():
        pytest.skip(f"{CONTRACT} is absent")
    contract = json.loads(CONTRACT.read_text(encoding="utf-8"))
    assert contract["properties"]["id"]["maxLength"] == MAX_ID_CHARS


def test_an_id_holding_a_control_character_is_quarantined_not_changed(tmp_path, data):
    ids = ["tab\there", "nul\x00x", "esc\x1b[31m", "c1\x85x", "fine", "  padded\t\n"]
    rows = "".join(json.dumps({"id": i, "text": f"text {n}"}) + "\n" for n, i in enumerate(ids))
    ing.ingest([write(tmp_path / "in.jsonl", rows)], DATE, data, ing.IngestConfig())
    assert read(data, "texts")["id"].to_list() == ["fine", "padded"]  # surrounding whitespace: stripped
    q = read(data, "quarantine")
    assert q["line"].to_list() == [1, 2, 3, 4] and set(q["reason"]) == {"malformed"}
    assert set(q["detail"]) == {"the id holds a control character (U+0000-U+001F, U+007F-U+009F)"}


def test_parquet_tsv_and_gzip_sources(tmp_path, data):
    pq_src = tmp_path / "a.parquet"
    pl.DataFrame({"id": ["p1", "p2"], "body": ["one", "two"]}).write_parquet(pq_src)
    tsv = write(tmp_path / "b.tsv", "id\tbody\nt1\tthree\n")
    gz = tmp_path / "c.csv.gz"
    gz.write_bytes(gzip.compress(b"id,body\ng1,four\n"))
    m = ing.ingest([pq_src, tsv, gz], DATE, data, ing.IngestConfig(text_columns=("body",)))
    assert read(data, "texts")["text"].to_list() == ["one", "two", "three", "four"]
    assert m["rows_kept"] == 4 and [s["rows_read"] for s in m["sources"]] == [2, 1, 1]


def test_wrong_column_names_the_file_and_the_choice(tmp_path, data):
    src = write(tmp_path / "in.csv", "id,body\n1,x\n")
    with pytest.raises(InputError, match=r"in\.csv: no column `text`.*--text-column"):
        ing.ingest([src], DATE, data, ing.IngestConfig())
    assert not data.texts(DATE).exists()


def test_missing_file_is_a_clear_error(tmp_path, data):
    with pytest.raises(InputError, match=r"nope\.csv: no such file"):
        ing.ingest([tmp_path / "nope.csv"], DATE, data, ing.IngestConfig())


def test_max_bad_fraction_publishes_nothing(tmp_path, data):
    good = write(tmp_path / "good.csv", "id,text\n1,fine\n")
    ing.ingest([good], DATE, data, ing.IngestConfig())
    before = (data.texts(DATE) / "part-00000.parquet").read_bytes()
    src = write(tmp_path / "in.csv", BAD_CSV)
    with pytest.raises(InputError, match=r"over --max-bad-fraction 0.2; worst reasons: empty_text: 2"):
        ing.ingest([src], DATE, data, cfg(max_bad_fraction=0.2))
    assert (data.texts(DATE) / "part-00000.parquet").read_bytes() == before


def test_fixture_with_every_kind_of_bad_row(data):
    m = ing.ingest([EVERY_BAD_ROW], DATE, data, cfg())
    q = read(data, "quarantine")
    assert q.select("line", "reason").rows() == [
        (3, "empty_text"),
        (4, "empty_text"),
        (5, "malformed"),
        (6, "unknown_label"),
        (7, "duplicate_id"),
        (8, "too_long"),
        (13, "undecodable"),
        (14, "malformed"),
    ]
    assert set(m["quarantined_by_reason"]) == set(ing.REASONS)
    assert m["rows_read"] == m["rows_kept"] + m["rows_quarantined"] == 4 + 8
    assert read(data, "texts")["id"].to_list() == ["r1", "r7", "r8", "r9"]
    assert (
        q.filter(pl.col("reason") == "undecodable")["raw"].item() == "bad \\xff byte\tWorld\tr11"
    )  # text, label, id
    src = m["sources"][0]
    assert src["size"] == EVERY_BAD_ROW.stat().st_size and len(src["sha256"]) == 64
    assert m["schema_version"] == 1 and m["cleaning"] == ing.CLEANING and m["config"]["max_text_chars"] == 50
