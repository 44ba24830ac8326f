"""The cleaning step: its fast paths give exactly what the plain sequence of steps gives."""

import unicodedata

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import ingest as ing
from pipeline.ingest import clean


def plain_clean(t: pl.Expr, *, backslash_breaks: bool) -> pl.Expr:
    """The reference: every step on every row."""
    e = t.str.normalize("NFKC")
    for pattern, repl, _ in clean._ENTITIES:
        e = e.str.replace_all(pattern, repl)
    if backslash_breaks:
        e = e.str.replace_all("\\", " ", literal=True)
    e = e.str.replace_all(r"\p{Cc}", " ")
    return e.str.replace_all(r"\s+", " ").str.strip_chars()


def both(texts: list[str], *, backslash_breaks: bool = True) -> tuple[list, list]:
    df = pl.DataFrame({"t": texts}, schema={"t": pl.String})
    fast = df.select(ing.clean_expr(pl.col("t"), backslash_breaks=backslash_breaks))["t"].to_list()
    return fast, df.select(plain_clean(pl.col("t"), backslash_breaks=backslash_breaks))["t"].to_list()


# Pieces each fast path must handle: entity remnants (one made by another, one by NFKC), spaces,
# controls, combining marks, fullwidth and halfwidth forms.
SNIPPETS = ["&#39;", "quot;", "&amp;", "\\", " ", "\t", "\u0301", "ｶ", "ﾞ", "中", "&nbsp;", "&amp;nbsp;"]
SNIPPETS += ["#151;", "&lt;", "gt;", "#146;", "；", "＆ｑｕｏｔ；", "＃３９；"]


def test_examples():
    texts = [
        "  a\tb\x00c  ",
        "ＡＢＣ &amp; x",
        "salt; pepper",
        "\u3000x\u3000",
        "a\\ \\b",
        "e\u0301",
        "中文，好",
        None,
        "",
    ]
    fast, plain = both(texts)
    assert fast == plain
    assert fast[:6] == ["a b c", "ABC & x", "salt; pepper", "x", "a b", "é"]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.lists(
            st.one_of(
                st.characters(codec="utf-8", exclude_categories=["Cs"]),
                st.sampled_from(SNIPPETS),
            )
        ).map("".join),
        max_size=10,
    )
)
def test_fast_paths_equal_the_plain_steps(texts):
    for backslash_breaks in (False, True):
        fast, plain = both(texts, backslash_breaks=backslash_breaks)
        assert fast == plain


def test_a_backslash_is_text_unless_the_source_writes_line_breaks_so():
    texts = ["\\N", "C:\\temp", "a\\b", "path\\\\to", "rate of\\their", "a \\$24 deal"]
    assert both(texts, backslash_breaks=False)[0] == texts  # kept: `\N` no longer becomes `N`
    assert both(texts, backslash_breaks=True)[0] == [
        "N",
        "C: temp",
        "a b",
        "path to",
        "rate of their",
        "a $24 deal",
    ]


def test_nfkc_stable_ranges_are_stable_in_any_context():
    """Each listed character is NFKC-invariant, reorders nothing, and never composes with what precedes."""
    second = set()  # characters that can be the second half of a canonical composition
    for cp in range(0x110000):
        d = unicodedata.decomposition(chr(cp))
        if d and not d.startswith("<") and len(d.split()) == 2:
            second.add(int(d.split()[1], 16))
    second |= set(range(0x1161, 0x1176)) | set(range(0x11A8, 0x11C3))  # Hangul V and T jamo
    for a, b in ing.NFKC_STABLE:
        for cp in range(a, b + 1):
            c = chr(cp)
            assert unicodedata.category(c) != "Cn", hex(cp)
            assert unicodedata.normalize("NFKC", c) == c, hex(cp)
            assert unicodedata.combining(c) == 0 and cp not in second, hex(cp)
