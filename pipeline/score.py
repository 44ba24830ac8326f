"""Score: a lake partition -> Arrow IPC prediction shards (schema version 1) + manifest.

    pipeline score --date 2026-02-01 [--model VERSION] [--batch-size 256] [--workers 1] [--precision fp32]

The partition is read in record batches (windows of at most `WINDOW_ROWS` rows); each window is
tokenised and encoded vectorised (polars), grouped by length into batches with no padding, run under
`torch.inference_mode` (`pipeline.infer`), put back in input order and appended to its shard. Shard
`k` holds input rows [k * shard_rows, (k + 1) * shard_rows); a window never spans two shards. Memory is
bounded by a few windows, whatever the partition size.

Resumable job. A job is keyed by its inputs (lake files, model, and the settings that change output
bytes: precision, batch size, shard size) and works in a hidden folder beside the partition,
`predictions/.date=D.job-<key>/`: `_job.json` first, then each finished shard (written to a temporary
name, fsynced, renamed) followed by its record `_shard-NNNNN.json` (rows, bytes, sha256). A killed run
leaves that folder; the next run with the same inputs skips every recorded shard without tokenising or
scoring it (it still reads past its rows) and scores the rest. When all shards exist they are hard-linked
into a new folder that replaces `predictions/date=D/` whole, with `_manifest.json`; then the job
folder is removed. A partition whose manifest has the same inputs is up to date and is not rescored.

`scored_at` rule: one value per job, the UTC wall clock (whole seconds) when the job starts, saved in
`_job.json` and reused by every resumed run of that job. So a killed and resumed job writes files
byte-identical to an uninterrupted one with the same `scored_at`, and re-running an up-to-date
partition rewrites nothing. A new job (new inputs, or the output deleted) gets a new `scored_at`;
every other byte is the same.

Workers. Each inference worker gets cores // workers torch threads. `workers=1` runs the model on a
thread of this process while the main thread reads and encodes the next window (torch and polars
release the GIL). `workers=N>1` starts N processes (spawned, each loading the model) that score whole
windows while this process reads, encodes and writes; a job with at most two windows left to score
runs on one thread instead, as starting processes would cost more than it saves. The default, 1, is
measured (benchmarks/bench_score.py, 2 shared cores): end to end, 1 worker scored 8.2k docs/s and 2
processes 6.7k; a model call with 2 OpenMP threads on a busy machine stalls in barriers (50x slower),
so the scoring thread's calls are what matter, not more processes.
Results do not depend on the choice (tests/test_score.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import logging
import math
import os
import shutil
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager, suppress
from multiprocessing import get_context
from pathlib import Path
from typing import Any, get_args

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from pipeline import lake, registry
from pipeline.config import ScoreConfig
from pipeline.errors import InputError
from pipeline.infer import Precision, Scorer, build_scorer
from pipeline.schema import PREDICTIONS_SCHEMA_VERSION, predictions_schema
from pipeline.vocab import encode

log = logging.getLogger(__name__)

WINDOW_ROWS = 65_536  # rows read, encoded and length-grouped together
JOB = "_job.json"


def score_partition(
    data: lake.DataDir, date: str, cfg: ScoreConfig, *, model_version: str | None = None
) -> dict[str, Any]:
    """Score the partition of `date` with a model (default `latest`); skip if up to date, else resume."""
    texts_dir = data.texts(date)
    lake_manifest = lake.require_manifest(texts_dir, hint=f"run `pipeline ingest ... --date {date}` first")
    version = registry.resolve_version(data.models, model_version)
    inputs = {
        "lake": [f["sha256"] for f in lake_manifest["files"]],
        "model": version,
        "score": {"precision": cfg.precision, "batch_size": cfg.batch_size, "shard_rows": cfg.shard_rows},
    }
    out_dir = data.predictions(date)
    existing = lake.read_manifest(out_dir)
    if existing is not None and existing.get("inputs") == inputs:
        # A run cut after publishing but before removing its job folder leaves complete-looking shards;
        # with the partition up to date there is nothing left to resume.
        for job in out_dir.parent.glob(f".{out_dir.name}.job-*"):
            shutil.rmtree(job, ignore_errors=True)
        log.info("predictions for %s are up to date (model %s); nothing to score", date, version)
        return {**existing, "skipped": True}

    device = registry.to_device()
    lm = registry.load_model(data.models, version, device=device)
    registry.check_compatible(lm, lake_manifest, where=texts_dir)
    scorer = build_scorer(lm.model, batch_size=cfg.batch_size, precision=cfg.precision, device=device)
    rows = int(lake_manifest["rows_kept"])
    n_shards = max(1, math.ceil(rows / cfg.shard_rows))
    job_dir, job = _open_job(out_dir, inputs, n_shards)
    scored_at = dt.datetime.fromisoformat(job["scored_at"])
    schema = predictions_schema(
        lm.labels, model_version=version, vocab_version=lm.vocab.version, partition=date
    )
    done = {k for k in range(n_shards) if (job_dir / _record_name(k)).is_file()}
    if done:
        log.info(
            "%s: resuming job %s, %d of %d shards already scored", date, job_dir.name, len(done), n_shards
        )

    writer = _ShardWriter(job_dir, schema, rows=rows, shard_rows=cfg.shard_rows)
    batches = _Batches(lm.labels, version, int(scored_at.timestamp()) * 1_000_000, schema)
    files = [texts_dir / f["name"] for f in lake_manifest["files"]]
    t0, scored = time.perf_counter(), 0
    to_score = rows - sum(min(cfg.shard_rows, rows - k * cfg.shard_rows) for k in done)
    many = to_score > 2 * WINDOW_ROWS  # below this, starting processes costs more than it saves
    with (
        writer.aborting(),
        _executor(cfg, scorer, data.models, version, device, many_windows=many) as (submit, depth),
    ):
        pending: deque[tuple[int, pa.RecordBatch, Future[np.ndarray]]] = deque()

        def finish_one() -> None:
            nonlocal scored
            shard, window, fut = pending.popleft()
            writer.write(shard, batches.build(window, fut.result()))
            scored += window.num_rows
            log.info("%s: %d rows scored (%.0f rows/s)", date, scored, scored / (time.perf_counter() - t0))

        for shard, window in _windows(files, cfg.shard_rows):
            if shard in done:
                continue
            ids, offsets = encode(_series(window.column("text")), lm.vocab, max_len=lm.config.max_len)
            pending.append((shard, window, submit(ids, offsets)))
            while len(pending) > depth:
                finish_one()
        while pending:
            finish_one()
    if rows == 0 and not done:
        with writer.aborting():
            writer.write_empty()

    shards = [lake.read_json(job_dir / _record_name(k)) for k in range(n_shards)]
    assert sum(s["rows"] for s in shards) == rows, "shard rows do not add up to the partition"
    manifest = {
        "schema_version": PREDICTIONS_SCHEMA_VERSION,
        "date": date,
        "rows": rows,
        "model_version": version,
        "vocab_version": lm.vocab.version,
        "labels": lm.labels,
        "scored_at": job["scored_at"].replace("+00:00", "Z"),
        "engine": {"kernel": scorer.kernel, "precision": scorer.precision},
        "inputs": inputs,
        "shards": shards,
    }
    with lake.publish_dir(out_dir) as tmp:
        for k, s in enumerate(shards):
            if s.get("name") != _shard_name(k):  # a record is a file: it names only its own shard
                msg = f"{job_dir / _record_name(k)}: names {s.get('name')!r}, not {_shard_name(k)!r}"
                raise InputError(f"{msg}; hint: delete {job_dir} to score the date again")
            _link(job_dir / s["name"], tmp / s["name"])
        lake.write_json(tmp / lake.MANIFEST, manifest)
    shutil.rmtree(job_dir, ignore_errors=True)
    log.info("%s: %d rows scored with model %s into %s", date, rows, version, out_dir)
    return {**manifest, "skipped": False}


def prediction_files(folder: Path) -> list[Path]:
    return lake.list_files(folder, ".arrow")


# ---------------------------------------------------------------------------- command line


def add_score_arguments(parser: argparse.ArgumentParser) -> None:
    """The scoring options of `pipeline score` / `run` / `backfill`; unset ones keep ScoreConfig's."""
    parser.add_argument("--batch-size", type=_positive, help="rows per model call (default 256)")
    parser.add_argument(
        "--workers", type=_positive, help="1: one inference thread; N>1: N processes (default 1)"
    )
    parser.add_argument(
        "--precision",
        choices=list(get_args(Precision)),
        help="fp32 (exact), bf16 autocast, int8 (onnxruntime dynamic quantisation) (default fp32)",
    )


def score_config_from_args(args: argparse.Namespace, base: ScoreConfig) -> ScoreConfig:
    """`base` with the options given on the command line."""
    given = {
        k: getattr(args, k, None) for k in ("batch_size", "workers", "precision") if getattr(args, k, None)
    }
    return dataclasses.replace(base, **given)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        msg = f"expected a positive integer, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


# ---------------------------------------------------------------------------- the job


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _open_job(out_dir: Path, inputs: dict[str, Any], n_shards: int) -> tuple[Path, dict[str, Any]]:
    """The job folder for `inputs` (created, or found from a cut run) and its `_job.json`."""
    key = lake.sha256_json(inputs)[:12]
    job_dir = out_dir.with_name(f".{out_dir.name}.job-{key}")
    for stale in out_dir.parent.glob(f".{out_dir.name}.job-*"):
        if stale != job_dir:  # a cut job with other inputs can never be resumed now
            shutil.rmtree(stale, ignore_errors=True)
    if (job_dir / JOB).is_file():
        job = lake.read_json(job_dir / JOB)
        if job.get("inputs") == inputs and job.get("shards") == n_shards:
            return job_dir, job
        shutil.rmtree(job_dir)
    job_dir.mkdir(parents=True, exist_ok=True)
    job = {"inputs": inputs, "shards": n_shards, "scored_at": _now().isoformat()}
    lake.write_json(job_dir / JOB, job)
    return job_dir, job


def _shard_name(k: int) -> str:
    return f"part-{k:05d}.arrow"


def _record_name(k: int) -> str:
    return f"_shard-{k:05d}.json"


class _ShardWriter:
    """Appends windows to shard files in the job folder; a shard is renamed into place when full."""

    def __init__(self, job_dir: Path, schema: pa.Schema, *, rows: int, shard_rows: int) -> None:
        self.job_dir, self.schema, self.rows, self.shard_rows = job_dir, schema, rows, shard_rows
        self.shard = -1
        self.written = 0
        self.writer: pa.ipc.RecordBatchFileWriter | None = None

    def write(self, shard: int, rb: pa.RecordBatch) -> None:
        if self.writer is None:
            self.shard, self.written = shard, 0
            self.writer = pa.ipc.new_file(self._tmp(), self.schema)
        assert shard == self.shard, "windows must arrive in shard order"
        self.writer.write_batch(rb)
        self.written += rb.num_rows
        if self.written == min(self.shard_rows, self.rows - shard * self.shard_rows):
            self._close()

    def write_empty(self) -> None:
        """An empty partition still gets one (empty) file with the schema."""
        self.shard, self.written = 0, 0
        self.writer = pa.ipc.new_file(self._tmp(), self.schema)
        self._close()

    @contextmanager
    def aborting(self) -> Iterator[None]:
        """On an error in the block (a full disk...), drop the shard being written; finished ones stay."""
        try:
            yield
        except BaseException:
            if self.writer is not None:
                with suppress(Exception):
                    self.writer.close()
                self.writer = None
            self._tmp().unlink(missing_ok=True)
            raise

    def _tmp(self) -> Path:
        return self.job_dir / f".{_shard_name(self.shard)}.partial"

    def _close(self) -> None:
        assert self.writer is not None
        self.writer.close()
        self.writer = None
        tmp, final = self._tmp(), self.job_dir / _shard_name(self.shard)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, final)
        record = {
            "name": final.name,
            "rows": self.written,
            "bytes": final.stat().st_size,
            "sha256": lake.sha256_file(final),
        }
        lake.write_json(self.job_dir / _record_name(self.shard), record)


def _windows(files: list[Path], shard_rows: int) -> Iterator[tuple[int, pa.RecordBatch]]:
    """(shard, window) over the partition's rows in order; windows are cut at shard boundaries.

    The cuts depend only on the files and `shard_rows`, so a resumed run sees the same windows.
    """
    pos = 0
    for path in files:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=WINDOW_ROWS, columns=["id", "text"]):
            start = 0
            while start < batch.num_rows:
                shard = pos // shard_rows
                take = min(batch.num_rows - start, (shard + 1) * shard_rows - pos)
                yield shard, batch.slice(start, take)
                start += take
                pos += take


class _Batches:
    """Scored windows -> record batches of the predictions schema."""

    def __init__(self, labels: list[str], version: str, scored_us: int, schema: pa.Schema) -> None:
        self.labels = pa.array(labels, pa.string())
        self.version, self.scored_us, self.schema = version, scored_us, schema

    def build(self, window: pa.RecordBatch, probs: np.ndarray) -> pa.RecordBatch:
        n, c = probs.shape
        label_id = probs.argmax(1).astype(np.int32)
        return pa.RecordBatch.from_arrays(
            [
                window.column("id"),
                window.column("text"),
                self.labels.take(pa.array(label_id)),
                pa.array(label_id, pa.int32()),
                pa.array(probs[np.arange(n), label_id], pa.float64()),
                pa.FixedSizeListArray.from_arrays(pa.array(probs.ravel(), pa.float64()), c),
                pa.array(np.full(n, self.version, dtype=object), pa.string()),
                pa.array(np.full(n, self.scored_us, dtype=np.int64), pa.timestamp("us", tz="UTC")),
            ],
            schema=self.schema,
        )


def _series(arr: pa.Array) -> pl.Series:
    s = pl.from_arrow(arr)
    assert isinstance(s, pl.Series)
    return s


def _link(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # a file system without hard links
        shutil.copyfile(src, dst)


# ---------------------------------------------------------------------------- workers


class _executor:
    """Context manager yielding (submit(ids, offsets) -> Future[probs], windows kept in flight)."""

    def __init__(
        self, cfg: ScoreConfig, scorer: Scorer, models: Path, version: str, device: str, *, many_windows: bool
    ) -> None:
        self.cfg, self.scorer, self.models, self.version, self.device = cfg, scorer, models, version, device
        self.many_windows = many_windows
        self.saved_threads: int | None = None
        self.pool: Executor | None = None

    def __enter__(self) -> tuple[Any, int]:
        n = self.cfg.workers
        threads = max(1, _cores() // n)
        if n == 1 or self.device != "cpu" or not self.many_windows:
            # one inference thread; with workers > 1 but little work, no processes: only their threads
            self.saved_threads = torch.get_num_threads()
            if self.device == "cpu":
                torch.set_num_threads(threads)
            self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="score")
            return (lambda ids, offsets: self.pool.submit(self.scorer.predict_proba, ids, offsets)), 2
        self.pool = ProcessPoolExecutor(
            max_workers=n,
            mp_context=get_context("spawn"),
            initializer=_init_worker,
            initargs=(str(self.models), self.version, self.cfg.batch_size, self.cfg.precision, threads),
        )
        return (lambda ids, offsets: self.pool.submit(_score_in_worker, ids, offsets)), n + 1

    def __exit__(self, *exc: object) -> None:
        assert self.pool is not None
        self.pool.shutdown(wait=True, cancel_futures=True)
        if self.saved_threads is not None:
            torch.set_num_threads(self.saved_threads)


_WORKER_SCORER: Scorer | None = None


def _init_worker(models: str, version: str, batch_size: int, precision: Precision, threads: int) -> None:
    global _WORKER_SCORER
    torch.set_num_threads(threads)
    lm = registry.load_model(Path(models), version, device="cpu")
    _WORKER_SCORER = build_scorer(lm.model, batch_size=batch_size, precision=precision, device="cpu")


def _score_in_worker(ids: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    assert _WORKER_SCORER is not None
    return _WORKER_SCORER.predict_proba(ids, offsets)


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
