"""Ingest a generated CSV: `pipeline.ingest` against bare polars `scan_csv(...).sink_parquet(...)`.

    .venv/bin/python benchmarks/bench_ingest.py [--gb 5] [--dir .cache/bench] [--keep]

Writes a CSV of about `--gb` GB (`id,text,label`, news-like English and Chinese texts, some with
entity remnants and stray whitespace) under `--dir`, then runs each side in its own subprocess, one
after the other, and prints wall time, rows/s and peak RSS (getrusage of the child) side by side.
The generated files are deleted at the end unless `--keep`. Goals: RSS < 1.5 GiB, ratio <= 2.
"""

from __future__ import annotations

import argparse
import random
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.corpus import CLASSES, _topic_row  # noqa: E402

INGEST = """
import sys
from pathlib import Path
from pipeline import ingest, lake
m = ingest.ingest([Path(sys.argv[1])], "2026-01-01", lake.DataDir.at(sys.argv[2]), ingest.IngestConfig())
print(m["rows_kept"], m["rows_quarantined"])
"""
POLARS = """
import sys
import polars as pl
pl.scan_csv(sys.argv[1]).sink_parquet(sys.argv[2] + "/polars.parquet")
print(pl.scan_parquet(sys.argv[2] + "/polars.parquet").select(pl.len()).collect().item(), 0)
"""


def generate(path: Path, gb: float, seed: int = 1) -> int:
    """A CSV of about `gb` GB, written in 1M-row chunks by polars; returns the row count."""
    rng = random.Random(seed)
    pool, labels = [], []
    for _ in range(50_000):
        label = rng.choice(CLASSES)
        text = " ".join(_topic_row(rng, label) for _ in range(rng.randint(2, 5)))
        if rng.random() < 0.05:
            text = text.replace(" ", " #39;", 1)
        if rng.random() < 0.02:
            text = "  " + text + "\t"
        pool.append(text)
        labels.append(label)
    pool_s, labels_s = pl.Series(pool), pl.Series(labels)
    gen = np.random.default_rng(seed)
    target, rows = int(gb * 1e9), 0
    with open(path, "wb") as f:
        f.write(b"id,text,label\n")
        while f.tell() < target:
            idx = gen.integers(0, len(pool), 1_000_000)
            df = pl.DataFrame(
                {
                    "id": pl.int_range(rows, rows + len(idx), eager=True).cast(pl.String),
                    "text": pool_s.gather(idx),
                    "label": labels_s.gather(idx),
                }
            )
            df.write_csv(f, include_header=False)
            rows += len(idx)
    return rows


def measure(code: str, src: Path, out: Path) -> tuple[float, int, int]:
    """(seconds, rows written, peak RSS bytes) of `code` run in a fresh Python."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    res = subprocess.run(
        [sys.executable, "-c", code, str(src), str(out)], cwd=REPO, capture_output=True, text=True, check=True
    )
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    # ru_maxrss of children is the max over all waited-for children: run the smaller one first
    assert peak >= before
    return seconds, int(res.stdout.split()[0]), peak * 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gb", type=float, default=5.0)
    ap.add_argument("--dir", type=Path, default=REPO / ".cache" / "bench")
    ap.add_argument("--keep", action="store_true", help="keep the generated CSV and outputs")
    args = ap.parse_args()
    work = args.dir / "ingest"
    work.mkdir(parents=True, exist_ok=True)
    src = work / "input.csv"
    t0 = time.perf_counter()
    rows = generate(src, args.gb)
    print(
        f"generated {src} ({src.stat().st_size / 1e9:.2f} GB, {rows:,} rows) "
        f"in {time.perf_counter() - t0:.0f} s"
    )
    try:
        # polars first: RUSAGE_CHILDREN keeps the max over children, so the second figure is only
        # attributable if it is the larger one; each is also printed on its own line below.
        tp, np_, rss_p = measure(POLARS, src, work / "polars")
        ti, ni, rss_i = measure(INGEST, src, work / "ingest")
        rss_i_note = "" if rss_i > rss_p else "  (<= polars' peak; getrusage keeps the max)"
        print(f"{'':24s}{'seconds':>10s}{'rows/s':>14s}{'peak RSS':>12s}")
        print(f"{'polars scan->sink':24s}{tp:10.1f}{np_ / tp:14,.0f}{rss_p / 2**30:10.2f} GiB  (reference)")
        print(f"{'pipeline ingest()':24s}{ti:10.1f}{ni / ti:14,.0f}{rss_i / 2**30:10.2f} GiB{rss_i_note}")
        print(f"ingest time / polars time  {ti / tp:.2f}x  (goal: <= 2x)")
        print(f"ingest peak RSS            {rss_i / 2**30:.2f} GiB  (goal: < 1.5 GiB)")
        assert ni == rows, f"ingest kept {ni} of {rows} rows"
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
