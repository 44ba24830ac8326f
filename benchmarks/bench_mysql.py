"""The MySQL sink against the `mariadb` command-line client's LOAD DATA of the same rows (`make bench-mysql`):

    .venv/bin/python benchmarks/bench_mysql.py [--rows 1000000] [--repeat 1] [--no-insert]

Starts a throwaway MariaDB (tests/mariadbkit.py; buffer pool 512 MB, on a unix socket), writes one
predictions partition of `--rows` rows as the pipeline does (benchmarks/bench_export.py's news-like
texts, 30% CJK), and the same rows as a TSV in LOAD DATA's default format. Then, interleaved and
`--repeat` times (median shown), each starting from an empty table:

    pipeline, LOAD DATA LOCAL       sink_mysql.load_partition(method="infile") in a child process
    pipeline, multi-row INSERT      sink_mysql.load_partition(method="insert") (skip with --no-insert)
    mariadb client, LOAD DATA       `mariadb --local-infile` loading the TSV: BEGIN, DELETE, LOAD, COMMIT

Both sides do the same transaction into the same table. The pipeline's rows/s include reading the Arrow
files and writing the TSV; peak RSS is the child's. Timings never fail anything (goal: >= 0.7 of the client).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "benchmarks"))

import mariadbkit  # noqa: E402
from bench_export import write_predictions  # noqa: E402

from pipeline import lake, sink_mysql  # noqa: E402
from pipeline.sink_rows import COLUMNS, batch_tsv  # noqa: E402

DATE = "2026-02-01"

CHILD = """
import os, resource, sys, time
from pipeline import lake, sink_mysql
t0 = time.perf_counter()
m = sink_mysql.load_partition(lake.DataDir.at(sys.argv[1]), sys.argv[2], sys.argv[3], method=sys.argv[4])
s = time.perf_counter() - t0
print(s, m["rows"], m["method"], resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def load_with_pipeline(data: lake.DataDir, url: str, method: str) -> tuple[float, float]:
    data.stamp("mysql", DATE).unlink(missing_ok=True)  # force a load
    env = {**os.environ, "PYTHONPATH": str(REPO), "PIPELINE_MYSQL_PASSWORD": mariadbkit.PASSWORD}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(data.root), DATE, url, method],
        env=env, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert out[2] == method, out
    return float(out[0]), float(out[3])


def load_with_client(server: mariadbkit.Server, defaults: Path, tsv: Path) -> tuple[float, float]:
    names = ", ".join(f"`{c}`" for c, _, _ in COLUMNS)
    sql = (
        "SET SESSION sql_mode = 'STRICT_ALL_TABLES', time_zone = '+00:00'; BEGIN; "
        f"DELETE FROM predictions WHERE date = '{DATE}'; "
        f"LOAD DATA LOCAL INFILE '{tsv}' INTO TABLE predictions CHARACTER SET utf8mb4 ({names}); COMMIT;"
    )
    cmd = [
        shutil.which("mariadb") or "mysql",
        f"--defaults-file={defaults}",
        "--local-infile=1",
        mariadbkit.DATABASE,
        "-e",
        sql,
    ]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - t0, float("nan")  # the client's RSS is not measured


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=1, help="runs of each, interleaved; the median is shown")
    ap.add_argument("--no-insert", action="store_true", help="skip the multi-row INSERT method")
    args = ap.parse_args()
    why = mariadbkit.missing_binaries()
    if why:
        print(f"bench-mysql: {why}", file=sys.stderr)
        return 1
    work = Path(
        tempfile.mkdtemp(prefix="bench-mysql-", dir=REPO / ".cache" if (REPO / ".cache").is_dir() else None)
    )
    server = mariadbkit.start_server(work / "db", buffer_pool="512M")
    try:
        data = lake.DataDir.at(work / "data")
        with lake.publish_dir(data.predictions(DATE)) as tmp:
            write_predictions(tmp / "part-00000.arrow", args.rows)
            shard = {
                "name": "part-00000.arrow",
                "rows": args.rows,
                "sha256": lake.sha256_file(tmp / "part-00000.arrow"),
            }
            manifest = {"date": DATE, "rows": args.rows, "model_version": "bench-model", "shards": [shard]}
            lake.write_json(tmp / lake.MANIFEST, manifest)
        tsv = work / "rows.tsv"
        with open(tsv, "wb") as f:
            for batch, classes in sink_mysql.read_batches([data.predictions(DATE) / "part-00000.arrow"]):
                f.write(batch_tsv(batch, DATE, classes))
        defaults = work / "client.cnf"
        defaults.write_text(
            f"[client]\nuser=pipeline\npassword={mariadbkit.PASSWORD}\nsocket={server.socket}\n"
        )
        defaults.chmod(0o600)
        url = server.url()
        os.environ["PIPELINE_MYSQL_PASSWORD"] = mariadbkit.PASSWORD
        load_with_pipeline(data, url, "infile")  # creates the table
        arrow_mb = (data.predictions(DATE) / "part-00000.arrow").stat().st_size / 1e6
        print(f"{args.rows:,} rows: Arrow {arrow_mb:.0f} MB, TSV {tsv.stat().st_size / 1e6:.0f} MB; "
              f"MariaDB {server.sql('SELECT VERSION()').strip()}, {os.cpu_count()} cores")  # fmt: skip
        runs: dict[str, list[tuple[float, float]]] = {}
        sides = {
            "pipeline, LOAD DATA LOCAL": lambda: load_with_pipeline(data, url, "infile"),
            "mariadb client, LOAD DATA": lambda: load_with_client(server, defaults, tsv),
        }
        if not args.no_insert:
            sides["pipeline, multi-row INSERT"] = lambda: load_with_pipeline(data, url, "insert")
        for _ in range(args.repeat):
            for name, run in sides.items():
                server.sql("TRUNCATE TABLE predictions")
                runs.setdefault(name, []).append(run())
                n = int(server.sql(f"SELECT COUNT(*) FROM predictions WHERE date = '{DATE}'"))
                assert n == args.rows, (name, n)
        client = statistics.median(s for s, _ in runs["mariadb client, LOAD DATA"])
        print(f"{'':28} {'seconds':>8} {'rows/s':>10} {'peak RSS MB':>12} {'vs client':>10}")
        for name, rs in runs.items():
            s = statistics.median(x for x, _ in rs)
            rss = max(r for _, r in rs)
            shown = "-" if rss != rss else f"{rss:.0f}"  # nan: the client's is not measured
            print(f"{name:28} {s:8.2f} {args.rows / s:10,.0f} {shown:>12} {client / s:9.2f}x")
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
