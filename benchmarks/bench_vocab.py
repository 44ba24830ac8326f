"""Tokenise and count N texts: the polars vocabulary builder against a pure-Python `re` + `Counter` loop.

    .venv/bin/python benchmarks/bench_vocab.py [--rows 1000000] [--repeat 3]

Both produce the same counts (checked here, and in tests/test_vocab.py on small inputs); the figure
printed is the ratio of their wall times, measured side by side in this one run: both warmed up on
1,000 texts, then timed `--repeat` times in turn, the best time of each compared (other work on the
machine only ever adds time). The polars CPU seconds show how many cores it kept busy; the load
average shows how much else was running.
"""

from __future__ import annotations

import argparse
import os
import random
import time
from collections import Counter

import polars as pl

from pipeline.corpus import CLASSES, order_row, topic_row
from pipeline.tokenize import tokenize_py
from pipeline.vocab import count_tokens


def make_texts(n: int, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    return [
        order_row(rng)[0] if rng.random() < 0.3 else topic_row(rng, rng.choice(CLASSES)) for _ in range(n)
    ]


def python_counts(texts: list[str]) -> Counter[str]:
    c: Counter[str] = Counter()
    for t in texts:
        c.update(tokenize_py(t))
    return c


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3, help="timed runs of each, taken in turn")
    args = ap.parse_args()
    texts = make_texts(args.rows)
    lf = pl.LazyFrame({"text": texts})
    count_tokens(lf.head(1000))  # warm up both: thread pool, regex caches
    python_counts(texts[:1000])

    load = os.getloadavg()[0]
    t_polars, cpu_polars, t_python = [], [], []
    for _ in range(args.repeat):
        c0, t0 = time.process_time(), time.perf_counter()
        fast = count_tokens(lf)
        t_polars.append(time.perf_counter() - t0)
        cpu_polars.append(time.process_time() - c0)
        t0 = time.perf_counter()
        slow = python_counts(texts)
        t_python.append(time.perf_counter() - t0)
        assert dict(zip(fast["token"].to_list(), fast["count"].to_list(), strict=True)) == dict(slow), (
            "counts differ"
        )

    tp, ty = min(t_polars), min(t_python)
    cpu = cpu_polars[t_polars.index(tp)]
    runs = " ".join(f"{y / p:.1f}" for p, y in zip(t_polars, t_python, strict=True))
    print(f"rows                 {args.rows}")
    print(
        f"polars count_tokens  {tp:8.2f} s  {args.rows / tp:12,.0f} texts/s  "
        f"(best of {args.repeat}; {cpu:.2f} s CPU on {pl.thread_pool_size()} threads)"
    )
    print(
        f"python re + Counter  {ty:8.2f} s  {args.rows / ty:12,.0f} texts/s  (best of {args.repeat}; reference)"
    )
    print(f"speed-up             {ty / tp:8.1f}x  (goal: >= 10x; run by run: {runs})")
    print(f"load average         {load:8.1f} -> {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
