"""Property-based tests (hypothesis): the tokenizer, the vocabulary and ingest's row accounting.

Example counts are kept modest (the whole file runs in well under a minute on two cores); each example
batches many texts or rows, so one example covers a lot.
"""

from __future__ import annotations

import random
import re
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline import ingest as ing
from pipeline import lake
from pipeline.tokenize import tokenize_expr, tokenize_py
from pipeline.vocab import PAD, PAD_ID, UNK, UNK_ID, VocabConfig, build_vocab, count_tokens, encode

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Characters this Python's Unicode tables know: polars (Rust) lower-cases with a newer Unicode version,
# so a letter added since (e.g. U+10D50, Garay, Unicode 16) is lower-cased by one and not the other.
KNOWN = st.characters(codec="utf-8", exclude_categories=["Cs", "Cn"])
# Pieces the tokenizer treats specially, so that they turn up often.
PIECES = st.sampled_from(
    [
        *[" ", "\t", "\n", "\u3000", "\u00a0", "\x1c", "<br />", "<BR />", '"', ";", ":", ".", ",", "'"],
        *["(", "!", "中", "國", "İ", "Σ", "ß", "ﬁ", "A", "z", "9", "-", "_", "&", "<", ">", "br"],
        # either side of each Han range (a Han character is a token of its own), and Han look-alikes
        *["\u33ff", "\u3400", "\u4dbf", "\u4dc0", "\u9fff", "\ua000", "\uf8ff", "\uf900", "\ufaff"],
        *["\ufb00", "\U0001ffff", "\U00020000", "\U0002fa1f", "\U0002fa20", "\u3007", "\u3005"],
    ]
)
# Unicode White_Space, which the tokenizer splits on (Python's isspace() also takes U+001C..U+001F)
WHITE_SPACE = re.compile("[\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]")
TEXT = st.lists(st.one_of(KNOWN, PIECES), max_size=40).map("".join)


def tokens_polars(texts: list[str]) -> list[list[str]]:
    df = pl.DataFrame({"t": texts}, schema={"t": pl.String})
    return df.select(tokenize_expr(pl.col("t")))["t"].to_list()


# ---------------------------------------------------------------------------- tokenizer


@SETTINGS
@given(st.lists(TEXT, max_size=50))
def test_tokenizer_expression_equals_the_python_reference(texts):
    assert tokens_polars(texts) == [tokenize_py(t) for t in texts]


@SETTINGS
@given(st.lists(TEXT, min_size=1, max_size=30))
def test_tokens_hold_no_space_no_separator_and_are_lower_case(texts):
    for toks in tokens_polars(texts):
        for t in toks:
            assert t and not WHITE_SPACE.search(t) and not set(t) & set('";:')
            assert t == t.lower()


# ---------------------------------------------------------------------------- vocabulary

WORDS = st.sampled_from(
    [
        "a",
        "b",
        "c",
        "dd",
        "中",
        "中文",
        "x中",
        "\uf900\u4dc0",
        "x.y",
        "it's",
        "(z)",
        "Aa",
        "<br />",
        "  ",
        '"q"',
    ]
)
CORPUS = st.lists(st.lists(WORDS, max_size=12).map(" ".join), max_size=40)


@SETTINGS
@given(CORPUS, st.integers(0, 3), st.integers(2, 12), st.randoms(use_true_random=False))
def test_vocabulary_is_pad_unk_then_count_descending_ties_by_token(texts, min_count, max_size, rnd):
    cfg = VocabConfig(max_size=max_size, min_count=min_count)
    v = build_vocab(pl.LazyFrame({"text": texts}, schema={"text": pl.String}), cfg)
    assert v.tokens[PAD_ID] == PAD and v.tokens[UNK_ID] == UNK
    assert len(v.tokens) == len(set(v.tokens)) <= max(max_size, 2)
    counts = Counter(t for x in texts for t in tokenize_py(x))
    eligible = [t for t, n in counts.items() if n >= min_count]
    # the most frequent tokens (ties broken by the token), as many as fit
    assert v.tokens[2:] == sorted(eligible, key=lambda t: (-counts[t], t))[: max_size - 2]
    # deterministic: the same texts in another order give the same vocabulary and version
    shuffled = list(texts)
    rnd.shuffle(shuffled)
    again = build_vocab(pl.LazyFrame({"text": shuffled}, schema={"text": pl.String}), cfg)
    assert again == v


@SETTINGS
@given(CORPUS, st.lists(TEXT, max_size=20), st.integers(1, 8))
def test_encode_is_the_python_lookup_cut_to_max_len(texts, queries, max_len):
    v = build_vocab(pl.LazyFrame({"text": texts}, schema={"text": pl.String}), VocabConfig())
    ids, offsets = encode(pl.Series(queries, dtype=pl.String), v, max_len=max_len)
    index = {t: i for i, t in enumerate(v.tokens)}
    for i, q in enumerate(queries):
        want = [index.get(t, UNK_ID) for t in tokenize_py(q)[:max_len]] or [UNK_ID]
        assert ids[offsets[i] : offsets[i + 1]].tolist() == want


@SETTINGS
@given(st.lists(TEXT, max_size=30))
def test_count_tokens_equals_a_counter_of_the_reference(texts):
    fast = count_tokens(pl.LazyFrame({"text": texts}, schema={"text": pl.String}))
    slow = Counter(t for x in texts for t in tokenize_py(x))
    assert dict(zip(fast["token"].to_list(), fast["count"].to_list(), strict=True)) == dict(slow)


def test_texts_holding_the_special_tokens():
    v = build_vocab(pl.LazyFrame({"text": ["<pad> <unk> a a"]}), VocabConfig())
    assert len(v.tokens) == len(set(v.tokens))
    ids, _ = encode(pl.Series(["<pad> a <unk>"]), v, max_len=8)
    assert ids[0] != PAD_ID  # a literal `<pad>` in a text is not padding


# ---------------------------------------------------------------------------- ingest row accounting


@dataclass(frozen=True)
class Row:
    """One generated row: its bytes (the id is filled in) and where it must end (None: kept)."""

    raw: bytes
    reason: str | None


CLASSES = ("A", "B")
MAX_CHARS = 20
CSV_ROWS = {
    "good": Row(b"{id},good text {id},A", None),
    "unlabelled": Row(b"{id},no label {id},", None),
    "nul_and_controls": Row(b"{id},a\x00b\x01c,B", None),
    "multiline": Row(b'{id},"two\nlines",A', None),
    "quoted_comma": Row(b'{id},"a, b",B', None),
    "crlf": Row(b"{id},crlf,A\r", None),
    "empty": Row(b"{id},,A", "empty_text"),
    "blank": Row(b"{id},  \t ,B", "empty_text"),
    "blank_line": Row(b"", "empty_text"),
    "extra_column": Row(b"{id},a,b,A", "malformed"),
    "missing_column": Row(b"{id},a", "malformed"),
    "latin1": Row(b"{id},caf\xe9,A", "undecodable"),
    "latin1_wrong_width": Row(b"{id},caf\xe9", "malformed"),
    "unknown_label": Row(b"{id},text,C", "unknown_label"),
    "too_long": Row(b"{id}," + b"x" * (MAX_CHARS + 5) + b",A", "too_long"),
    "duplicate": Row(b"{dup},a repeat,A", "duplicate_id"),
}
JSONL_ROWS = {
    "good": Row(b'{{"id": "{id}", "text": "good {id}", "label": "A"}}', None),
    "number_text": Row(b'{{"id": "{id}", "text": 12.5}}', None),
    "escapes": Row(b'{{"id": "{id}", "text": "tab\\tnew\\nline \\u00e9 \\ud83d\\ude00"}}', None),
    "not_an_object": Row(b"[1, 2]", "malformed"),
    "truncated": Row(b'{{"id": "{id}", "text": "cut', "malformed"),
    "nested_text": Row(b'{{"id": "{id}", "text": {{"a": 1}}}}', "malformed"),
    "lone_surrogate": Row(b'{{"id": "{id}", "text": "a\\udc00"}}', "malformed"),
    "no_text": Row(b'{{"id": "{id}"}}', "empty_text"),
    "blank_line": Row(b"  ", "empty_text"),
    "latin1": Row(b'{{"id": "{id}", "text": "caf\xe9"}}', "undecodable"),
    "unknown_label": Row(b'{{"id": "{id}", "text": "t", "label": "C"}}', "unknown_label"),
    "too_long": Row(b'{{"id": "{id}", "text": "' + b"y" * (MAX_CHARS + 1) + b'"}}', "too_long"),
    "duplicate": Row(b'{{"id": "{dup}", "text": "again"}}', "duplicate_id"),
}


def build_file(
    kinds: list[str], table: dict[str, Row], *, header: bytes
) -> tuple[bytes, list[tuple[int, str]], int]:
    """The file's bytes, the (line, reason) of every bad row, and the number of kept rows."""
    lines = [header] if header else []
    line = len(lines) + 1
    bad: list[tuple[int, str]] = []
    kept_ids: list[str] = []
    for i, kind in enumerate(kinds):
        row = table[kind]
        if kind == "duplicate" and not kept_ids:
            row = table["good"]  # nothing to repeat yet: a good row instead
        raw = row.raw.replace(b"{{", b"{").replace(b"}}", b"}")
        raw = raw.replace(b"{id}", b"r%d" % i).replace(b"{dup}", (kept_ids or ["-"])[0].encode())
        lines.append(raw)
        if row.reason is None:
            kept_ids.append(f"r{i}")
        else:
            bad.append((line, row.reason))
        line += raw.count(b"\n") + 1
    return b"\n".join(lines) + b"\n", bad, len(kept_ids)


def check_accounting(raw: bytes, name: str, bad: list[tuple[int, str]], kept: int, block: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / name
        src.write_bytes(raw)
        data = lake.DataDir.at(Path(tmp) / "data")
        cfg = ing.IngestConfig(classes=CLASSES, max_text_chars=MAX_CHARS, block_bytes=block)
        m = ing.ingest([src], "2026-01-01", data, cfg)
        texts = pl.read_parquet(data.texts("2026-01-01") / "part-00000.parquet")
        q = pl.read_parquet(data.quarantine("2026-01-01") / "part-00000.parquet")
    assert m["rows_read"] == m["rows_kept"] + m["rows_quarantined"] == kept + len(bad)
    assert (texts.height, q.height) == (kept, len(bad))
    assert sorted(q.select("line", "reason").rows()) == sorted(bad)
    assert m["quarantined_by_reason"] == dict(sorted(Counter(r for _, r in bad).items()))
    assert texts["id"].n_unique() == texts.height  # kept ids are unique
    assert q["detail"].null_count() == 0


@SETTINGS
@given(
    st.lists(st.sampled_from(sorted(CSV_ROWS)), max_size=60),
    st.booleans(),
    st.sampled_from([256, 1 << 12, 8 << 20]),
)
def test_csv_rows_read_equal_kept_plus_quarantined(kinds, unclosed_tail, block):
    raw, bad, kept = build_file(kinds, CSV_ROWS, header=b"id,text,label")
    if unclosed_tail:  # a quote opened in the last record and never closed
        raw += b'tail,text,"open\nstill open\n'
        bad.append((raw.count(b"\n") - 1, "malformed"))
    check_accounting(raw, "in.csv", bad, kept, block)


@SETTINGS
@given(st.lists(st.sampled_from(sorted(JSONL_ROWS)), max_size=60), st.sampled_from([64, 1 << 10, 8 << 20]))
def test_jsonl_rows_read_equal_kept_plus_quarantined(kinds, block):
    raw, bad, kept = build_file(["good", *kinds], JSONL_ROWS, header=b"")
    check_accounting(raw, "in.jsonl", bad, kept, block)


def test_row_tables_cover_every_reason():
    for table in (CSV_ROWS, JSONL_ROWS):
        assert {r.reason for r in table.values()} - {None} == set(ing.REASONS)
    rng = random.Random(0)  # and one long seeded mix, over many batches
    kinds = [rng.choice(sorted(CSV_ROWS)) for _ in range(3000)]
    raw, bad, kept = build_file(kinds, CSV_ROWS, header=b"id,text,label")
    check_accounting(raw, "big.csv", bad, kept, 1 << 12)
