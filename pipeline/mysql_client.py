"""Where and how the MySQL sink connects: the `mysql://` URL, the password's sources, one connection,
a server's refusal said in one line, and retries of what can pass (a lost connection, a deadlock).

    mysql://USER@HOST[:PORT]/DATABASE[?table=NAME&unix_socket=PATH&defaults_file=PATH]

The password is read from `$PIPELINE_MYSQL_PASSWORD`, else from the `[client]` section of a MySQL option
file (`$PIPELINE_MYSQL_DEFAULTS_FILE` or `defaults_file=`, UTF-8; what the URL gives wins over the file);
a URL holding one is refused, so it is never on a command line, in a log line or in Prefect's records.
It is sent as UTF-8, as the `mariadb` and `mysql` clients send what was typed in a UTF-8 terminal
(pymysql would send a `str` as latin-1, and `é` would never log in).

USER, DATABASE and `table=` are percent-decoded as UTF-8 (`odd%2Ddb` is `odd-db`; in `table=`, `+` is
a space and `%2B` a plus). Any database or table name MySQL accepts is accepted: 1 to 64 characters
but U+0000 and those beyond U+FFFF, not ending in a space character; the sink backtick-quotes it in
every statement. What only some servers refuse (MariaDB's `#mysql50#` prefix, a name too long for the
server's file system) the server says (1102, 1103, 1005).
"""

from __future__ import annotations

import configparser
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

import pymysql
from pymysql.optionfile import Parser

from pipeline.errors import SinkError

log = logging.getLogger(__name__)

T = TypeVar("T")

RETRIES = 3  # attempts of a whole load when the connection is lost or the server picks it in a deadlock
_TRANSIENT = {1205, 1213, 2006, 2013}  # lock wait timeout, deadlock, server gone away, lost connection
NAME_CHARS = 64  # the longest database or table name, in characters (MySQL's NAME_CHAR_LEN)
_SPACES = " \t\n\v\f\r"  # the characters a name may not end with (my_isspace in check_table_name)
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
        """`user@host:port/database.table` (or `user@socket/...`): what logs and errors name, on one line
        (a name with a character that does not print is shown as a Python string literal)."""
        where = self.unix_socket or f"{self.host}:{self.port}"
        return f"{self.user}@{where}/{_shown(self.database)}.{_shown(self.table)}"


def _shown(name: str) -> str:
    return name if name.isprintable() else repr(name)


def quote_name(name: str) -> str:
    """`name` as a MySQL quoted identifier: in backticks, each backtick doubled (no other character is
    special between backticks). For a statement pymysql %-formats (one with args), double its `%` too."""
    return "`" + name.replace("`", "``") + "`"


def check_name(what: str, name: str) -> None:
    """Refuse a database or table name that every MySQL and MariaDB server refuses (the manual's "Schema
    Object Names"; `check_table_name` in sql/table.cc): not 1 to 64 characters, U+0000 or a character
    beyond U+FFFF, or a space character at the end."""
    if not 1 <= len(name) <= NAME_CHARS:
        problem = f"has {len(name)} characters, MySQL allows 1 to {NAME_CHARS}"
    elif bad := [c for c in name if not 0 < ord(c) <= 0xFFFF]:
        problem = f"holds {bad[0]!r}, which MySQL does not allow in a name (U+0000, or beyond U+FFFF)"
    elif name[-1] in _SPACES:
        problem = f"ends with {name[-1]!r}, and MySQL does not allow a space character at the end of a name"
    else:
        return
    shown = repr(name) if len(name) <= NAME_CHARS else repr(name[:NAME_CHARS] + "...")
    msg = f"mysql:// URL: the {what} name {shown} {problem}"
    raise SinkError(f"{msg}; hint: name one that MySQL accepts, percent-encoded as UTF-8 in the URL")


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
    try:
        query = parse_qs(u.query, keep_blank_values=True, errors="strict")
        user = unquote(u.username or "", errors="strict")
        database = unquote(u.path.removeprefix("/"), errors="strict")
        table = query.get("table", ["predictions"])[-1]
        for text in (user, database, table):
            text.encode()  # a surrogate: bytes of the command line that were not UTF-8
    except UnicodeError:
        msg = "mysql:// URL: a name or parameter is not UTF-8 text"
        raise SinkError(f"{msg}; hint: percent-encode it as UTF-8 (%C3%A9 for é)") from None
    unknown = sorted(set(query) - {"table", "unix_socket", "defaults_file"})
    if unknown:
        msg = f"mysql:// URL: unknown parameter(s) {unknown}; known: table, unix_socket, defaults_file"
        raise SinkError(msg)
    check_name("database", database)
    check_name("table", table)
    defaults_file = query.get("defaults_file", [os.environ.get("PIPELINE_MYSQL_DEFAULTS_FILE", "")])[-1]
    return MysqlTarget(
        user=user,
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
    if target.defaults_file:
        in_file = read_option_password(Path(target.defaults_file))
        password = password or in_file
        kw["read_default_file"] = target.defaults_file  # pymysql reads it again: user, socket, ssl-*
    if password:
        # bytes: pymysql sends a str as latin-1. surrogateescape: the environment's non-UTF-8 bytes as given
        kw["password"] = password.encode("utf-8", "surrogateescape")
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


def read_option_password(path: Path) -> str | None:
    """The `password` of a MySQL option file's `[client]` section, read as UTF-8 (pymysql would read the
    file in the locale's encoding), or None; a file it cannot read, or not UTF-8, is a `SinkError`."""
    hint = "hint: fix defaults_file= or $PIPELINE_MYSQL_DEFAULTS_FILE"
    try:
        text = path.read_bytes().decode()
    except FileNotFoundError:
        raise SinkError(f"{path}: MySQL option file not found (defaults_file); {hint}") from None
    except OSError as e:
        raise SinkError(f"{path}: cannot read the MySQL option file ({e.strerror}); {hint}") from None
    except UnicodeDecodeError as e:
        msg = f"{path}: the MySQL option file is not UTF-8 (byte {e.start})"
        raise SinkError(f"{msg}; hint: save it as UTF-8") from None
    cfg = Parser()  # pymysql's: quotes stripped as pymysql strips them for every other setting
    try:
        cfg.read_string(text, source=str(path))
    except configparser.Error as e:
        msg = f"{path}: not a MySQL option file ({str(e).splitlines()[0]})"
        raise SinkError(f"{msg}; hint: a [client] section with password = ...") from None
    try:
        return cfg.get("client", "password")
    except (configparser.Error, TypeError):  # no [client] password; TypeError: `password` without a value
        return None


# code -> (what happened, hint); every other code is named with the server's own message
_REFUSALS = {
    # a user without global privileges is told 1044 for a database that does not exist, too
    1044: (
        "the database does not exist, or this user may not use it",
        "CREATE DATABASE it CHARACTER SET utf8mb4 and GRANT ALL ON it TO the user, or fix the URL",
    ),
    1045: ("the login was refused", "check PIPELINE_MYSQL_PASSWORD or the option file's [client] password"),
    1049: ("the database does not exist", "CREATE DATABASE it CHARACTER SET utf8mb4, or fix the URL"),
    1102: ("this server does not accept the database name", "name another database in the URL"),
    1103: ("this server does not accept the table name", "name another table (?table=NAME)"),
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
