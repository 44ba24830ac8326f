"""Score: a lake partition -> Arrow IPC prediction shards (schema version 1) + manifest.

    pipeline score --date 2026-02-01 [--model VERSION] [--batch-size 256] [--workers 1] [--precision fp32]

The partition is read in record batches (windows of at most `WINDOW_ROWS` rows); each window is
tokenised and encoded vectorised (polars), grouped by length into batches with no padding, run under
`torch.inference_mode` (`pipeline.infer`), put back in input order and appended to its shard. Shard
`k` holds input rows [k * shard_rows, (k + 1) * shard_rows); a window never spans two shards. Memory is
bounded by a few windows, whatever the partition size.

The shards are written by a resumable job (`pipeline/shardjob.py`): a killed run resumes, skipping every
shard already written without tokenising or scoring it (it still reads past its rows). A partition whose
manifest has the same inputs (lake files, model, and the settings that change output bytes: precision,
batch size, shard size) is up to date and is not rescored.

Where windows are scored, a thread beside this one or worker processes, is `pipeline/scorepool.py`.

Units (`pipeline score --runner processes|dask`). The shards left are cut into a few large runs of
whole shards (`plan_units`), each scored by one task on a worker (`pipeline/scoreunits.py`) into the
same job folder; `read_windows` gives a unit exactly the windows a whole run would, so the files are
the same bytes (tests/test_scale.py). This process still opens, checks and publishes the job.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import functools
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import lake, registry, settings, shardjob
from pipeline.config import ScoreConfig
from pipeline.errors import ModelError
from pipeline.infer import Precision, Scorer, build_scorer
from pipeline.schema import META_PARTITION, PREDICTIONS_SCHEMA_VERSION, predictions_schema
from pipeline.scorepool import ScoringPool
from pipeline.vocab import encode

log = logging.getLogger(__name__)

WINDOW_ROWS = 65_536  # rows read, encoded and length-grouped together


@dataclass(frozen=True)
class ScoreUnit:
    """One work unit of a scoring job spread over a cluster: shards [first, end) of one job, with all a
    worker needs to score them (paths as strings, small values only: it travels to the worker)."""

    date: str
    models: str
    version: str
    files: tuple[str, ...]  # the lake partition's Parquet files, in order
    rows: int  # the partition's rows (the last shard may be short)
    shard_rows: int
    first: int
    end: int
    batch_size: int
    precision: Precision
    scored_at: str  # the job's, ISO 8601
    job_folder: str


RunUnits = Callable[[list[ScoreUnit]], object]

UNIT_ROWS = 1_000_000  # the fewest rows a unit holds: per-task overhead is real (docs/scaling.md)
MAX_UNITS = 1_000  # Prefect's server struggles near 2,000 mapped tasks in one flow


def plan_units(
    todo: list[int], *, shard_rows: int, workers: int, rows: int, unit_rows: int | None = None
) -> list[tuple[int, int]]:
    """Shard ranges [first, end) covering the shards `todo` (sorted), each a run of consecutive shards.

    About two units per worker (one slow or retried unit then leaves no worker idle for long), but none
    under `unit_rows` rows and never more than `MAX_UNITS`: few, large units.
    """
    per_unit = max(
        unit_rows or UNIT_ROWS, math.ceil(rows / (2 * max(1, workers))), math.ceil(rows / MAX_UNITS)
    )
    size = max(1, per_unit // shard_rows)
    units: list[tuple[int, int]] = []
    for k in todo:
        if units and units[-1][1] == k and k - units[-1][0] < size:
            units[-1] = (units[-1][0], k + 1)
        else:
            units.append((k, k + 1))
    return units


def score_partition(
    data: lake.DataDir,
    date: str,
    cfg: ScoreConfig,
    *,
    model_version: str | None = None,
    run_units: RunUnits | None = None,
    workers: int = 1,
    unit_rows: int | None = None,
) -> dict[str, Any]:
    """Score the partition of `date` with a model (default `latest`); skip if up to date, else resume.

    By default the shards are scored here (`ScoringPool`). With `run_units`, the shards left are cut
    into units (`plan_units`, for `workers` workers) handed to `run_units`, which scores them elsewhere
    (`pipeline.scoreunits.score_unit`, one task each) and returns when all are written; the job then
    publishes them as it would its own. Either way the files are the same bytes.
    """
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
        shardjob.remove_jobs(out_dir)
        log.info("predictions for %s are up to date (model %s); nothing to score", date, version)
        return {**existing, "skipped": True}

    device = registry.to_device()
    lm = registry.load_model(data.models, version, device=device)
    registry.check_compatible(lm, lake_manifest, where=texts_dir)
    scorer = build_scorer(lm.model, batch_size=cfg.batch_size, precision=cfg.precision, device=device)
    rows = int(lake_manifest["rows_kept"])
    job = shardjob.open_job(out_dir, inputs, max(1, math.ceil(rows / cfg.shard_rows)))
    if job.done:
        log.info(
            "%s: resuming job %s, %d of %d shards already scored",
            date,
            job.folder.name,
            len(job.done),
            job.shards,
        )
    files = [texts_dir / f["name"] for f in lake_manifest["files"]]
    if run_units is not None and rows > 0:
        todo = [k for k in range(job.shards) if k not in job.done]
        ranges = plan_units(todo, shard_rows=cfg.shard_rows, workers=workers, rows=rows, unit_rows=unit_rows)
        unit = functools.partial(
            ScoreUnit,
            date,
            str(data.models),
            version,
            tuple(str(f) for f in files),
            rows,
            cfg.shard_rows,
            batch_size=cfg.batch_size,
            precision=cfg.precision,
            scored_at=job.scored_at.isoformat(),
            job_folder=str(job.folder),
        )
        log.info("%s: %d shards to score in %d units", date, len(todo), len(ranges))
        run_units([unit(first=a, end=b) for a, b in ranges])
    else:
        _score_here(date, job, files, lm, scorer, cfg, data.models, device, rows=rows)

    records = job.records()
    assert sum(r["rows"] for r in records) == rows, "shard rows do not add up to the partition"
    manifest = {
        "schema_version": PREDICTIONS_SCHEMA_VERSION,
        "date": date,
        "rows": rows,
        "model_version": version,
        "vocab_version": lm.vocab.version,
        "labels": lm.labels,
        "scored_at": job.scored_at.isoformat().replace("+00:00", "Z"),
        "engine": {"kernel": scorer.kernel, "precision": scorer.precision},
        "inputs": inputs,
        "shards": records,
    }
    job.publish(records, manifest)
    log.info("%s: %d rows scored with model %s into %s", date, rows, version, out_dir)
    return {**manifest, "skipped": False}


def _score_here(
    date: str,
    job: shardjob.ShardJob,
    files: list[Path],
    lm: registry.LoadedModel,
    scorer: Scorer,
    cfg: ScoreConfig,
    models: Path,
    device: str,
    *,
    rows: int,
) -> None:
    """The shards `job` still lacks, scored in this process (`ScoringPool`)."""
    schema = schema_of(lm, date)
    writer = shardjob.ShardWriter(job.folder, schema, rows=rows, shard_rows=cfg.shard_rows)
    batches = PredictionBatches(lm.labels, lm.version, job.scored_at, schema)
    to_score = rows - sum(min(cfg.shard_rows, rows - k * cfg.shard_rows) for k in job.done)
    many = to_score > 2 * WINDOW_ROWS  # below this, starting processes costs more than it saves
    windows = ((k, w) for k, w in read_windows(files, cfg.shard_rows) if k not in job.done)

    def encode_window(w: pa.RecordBatch) -> tuple[np.ndarray, np.ndarray]:
        return encode_texts(w, lm)

    t0, scored = time.perf_counter(), 0
    with writer.aborting(), ScoringPool(cfg, scorer, models, lm.version, device, many_windows=many) as pool:
        for shard, window, probs in pool.score_in_order(windows, encode_window):
            writer.write(shard, batches.build(window, probs, shard=shard))
            scored += window.num_rows
            log.info("%s: %d rows scored (%.0f rows/s)", date, scored, scored / (time.perf_counter() - t0))
    if rows == 0 and not job.done:
        with writer.aborting():
            writer.write_empty()


def schema_of(lm: registry.LoadedModel, date: str) -> pa.Schema:
    """The predictions schema of `date` scored by `lm` (labels and versions in its metadata)."""
    return predictions_schema(
        lm.labels, model_version=lm.version, vocab_version=lm.vocab.version, partition=date
    )


def prediction_files(folder: Path) -> list[Path]:
    return lake.list_files(folder, ".arrow")


# ---------------------------------------------------------------------------- command line


SCORE_FLAGS = ["batch_size", "shard_rows", "workers", "precision"]


def add_score_arguments(parser: argparse.ArgumentParser) -> None:
    """`pipeline score`'s flags, one for each `[score]` setting; an unset one keeps the config's value."""
    settings.add_flags(parser, ScoreConfig, SCORE_FLAGS)


def score_config_from_args(args: argparse.Namespace, base: ScoreConfig) -> ScoreConfig:
    """`base` (the config file's and `--set`'s `[score]`) with the flags given on the command line."""
    given = settings.given_flags(args, SCORE_FLAGS)
    return settings.build(ScoreConfig, {**dataclasses.asdict(base), **given}, where="pipeline score")


# ---------------------------------------------------------------------------- windows


def read_windows(
    files: list[Path], shard_rows: int, shards: range | None = None
) -> Iterator[tuple[int, pa.RecordBatch]]:
    """(shard, window) over the partition's rows in order; windows are cut at shard boundaries.

    The cuts depend only on the files and `shard_rows`, so a resumed run, or a unit reading only
    `shards`, sees the same windows. pyarrow's `iter_batches` cuts a file every `WINDOW_ROWS` rows
    from where it starts reading, across row groups; so a unit skips whole files, and whole row groups
    up to the last one starting at a multiple of `WINDOW_ROWS` before its first row (the lake's row
    groups are 2^18 rows: every one does), and reads from there:

        file rows   0        65,536     131,072 ...     (row groups of 2^18 = 4 windows)
        windows     |--------|----------|------- ...    the same cuts from any such row group
    """
    start = shards.start * shard_rows if shards is not None else 0
    pos = 0
    for path in files:
        pf = pq.ParquetFile(path)
        n = pf.metadata.num_rows
        if pos + n <= start:  # the whole file is before the unit
            pos += n
            continue
        first_group, skipped, at = 0, 0, 0
        for g in range(pf.num_row_groups):
            if pos + at > start:
                break
            if at % WINDOW_ROWS == 0:
                first_group, skipped = g, at
            at += pf.metadata.row_group(g).num_rows
        pos += skipped
        groups = range(first_group, pf.num_row_groups)
        for batch in pf.iter_batches(batch_size=WINDOW_ROWS, row_groups=list(groups), columns=["id", "text"]):
            b = 0
            while b < batch.num_rows:
                shard = pos // shard_rows
                take = min(batch.num_rows - b, (shard + 1) * shard_rows - pos)
                if shards is not None and shard >= shards.stop:
                    return
                if shards is None or shard >= shards.start:
                    yield shard, batch.slice(b, take)
                b += take
                pos += take


def encode_texts(window: pa.RecordBatch, lm: registry.LoadedModel) -> tuple[np.ndarray, np.ndarray]:
    """A window's texts as the model's flat encoding (ids, offsets)."""
    return encode(_series(window.column("text")), lm.vocab, max_len=lm.config.max_len)


class PredictionBatches:
    """Scored windows -> record batches of the predictions schema."""

    def __init__(self, labels: list[str], version: str, scored_at: dt.datetime, schema: pa.Schema) -> None:
        self.labels = pa.array(labels, pa.string())
        self.version, self.schema = version, schema
        self.scored_us = int(scored_at.timestamp()) * 1_000_000

    def build(self, window: pa.RecordBatch, probs: np.ndarray, *, shard: int) -> pa.RecordBatch:
        """The window's record batch for shard `shard`; a row whose probabilities are not all finite stops
        the job here, before the shard (and so the night's report and sinks) can hold it."""
        bad = np.flatnonzero(~np.isfinite(probs).all(1))
        if len(bad):
            partition = (self.schema.metadata or {}).get(META_PARTITION, b"?").decode()
            msg = (
                f"predictions {partition}, shard {shardjob.shard_name(shard)}, row id "
                f"{window.column('id')[int(bad[0])].as_py()!r}: model {self.version} gave non-finite "
                f"probabilities ({len(bad)} rows of {len(probs)} in this window); nothing was published; "
                "hint: score with `--precision fp32`, or make a sound model `latest` (`pipeline models`)"
            )
            raise ModelError(msg)
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
