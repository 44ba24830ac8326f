"""Training data: the labelled rows of the lake, the validation split, and batches of similar length.

Everything here is deterministic given its seed, so a model's version (a hash of its inputs) names
the same rows, split and batch order every time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from pipeline import lake


def lake_files(data: lake.DataDir, start: str | None, end: str | None) -> list[tuple[str, Path, str]]:
    """(date, parquet file, sha256) of every complete lake partition in the range, in date order."""
    out = []
    for date in data.text_dates():
        if (start and date < start) or (end and date > end):
            continue
        m = lake.read_manifest(data.texts(date))
        assert m is not None
        out.extend((date, data.texts(date) / f["name"], f["sha256"]) for f in m["files"])
    return out


def read_lake(files: list[tuple[str, Path, str]]) -> pl.DataFrame:
    """All rows of the given files in a canonical order (date, source, line)."""
    if not files:
        return pl.DataFrame(schema={"id": pl.String, "text": pl.String, "label": pl.String})
    frames = [pl.read_parquet(p).with_columns(pl.lit(d).alias("date")) for d, p, _ in files]
    return pl.concat(frames).sort(["date", "source", "line"]).select("id", "text", "label")


def stratified_split(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val): each class keeps about `val_fraction` of its rows for validation."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_val = round(len(idx) * val_fraction) if len(idx) > 1 else 0
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def length_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator | None) -> list[np.ndarray]:
    """Batches of similar length (little padding). With `rng`, shuffled within pools and in order.

    Rows are shuffled, cut into pools of 50 batches, each pool sorted by length and cut into batches;
    the batch order is then shuffled, so each epoch sees different neighbours and order.
    """
    idx = rng.permutation(len(lengths)) if rng is not None else np.arange(len(lengths))
    pool = batch_size * 50
    batches = []
    for s in range(0, len(idx), pool):
        chunk = idx[s : s + pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    if rng is not None:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def eval_batches(enc: tuple[np.ndarray, np.ndarray], rows: np.ndarray) -> list[np.ndarray]:
    """`rows` in fixed batches of 256 of similar length, for scoring held-out rows (no shuffling)."""
    return [rows[b] for b in length_batches(np.diff(enc[1])[rows], 256, None)]
