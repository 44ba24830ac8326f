"""MySQL / MariaDB sink: a date's predictions replace that date's rows of one table, through pymysql.

    pipeline export --date D --to mysql://USER@HOST[:PORT]/DATABASE[?table=NAME&unix_socket=PATH]

The password is read from `$PIPELINE_MYSQL_PASSWORD`, else from the `[client]` section of a MySQL option
file (`$PIPELINE_MYSQL_DEFAULTS_FILE` or `?defaults_file=PATH`); a URL holding one is refused, so it is
never on a command line, in a log line or in Prefect's records. The table (default `predictions`) is
created when absent, utf8mb4 throughout, one column per field of predictions schema v1 plus `date`,
primary key `(date, id)`. A table with other columns is refused, naming the difference.

A load deletes the date's rows, streams the prediction files in and commits: one transaction, so a
reader sees the previous night or the new one, never half, and a load killed midway is rolled back by
the server. Rows go in by `LOAD DATA LOCAL INFILE` from a small temporary TSV per record batch (bounded
memory and disk for any partition), or by multi-row INSERTs where the server forbids local files. What was
loaded is recorded in `state/mysql/<date>.json`; a re-run with the same prediction files and the table
still holding that many rows of the date loads nothing. A lost connection or a deadlock is retried
(`RETRIES` times); every other server refusal is one `SinkError` line with a hint.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

import numpy as np
import pyarrow as pa
import pymysql

from pipeline import lake
from pipeline.errors import SinkError
from pipeline.sink_rows import COLUMNS, batch_tsv, batch_values, check_schema, value_ends

log = logging.getLogger(__name__)

Method = Literal["auto", "infile", "insert"]
T = TypeVar("T")

RETRIES = 3  # attempts of a whole load when the connection is lost or the server picks it in a deadlock
BATCH_ROWS = 65_536  # rows per LOAD DATA statement (one temporary TSV of this many rows at a time)
INSERT_BYTES = 4 << 20  # bytes per INSERT statement; below MariaDB's and MySQL's default max_allowed_packet
_TRANSIENT = {1205, 1213, 2006, 2013}  # lock wait timeout, deadlock, server gone away, lost connection
_NO_LOCAL_INFILE = {1148, 2068, 3948, 4166}  # the server or client forbids LOAD DATA LOCAL (MySQL, MariaDB)
_NAME_RE = re.compile(r"[A-Za-z0-9_]{1,64}")
# strict: a bad value is an error, not a warning; backslash escapes on (sink_rows relies on them)
_SESSION = "SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION', time_zone = '+00:00'"
_NAMES = ", ".join(f"`{c}`" for c, _, _ in COLUMNS)


@dataclass(frozen=True)
class MysqlTarget:
    """Where to load: parsed from a `mysql://` URL. Holds no password."""

    user: str
    host: str
    port: int
    database: str
    table: str = "predictions"
    unix_socket: str | None = None
    defaults_file: str | None = None

    def describe(self) -> str:
        """`user@host:port/database.table` (or `user@socket/...`): what logs and errors name."""
        where = self.unix_socket or f"{self.host}:{self.port}"
        return f"{self.user}@{where}/{self.database}.{self.table}"


def parse_url(url: str) -> MysqlTarget:
    """`mysql://USER@HOST[:PORT]/DATABASE[?table=NAME&unix_socket=PATH&defaults_file=PATH]`."""
    u = urlsplit(url)
    if u.password is not None:  # said without echoing the URL: it holds the password
        msg = (
            "the mysql:// URL holds a password, which would show in `ps`, logs and run records; "
            "hint: set PIPELINE_MYSQL_PASSWORD or put it in a MySQL option file's [client] section"
        )
        raise SinkError(msg)
    try:
        port = u.port or 3306
    except ValueError as e:
        msg = f"not a mysql:// URL ({e}); expected mysql://USER@HOST[:PORT]/DATABASE[?table=NAME]"
        raise SinkError(msg) from None
    if u.scheme != "mysql":
        msg = "expected a URL mysql://USER@HOST[:PORT]/DATABASE[?table=NAME&unix_socket=PATH]"
        raise SinkError(msg)
    query = parse_qs(u.query, keep_blank_values=True)
    unknown = sorted(set(query) - {"table", "unix_socket", "defaults_file"})
    if unknown:
        msg = f"mysql:// URL: unknown parameter(s) {unknown}; known: table, unix_socket, defaults_file"
        raise SinkError(msg)
    database = unquote(u.path.lstrip("/"))
    table = query.get("table", ["predictions"])[-1]
    for what, name in (("database", database), ("table", table)):
        if not _NAME_RE.fullmatch(name):
            msg = f"mysql:// URL: `{what}` must be 1-64 letters, digits or '_', got {name!r}"
            raise SinkError(msg)
    defaults_file = query.get("defaults_file", [os.environ.get("PIPELINE_MYSQL_DEFAULTS_FILE", "")])[-1]
    return MysqlTarget(
        user=unquote(u.username or ""),
        host=u.hostname or "localhost",
        port=port,
        database=database,
        table=table,
        unix_socket=query.get("unix_socket", [None])[-1] or None,
        defaults_file=defaults_file or None,
    )


def resolve_url(configured: str | None) -> str | None:
    """The sink's URL for `run` / `backfill`: `$PIPELINE_MYSQL_URL`, else `[export] mysql_url`, else none."""
    return os.environ.get("PIPELINE_MYSQL_URL") or configured or None


# ---------------------------------------------------------------------------- connecting


def connect(target: MysqlTarget) -> pymysql.connections.Connection:
    """A utf8mb4 connection with local files allowed, autocommit off and strict SQL."""
    kw: dict[str, Any] = {}
    password = os.environ.get("PIPELINE_MYSQL_PASSWORD")
    if password is not None:
        kw["password"] = password
    if target.defaults_file:
        if not Path(target.defaults_file).is_file():
            msg = f"{target.defaults_file}: MySQL option file not found (defaults_file)"
            raise SinkError(msg)
        kw["read_default_file"] = target.defaults_file
    try:
        return pymysql.connect(
            user=target.user,
            host=target.host,
            port=target.port,
            unix_socket=target.unix_socket,
            database=target.database,
            charset="utf8mb4",
            local_infile=True,
            autocommit=False,
            connect_timeout=10,
            init_command=_SESSION,
            **kw,
        )
    except pymysql.MySQLError as e:
        raise _sink_error(e, target) from None


# code -> (what happened, hint); every other code is named with the server's own message
_REFUSALS = {
    # a user without global privileges is told 1044 for a database that does not exist, too
    1044: (
        "the database does not exist, or this user may not use it",
        "CREATE DATABASE it CHARACTER SET utf8mb4 and GRANT ALL ON it TO the user, or fix the URL",
    ),
    1045: ("the login was refused", "check PIPELINE_MYSQL_PASSWORD or the option file's [client] password"),
    1049: ("the database does not exist", "CREATE DATABASE it CHARACTER SET utf8mb4, or fix the URL"),
    1142: ("this user may not write the table", "GRANT ALL ON the database TO the user"),
    1290: ("the server is read-only", "load into a writable primary"),
    1836: ("the server is read-only", "load into a writable primary"),
    1021: ("the server's disk is full", "free space on the database server, then run again"),
    1114: ("the table is full (disk or tablespace)", "free space on the database server, then run again"),
    2002: ("cannot reach the server's socket", "check unix_socket and that the server runs"),
    2003: ("cannot reach the server", "check HOST and PORT and that the server runs"),
}


def _sink_error(e: pymysql.MySQLError, target: MysqlTarget) -> SinkError | None:
    """One line saying what the server refused and what to do; None for a transient error (retry)."""
    code = e.args[0] if e.args and isinstance(e.args[0], int) else 0
    said = str(e.args[-1] if e.args else e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if code in _TRANSIENT:
        return None
    if code == 1030 and "28" in said:  # "Got error 28 from storage engine": ENOSPC on the server
        code = 1021
    what, hint = _REFUSALS.get(code, ("the server refused the load", "see the server's message"))
    return SinkError(f"MySQL {target.describe()}: {what} ({code}: {said}); hint: {hint}")


def _with_retries(target: MysqlTarget, work: Callable[[pymysql.connections.Connection], T]) -> T:
    """`work` on a fresh connection; again (up to `RETRIES` attempts) when the connection is lost or the
    server rolls the transaction back in a deadlock. Nothing was committed by a failed attempt."""
    for attempt in range(1, RETRIES + 1):
        conn = None
        try:
            conn = connect(target)
            return work(conn)
        except pymysql.MySQLError as e:
            err = _sink_error(e, target)
            if err is not None:
                raise err from None
            if attempt == RETRIES:
                msg = (
                    f"MySQL {target.describe()}: gave up after {RETRIES} attempts ({e.args[0]}: {e.args[-1]})"
                )
                raise SinkError(f"{msg}; hint: check the server and the network, then run again") from None
            log.warning("MySQL %s: %s; attempt %d of %d", target.describe(), e.args[-1], attempt + 1, RETRIES)
            time.sleep(0.5 * attempt)
        finally:
            if conn is not None and conn.open:
                conn.close()
    raise AssertionError("unreachable")


# ---------------------------------------------------------------------------- the table


def ensure_table(conn: pymysql.connections.Connection, target: MysqlTarget) -> None:
    """Create the table when absent; refuse one whose columns differ from `COLUMNS`, naming how."""
    t = f"`{target.table}`"
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
    how = _with_retries(target, work)
    if how is None:
        log.info("MySQL %s already holds the %d rows of %s; nothing to load", key, pm["rows"], date)
        return {**done, "method": None, "skipped": True}
    stamps[key] = record
    lake.write_json(stamp_path, stamps)
    s = time.perf_counter() - t0
    log.info("%s: %d rows loaded into %s by %s in %.1f s", date, pm["rows"], key, how, s)
    return {**done, "method": how, "skipped": False}


def _count(conn: pymysql.connections.Connection, target: MysqlTarget, date: str) -> int:
    with conn.cursor() as cur:
        cur.execute(f"SELECT COUNT(*) FROM `{target.table}` WHERE `date` = %s", (date,))
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
        cur.execute(f"DELETE FROM `{target.table}` WHERE `date` = %s", (date,))
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
            f"LOAD DATA LOCAL INFILE %s INTO TABLE `{target.table}` CHARACTER SET utf8mb4 "
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
    head = f"INSERT INTO `{target.table}` ({_NAMES}) VALUES ".encode()
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
