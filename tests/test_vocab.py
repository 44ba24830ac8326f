import json
from collections import Counter

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.errors import ModelError
from pipeline.tokenize import tokenize_py
from pipeline.vocab import (
    PAD,
    UNK,
    UNK_ID,
    VocabConfig,
    build_vocab,
    count_tokens,
    encode,
    load_vocab,
    save_vocab,
)


def texts(*xs: str) -> pl.LazyFrame:
    return pl.LazyFrame({"text": list(xs)}, schema={"text": pl.String})


def test_ids_are_pad_unk_then_count_descending_ties_by_token():
    v = build_vocab(texts("b a c", "a b", "a", "中"), VocabConfig())
    assert v.tokens == [PAD, UNK, "a", "b", "c", "中"]


def test_min_count_and_max_size():
    v = build_vocab(texts("a a a b b c"), VocabConfig(min_count=2))
    assert v.tokens == [PAD, UNK, "a", "b"]
    v = build_vocab(texts("a a a b b c"), VocabConfig(max_size=3))
    assert v.tokens == [PAD, UNK, "a"]


def test_same_texts_same_version_and_bytes(tmp_path):
    a = build_vocab(texts("x y", "z"), VocabConfig())
    b = build_vocab(texts("z", "x y"), VocabConfig())
    assert a.version == b.version
    pa_, pb = save_vocab(a, tmp_path / "a"), save_vocab(b, tmp_path / "b")
    assert pa_.read_bytes() == pb.read_bytes()
    assert load_vocab(pa_) == a
    assert build_vocab(texts("x y"), VocabConfig()).version != a.version


def test_load_refuses_a_tampered_vocabulary(tmp_path):
    p = save_vocab(build_vocab(texts("x y"), VocabConfig()), tmp_path)
    obj = json.loads(p.read_text())
    obj["tokens"].append("injected")
    p.write_text(json.dumps(obj))
    with pytest.raises(ModelError, match="does not match its version"):
        load_vocab(p)


def test_encode_unknown_empty_and_truncated():
    v = build_vocab(texts("a b c"), VocabConfig())
    a, b, c = (v.tokens.index(t) for t in "abc")
    ids, offsets = encode(pl.Series(["a zz b", "", "c c c c", ";;"]), v, max_len=3)
    seqs = [ids[offsets[i] : offsets[i + 1]].tolist() for i in range(4)]
    assert seqs == [[a, UNK_ID, b], [UNK_ID], [c, c, c], [UNK_ID]]
    assert offsets.dtype == np.int64


def python_counts(xs: list[str | None]) -> dict[str, int]:
    return dict(Counter(t for x in xs if x is not None for t in tokenize_py(x)))


def polars_counts(xs: list[str | None]) -> dict[str, int]:
    fast = count_tokens(pl.LazyFrame({"text": xs}, schema={"text": pl.String}))
    return dict(zip(fast["token"].to_list(), fast["count"].to_list(), strict=True))


@pytest.mark.parametrize(
    "xs",
    [
        ["中国队 赢了", "𠀀豈中中"],  # Han runs, beyond the BMP and compatibility ideographs too
        ["GPU芯片 sales", "芯片GPU", '中"国', "Σ中Σ"],  # Han beside other characters
        ["a<br />b", "x <BR />y", "<br /><Br />", "<br />"],  # `<br />` in any case
        ["a<br", "<br", "<br/>"],  # a chunk ending in `<br` without a `<br />`
        [None, "", "  ", "\t"],
    ],
)
def test_count_tokens_examples(xs):
    assert polars_counts(xs) == python_counts(xs)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.lists(
            st.one_of(
                # "Cn": letters newer than this Python's Unicode tables lower-case differently in polars
                st.characters(codec="utf-8", exclude_categories=["Cs", "Cn"]),
                st.sampled_from([" ", "<br />", "<BR />", "<br", "/>", '"', "Σ", "中", "𠀀", "İ", ".", "\t"]),
            )
        ).map("".join),
        max_size=20,
    )
)
def test_count_tokens_equals_the_python_tokenizer_and_counter(xs):
    assert polars_counts(xs) == python_counts(xs)
