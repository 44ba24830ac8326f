"""Where and how the MySQL sink connects: the `mysql://` URL, the password's sources, one connection,
a server's refusal said in one line, and retries of what can pass (a lost connection, a deadlock).

    mysql://USER@HOST[:PORT]/DATABASE[?table=NAME&unix_socket=PATH&defaults_file=PATH]

The password is read from `$PIPELINE_MYSQL_PASSWORD`, else from the `[client]` section of a MySQL option
file (`$PIPELINE_MYSQL_DEFAULTS_FILE` or `defaults_file=`; what the URL gives wins over the file); a URL
holding one is refused, so it is never on a command line, in a log line or in Prefect's records.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

import pymysql

from pipeline.errors import SinkError

log = logging.getLogger(__name__)

T = TypeVar("T")

RETRIES = 3  # attempts of a whole load when the connection is lost or the server picks it in a deadlock
_TRANSIENT = {1205, 1213, 2006, 2013}  # lock wait timeout, deadlock, server gone away, lost connection
_NAME_RE = re.compile(r"[A-Za-z0-9_]{1,64}")
# strict: a bad value is an error, not a warning; backslash escapes on (sink_rows relies on them)
_SESSION = "SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION', time_zone = '+00:00'"


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


def with_retries(target: MysqlTarget, work: Callable[[pymysql.connections.Connection], T]) -> T:
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
