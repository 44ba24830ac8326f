import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.tokenize import tokenize_expr, tokenize_py


def tok(texts: list[str]) -> list[list[str]]:
    return (
        pl.DataFrame({"t": texts}, schema={"t": pl.String}).select(tokenize_expr(pl.col("t")))["t"].to_list()
    )


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("Hello, World!", ["hello", ",", "world", "!"]),
        ("It's 2024.", ["it", "'", "s", "2024", "."]),
        ('He said "no"; then: yes', ["he", "said", "no", "then", "yes"]),
        ("a<br />b", ["a", "b"]),
        ("中国队赢了", ["中", "国", "队", "赢", "了"]),
        ("GPU芯片 sales (up 3%)", ["gpu", "芯", "片", "sales", "(", "up", "3%", ")"]),
        ("", []),
        ("   ", []),
    ],
)
def test_tokenize_examples(text, tokens):
    assert tok([text]) == [tokens]
    assert tokenize_py(text) == tokens


# Characters this Python's Unicode tables know: polars (Rust) lower-cases with a newer Unicode version,
# so a letter added since (e.g. U+10D50, Garay, Unicode 16) is lower-cased by one and not the other.
KNOWN = st.characters(codec="utf-8", exclude_categories=["Cs", "Cn"])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(alphabet=KNOWN), max_size=20))
def test_polars_tokenizer_equals_python_reference(texts):
    assert tok(texts) == [tokenize_py(t) for t in texts]
