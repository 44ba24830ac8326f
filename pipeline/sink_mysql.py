"""MySQL / MariaDB sink: a date's predictions replace that date's rows of one table, through pymysql.

    pipeline export --date D --to mysql://USER@HOST[:PORT]/DATABASE[?table=NAME&unix_socket=PATH]

Connecting (the URL; the password from `$PIPELINE_MYSQL_PASSWORD` or an option file, never the URL;
errors; retries) is `mysql_client.py`. The table (default `predictions`; any name MySQL accepts,
backtick-quoted in every statement) is created when absent, utf8mb4 throughout, one column per field
of predictions schema v1 plus `date`, primary key `(date, id)`. A table with other columns is refused,
naming the difference.

A load deletes the date's rows, streams the prediction files in and commits: one transaction, so a
reader sees the previous night or the new one, never half, and a load killed midway is rolled back by
the server. Rows go in by `LOAD DATA LOCAL INFILE` from a small temporary TSV per record batch (bounded
memory and disk for any partition), or by multi-row INSERTs where the server forbids local files. What was
loaded is recorded in `state/mysql/<date>.json`; a re-run with the same prediction files and the table
still holding that many rows of the date loads nothing. A lost connection or a deadlock is retried
(`mysql_client.RETRIES` attempts); every other server refusal is one `SinkError` line with a hint.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pymysql

from pipeline import lake
from pipeline.errors import SinkError
from pipeline.mysql_client import MysqlTarget, parse_url, quote_name, with_retries
from pipeline.sink_rows import COLUMNS, batch_tsv, batch_values, check_schema, value_ends

log = logging.getLogger(__name__)

Method = Literal["auto", "infile", "insert"]

BATCH_ROWS = 65_536  # rows per LOAD DATA statement (one temporary TSV of this many rows at a time)
INSERT_BYTES = 4 << 20  # bytes per INSERT statement; below MariaDB's and MySQL's default max_allowed_packet
_NO_LOCAL_INFILE = {1148, 2068, 3948, 4166}  # the server or client forbids LOAD DATA LOCAL (MySQL, MariaDB)
_NAMES = ", ".join(f"`{c}`" for c, _, _ in COLUMNS)


# ---------------------------------------------------------------------------- the table


def ensure_table(conn: pymysql.connections.Connection, target: MysqlTarget) -> None:
    """Create the table when absent; refuse one whose columns differ from `COLUMNS`, naming how."""
    t = quote_name(target.table)
    cols = ",\n  ".join(f"`{name}` {sql}" for name, sql, _ in COLUMNS)
    with conn.cursor() as cur:
        cur.execute(
            f"CREATE TABLE IF NOT EXISTS {t} (\n  {cols},\n  PRIMARY KEY (`date`, `id`)\n) "
            "ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
        )
        cur.execute(
            "SELECT COLUMN_NAME, DATA_TYPE, CHARACTER_SET_NAME FROM information_schema.COLUMNS "
            "WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s ORDER BY ORDINAL_POSITION",
            (target.database, target.table),
        )
        found = [(str(n), str(d).lower(), c) for n, d, c in cur.fetchall()]
    conn.commit()
    problems = []
    names = [n for n, _, _ in found]
    missing = [c for c, _, _ in COLUMNS if c not in names]
    extra = [n for n in names if n not in {c for c, _, _ in COLUMNS}]
    if missing:
        problems.append(f"missing {', '.join(missing)}")
    if extra:
        problems.append(f"unexpected {', '.join(extra)}")
    types = dict((n, (d, c)) for n, d, c in found)
    for name, sql, accepted in COLUMNS:
        if name in types and types[name][0] not in accepted:
            problems.append(f"`{name}` is {types[name][0]}, expected {sql.split()[0]}")
        elif name in types and types[name][1] not in (None, "utf8mb4"):
            problems.append(f"`{name}` is in {types[name][1]}, expected utf8mb4")
    if problems:
        msg = (
            f"MySQL {target.describe()}: the table exists with other columns ({'; '.join(problems)}); "
            "nothing was changed; hint: load into another table (?table=NAME) or migrate this one"
        )
        raise SinkError(msg)


# ---------------------------------------------------------------------------- loading


def load_partition(data: lake.DataDir, date: str, url: str, *, method: Method = "auto") -> dict[str, Any]:
    """Replace `date`'s rows in the table with the date's predictions; skip when already loaded.

    Call it holding the date's lock (`nightly.load_date` does). Returns rows, table, method, skipped.
    """
    target = parse_url(url)
    pred_dir = data.predictions(date)
    pm = lake.require_manifest(pred_dir, hint=f"run `pipeline score --date {date}` first")
    files = [pred_dir / s["name"] for s in pm["shards"]]
    record = {"inputs": [s["sha256"] for s in pm["shards"]], "rows": pm["rows"]}
    stamp_path = data.stamp("mysql", date)
    stamps = lake.read_json(stamp_path) if stamp_path.is_file() else {}
    key = target.describe().partition("@")[2]  # the table, whoever logs in
    done = {
        "date": date,
        "rows": pm["rows"],
        "table": target.describe(),
        "model_version": pm["model_version"],
    }

    def work(conn: pymysql.connections.Connection) -> str | None:
        ensure_table(conn, target)
        if stamps.get(key) == record and _count(conn, target, date) == pm["rows"]:
            return None
        return _replace_date(conn, target, date, files, rows=pm["rows"], method=method, scratch=stamp_path)

    t0 = time.perf_counter()
    how = with_retries(target, work)
    if how is None:
        log.info("MySQL %s already holds the %d rows of %s; nothing to load", key, pm["rows"], date)
        return {**done, "method": None, "skipped": True}
    stamps[key] = record
    lake.write_json(stamp_path, stamps)
    s = time.perf_counter() - t0
    log.info("%s: %d rows loaded into %s by %s in %.1f s", date, pm["rows"], key, how, s)
    return {**done, "method": how, "skipped": False}


def _table(target: MysqlTarget) -> str:
    """The table's quoted name in a statement with args, which pymysql %-formats: its `%` doubled."""
    return quote_name(target.table).replace("%", "%%")


def _count(conn: pymysql.connections.Connection, target: MysqlTarget, date: str) -> int:
    with conn.cursor() as cur:
        cur.execute(f"SELECT COUNT(*) FROM {_table(target)} WHERE `date` = %s", (date,))
        (n,) = cur.fetchone()
    conn.commit()  # end the read's snapshot: the load must see the table as it is now
    return int(n)


def read_batches(files: list[Path]) -> Iterator[tuple[pa.RecordBatch, list[str]]]:
    """Every record batch of the prediction files, at most `BATCH_ROWS` rows each, read one at a time
    (not memory-mapped: a partition of any size costs a batch or two of memory)."""
    for path in files:
        with pa.OSFile(str(path)) as source:
            reader = pa.ipc.open_file(source)
            classes = check_schema(reader.schema, str(path))
            for i in range(reader.num_record_batches):
                batch = reader.get_batch(i)
                for start in range(0, batch.num_rows, BATCH_ROWS):
                    yield batch.slice(start, BATCH_ROWS), classes


def _with_tsv(
    batches: Iterator[tuple[pa.RecordBatch, list[str]]], date: str, pool: ThreadPoolExecutor
) -> Iterator[tuple[pa.RecordBatch, list[str], Future[memoryview]]]:
    """Each batch with its TSV, built in `pool` while the batch before it loads (pyarrow frees the GIL)."""
    pending = None
    for batch, classes in batches:
        ahead = (batch, classes, pool.submit(batch_tsv, batch, date, classes))
        if pending is not None:
            yield pending
        pending = ahead
    if pending is not None:
        yield pending


def _replace_date(
    conn: pymysql.connections.Connection,
    target: MysqlTarget,
    date: str,
    files: list[Path],
    *,
    rows: int,
    method: Method,
    scratch: Path,
) -> str:
    """DELETE the date, load every batch, COMMIT: one transaction. Returns the method used."""
    loaded = 0
    with (
        conn.cursor() as cur,
        ThreadPoolExecutor(1, thread_name_prefix="mysql-tsv") as pool,
        # a flocked temporary, as atomic writes use: one left by a killed load is swept by the next write
        lake.atomic_path(scratch.with_name(f"load-{date}.tsv")) as tsv,
    ):
        cur.execute(f"DELETE FROM {_table(target)} WHERE `date` = %s", (date,))
        for batch, classes, text in _with_tsv(read_batches(files), date, pool):
            if method != "insert":
                try:
                    tsv.write_bytes(text.result())
                    loaded += _load_infile(cur, target, tsv)
                    method = "infile"
                    continue
                except pymysql.MySQLError as e:
                    if method == "infile" or e.args[0] not in _NO_LOCAL_INFILE:
                        raise
                    log.info("MySQL %s refuses LOAD DATA LOCAL; loading by INSERT", target.describe())
                    method = "insert"
            loaded += _load_insert(cur, target, batch, date, classes)
        if loaded != rows:
            msg = f"MySQL {target.describe()}: {loaded} rows went in for {date}, expected {rows}; rolled back"
            raise SinkError(msg)
        conn.commit()
        tsv.write_bytes(b"")  # atomic_path renames it into place; the scratch file is not an output
    scratch.with_name(f"load-{date}.tsv").unlink(missing_ok=True)
    return "insert" if method == "insert" else "infile"


def _load_infile(cur: Any, target: MysqlTarget, tsv: Path) -> int:
    try:
        cur.execute(
            f"LOAD DATA LOCAL INFILE %s INTO TABLE {_table(target)} CHARACTER SET utf8mb4 "
            f"FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n' ({_NAMES})",
            (str(tsv),),
        )
    except AttributeError:
        # pymysql 1.1-1.2 ends a file whose connection was lost by writing to the closed socket (None)
        if cur.connection.open:
            raise
        raise pymysql.err.OperationalError(2013, "Lost connection to server during LOAD DATA") from None
    _check_warnings(cur, target)  # LOCAL turns errors into warnings: the server cannot stop the file
    return cur.rowcount


def _load_insert(cur: Any, target: MysqlTarget, batch: pa.RecordBatch, date: str, classes: list[str]) -> int:
    """Multi-row INSERTs of at most `INSERT_BYTES` each (one row may make a longer one)."""
    values = batch_values(batch, date, classes)
    data = memoryview(values.buffers()[2]) if len(values) else memoryview(b"")
    ends = value_ends(values)
    head = f"INSERT INTO {quote_name(target.table)} ({_NAMES}) VALUES ".encode()
    loaded, start, row = 0, 0, 0
    while row < len(values):
        # the last row whose end fits in this statement, and at least one row
        stop = max(row + 1, int(np.searchsorted(ends, start + INSERT_BYTES, side="right")))
        end = int(ends[stop - 1])
        cur.execute(head + bytes(data[start : end - 1]))  # no trailing comma; no args: no %-formatting
        loaded += cur.rowcount
        start, row = end, stop
    return loaded


def _check_warnings(cur: Any, target: MysqlTarget) -> None:
    if not cur.warning_count:
        return
    cur.execute("SHOW WARNINGS LIMIT 3")
    said = "; ".join(f"{code}: {text}" for _, code, text in cur.fetchall())
    msg = f"MySQL {target.describe()}: the server changed or skipped rows ({said}); rolled back"
    raise SinkError(f"{msg}; hint: a duplicate id or a value too long for its column")
