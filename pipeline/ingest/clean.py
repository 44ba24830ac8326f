"""Text cleaning: the one normalisation every text gets, at ingest and again when scoring.

`CLEANING` describes it (recorded in each manifest); `clean_series` applies it, with fast paths for the
rows a step cannot change.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

# The cleaning applied to every text; recorded in each manifest and applied again when scoring.
CLEANING = {
    "version": 2,
    "unicode": "NFKC",
    "control_chars": "to space",
    "whitespace": "collapsed and stripped",
    "artefacts": "HTML entity remnants (#39; quot; amp; ...) decoded, backslash line breaks to space",
}
_ENTITIES = [  # (regex, replacement): AG News style remnants, with or without the leading `&`
    (r"&?#39;", "'"),
    (r"&?#36;", "$"),
    (r"&?#151;", "—"),
    (r"&?#145;|&?#146;", "'"),
    (r"&?#147;|&?#148;", '"'),
    (r"&quot;|\bquot;", '"'),
    (r"&amp;|\bamp;", "&"),
    (r"&lt;|\blt;", "<"),
    (r"&gt;|\bgt;", ">"),
    (r"&nbsp;", " "),
]
# Characters that NFKC leaves alone whatever surrounds them (tests/test_ingest_clean.py proves it):
# a text made only of these skips the normaliser, which is most of the cost of cleaning.
NFKC_STABLE = [(0x00, 0x7F), (0xC0, 0xFF), (0x3001, 0x3002), (0x3400, 0x4DBF), (0x4E00, 0x9FFF)]
_NFKC_UNSTABLE_RE = "[^" + "".join(rf"\x{{{a:X}}}-\x{{{b:X}}}" for a, b in NFKC_STABLE) + "]"
# Backslash, whitespace and control characters: every run becomes one space (a lone space is left be).
_SPACES_RE = r"[\\\s\p{Cc}]{2,}|[\\\p{Cc}]|[^\S ]"


def clean_expr(text: pl.Expr) -> pl.Expr:
    """The cleaning step, as a polars expression over a string column (see `clean_series`)."""
    return text.map_batches(clean_series, return_dtype=pl.String)


def clean_series(s: pl.Series) -> pl.Series:
    """NFKC, then the entity fixes, then backslash/control/whitespace runs to one space, then strip.

    Each costly step runs only on the rows it can change (gathered, fixed, scattered back): NFKC on
    rows with a character outside `NFKC_STABLE`, the entity fixes on rows with a `;`, the spaces on
    rows with something to collapse or strip. tests/test_ingest_clean.py checks it against the plain steps.
    """
    s = s.cast(pl.String).clone()

    def fix(mask: pl.Series, step: Any) -> None:
        nonlocal s
        idx = np.flatnonzero(mask.fill_null(False).to_numpy())
        if len(idx):
            s = s.scatter(idx, step(s.gather(idx)))

    nonascii = np.flatnonzero((s.str.len_bytes() != s.str.len_chars()).fill_null(False).to_numpy())
    if len(nonascii):
        unstable = s.gather(nonascii).str.contains(_NFKC_UNSTABLE_RE).fill_null(False).to_numpy()
        idx = nonascii[unstable]
        if len(idx):
            s = s.scatter(idx, s.gather(idx).str.normalize("NFKC"))

    def entities(x: pl.Series) -> pl.Series:
        for pattern, repl in _ENTITIES:
            x = x.str.replace_all(pattern, repl)
        return x

    fix(s.str.contains(";", literal=True), entities)
    fix(s.str.contains(_SPACES_RE + "|^ | $"), lambda x: x.str.replace_all(_SPACES_RE, " ").str.strip_chars())
    return s


def clean_text(texts: pl.Series) -> pl.Series:
    return clean_series(texts)
