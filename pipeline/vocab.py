"""Vocabulary: built from the lake in polars (no Python loop over rows), versioned by content hash.

Ids: `<pad>` = 0, `<unk>` = 1, then tokens by count descending, ties broken by the token itself.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import polars as pl

from pipeline import lake
from pipeline.errors import ModelError
from pipeline.settings import setting, settings
from pipeline.tokenize import is_han_run_expr, tokenize_expr, tokenizer_settings

log = logging.getLogger(__name__)

PAD, UNK = "<pad>", "<unk>"
_BR = "(?i)<br />"  # exactly the strings whose lower case is "<br />"
_BR_CUT = "(?i)<br$"  # the chunk before the space of a `_BR`
PAD_ID, UNK_ID = 0, 1


@settings
class VocabConfig:
    max_size: int = setting(50_000, "the most tokens kept, <pad> and <unk> included", ge=2)
    min_count: int = setting(
        0, "tokens seen fewer times are dropped; 0 = chosen by corpus size (`config.resolve_for_data`)", ge=0
    )


@dataclass(frozen=True)
class Vocab:
    tokens: list[str]
    settings: dict[str, object]
    version: str

    def __len__(self) -> int:
        return len(self.tokens)

    def frame(self) -> pl.DataFrame:
        return pl.DataFrame(
            {"token": self.tokens, "token_id": np.arange(len(self.tokens), dtype=np.int32)},
            schema={"token": pl.String, "token_id": pl.Int32},
        )


def count_tokens(texts: pl.LazyFrame) -> pl.DataFrame:
    """Token counts of a `text` column, sorted by count descending then token.

    A space never belongs to a token, so each space-separated chunk tokenises on its own: count the
    chunks (a cheap split), then tokenise only the distinct ones and add their counts up. `<br />`
    (any case: the tokenizer lower-cases first) holds a space, so a corpus that has one is counted
    again with it removed before the split; a chunk ending in `<br` shows where one may be.
    """
    chunks = _count_chunks(texts, pl.col("text"))
    if chunks.select(pl.col("chunk").str.contains(_BR_CUT).any()).item():
        chunks = _count_chunks(texts, pl.col("text").str.replace_all(_BR, " "))
    return (
        _tokenize_distinct(chunks)
        .explode("token")
        .drop_nulls("token")
        .group_by("token")
        .agg(pl.col("n").sum().cast(pl.UInt32).alias("count"))
        .sort(["count", "token"], descending=[True, False])
        .collect(engine="streaming")
    )


def _count_chunks(texts: pl.LazyFrame, text: pl.Expr) -> pl.DataFrame:
    """Distinct space-separated chunks of `text` and how often each occurs: (chunk, n).

    The one pass over every chunk, so most of the time goes here: the streaming engine splits and
    counts batches of rows on every core and adds the partial counts up. `list.explode` (an
    expression) is cheaper than `DataFrame.explode`.
    """
    return (
        texts.select(text.str.split(" ").list.explode().alias("chunk"))
        .group_by("chunk")
        .agg(pl.len().alias("n"))
        .collect(engine="streaming")
    )


def _tokenize_distinct(chunks: pl.DataFrame) -> pl.LazyFrame:
    """(chunk, n) -> (token list, n), the tokenizer's result on each distinct chunk.

    A run of Han characters (a Chinese phrase; most distinct chunks of Chinese text are one) is its
    characters: splitting it is several times faster than a regex match per character.
    """
    han = chunks.select(is_han_run_expr(pl.col("chunk"))).to_series()
    return pl.concat(
        [
            chunks.filter(han).lazy().select(pl.col("chunk").str.split("").alias("token"), "n"),
            chunks.filter(~han).lazy().select(tokenize_expr(pl.col("chunk")).alias("token"), "n"),
        ]
    )


def build_vocab(texts: pl.LazyFrame, cfg: VocabConfig) -> Vocab:
    # a text may hold the literal strings `<pad>` or `<unk>`: they are words there, not the specials
    counts = count_tokens(texts).filter(pl.col("count") >= cfg.min_count, ~pl.col("token").is_in([PAD, UNK]))
    keep = counts.head(max(cfg.max_size - 2, 0))["token"].to_list()
    settings = {"tokenizer": tokenizer_settings(), **asdict(cfg)}
    tokens = [PAD, UNK, *keep]
    return Vocab(tokens=tokens, settings=settings, version=_version(tokens, settings))


def _version(tokens: list[str], settings: dict[str, object]) -> str:
    payload = json.dumps({"tokens": tokens, "settings": settings}, ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def save_vocab(vocab: Vocab, folder: Path) -> Path:
    """Write `vocab-<version>.json` (same vocabulary, same bytes) and return its path."""
    path = folder / f"vocab-{vocab.version}.json"
    if not path.exists():
        lake.write_json(path, {"version": vocab.version, "settings": vocab.settings, "tokens": vocab.tokens})
    return path


def load_vocab(path: Path) -> Vocab:
    obj = lake.read_json(path)
    vocab = Vocab(tokens=obj["tokens"], settings=obj["settings"], version=obj["version"])
    if _version(vocab.tokens, vocab.settings) != vocab.version:
        msg = f"{path}: content does not match its version {vocab.version}; the file was changed or damaged"
        raise ModelError(msg)
    if vocab.settings.get("tokenizer") != tokenizer_settings():
        msg = (
            f"{path}: built with tokenizer {vocab.settings.get('tokenizer')}, this code tokenises as "
            f"{tokenizer_settings()}; rebuild the vocabulary and retrain"
        )
        raise ModelError(msg)
    return vocab


def encode(texts: pl.Series, vocab: Vocab, *, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Texts -> (flat token ids int64, offsets int64 of len n+1), vectorised.

    Texts are cut to their first `max_len` tokens; a text with no token becomes one `<unk>`, so every
    sequence has length >= 1 (packed sequences need it).
    """
    toks = pl.DataFrame({"text": texts}).select(
        tokenize_expr(pl.col("text")).list.head(max_len).alias("tok")
    )["tok"]
    lengths = toks.list.len().to_numpy().astype(np.int64)
    flat = toks.explode().drop_nulls()  # polars 2.x: empty lists give no row
    words = vocab.frame().slice(2)  # never `<pad>` or `<unk>`: those strings in a text are unknown words
    ids = flat.replace_strict(
        words["token"], words["token_id"], default=UNK_ID, return_dtype=pl.Int64
    ).to_numpy()
    empty = lengths == 0
    if empty.any():
        # splice one <unk> into each empty sequence
        pos = np.cumsum(np.concatenate([[0], lengths]))[:-1][empty]
        ids = np.insert(ids, pos, UNK_ID)
        lengths = np.where(empty, 1, lengths)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return ids.astype(np.int64), offsets
