r"""Text cleaning: the one normalisation every text gets, at ingest; the lake holds only cleaned text,
which training and scoring read.

`CLEANING` describes it (recorded in each manifest, beside the options); `clean_series` applies it, with
fast paths for the rows a step cannot change. One step belongs to a format, not to text: AG News writes
a line break as a backslash (`rate of\their`, `a \$24 million deal`), which only `backslash_breaks`
turns into a space; anywhere else a backslash is text (`\N`, `C:\temp`, `a\b`) and is kept.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

# The cleaning applied to every text at ingest; recorded in each manifest.
CLEANING = {
    "version": 3,
    "unicode": "NFKC",
    "control_chars": "to space",
    "whitespace": "collapsed and stripped",
    "artefacts": "HTML entity remnants (#39; quot; amp; ...) decoded",
    "backslash_breaks": "with that option (AG News): a backslash is a line break, to space",
}
# Cleaning versions whose texts give the same tokens, so a model trained on one scores the other: 3 keeps
# the backslashes that 2 turned into spaces, and the tokenizer splits at a backslash as at a space.
SAME_TOKENS = [{2, 3}]
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


def _spaces_re(breaks: bool) -> str:
    """Whitespace and control characters (and backslashes, with `breaks`): every run becomes one space
    (a lone space is left be)."""
    extra = r"\\" if breaks else ""
    return rf"[{extra}\s\p{{Cc}}]{{2,}}|[{extra}\p{{Cc}}]|[^\S ]"


# by `backslash_breaks`: the spaces step, the rows it changes, the rows NFKC or the spaces step may change
_SPACES_RE = {b: _spaces_re(b) for b in (False, True)}
_SPACES_FIX_RE = {b: _SPACES_RE[b] + "|^ | $" for b in (False, True)}
_TODO_RE = {b: _NFKC_UNSTABLE_RE + "|" + _SPACES_FIX_RE[b] for b in (False, True)}


def clean_expr(text: pl.Expr, *, backslash_breaks: bool = False) -> pl.Expr:
    """The cleaning step, as a polars expression over a string column (see `clean_series`)."""
    return text.map_batches(
        lambda s: clean_series(s, backslash_breaks=backslash_breaks), return_dtype=pl.String
    )


def clean_series(s: pl.Series, *, backslash_breaks: bool = False) -> pl.Series:
    """NFKC, then the entity fixes, then control/whitespace runs (and backslashes, with
    `backslash_breaks`) to one space, then strip.

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

    todo = np.flatnonzero(s.str.contains(_TODO_RE[backslash_breaks]).fill_null(False).to_numpy())
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
    spaces = _SPACES_RE[backslash_breaks]
    fix(
        rows_matching(spaced, _SPACES_FIX_RE[backslash_breaks]),
        lambda x: x.str.replace_all(spaces, " ").str.strip_chars(),
    )
    return s
