"""A reader's batch: every record it saw in a source, good or bad, in file order, with its line.

Bad records already carry a reason (malformed, undecodable); validation gives the rest theirs.
`resolve_columns` maps the columns a user chose to a file's columns; `batch_frame` turns a batch into
the polars frame that validation works on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from pipeline.errors import InputError
from pipeline.ingest.decoding import decode, show
from pipeline.ingest.options import UNDECODABLE, IngestConfig


@dataclass
class ReaderBatch:
    line: np.ndarray  # int64, one per record
    cols: dict[str, pa.Array]  # role (text0, text1, ..., label, id) -> binary/string values
    reason: list[str | None]  # reader verdict per record (None: parsed fine)
    detail: list[str | None]
    raw: list[str | None]  # what to show in the quarantine for reader-rejected records
    escaped: bool = False  # the stream escaped undecodable bytes: values may hold escapes


def resolve_columns(path: Path, names: list[str], cfg: IngestConfig) -> dict[str, int]:
    """Map each role (text0.., label, id) to a column index; a clear error for a wrong choice."""

    def find(spec: str, what: str) -> int | None:
        if names.count(spec) > 1:
            msg = (
                f"{path}: the header names {what} `{spec}` {names.count(spec)} times; "
                f"hint: choose one by its 1-based position"
            )
            raise InputError(msg)
        if spec in names:
            return names.index(spec)
        if spec.isdigit() and 1 <= int(spec) <= len(names):
            return int(spec) - 1
        return None

    hint = ""
    if any("\x00" in n for n in names):
        hint = "; the header holds NUL bytes: is the file UTF-16? (--encoding utf-16)"
    roles: dict[str, int] = {}
    for i, spec in enumerate(cfg.text_columns):
        idx = find(spec, "the text column")
        if idx is None:
            msg = (
                f"{path}: no column `{spec}` (a text column); it has {names}; hint: choose it with "
                f"--text-column NAME or a 1-based position (--no-header when there is no header row){hint}"
            )
            raise InputError(msg)
        roles[f"text{i}"] = idx
    for role, spec, flag in (
        ("label", cfg.label_column, "--label-column"),
        ("id", cfg.id_column, "--id-column"),
    ):
        if not spec:
            continue
        idx = find(spec, f"the {role} column")
        if idx is None and spec != role:  # the defaults "label" and "id" are optional
            msg = f"{path}: no column `{spec}` (the {role} column); it has {names}; hint: check {flag}{hint}"
            raise InputError(msg)
        if idx is not None:
            roles[role] = idx
    return roles


def batch_frame(b: ReaderBatch, n_text: int) -> pl.DataFrame:
    """A reader batch as one frame: line, id, raw text, label, reader reason/detail/raw."""
    cols: dict[str, Any] = {"line": pl.Series(b.line, dtype=pl.Int64)}
    undecodable = np.zeros(len(b.line), dtype=bool)
    for role, arr in b.cols.items():
        if pa.types.is_binary(arr.type) or pa.types.is_large_binary(arr.type) or b.escaped:
            arr, bad = decode(arr, escaped=b.escaped)
            if any(bad):
                undecodable |= np.array(bad, dtype=bool)
        cols[role] = pl.Series(arr).cast(pl.String)
    reason, detail, raw = list(b.reason), list(b.detail), list(b.raw)
    for i in np.flatnonzero(undecodable).tolist():
        if reason[i] is None:
            reason[i], detail[i] = UNDECODABLE, "not valid UTF-8 (after --encoding)"
            raw[i] = "\t".join(show(b.cols[r][i].as_py() or b"") for r in b.cols)

    def col(role: str) -> pl.Expr:
        return pl.col(role) if role in cols else pl.lit(None, dtype=pl.String).alias(role)

    texts = [col(f"text{i}") for i in range(n_text)]
    return pl.DataFrame(cols).select(
        "line",
        col("id"),
        (pl.concat_str(texts, separator=" ", ignore_nulls=True) if n_text > 1 else texts[0]).alias("raw"),
        col("label"),
        *(_strings(name, v) for name, v in (("reason", reason), ("detail", detail), ("reader_raw", raw))),
    )


def _strings(name: str, values: list[str | None]) -> pl.Series | pl.Expr:
    if values.count(None) == len(values):  # the common case, without a Python object per row
        return pl.lit(None, dtype=pl.String).alias(name)
    return pl.Series(name, values, dtype=pl.String)
