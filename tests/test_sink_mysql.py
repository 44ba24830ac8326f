"""The MySQL sink against a real, throwaway MariaDB (tests/mariadbkit.py; skipped when not installed)."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.parse

import pymysql
import pytest
from crashkit import build_seed
from mariadbkit import DATABASE, PASSWORD, loaded_rows, missing_binaries, start_server, write_predictions

from pipeline import corpus, lake, mysql_client, sink_mysql
from pipeline.__main__ import main
from pipeline.errors import SinkError

DATE = "2026-01-04"
NASTY = [
    "中文新闻标题：股市上涨 😀🚀 emoji of four bytes",
    "tab\there, newline\nthere, CR\r, backslash \\ and \\N and \\t literally",
    "quotes ' \" `backtick` ; DROP TABLE predictions; --",
    "NUL \0 inside",
    "",
    "trailing space ",
    "x" * 70_000,  # longer than TEXT's 64 KB
]


@pytest.fixture(scope="session")
def mariadb(tmp_path_factory):
    why = missing_binaries()
    if why:
        if os.environ.get("CI"):  # .ci/run installs it: CI must never skip these
            raise RuntimeError(why)
        pytest.skip(why)
    server = start_server(tmp_path_factory.mktemp("mariadb"))
    yield server
    server.stop()


@pytest.fixture
def sink(mariadb, monkeypatch, request):
    """The server with a table of this test's own, and the password in the environment."""
    monkeypatch.setenv("PIPELINE_MYSQL_PASSWORD", PASSWORD)
    monkeypatch.delenv("PIPELINE_MYSQL_URL", raising=False)
    table = request.node.name.replace("[", "_").replace("]", "").replace("-", "_")[-60:]
    mariadb.table = table
    mariadb.table_url = mariadb.url(table=table)
    yield mariadb
    mariadb.sql(f"DROP TABLE IF EXISTS {table}")


def rows_of(server, table: str, date: str = DATE) -> list[tuple]:
    conn = pymysql.connect(user="root", unix_socket=server.socket, database=DATABASE, charset="utf8mb4")
    with conn, conn.cursor() as cur:
        cur.execute(f"SELECT id, CAST(text AS BINARY), probs, scored_at, score, model_version FROM {table} "
                    "WHERE date = %s ORDER BY id", (date,))  # fmt: skip
        return list(cur.fetchall())


@pytest.mark.parametrize("method", ["infile", "insert"])
def test_text_round_trips_byte_for_byte_and_every_field_is_kept(sink, data, method):
    write_predictions(data, DATE, NASTY)
    m = sink_mysql.load_partition(data, DATE, sink.table_url, method=method)
    assert (m["rows"], m["method"], m["skipped"]) == (len(NASTY), method, False)
    got = rows_of(sink, sink.table)
    assert [r[1] for r in got] == [t.encode() for t in NASTY]
    file_rows = next(sink_mysql.read_batches([data.predictions(DATE) / "part-00000.arrow"]))[0].to_pylist()
    for row, want in zip(got, file_rows, strict=True):
        assert row[0] == want["id"] and row[4] == want["score"] and row[5] == "m1"
        probs = json.loads(row[2])
        assert list(probs) == ["business", "sci_tech", "sport", "world"]
        assert list(probs.values()) == want["probs"]  # shortest round-trip digits: exact floats
        assert row[3] == want["scored_at"].replace(tzinfo=None)  # microseconds kept, UTC
    collation = sink.sql(
        f"SELECT TABLE_COLLATION FROM information_schema.TABLES WHERE TABLE_NAME = '{sink.table}'"
    )
    assert collation.strip() == "utf8mb4_bin"


def test_a_server_without_local_files_gets_inserts_and_an_empty_date_empties_the_date(sink, data):
    write_predictions(data, DATE, ["a", "b", "c"])
    sink.sql("SET GLOBAL local_infile = 0", database="mysql")
    try:
        m = sink_mysql.load_partition(data, DATE, sink.table_url)
    finally:
        sink.sql("SET GLOBAL local_infile = 1", database="mysql")
    assert (m["method"], len(loaded_rows(sink, DATE, sink.table))) == ("insert", 3)
    write_predictions(data, DATE, [], model_version="m2")
    assert sink_mysql.load_partition(data, DATE, sink.table_url)["rows"] == 0
    assert loaded_rows(sink, DATE, sink.table) == []


def test_second_load_changes_nothing_and_a_new_model_reloads_the_date(sink, data):
    write_predictions(data, DATE, [f"text {i}" for i in range(300)])
    write_predictions(data, "2026-01-05", ["other day"])
    sink_mysql.load_partition(data, "2026-01-05", sink.table_url)
    first = sink_mysql.load_partition(data, DATE, sink.table_url)
    before = rows_of(sink, sink.table)
    checksum = sink.sql(f"CHECKSUM TABLE {sink.table}")
    again = sink_mysql.load_partition(data, DATE, sink.table_url)
    assert again["skipped"] and not first["skipped"]
    assert sink.sql(f"CHECKSUM TABLE {sink.table}") == checksum and rows_of(sink, sink.table) == before

    write_predictions(data, DATE, [f"text {i}" for i in range(250)], model_version="m2", seed=1)
    third = sink_mysql.load_partition(data, DATE, sink.table_url)
    assert not third["skipped"] and third["model_version"] == "m2"
    assert {r[1] for r in loaded_rows(sink, DATE, sink.table)} == {"m2"}
    assert len(loaded_rows(sink, DATE, sink.table)) == 250  # the old night's extra rows are gone
    assert loaded_rows(sink, "2026-01-05", sink.table) == [["id-00000000", "m1"]]  # other dates untouched

    sink.sql(f"DELETE FROM {sink.table} WHERE date = '{DATE}' LIMIT 10")  # someone edited the table
    assert not sink_mysql.load_partition(data, DATE, sink.table_url)["skipped"]
    assert len(loaded_rows(sink, DATE, sink.table)) == 250


def _wait_mid_load(server, table: str, model: str, timeout: float = 60) -> int:
    """Wait until, read uncommitted, the date holds some rows of `model` and none of another (the load has
    deleted the old night and is loading the new one); return the loading connection's id."""
    conn = pymysql.connect(user="root", unix_socket=server.socket, database=DATABASE, autocommit=True)
    deadline = time.monotonic() + timeout
    with conn, conn.cursor() as cur:
        cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ UNCOMMITTED")
        while time.monotonic() < deadline:
            try:
                cur.execute(f"SELECT SUM(model_version = %s), SUM(model_version != %s) FROM {table} "
                            "WHERE date = %s", (model, model, DATE))  # fmt: skip
                new, old = cur.fetchone()
            except pymysql.ProgrammingError:  # the load has not created the table yet
                new, old = 0, 0
            cur.execute("SELECT ID FROM information_schema.PROCESSLIST WHERE USER = 'pipeline' "
                        "AND INFO LIKE 'LOAD DATA%%'")  # fmt: skip
            loading = cur.fetchall()
            if new and not old and loading:
                return int(loading[0][0])
            time.sleep(0.005)
    raise AssertionError("no load seen in progress")


def test_a_load_killed_between_delete_and_commit_leaves_the_previous_rows(sink, data):
    n = 60_000
    write_predictions(data, DATE, [f"old {i}" for i in range(n)], batch_rows=4096)
    sink_mysql.load_partition(data, DATE, sink.table_url)
    before = rows_of(sink, sink.table)
    write_predictions(data, DATE, [f"new {i}" for i in range(n)], model_version="m2", batch_rows=4096)
    code = "import sys; from pipeline import lake, sink_mysql; sink_mysql.BATCH_ROWS = 4096; "
    code += "sink_mysql.load_partition(lake.DataDir.at(sys.argv[1]), sys.argv[2], sys.argv[3])"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-c", code, str(data.root), DATE, sink.table_url], env=env)
    try:
        _wait_mid_load(sink, sink.table, "m2")
        cmdline = open(f"/proc/{proc.pid}/cmdline", "rb").read()
        assert PASSWORD.encode() not in cmdline  # what `ps` shows of the loading process
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert rows_of(sink, sink.table) == before  # the server rolled the whole night back

    m = sink_mysql.load_partition(data, DATE, sink.table_url)  # started again: one complete load
    assert not m["skipped"] and len(loaded_rows(sink, DATE, sink.table)) == n
    assert {r[1] for r in loaded_rows(sink, DATE, sink.table)} == {"m2"}
    assert not list(data.stamp("mysql", DATE).parent.glob(".load-*"))  # its scratch file was swept


def test_a_lost_connection_is_retried_then_given_up(sink, data, monkeypatch, caplog):
    n = 40_000
    write_predictions(data, DATE, [f"row {i}" for i in range(n)], batch_rows=2048)
    monkeypatch.setattr(sink_mysql, "BATCH_ROWS", 2048)

    def kill_once(model: str) -> None:
        sink.sql(f"KILL CONNECTION {_wait_mid_load(sink, sink.table, model)}", database="mysql")

    for retries, ok, model in ((3, True, "m1"), (1, False, "m2")):
        monkeypatch.setattr(mysql_client, "RETRIES", retries)
        if model == "m2":
            write_predictions(data, DATE, [f"row {i}" for i in range(n)], batch_rows=2048, model_version="m2")
        killer = threading.Thread(target=kill_once, args=(model,))
        killer.start()
        with caplog.at_level(logging.WARNING, logger="pipeline.mysql_client"):
            if ok:
                assert sink_mysql.load_partition(data, DATE, sink.table_url)["rows"] == n
                assert "attempt 2 of 3" in caplog.text
                assert len(loaded_rows(sink, DATE, sink.table)) == n
            else:
                with pytest.raises(SinkError, match="gave up after 1 attempts"):
                    sink_mysql.load_partition(data, DATE, sink.table_url)
                assert len(loaded_rows(sink, DATE, sink.table)) == n  # the first load's rows, whole
        killer.join()


@pytest.mark.usefixtures("prefect_harness")
def test_refusals_are_one_clear_line_and_exit_1_and_never_show_the_password(sink, data, capsys, caplog):
    write_predictions(data, DATE, ["a", "b"])
    root = str(data.root)
    sink.sql(f"CREATE TABLE {sink.table} (date DATE, id VARCHAR(10), text TEXT, extra INT)")
    cases = [
        (sink.url(table="fresh"), None, 0, "fresh"),
        (sink.table_url, None, 1, "the table exists with other columns (missing label, label_id, score, "
         "probs, model_version, scored_at; unexpected extra; `text` is text, expected MEDIUMTEXT)"),
        (sink.url(table="fresh"), "wrong-password", 1, "the login was refused (1045"),
        (sink.url(user="nobody"), None, 1, "the login was refused (1045"),
        (sink.url(database="no_such_db"), None, 1, "the database does not exist, or this user may not"),
    ]  # fmt: skip
    caplog.set_level(logging.DEBUG)
    for url, password, code, said in cases:
        os.environ["PIPELINE_MYSQL_PASSWORD"] = password or PASSWORD
        assert main(["--data-dir", root, "export", "--date", DATE, "--to", url]) == code, url
        out, err = capsys.readouterr()
        assert PASSWORD not in out + err  # Prefect's log lines included
        if code:
            last = err.strip().splitlines()[-1]  # what `main` prints after Prefect's own log lines
            assert last.startswith("pipeline: error: MySQL ") and said in last and "hint:" in last, err
        else:
            assert json.loads(out)["rows"] == 2 and said in json.loads(out)["table"]
    assert sink.sql(f"SELECT COUNT(*) FROM {sink.table}").strip() == "0"  # nothing altered there
    os.environ["PIPELINE_MYSQL_PASSWORD"] = PASSWORD
    sink.sql("SET GLOBAL read_only = 1", database="mysql")
    try:
        sink.sql("DROP TABLE fresh")  # root may write; the pipeline's user may not
        with pytest.raises(SinkError, match="the server is read-only"):
            sink_mysql.load_partition(data, DATE, sink.url(table="fresh"))
    finally:
        sink.sql("SET GLOBAL read_only = 0", database="mysql")
    assert PASSWORD not in caplog.text and PASSWORD not in capsys.readouterr().err

    with pytest.raises(SystemExit):  # a password in the URL is a usage error that does not repeat it
        main(["--data-dir", root, "export", "--date", DATE, "--to", f"mysql://u:{PASSWORD}@h/db"])
    err = capsys.readouterr().err
    assert "holds a password" in err and PASSWORD not in err


def test_the_password_can_come_from_an_option_file(sink, data, monkeypatch, tmp_path):
    monkeypatch.delenv("PIPELINE_MYSQL_PASSWORD")
    write_predictions(data, DATE, ["x"])
    with pytest.raises(SinkError, match="login was refused"):
        sink_mysql.load_partition(data, DATE, sink.table_url)
    cnf = tmp_path / "client.cnf"
    cnf.write_text(f"[client]\npassword = {PASSWORD}\n")
    monkeypatch.setenv("PIPELINE_MYSQL_DEFAULTS_FILE", str(cnf))
    assert sink_mysql.load_partition(data, DATE, sink.table_url)["rows"] == 1


@pytest.mark.usefixtures("prefect_harness")
def test_a_nightly_run_with_the_url_set_loads_the_table_and_counts_the_rows(
    sink, exporter, tmp_path, monkeypatch
):
    from pipeline import flows, nightly

    data = build_seed(tmp_path / "data", rows_per_day=30)
    monkeypatch.setenv("PIPELINE_MYSQL_URL", sink.table_url)
    s = flows.nightly_flow(str(data.root), corpus.SCORE_DATE)
    day = s["dates"][0]
    assert s["totals"]["rows_loaded"] == s["totals"]["rows_scored"] == day["mysql"]["rows"] > 0
    assert len(loaded_rows(sink, corpus.SCORE_DATE, sink.table)) == day["mysql"]["rows"]
    assert "loaded into MySQL" in nightly.summary_markdown(s)
    again = flows.nightly_flow(str(data.root), corpus.SCORE_DATE)
    assert again["dates"][0]["mysql"]["skipped"] and again["totals"]["rows_loaded"] == day["mysql"]["rows"]
    assert json.loads(open(again["path"]).read())["totals"]["rows_loaded"] == day["mysql"]["rows"]
    assert lake.read_json(data.stamp("mysql", corpus.SCORE_DATE))  # what it loaded, recorded


UTF8_PASSWORD = "pässwörd-é"


def test_a_utf8_password_logs_in_from_the_environment_and_from_an_option_file(
    sink, data, monkeypatch, tmp_path
):
    root = pymysql.connect(user="root", unix_socket=sink.socket, charset="utf8mb4", autocommit=True)
    with root, root.cursor() as cur:
        cur.execute("CREATE USER 'utf8pw'@'localhost' IDENTIFIED BY %s", (UTF8_PASSWORD,))
        cur.execute(f"GRANT ALL ON {DATABASE}.* TO 'utf8pw'@'localhost'")
    try:
        client = [
            "mariadb",
            "--no-defaults",
            "-S",
            sink.socket,
            "-uutf8pw",
            f"-p{UTF8_PASSWORD}",
            "-e",
            "SELECT 1",
        ]
        assert subprocess.run(client, capture_output=True).returncode == 0  # the client logs in with it
        write_predictions(data, DATE, ["a", "é"])
        url = sink.url(user="utf8pw", table=sink.table)
        monkeypatch.setenv("PIPELINE_MYSQL_PASSWORD", UTF8_PASSWORD)
        assert sink_mysql.load_partition(data, DATE, url)["rows"] == 2
        assert len(loaded_rows(sink, DATE, sink.table)) == 2

        monkeypatch.delenv("PIPELINE_MYSQL_PASSWORD")
        cnf = tmp_path / "client.cnf"
        cnf.write_text(f"[client]\npassword = {UTF8_PASSWORD}\n", encoding="utf-8")
        monkeypatch.setenv("PIPELINE_MYSQL_DEFAULTS_FILE", str(cnf))
        assert sink_mysql.load_partition(data, DATE, url)["skipped"]  # logged in, found the rows loaded
        cnf.write_bytes(f"[client]\npassword = {UTF8_PASSWORD}\n".encode("latin-1"))
        with pytest.raises(
            SinkError, match=r"client.cnf: the MySQL option file is not UTF-8 \(byte 21\); hint"
        ):
            sink_mysql.load_partition(data, DATE, url)
    finally:
        sink.sql("DROP USER 'utf8pw'@'localhost'", database="mysql")


ODD_TABLES = [
    "my table",
    "back`tick",
    "50% off",
    "dots.and/slash\\",
    "中文 é",
    "victim`#",
    "x`; DROP TABLE victim; --",
]


def test_any_name_mysql_accepts_loads_and_an_injection_in_a_name_is_harmless(sink, data):
    write_predictions(data, DATE, ["a", "b", "c"])
    sink.sql(
        "CREATE DATABASE `odd-db` CHARACTER SET utf8mb4; GRANT ALL ON `odd-db`.* TO 'pipeline'@'localhost'; "
        "CREATE TABLE `odd-db`.victim (i INT); INSERT INTO `odd-db`.victim VALUES (1);",
        database="mysql",
    )
    root = pymysql.connect(
        user="root", unix_socket=sink.socket, database="odd-db", charset="utf8mb4", autocommit=True
    )
    try:
        for i, table in enumerate(ODD_TABLES):
            name = urllib.parse.quote(table, safe="")
            first = sink_mysql.load_partition(
                data, DATE, sink.url(database="odd%2Ddb", table=name), method="insert" if i % 2 else "infile"
            )
            again = sink_mysql.load_partition(data, DATE, sink.url(database="odd-db", table=name))
            assert not first["skipped"] and again["skipped"]  # odd%2Ddb is odd-db: the same table
            with root.cursor() as cur:
                cur.execute("SELECT COUNT(*) FROM `" + table.replace("`", "``") + "`")  # no args: no %-format
                assert cur.fetchone() == (3,), table
        with root.cursor() as cur:
            cur.execute("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'odd-db'")
            assert {t for (t,) in cur.fetchall()} == {*ODD_TABLES, "victim"}  # each name as given
            cur.execute("SELECT i FROM victim")
            assert cur.fetchall() == ((1,),)  # the injection attempts touched nothing else

        for database, table, said in (
            ("%23mysql50%23x", "t", "this server does not accept the database name (1102: "),
            ("odd-db", "%23mysql50%23t", "this server does not accept the table name (1103: "),
        ):
            with pytest.raises(SinkError, match=rf"{re.escape(said)}.*; hint: name another"):
                sink_mysql.load_partition(data, DATE, sink.url(database=database, table=table))
    finally:
        root.close()
        sink.sql("DROP DATABASE `odd-db`", database="mysql")


@pytest.mark.parametrize(
    ("where", "said"),
    [
        (
            "/a%20",
            "the database name 'a ' ends with ' ', and MySQL does not allow a space character at the end",
        ),
        (
            "/db?table=t%09",
            "the table name 't\\t' ends with '\\t', and MySQL does not allow a space character",
        ),
        ("/" + "x" * 65, f"the database name '{'x' * 64}...' has 65 characters, MySQL allows 1 to 64"),
        ("/db?table=", "the table name '' has 0 characters, MySQL allows 1 to 64"),
        ("", "the database name '' has 0 characters, MySQL allows 1 to 64"),
        (
            "/a%00b",
            "the database name 'a\\x00b' holds '\\x00', which MySQL does not allow in a name (U+0000, or",
        ),
        ("/db?table=%F0%9F%98%80", "the table name '😀' holds '😀', which MySQL does not allow in a name"),
        ("/%FF", "a name or parameter is not UTF-8 text; hint: percent-encode it as UTF-8"),
    ],
)
def test_a_name_mysql_refuses_is_refused_before_connecting(where, said):
    with pytest.raises(SinkError) as e:
        mysql_client.parse_url(f"mysql://u@h{where}")
    assert str(e.value).startswith(f"mysql:// URL: {said}") and "; hint: " in str(e.value)


def test_names_in_the_url_are_percent_decoded_as_utf8():
    t = mysql_client.parse_url("mysql://l%C3%A4der@h/odd%2Ddb?table=a%60b+c%2B%25")
    assert (t.user, t.database, t.table) == ("läder", "odd-db", "a`b c+%")
    assert mysql_client.parse_url("mysql://u@h/odd-db").database == "odd-db"
