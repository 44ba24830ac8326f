"""The resumable job that writes one date's prediction shards and publishes them whole.

A job is keyed by its inputs (lake files, model, and the settings that change output bytes) and works
in a hidden folder beside the partition, `predictions/.date=D.job-<key>/`: `_job.json` first, then each
finished shard (written to a temporary name, fsynced, renamed) followed by its record
`_shard-NNNNN.json` (rows, bytes, sha256). A killed run leaves that folder; the next run with the same
inputs finds the recorded shards in `ShardJob.done` and scores the rest. When all shards exist they are
hard-linked into a new folder that replaces `predictions/date=D/` whole, with `_manifest.json`; then the
job folder is removed.

`scored_at` rule: one value per job, the UTC wall clock (whole seconds) when the job starts (`now`),
saved in `_job.json` and reused by every resumed run of that job. So a killed and resumed job writes
files byte-identical to an uninterrupted one with the same `scored_at`. A new job (new inputs, or the
output deleted) gets a new `scored_at`; every other byte is the same.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from pipeline import lake
from pipeline.errors import InputError

JOB = "_job.json"


def now() -> dt.datetime:
    """The scoring clock (tests and golden runs freeze it)."""
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def shard_name(k: int) -> str:
    return f"part-{k:05d}.arrow"


def record_name(k: int) -> str:
    return f"_shard-{k:05d}.json"


def remove_jobs(out_dir: Path) -> None:
    """Drop every job folder of `out_dir`: a run cut after publishing but before removing its job folder
    leaves complete-looking shards, and with the partition up to date there is nothing to resume."""
    for job in out_dir.parent.glob(f".{out_dir.name}.job-*"):
        shutil.rmtree(job, ignore_errors=True)


@dataclass(frozen=True)
class ShardJob:
    """An open job: its folder, its `scored_at`, how many shards it has and which are already written."""

    folder: Path
    out_dir: Path
    scored_at: dt.datetime
    shards: int
    done: frozenset[int]

    def records(self) -> list[dict[str, Any]]:
        """Every shard's record, in order, each checked to name only its own shard (a record is a file)."""
        out = []
        for k in range(self.shards):
            record = lake.read_json(self.folder / record_name(k))
            if record.get("name") != shard_name(k):
                msg = f"{self.folder / record_name(k)}: names {record.get('name')!r}, not {shard_name(k)!r}"
                raise InputError(f"{msg}; hint: delete {self.folder} to score the date again")
            out.append(record)
        return out

    def publish(self, records: list[dict[str, Any]], manifest: dict[str, Any]) -> None:
        """Link the shards into a new `out_dir` beside `manifest`, replace the old one whole, drop the job."""
        with lake.publish_dir(self.out_dir) as tmp:
            for r in records:
                _link(self.folder / r["name"], tmp / r["name"])
            lake.write_json(tmp / lake.MANIFEST, manifest)
        shutil.rmtree(self.folder, ignore_errors=True)


def open_job(out_dir: Path, inputs: dict[str, Any], shards: int) -> ShardJob:
    """The job for `inputs`: found from a cut run (same inputs and shard count), else started anew."""
    key = lake.sha256_json(inputs)[:12]
    folder = out_dir.with_name(f".{out_dir.name}.job-{key}")
    for stale in out_dir.parent.glob(f".{out_dir.name}.job-*"):
        if stale != folder:  # a cut job with other inputs can never be resumed now
            shutil.rmtree(stale, ignore_errors=True)
    job: dict[str, Any] | None = None
    if (folder / JOB).is_file():
        job = lake.read_json(folder / JOB)
        if job.get("inputs") != inputs or job.get("shards") != shards:
            shutil.rmtree(folder)
            job = None
    if job is None:
        folder.mkdir(parents=True, exist_ok=True)
        job = {"inputs": inputs, "shards": shards, "scored_at": now().isoformat()}
        lake.write_json(folder / JOB, job)
    done = frozenset(k for k in range(shards) if (folder / record_name(k)).is_file())
    return ShardJob(folder, out_dir, dt.datetime.fromisoformat(job["scored_at"]), shards, done)


class ShardWriter:
    """Appends record batches to shard files in a job folder; a full shard is fsynced, renamed into
    place and recorded (`finish_shard`). Shard `k` holds rows [k * shard_rows, (k + 1) * shard_rows)."""

    def __init__(self, folder: Path, schema: pa.Schema, *, rows: int, shard_rows: int) -> None:
        self.folder, self.schema, self.rows, self.shard_rows = folder, schema, rows, shard_rows
        self.shard = -1
        self.written = 0
        self.writer: pa.ipc.RecordBatchFileWriter | None = None

    def write(self, shard: int, rb: pa.RecordBatch) -> None:
        if self.writer is None:
            self.shard, self.written = shard, 0
            self.writer = pa.ipc.new_file(self._tmp(), self.schema)
        assert shard == self.shard, "batches must arrive in shard order"
        self.writer.write_batch(rb)
        self.written += rb.num_rows
        if self.written == min(self.shard_rows, self.rows - shard * self.shard_rows):
            self.finish_shard()

    def write_empty(self) -> None:
        """An empty partition still gets one (empty) file with the schema."""
        self.shard, self.written = 0, 0
        self.writer = pa.ipc.new_file(self._tmp(), self.schema)
        self.finish_shard()

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

    def finish_shard(self) -> None:
        assert self.writer is not None
        self.writer.close()
        self.writer = None
        tmp, final = self._tmp(), self.folder / shard_name(self.shard)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, final)
        record = {
            "name": final.name,
            "rows": self.written,
            "bytes": final.stat().st_size,
            "sha256": lake.sha256_file(final),
        }
        lake.write_json(self.folder / record_name(self.shard), record)

    def _tmp(self) -> Path:
        return self.folder / f".{shard_name(self.shard)}.partial"


def _link(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # a file system without hard links
        shutil.copyfile(src, dst)
