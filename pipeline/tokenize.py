r"""One tokenizer for vocabulary building, training and scoring.

English follows torchtext's `basic_english` rules: lower-case, `<br />` and `"` removed, `; :` are
separators, `' . , ( ) ! ?` become tokens of their own, everything else splits on whitespace. A
backslash separates too: ingest keeps it as text (`\N`, `C:\temp`), and a word never holds one (AG News
writes a line break as one, `rate of\their`).
Every Chinese (Han) character is a token of its own. Numbers are kept as they are.

`tokenize_expr` is the vectorised form (a polars expression, used everywhere in the pipeline);
`tokenize_py` is the same rules in plain Python `re`, the reference the tests compare against.
"""

from __future__ import annotations

import re

import polars as pl

TOKENIZER_NAME = "basic_english+han"
TOKENIZER_VERSION = 1

# CJK Unified Ideographs, extension A, compatibility ideographs, extensions B-F.
_HAN_RANGES = [(0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF), (0x20000, 0x2FA1F)]
# Unicode White_Space, spelled out: Rust's `\s` and Python's `\s` disagree on U+001C..U+001F.
_WS_RANGES = [
    (0x09, 0x0D),
    (0x20, 0x20),
    (0x85, 0x85),
    (0xA0, 0xA0),
    (0x1680, 0x1680),
    (0x2000, 0x200A),
    (0x2028, 0x2029),
    (0x202F, 0x202F),
    (0x205F, 0x205F),
    (0x3000, 0x3000),
]
_PUNCT = ".,()!?'"  # each one a token
# separators (basic_english turns `;:` into spaces, `"` into nothing). The backslash joined them when ingest
# stopped turning it into a space (cleaning version 3): cleaning 2's lake never held one, so every
# vocabulary built before tokenizes as it did, and cleaning 2 and 3 texts give the same tokens.
_DROP = '";:\\'


def _char_class(ranges: list[tuple[int, int]], fmt: str) -> str:
    return "".join(fmt.format(a) + "-" + fmt.format(b) for a, b in ranges)


_HAN_RUST = _char_class(_HAN_RANGES, r"\x{{{:X}}}")
_HAN_PY = _char_class(_HAN_RANGES, r"\U{:08X}")
_WS_RUST = _char_class(_WS_RANGES, r"\x{{{:X}}}")
_WS_PY = _char_class(_WS_RANGES, r"\U{:08X}")
_P = re.escape(_PUNCT)
_D = re.escape(_DROP)
# a Han character | one punctuation token | a run of anything else that is not space or separator
_PATTERN_RUST = rf"[{_HAN_RUST}]|[{_P}]|[^{_WS_RUST}{_HAN_RUST}{_P}{_D}]+"
_PATTERN_PY = re.compile(rf"[{_HAN_PY}]|[{_P}]|[^{_WS_PY}{_HAN_PY}{_P}{_D}]+")
_HAN_RUN_RUST = rf"^[{_HAN_RUST}]+$"


def tokenizer_settings() -> dict[str, object]:
    """Stored with every vocabulary so a mismatch is detected, not silently mis-tokenised."""
    return {"name": TOKENIZER_NAME, "version": TOKENIZER_VERSION, "lowercase": True}


def tokenize_expr(text: pl.Expr) -> pl.Expr:
    """`text` (str) -> list[str] of tokens."""
    return (
        text.str.to_lowercase()
        .str.replace_all("<br />", " ", literal=True)
        .str.replace_all('"', "", literal=True)
        .str.extract_all(_PATTERN_RUST)
    )


def is_han_run_expr(text: pl.Expr) -> pl.Expr:
    """True where `text` is Han characters and nothing else.

    Such a text's tokens are its characters, which `text.str.split("")` gives several times faster
    than `tokenize_expr` (no regex match per character): the vocabulary builder's shortcut.
    """
    return text.str.contains(_HAN_RUN_RUST)


def tokenize_py(text: str) -> list[str]:
    """Reference implementation of `tokenize_expr` in plain Python."""
    text = text.lower().replace("<br />", " ").replace('"', "")
    return _PATTERN_PY.findall(text)


def tokenizer_rules() -> dict[str, object]:
    """The rules above as data, for a tokenizer written in another language (model exports).

    Steps, in order: lower-case (Unicode default case mapping), replace each `replace` pair, then the
    tokens are the matches of `pattern` (RE2 / Rust / Java syntax; the same pattern is built from the
    ranges and characters: a Han character | one punctuation character | a run of characters that are
    neither whitespace, Han, punctuation nor separators).
    """
    return {
        **tokenizer_settings(),
        "replace": [["<br />", " "], ['"', ""]],
        "pattern": _PATTERN_RUST,
        "han_ranges": [list(r) for r in _HAN_RANGES],
        "whitespace_ranges": [list(r) for r in _WS_RANGES],
        "punctuation": _PUNCT,
        "separators": _DROP,
    }
