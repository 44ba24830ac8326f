"""Orchestration overhead: a 3-date backfill of small partitions, seconds in Prefect against seconds in the stages.

    .venv/bin/python benchmarks/bench_orchestration.py [--rows 1500] [--concurrency 1]

One run, side by side on copies of one seed data directory (a synthetic corpus, three ingested days,
a tiny model): the nightly stages of 2026-01-02 .. 2026-01-04 called as plain functions (after a
warm-up copy, so imports and first model loads count for neither), then the same backfill through
Prefect (`flows.run_backfill`, the temporary local API as `pipeline backfill` uses it), then that
backfill again with everything up to date. Prefect's share is the call's wall time minus the seconds
its stages report, split into the flow body (task runs) and the flow run's set-up and tear-down; the
first call also starts the temporary local API (a served deployment on a server does not pay that).
With --concurrency 1 the stages run one at a time, so their seconds add up to the work done.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

_HOME = tempfile.mkdtemp(prefix="bench-orchestration-")
os.environ.setdefault("PREFECT_HOME", str(Path(_HOME) / ".prefect"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("MPLCONFIGDIR", str(Path(_HOME) / "matplotlib"))

from pipeline import corpus, lake, nightly, train  # noqa: E402
from pipeline.config import ScoreConfig, load_config  # noqa: E402

START, END = "2026-01-02", corpus.SCORE_DATE
TINY = ["model.embed_dim=8", "model.hidden_dim=8", "train.epochs=1"]


def build_seed(root: Path, rows: int) -> None:
    data = lake.DataDir.at(root)
    corpus.generate_corpus(data, rows_per_day=rows)
    classes = ", ".join(json.dumps(c) for c in corpus.CLASSES)
    for d in corpus.TRAIN_DATES:
        (data.raw(d) / "_ingest.toml").write_text(f"classes = [{classes}]\n")
        nightly.ingest_date(data, d)
    train.train(data, load_config(None, TINY))


def plain_backfill(root: Path) -> float:
    """The stages of every date as plain function calls, no orchestrator; returns seconds."""
    data = lake.DataDir.at(root)
    t0 = time.perf_counter()
    for d in lake.date_range(START, END):
        nightly.ingest_date(data, d)
        nightly.score_date(data, d, ScoreConfig())
        nightly.export_date(data, d)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1500, help="rows per labelled day (the new day has half)")
    ap.add_argument("--concurrency", type=int, default=1, help="dates in flight in the Prefect backfill")
    args = ap.parse_args()

    base = Path(_HOME)
    build_seed(base / "seed", args.rows)
    for name in ("warm-up", "plain", "prefect"):
        shutil.copytree(base / "seed", base / name, symlinks=True)
    plain_backfill(base / "warm-up")
    t_plain = plain_backfill(base / "plain")

    from pipeline import flows  # imports Prefect

    runs = []
    for label in ("backfill", "again, up to date"):
        t0 = time.perf_counter()
        s = flows.run_backfill(str(base / "prefect"), START, END, concurrency=args.concurrency)
        runs.append((label, time.perf_counter() - t0, s))

    rows = runs[0][2]["totals"]["rows_scored"]
    print(f"3-date backfill {START} .. {END}, {rows} rows scored, concurrency {args.concurrency}")
    print(f"plain functions, no Prefect        {t_plain:7.2f} s")
    for label, call, s in runs:
        wall, stages = s["seconds"]["wall"], s["seconds"]["stages"]
        print(f"Prefect: {label}")
        print(f"  whole call                          {call:7.2f} s")
        print(f"  seconds in the stages               {stages:7.2f} s")
        print(f"  seconds in Prefect (call - stages)  {call - stages:7.2f} s, of which")
        print(
            f"    in the flow body (tasks)          {wall - stages:7.2f} s  ({(wall - stages) / 3:.2f} s a date)"
        )
        print(f"    flow run set-up and tear-down     {call - wall:7.2f} s  (the first call: + API start-up)")
    shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
