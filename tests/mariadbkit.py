"""A throwaway MariaDB server and synthetic prediction partitions, for tests/test_sink_mysql.py and
`make bench-mysql` (benchmarks/bench_mysql.py).

`start_server(folder)` runs Debian's `mariadb-install-db` into `folder/data` and `mariadbd` on the unix
socket `folder/sock` (no TCP), creates the database `pipeline` and the user `pipeline` with password
`PASSWORD`, and returns once it answers (~3 s). `Server.stop()` shuts it down.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from pipeline import lake
from pipeline.schema import predictions_schema

PASSWORD = "s3cret-Pa55-word"  # what the tests look for in logs, errors and `ps`
DATABASE = "pipeline"
CLASSES = ["business", "sci_tech", "sport", "world"]
SCORED_AT = dt.datetime(2026, 1, 5, 2, 0, 0, 123456, tzinfo=dt.UTC)


def missing_binaries() -> str | None:
    """Why a server cannot be started here, or None."""
    absent = [b for b in ("mariadb-install-db", "mariadbd", "mariadb") if shutil.which(b) is None]
    if absent:
        return f"MariaDB is not installed ({', '.join(absent)} absent); apt-get install mariadb-server"
    return None


@dataclass
class Server:
    folder: Path
    proc: subprocess.Popen

    @property
    def socket(self) -> str:
        return str(self.folder / "sock")

    def url(self, *, user: str = "pipeline", database: str = DATABASE, table: str = "predictions") -> str:
        return f"mysql://{user}@localhost/{database}?table={table}&unix_socket={self.socket}"

    def sql(self, statement: str, *, database: str = DATABASE) -> str:
        """Run SQL as root through the `mariadb` client; tab-separated output without headers."""
        cmd = ["mariadb", "--no-defaults", "-S", self.socket, "-uroot", "-N", "-B", database, "-e", statement]
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_server(folder: Path, *, buffer_pool: str = "64M") -> Server:
    folder.mkdir(parents=True, exist_ok=True)
    datadir = folder / "data"
    root = ["--user=root"] if os.geteuid() == 0 else []
    subprocess.run(
        [
            "mariadb-install-db", "--no-defaults", f"--datadir={datadir}", *root,
            "--auth-root-authentication-method=normal", "--skip-test-db",
        ],
        capture_output=True, check=True,
    )  # fmt: skip
    proc = subprocess.Popen(
        [
            "mariadbd", "--no-defaults", *root, f"--datadir={datadir}", f"--socket={folder / 'sock'}",
            "--skip-networking", f"--pid-file={folder / 'pid'}", f"--log-error={folder / 'error.log'}",
            f"--innodb-buffer-pool-size={buffer_pool}", "--innodb-log-file-size=64M",
            "--innodb-flush-log-at-trx-commit=2", "--skip-name-resolve",
        ],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    server = Server(folder, proc)
    deadline = time.monotonic() + 60
    while True:
        try:
            server.sql("SELECT 1", database="mysql")
            break
        except subprocess.CalledProcessError:
            if proc.poll() is not None or time.monotonic() > deadline:
                server.stop()
                log = (folder / "error.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"mariadbd did not start:\n{log}") from None
            time.sleep(0.1)
    server.sql(
        f"CREATE DATABASE {DATABASE} CHARACTER SET utf8mb4; "
        f"CREATE USER 'pipeline'@'localhost' IDENTIFIED BY '{PASSWORD}'; "
        f"GRANT ALL ON {DATABASE}.* TO 'pipeline'@'localhost';",
        database="mysql",
    )
    return server


def write_predictions(
    data: lake.DataDir,
    date: str,
    texts: list[str],
    *,
    model_version: str = "m1",
    shard_rows: int = 1_000_000,
    batch_rows: int = 65_536,
    seed: int = 0,
) -> dict:
    """A predictions partition of `texts` as `score_partition` publishes it (schema v1, shards, manifest)."""
    rng = np.random.default_rng(seed)
    n = len(texts)
    probs = rng.dirichlet(np.ones(len(CLASSES)), size=n)
    label_id = probs.argmax(1).astype(np.int32)
    schema = predictions_schema(CLASSES, model_version=model_version, vocab_version="v1", partition=date)
    shards = []
    with lake.publish_dir(data.predictions(date)) as tmp:
        for k, lo in enumerate(range(0, max(n, 1), shard_rows)):
            name = f"part-{k:05d}.arrow"
            hi = min(n, lo + shard_rows)
            with pa.OSFile(str(tmp / name), "wb") as f, pa.ipc.new_file(f, schema) as w:
                for a in range(lo, max(hi, lo + 1), batch_rows):
                    b = min(hi, a + batch_rows)
                    w.write_batch(_batch(schema, texts, probs, label_id, a, b, model_version))
            shards.append({"name": name, "rows": hi - lo, "sha256": lake.sha256_file(tmp / name)})
        manifest = {
            "schema_version": 1,
            "date": date,
            "rows": n,
            "model_version": model_version,
            "labels": CLASSES,
            "shards": shards,
        }
        lake.write_json(tmp / lake.MANIFEST, manifest)
    return manifest


def _batch(schema, texts, probs, label_id, a, b, version) -> pa.RecordBatch:
    us = int(SCORED_AT.timestamp() * 1_000_000)
    return pa.RecordBatch.from_arrays(
        [
            pa.array([f"id-{i:08d}" for i in range(a, b)], pa.string()),
            pa.array(texts[a:b], pa.string()),
            pa.array([CLASSES[i] for i in label_id[a:b]], pa.string()),
            pa.array(label_id[a:b], pa.int32()),
            pa.array(probs[np.arange(a, b), label_id[a:b]], pa.float64()),
            pa.FixedSizeListArray.from_arrays(pa.array(probs[a:b].ravel(), pa.float64()), len(CLASSES)),
            pa.array([version] * (b - a), pa.string()),
            pa.array(np.full(b - a, us, dtype=np.int64), pa.timestamp("us", tz="UTC")),
        ],
        schema=schema,
    )


def loaded_rows(server: Server, date: str, table: str = "predictions") -> list[list[str]]:
    out = server.sql(f"SELECT id, model_version FROM {table} WHERE date = '{date}' ORDER BY id")
    return [line.split("\t") for line in out.splitlines()]


def probs_of(server: Server, date: str, row_id: str) -> dict:
    return json.loads(server.sql(f"SELECT probs FROM predictions WHERE date='{date}' AND id='{row_id}'"))
