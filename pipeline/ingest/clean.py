"""Text cleaning: the one normalisation every text gets, at ingest; the lake holds only cleaned text,
which training and scoring read.

`CLEANING` describes it (recorded in each manifest); `clean_series` applies it, with fast paths for the
rows a step cannot change.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

# The cleaning applied to every text at ingest; recorded in each manifest.
CLEANING = {
    "version": 2,
    "unicode": "NFKC",
    "control_chars": "to space",
    "whitespace": "collapsed and stripped",
    "artefacts": "HTML entity remnants (#39; quot; amp; ...) decoded, backslash line breaks to space",
}
_ENTITIES = [  # (regex, replacement, literals one of which every match holds): AG News style remnants
    (r"&?#39;", "'", ["#39;"]),
    (r"&?#36;", "$", ["#36;"]),
    (r"&?#151;", "—", ["#151;"]),
    (r"&?#145;|&?#146;", "'", ["#145;", "#146;"]),
    (r"&?#147;|&?#148;", '"', ["#147;", "#148;"]),
    (r"&quot;|\bquot;", '"', ["quot;"]),
    (r"&amp;|\bamp;", "&", ["amp;"]),
    (r"&lt;|\blt;", "<", ["lt;"]),
    (r"&gt;|\bgt;", ">", ["gt;"]),
    (r"&nbsp;", " ", ["nbsp;"]),
]
# No replacement can make a new literal (they hold no letter, digit, `#` or `;`), so a row needs the
# fixes whose literals it holds before any fix; only the last one can add a space.
_ENTITY_LITERALS = sorted({lit for _, _, lits in _ENTITIES for lit in lits})
# Characters that NFKC leaves alone whatever surrounds them (tests/test_ingest_clean.py proves it):
# a text made only of these skips the normaliser, which is most of the cost of cleaning.
NFKC_STABLE = [(0x00, 0x7F), (0xC0, 0xFF), (0x3001, 0x3002), (0x3400, 0x4DBF), (0x4E00, 0x9FFF)]
_NFKC_UNSTABLE_RE = "[^" + "".join(rf"\x{{{a:X}}}-\x{{{b:X}}}" for a, b in NFKC_STABLE) + "]"
# Backslash, whitespace and control characters: every run becomes one space (a lone space is left be).
_SPACES_RE = r"[\\\s\p{Cc}]{2,}|[\\\p{Cc}]|[^\S ]"
_SPACES_FIX_RE = _SPACES_RE + "|^ | $"  # a row the spaces step changes
_TODO_RE = _NFKC_UNSTABLE_RE + "|" + _SPACES_FIX_RE  # a row NFKC or the spaces step may change


def clean_expr(text: pl.Expr) -> pl.Expr:
    """The cleaning step, as a polars expression over a string column (see `clean_series`)."""
    return text.map_batches(clean_series, return_dtype=pl.String)


def clean_series(s: pl.Series) -> pl.Series:
    """NFKC, then the entity fixes, then backslash/control/whitespace runs to one space, then strip.

    Each costly step runs only on the rows it can change (gathered, fixed, scattered back). One regex
    pass finds the rows holding a character outside `NFKC_STABLE` or something to collapse or strip
    (a regex costs the same whatever it looks for); NFKC runs on the first kind; of the entity fixes,
    only those whose literal some row with a `;` holds run, on those rows; the spaces step runs on the
    first set, and on the rows with a `;` when `&nbsp;` was among them (NFKC and it can add spaces).
    tests/test_ingest_clean.py checks it against the plain steps.
    """
    s = s.cast(pl.String).clone()

    def rows_matching(rows: np.ndarray, pattern: str) -> np.ndarray:
        return rows[s.gather(rows).str.contains(pattern).fill_null(False).to_numpy()]

    def fix(rows: np.ndarray, step: Any) -> None:
        nonlocal s
        if len(rows):
            s = s.scatter(rows, step(s.gather(rows)))

    todo = np.flatnonzero(s.str.contains(_TODO_RE).fill_null(False).to_numpy())
    fix(rows_matching(todo, _NFKC_UNSTABLE_RE), lambda x: x.str.normalize("NFKC"))
    semicolon = np.flatnonzero(s.str.contains(";", literal=True).fill_null(False).to_numpy())
    found = set(
        s.gather(semicolon).str.extract_many(_ENTITY_LITERALS, overlapping=True).explode().drop_nulls()
    )
    steps = [(pattern, repl) for pattern, repl, lits in _ENTITIES if found.intersection(lits)]

    def entities(x: pl.Series) -> pl.Series:
        for pattern, repl in steps:
            x = x.str.replace_all(pattern, repl)
        return x

    if steps:
        fix(semicolon, entities)
    spaced = np.union1d(todo, semicolon) if "nbsp;" in found else todo
    fix(rows_matching(spaced, _SPACES_FIX_RE), lambda x: x.str.replace_all(_SPACES_RE, " ").str.strip_chars())
    return s
