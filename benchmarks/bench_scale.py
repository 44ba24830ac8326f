"""One date over a cluster: `pipeline score` with the local runner against a 2-worker Dask LocalCluster.

    .venv/bin/python benchmarks/bench_scale.py [--rows 2000000] [--model lesson|default] [--tasks 100]
                                          [--stage-rows 200000]

One run, side by side, on one generated lake partition of `--rows` rows (texts drawn from the demo
corpus's generator, row groups of 2^18 rows as ingest writes them) and one untrained model (speed does
not depend on the weights): `lesson` is the LSTM 64/128 read on its last state that README's scoring
table measures, `default` is `ModelConfig()` (BiLSTM 100/128, max pooling, n-gram bag and TF-IDF head).

1. per core: the model's docs/s on one thread for 20,000 texts, fp32 and int8 (`build_scorer`);
2. `flows.run_score` with `--runner local` (one process, `ScoringPool`), then with a 2-worker
   LocalCluster (`dask=ADDRESS`, units of >= 1M rows, each worker one thread), both through Prefect
   and its temporary API; rows/s of each and their ratio (the cluster's overhead on 2 cores);
3. Prefect's overhead per task: `--tasks` empty tasks submitted to the same cluster, ms each;
4. each stage on one machine, on a generated raw CSV day of `--stage-rows` rows (ingest, score with
   the local runner, export with go-exporter): rows/s and bytes per row of what each writes.

The cluster is started before the clock runs (a real cluster is already up). Files under
.cache/bench/scale/, removed at the end.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import shutil
import tempfile
import time
from pathlib import Path

_HOME = tempfile.mkdtemp(prefix="bench-scale-")
os.environ.setdefault("PREFECT_HOME", str(Path(_HOME) / ".prefect"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("MPLCONFIGDIR", str(Path(_HOME) / "matplotlib"))

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
import pyarrow as pa  # noqa: E402
import torch  # noqa: E402
from bench_score import publish_model, write_partition  # noqa: E402

from pipeline import corpus, lake, score, shardjob  # noqa: E402
from pipeline.config import ScoreConfig  # noqa: E402
from pipeline.corpus import CLASSES, order_row, topic_row  # noqa: E402
from pipeline.infer import build_scorer  # noqa: E402
from pipeline.model import ModelConfig, TextClassifier, lesson_config  # noqa: E402
from pipeline.vocab import VocabConfig, build_vocab, encode  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / ".cache" / "bench" / "scale"
DATE = "2026-03-03"
WARM = "2026-03-02"  # a small partition scored first by each runner


def generate_texts(n: int, seed: int = 3) -> list[str]:
    rng = random.Random(seed)
    return [
        order_row(rng)[0] if rng.random() < 0.3 else topic_row(rng, rng.choice(CLASSES)) for _ in range(n)
    ]


def per_core_rates(model: TextClassifier, vocab, texts: list[str]) -> dict[str, float]:
    """docs/s of the model on one thread, fp32 and int8, best of 2."""
    ids, offsets = encode(pl.Series(texts), vocab, max_len=model.cfg.max_len)
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    out = {}
    try:
        for precision in ("fp32", "int8"):
            scorer = build_scorer(model, batch_size=256, precision=precision, device="cpu")
            best = float("inf")
            for _ in range(2):
                t0 = time.perf_counter()
                scorer.predict_proba(ids, offsets)
                best = min(best, time.perf_counter() - t0)
            out[precision] = len(texts) / best
    finally:
        torch.set_num_threads(saved)
    return out


def bytes_per_row(folder: Path, suffix: str, rows: int) -> float:
    return sum(p.stat().st_size for p in folder.glob(f"*{suffix}")) / max(rows, 1)


def measure_stages(data: lake.DataDir, models_from: lake.DataDir, rows: int) -> None:
    """A raw CSV day through ingest, score (local runner, no Prefect) and export: rows/s, bytes/row."""
    from pipeline import export, ingest

    shutil.copytree(models_from.models, data.models, symlinks=True)
    day = "2026-03-04"
    raw = data.raw(day) / "news.csv"
    lake.write_bytes(raw, corpus.generate_day(day, rows=rows, labelled=False).encode())
    secs = {}
    t0 = time.perf_counter()
    m = ingest.ingest([raw], day, data, ingest.IngestConfig())
    secs["ingest"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    score.score_partition(data, day, ScoreConfig())
    secs["score"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    export.export_partition(data, day)
    secs["export"] = time.perf_counter() - t0
    n = m["rows_kept"]
    print(f"stages, one process, a generated day of {rows:,} raw rows ({n:,} kept):")
    print(f"  raw CSV                        {raw.stat().st_size / rows:6.1f} bytes/row")
    for stage, folder, suffix in (
        ("ingest -> lake Parquet (zstd)", data.texts(day), ".parquet"),
        ("score  -> Arrow IPC shards", data.predictions(day), ".arrow"),
        ("export -> NDJSON", data.exports(day), ".ndjson"),
    ):
        rate = n / secs[stage.split()[0]]
        print(f"  {stage:30} {bytes_per_row(folder, suffix, n):6.1f} bytes/row  {rate:9,.0f} rows/s")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=2_000_000, help="rows of the scored partition")
    ap.add_argument("--model", choices=["lesson", "default"], default="lesson")
    ap.add_argument("--tasks", type=int, default=100, help="empty tasks for Prefect's per-task overhead")
    ap.add_argument("--stage-rows", type=int, default=200_000, help="rows of the raw day for stage figures")
    args = ap.parse_args()
    shutil.rmtree(WORK, ignore_errors=True)
    try:
        run(args)
    finally:
        shutil.rmtree(WORK, ignore_errors=True)
        shutil.rmtree(_HOME, ignore_errors=True)


def run(args: argparse.Namespace) -> None:
    import distributed
    from prefect import flow, task
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness
    from prefect_dask import DaskTaskRunner

    from pipeline import flows

    pool = generate_texts(50_000)
    vocab = build_vocab(pl.LazyFrame({"text": pool}), VocabConfig())
    torch.manual_seed(0)
    cfg = (
        lesson_config("lstm-last", embed_dim=64, hidden_dim=128) if args.model == "lesson" else ModelConfig()
    )
    model = TextClassifier(cfg, len(vocab), len(CLASSES)).eval()
    print(f"model: {args.model} ({cfg}), vocabulary {len(vocab):,}; {len(os.sched_getaffinity(0))} cores")
    rates = per_core_rates(model, vocab, pool[:20_000])
    print(
        f"per core (1 thread, 20,000 texts): fp32 {rates['fp32']:,.0f} docs/s, int8 {rates['int8']:,.0f} docs/s"
    )

    local = lake.DataDir.at(WORK / "local")
    publish_model(local, model, vocab, list(CLASSES))
    measure_stages(lake.DataDir.at(WORK / "stages"), local, args.stage_rows)
    t0 = time.perf_counter()
    texts = pa.array(pool).take(pa.array(np.random.default_rng(5).integers(0, len(pool), args.rows)))
    write_partition(local, DATE, texts, row_group=1 << 18)
    write_partition(local, WARM, texts[:20_000], row_group=1 << 18)
    shutil.copytree(local.root, WORK / "dask", symlinks=True)
    print(f"partition: {args.rows:,} rows generated in {time.perf_counter() - t0:.0f} s")
    frozen = shardjob.now()
    shardjob.now = lambda: frozen  # both jobs get one scored_at: their files can be compared

    with prefect_test_harness(server_startup_timeout=120):
        os.environ["PREFECT_API_URL"] = str(PREFECT_API_URL.value())  # the workers reach this API
        with (
            distributed.LocalCluster(
                n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None
            ) as cluster,
            distributed.Client(cluster),
        ):
            units: list[dict] = []
            score_units = flows._score_units
            flows._score_units = lambda us: units.extend(score_units(us)) or units
            secs = {}
            for name in ("local", "dask"):
                runner = "local" if name == "local" else f"dask={cluster.scheduler_address}"
                # warm up: imports, the model in each worker, Prefect's first flow run (a long-lived
                # cluster pays these once, not each night)
                flows.run_score(str(WORK / name), WARM, cfg=ScoreConfig(shard_rows=5_000), runner=runner)
                units.clear()
                t0 = time.perf_counter()
                m = flows.run_score(str(WORK / name), DATE, cfg=ScoreConfig(), runner=runner)
                secs[name] = time.perf_counter() - t0
                assert m["rows"] == args.rows and not m["skipped"]

            @task
            def nothing(i: int) -> int:
                return i

            @flow
            def empty_tasks(n: int) -> int:
                return sum(f.result() for f in [nothing.submit(i) for i in range(n)])

            t0 = time.perf_counter()
            empty_tasks.with_options(task_runner=DaskTaskRunner(address=cluster.scheduler_address))(1)
            one = time.perf_counter() - t0
            t0 = time.perf_counter()
            empty_tasks.with_options(task_runner=DaskTaskRunner(address=cluster.scheduler_address))(
                args.tasks + 1
            )
            per_task = (time.perf_counter() - t0 - one) / args.tasks

    same = all(
        (WORK / "local" / "predictions" / f"date={DATE}" / f).read_bytes()
        == (WORK / "dask" / "predictions" / f"date={DATE}" / f).read_bytes()
        for f in os.listdir(WORK / "local" / "predictions" / f"date={DATE}")
    )
    n = args.rows
    n_units = len(
        score.plan_units(list(range(math.ceil(n / 1_000_000))), shard_rows=1_000_000, workers=2, rows=n)
    )
    print(
        f"\nscore {n:,} rows (shards of 1,000,000 rows; the cluster: 2 workers x 1 thread, {n_units} units):"
    )
    print(f"  local runner (one process)     {secs['local']:7.1f} s  {n / secs['local']:9,.0f} rows/s")
    print(f"  dask, 2-worker LocalCluster    {secs['dask']:7.1f} s  {n / secs['dask']:9,.0f} rows/s")
    print(f"  ratio dask / local             {secs['local'] / secs['dask']:.2f}x   files identical: {same}")
    inside = max(u["seconds"] for u in units)
    each = ", ".join(f"{u['rows']:,} rows in {u['seconds']:.1f} s" for u in units)
    print(f"  inside the units: {each}; the rest of the cluster's wall time {secs['dask'] - inside:.1f} s")
    print(f"Prefect per task on the cluster  {per_task * 1000:.0f} ms ({args.tasks} empty tasks)")
    print(
        f"bytes per row: lake (Parquet as written here) {bytes_per_row(local.texts(DATE), '.parquet', n):.1f}, "
        f"predictions (Arrow IPC) {bytes_per_row(local.predictions(DATE), '.arrow', n):.1f}"
    )
    print(f"command: .venv/bin/python benchmarks/bench_scale.py --rows {n} --model {args.model}")


if __name__ == "__main__":
    main()
