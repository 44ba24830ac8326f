"""A scoring unit on a worker: shards [first, end) of one job, read, scored and written there.

`pipeline score --runner processes|dask[=ADDRESS]` (and `run`, `backfill` with the same runner) cut a
partition's shards into a few large units (`score.plan_units`); each unit is one task, run by
`score_unit` on a worker. It reads only its rows (`score.read_windows`, which cuts the same windows
as a local run), scores each window as the local run does, and writes its shards into the job folder
through the job's own `ShardWriter`: a finished shard is renamed into place and recorded, so a unit
that dies (its worker killed) and is run again skips the shards it had finished and rewrites the one
it was in. The driver then publishes the shards with the manifest, as a local run does.

The model reaches each worker process once, not once per task: `load_scorer` keeps the last few
(models folder, version, batch size, precision) loaded in the process (`functools.lru_cache`).
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from pipeline import registry, shardjob
from pipeline.config import ScoreConfig
from pipeline.infer import Precision, Scorer, build_scorer
from pipeline.score import PredictionBatches, ScoreUnit, encode_texts, read_windows, schema_of
from pipeline.scorepool import ScoringPool

log = logging.getLogger(__name__)

_LOADING = threading.Lock()  # a worker running several units at once loads a model once


def score_unit(unit: ScoreUnit, *, threads: int = 1) -> dict[str, Any]:
    """Write the shards of `unit` not yet recorded in its job folder; their rows, this worker's pid and
    how many models this process has loaded so far (the second is what shows the cache at work).

    `threads`: torch threads for this unit. One unit a core: run workers with one thread each. As in a
    local run, one thread scores a window while this one reads and encodes the next (`ScoringPool`).
    """
    t0 = time.perf_counter()
    with _LOADING:
        lm, scorer = load_scorer(unit.models, unit.version, unit.batch_size, unit.precision)
    folder = Path(unit.job_folder)
    todo = [k for k in range(unit.first, unit.end) if not (folder / shardjob.record_name(k)).is_file()]
    schema = schema_of(lm, unit.date)
    writer = shardjob.ShardWriter(folder, schema, rows=unit.rows, shard_rows=unit.shard_rows)
    batches = PredictionBatches(lm.labels, unit.version, dt.datetime.fromisoformat(unit.scored_at), schema)
    files = [Path(f) for f in unit.files]
    windows = (
        (k, w) for k, w in read_windows(files, unit.shard_rows, range(unit.first, unit.end)) if k in todo
    )
    cfg = ScoreConfig(
        batch_size=unit.batch_size, shard_rows=unit.shard_rows, workers=1, precision=unit.precision
    )
    pool = ScoringPool(
        cfg, scorer, Path(unit.models), unit.version, scorer.device, many_windows=False, threads=threads
    )
    rows = 0
    with writer.aborting(), pool:  # one thread scores while this one reads and encodes the next window
        for k, w, probs in pool.score_in_order(windows, lambda w: encode_texts(w, lm)):
            writer.write(k, batches.build(w, probs, shard=k))
            rows += w.num_rows
    seconds = time.perf_counter() - t0
    log.info("shards %d..%d: %d rows scored in %.1f s", unit.first, unit.end - 1, rows, seconds)
    return {
        "shards": [unit.first, unit.end],
        "rows": rows,
        "seconds": round(seconds, 3),
        "pid": os.getpid(),
        "model_loads": load_scorer.cache_info().misses,
    }


@functools.lru_cache(maxsize=4)
def load_scorer(
    models: str, version: str, batch_size: int, precision: Precision
) -> tuple[registry.LoadedModel, Scorer]:
    """The model and its scorer, loaded once per worker process (and kept for the next units)."""
    device = registry.to_device()
    lm = registry.load_model(Path(models), version, device=device)
    log.info("worker %d loaded model %s (%s)", os.getpid(), version, precision)
    return lm, build_scorer(lm.model, batch_size=batch_size, precision=precision, device=device)
