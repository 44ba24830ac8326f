"""Reports: a night's summary from a 1M-row predictions partition, then pages over 30 such nights.

    .venv/bin/python benchmarks/bench_report.py [--rows 1000000] [--nights 30]

Writes one real predictions partition of `--rows` rows (Arrow shards in the predictions schema, short
texts, random classes and scores) and times `drift.summarize_night` on it: the work a nightly run adds,
reading only the `label_id` and `score` columns. It then gives `--nights` - 1 earlier nights the same
summary (the run would have written them, one per night) and times the pages, which read summaries
only: `nightreport.write_night_report` (the last night against its 30) and `write_trend_report`.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

_HOME = tempfile.mkdtemp(prefix="bench-report-")
os.environ.setdefault("MPLCONFIGDIR", str(Path(_HOME) / "matplotlib"))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402

from pipeline import drift, lake, nightreport  # noqa: E402
from pipeline.config import ReportConfig  # noqa: E402
from pipeline.schema import predictions_schema  # noqa: E402

LABELS = ["Business", "Sci/Tech", "Sports", "World"]


def write_night(data: lake.DataDir, date: str, rows: int, shard_rows: int = 1_000_000) -> None:
    """A lake manifest and a predictions partition of `rows` rows, as ingest and score publish them."""
    rng = np.random.default_rng(0)
    lake.write_json(
        data.texts(date) / lake.MANIFEST,
        {
            "rows_read": rows + 3,
            "rows_kept": rows,
            "rows_quarantined": 3,
            "files": [],
            "quarantined_by_reason": {"duplicate_id": 1, "empty_text": 1, "malformed": 1},
        },
    )
    schema = predictions_schema(LABELS, model_version="bench", vocab_version="v", partition=date)
    shards = []
    for k, start in enumerate(range(0, rows, shard_rows)):
        n = min(shard_rows, rows - start)
        probs = rng.dirichlet([0.3] * len(LABELS), size=n)
        label_id = probs.argmax(1).astype(np.int32)
        batch = pa.RecordBatch.from_arrays(
            [
                pa.array([f"{date}-{i}" for i in range(start, start + n)]),
                pa.array(np.full(n, "a short text", dtype=object)),
                pa.array(np.asarray(LABELS, dtype=object)[label_id]),
                pa.array(label_id),
                pa.array(probs.max(1)),
                pa.FixedSizeListArray.from_arrays(pa.array(probs.ravel()), len(LABELS)),
                pa.array(np.full(n, "bench", dtype=object)),
                pa.array(np.zeros(n, dtype=np.int64), pa.timestamp("us", tz="UTC")),
            ],
            schema=schema,
        )
        name = f"part-{k:05d}.arrow"
        path = data.predictions(date) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        with pa.ipc.new_file(path, schema) as w:
            w.write_batch(batch)
        shards.append({"name": name, "rows": n, "sha256": lake.sha256_file(path)})
    lake.write_json(
        data.predictions(date) / lake.MANIFEST,
        {
            "rows": rows,
            "model_version": "bench",
            "labels": LABELS,
            "shards": shards,
            "scored_at": "2026-01-01T02:00:00Z",
        },
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--nights", type=int, default=30)
    args = p.parse_args()
    data, cfg = lake.DataDir.at(Path(_HOME) / "data"), ReportConfig(nights=args.nights)
    dates = lake.date_range("2026-02-01", "2026-12-31")[: args.nights]
    last = dates[-1]
    write_night(data, last, args.rows)

    t0 = time.perf_counter()
    summary = drift.summarize_night(data, last, cfg)
    summarize_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    drift.summarize_night(data, last, cfg)
    up_to_date_s = time.perf_counter() - t0
    stored = drift.read_summary(data, last)
    for date in dates[:-1]:
        lake.write_json(drift.summary_path(data, date), {**stored, "date": date})

    t0 = time.perf_counter()
    page = nightreport.write_night_report(data, last, cfg)
    night_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    trend = nightreport.write_trend_report(data, dates[0], last, cfg)
    trend_s = time.perf_counter() - t0
    size = drift.summary_path(data, last).stat().st_size
    print(
        f"night of {summary['rows_scored']:,} rows: summary in {summarize_s:.2f} s "
        f"({summary['rows_scored'] / summarize_s / 1e6:.1f}M rows/s), {size} bytes; "
        f"again, up to date: {up_to_date_s:.3f} s"
    )
    print(
        f"{args.nights} nights: night page {night_s:.2f} s ({page.stat().st_size // 1024} KiB), "
        f"trend page {trend_s:.2f} s ({trend.stat().st_size // 1024} KiB); goal < 10 s"
    )


if __name__ == "__main__":
    main()
