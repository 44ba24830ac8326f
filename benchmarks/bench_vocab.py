"""Tokenise and count N texts: the polars vocabulary builder against a pure-Python `re` + `Counter` loop.

    .venv/bin/python benchmarks/bench_vocab.py [--rows 1000000]

Both produce the same counts (checked here, and in tests/test_vocab.py on small inputs); the figure
printed is the ratio of their wall times, measured side by side in this one run.
"""

from __future__ import annotations

import argparse
import random
import time
from collections import Counter

import polars as pl

from pipeline.corpus import CLASSES, _order_row, _topic_row
from pipeline.tokenize import tokenize_py
from pipeline.vocab import count_tokens


def make_texts(n: int, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    return [
        _order_row(rng)[0] if rng.random() < 0.3 else _topic_row(rng, rng.choice(CLASSES)) for _ in range(n)
    ]


def python_counts(texts: list[str]) -> Counter[str]:
    c: Counter[str] = Counter()
    for t in texts:
        c.update(tokenize_py(t))
    return c


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    args = ap.parse_args()
    texts = make_texts(args.rows)
    lf = pl.LazyFrame({"text": texts})

    t0 = time.perf_counter()
    fast = count_tokens(lf)
    t_polars = time.perf_counter() - t0
    t0 = time.perf_counter()
    slow = python_counts(texts)
    t_python = time.perf_counter() - t0

    assert dict(zip(fast["token"].to_list(), fast["count"].to_list(), strict=True)) == dict(slow), (
        "counts differ"
    )
    print(f"rows                 {args.rows}")
    print(f"polars count_tokens  {t_polars:8.2f} s  {args.rows / t_polars:12,.0f} texts/s")
    print(f"python re + Counter  {t_python:8.2f} s  {args.rows / t_python:12,.0f} texts/s  (reference)")
    print(f"speed-up             {t_python / t_polars:8.1f}x  (goal: >= 10x)")


if __name__ == "__main__":
    main()
