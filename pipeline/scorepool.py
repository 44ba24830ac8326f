"""Where a scoring job's windows are scored: `ScoringPool`, a thread or worker processes.

Each inference worker gets cores // workers torch threads. `workers=1` runs the model on a thread of this
process while the main thread reads and encodes the next window (torch and polars release the GIL).
`workers=N>1` starts N processes (spawned, each loading the model) that score whole windows while this
process reads, encodes and writes; a job with at most two windows left to score runs on one thread
instead, as starting processes would cost more than it saves. The default, 1, is measured
(benchmarks/bench_score.py, 2 shared cores): end to end, 1 worker scored 8.2k docs/s and 2 processes
6.7k; a model call with 2 OpenMP threads on a busy machine stalls in barriers (50x slower), so the
scoring thread's calls are what matter, not more processes. Results do not depend on the choice
(tests/test_score.py).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from pipeline import registry
from pipeline.config import ScoreConfig
from pipeline.infer import Precision, Scorer, build_scorer


class ScoringPool:
    """Where windows are scored: one inference thread, or `workers` spawned processes (module docstring).

    `threads`: torch threads per inference worker (default: the cores shared out among the workers).

    `score_in_order` keeps `depth` windows in flight, so reading and encoding overlap with scoring.
    """

    def __init__(
        self,
        cfg: ScoreConfig,
        scorer: Scorer,
        models: Path,
        version: str,
        device: str,
        *,
        many_windows: bool,
        threads: int | None = None,
    ) -> None:
        self.cfg, self.scorer, self.models, self.version, self.device = cfg, scorer, models, version, device
        self.many_windows, self.threads = many_windows, threads
        self.saved_threads: int | None = None
        self.pool: Executor | None = None
        self.depth = 0

    def __enter__(self) -> ScoringPool:
        n = self.cfg.workers
        threads = self.threads or max(1, _cores() // n)
        if n == 1 or self.device != "cpu" or not self.many_windows:
            # one inference thread; with workers > 1 but little work, no processes: only their threads
            self.saved_threads = torch.get_num_threads()
            if self.device == "cpu":
                torch.set_num_threads(threads)
            self.pool, self.depth = ThreadPoolExecutor(max_workers=1, thread_name_prefix="score"), 2
            return self
        self.pool = ProcessPoolExecutor(
            max_workers=n,
            mp_context=get_context("spawn"),
            initializer=_init_worker,
            initargs=(str(self.models), self.version, self.cfg.batch_size, self.cfg.precision, threads),
        )
        self.depth = n + 1
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.pool is not None
        self.pool.shutdown(wait=True, cancel_futures=True)
        if self.saved_threads is not None:
            torch.set_num_threads(self.saved_threads)

    def submit(self, ids: np.ndarray, offsets: np.ndarray) -> Future[np.ndarray]:
        assert self.pool is not None
        if isinstance(self.pool, ThreadPoolExecutor):
            return self.pool.submit(self.scorer.predict_proba, ids, offsets)
        return self.pool.submit(_score_in_worker, ids, offsets)

    def score_in_order(
        self,
        windows: Iterable[tuple[int, pa.RecordBatch]],
        encode_window: Callable[[pa.RecordBatch], tuple[np.ndarray, np.ndarray]],
    ) -> Iterator[tuple[int, pa.RecordBatch, np.ndarray]]:
        """(shard, window, probabilities) for each window, in input order."""
        pending: deque[tuple[int, pa.RecordBatch, Future[np.ndarray]]] = deque()
        for shard, window in windows:
            pending.append((shard, window, self.submit(*encode_window(window))))
            while len(pending) > self.depth:
                shard, window, fut = pending.popleft()
                yield shard, window, fut.result()
        while pending:
            shard, window, fut = pending.popleft()
            yield shard, window, fut.result()


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
