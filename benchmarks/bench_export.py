"""go-exporter against polars `read_ipc(...).write_ndjson(...)`, side by side (`make bench-export`):

    .venv/bin/python benchmarks/bench_export.py [--rows 1000000] [--repeat 3] [--big] [--big-gb 2]

Writes a predictions file as the pipeline does (schema version 1 from `pipeline.schema`, one record batch
per 65,536-row window, uncompressed) with texts of realistic length (news-like, 70% ASCII and 30% CJK)
under .cache/bench/, then times, interleaved and `--repeat` times (median reported):

    go-exporter, default fields (text,label,score)   vs  polars on those three columns
    go-exporter, all fields                           vs  polars on the whole file (what it writes by default)

Both sides write NDJSON to a file in the same folder (go-exporter to its stdout, as `-o` also fsyncs; one
extra line shows `-o`) and run as child processes; peak RSS is the child's
VmHWM, read by GNU time (or polled in /proc). MB/s is input bytes per second. `--big` also writes a ~`--big-gb`
GB input and exports it once with go-exporter (all fields) to report its peak RSS (goal: < 200 MB); polars
is not run on it unless `--big-polars` (it reads the whole file into memory). Generated files are deleted
at the end unless `--keep`. Timings never fail anything; this prints figures and ratios (goal >= 1.5x).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.export import find_exporter  # noqa: E402
from pipeline.schema import predictions_schema  # noqa: E402

CLASSES = ["business", "sci_tech", "sport", "world"]
WINDOW_ROWS = 65_536  # pipeline.score.WINDOW_ROWS: one record batch per window
SCORED_US = 1_770_000_000_000_000
WORDS = (
    "the market shares rose fell percent company quarter profit government minister said on "
    "tuesday wednesday league season coach match final team players scientists study research "
    "space launch network software security report million billion year week after before "
    "officials talks election court ruling police city people new first last over under into"
).split()
CJK = (
    "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可也你"
    "市场公司股价上涨下跌足球比赛冠军政府部长表示科学研究报告网络安全"
)
POOL = 50_000  # distinct texts; rows sample them


@dataclass
class Run:
    seconds: float
    rss_mb: float


def make_texts(rng: np.random.Generator) -> list[str]:
    """News-like texts: ASCII of 20-80 words (~100-500 bytes) or CJK of 40-160 chars (~120-480 bytes)."""
    texts = []
    for _ in range(POOL):
        if rng.random() < 0.7:
            n = int(rng.integers(20, 80))
            words = [WORDS[i] for i in rng.integers(0, len(WORDS), n)]
            words[0] = words[0].capitalize()
            texts.append(" ".join(words) + ".")
        else:
            n = int(rng.integers(40, 160))
            texts.append("".join(CJK[i] for i in rng.integers(0, len(CJK), n)) + "。")
    return texts


def write_predictions(path: Path, rows: int, *, seed: int = 0) -> int:
    """Write `rows` predictions to `path`; return its size in bytes."""
    rng = np.random.default_rng(seed)
    pool = pa.array(make_texts(rng), pa.string())
    schema = predictions_schema(
        CLASSES, model_version="bench-model", vocab_version="bench-vocab", partition="2026-02-01"
    )
    k = len(CLASSES)
    with ipc.new_file(path, schema) as w:
        for start in range(0, rows, WINDOW_ROWS):
            n = min(WINDOW_ROWS, rows - start)
            logits = rng.normal(size=(n, k))
            probs = np.exp(logits)
            probs /= probs.sum(1, keepdims=True)
            label_id = probs.argmax(1).astype(np.int32)
            ids = pa.array([f"doc-{i:09d}" for i in range(start, start + n)], pa.string())
            batch = pa.RecordBatch.from_arrays(
                [
                    ids,
                    pool.take(pa.array(rng.integers(0, POOL, n))),
                    pa.array(CLASSES, pa.string()).take(pa.array(label_id)),
                    pa.array(label_id, pa.int32()),
                    pa.array(probs[np.arange(n), label_id], pa.float64()),
                    pa.FixedSizeListArray.from_arrays(pa.array(probs.ravel(), pa.float64()), k),
                    pa.array(["bench-model"] * n, pa.string()),
                    pa.array(np.full(n, SCORED_US, dtype=np.int64), pa.timestamp("us", tz="UTC")),
                ],
                schema=schema,
            )
            w.write_batch(batch)
    return path.stat().st_size


TIME = Path("/usr/bin/time")


def spawn(cmd: list[str], stdout: Any) -> tuple[float, float, str]:
    """Run `cmd`: wall seconds, peak RSS in MB, stderr.

    The peak RSS is measured by GNU time (`%M`), else by polling VmHWM in /proc. Not from our own
    `wait4`: a forked child's ru_maxrss keeps the peak of this Python process from before its exec.
    """
    if TIME.is_file():
        cmd = [str(TIME), "-f", "%M", *cmd]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=stdout, stderr=subprocess.PIPE)
    hwm_kb = 0
    while proc.poll() is None and not TIME.is_file():
        with contextlib.suppress(OSError, ValueError):
            status = Path(f"/proc/{proc.pid}/status").read_text()
            hwm_kb = max(hwm_kb, int(status.split("VmHWM:")[1].split()[0]))
        time.sleep(0.005)
    _, err_b = proc.communicate()
    seconds = time.perf_counter() - t0
    err = err_b.decode()
    if proc.returncode != 0:
        msg = f"{cmd} failed (exit {proc.returncode}): {err.strip()}"
        raise RuntimeError(msg)
    if TIME.is_file():
        lines = err.strip().splitlines()
        hwm_kb, err = int(lines[-1]), "\n".join(lines[:-1])
    return seconds, hwm_kb / 1024, err


def run_child(cmd: list[str], out: Path) -> Run:
    """Run `cmd` with its stdout to `out`."""
    with open(out, "wb") as f:
        seconds, rss, _ = spawn(cmd, f)
    return Run(seconds, rss)


# polars runs in a child too, so that its RSS and start-up are measured the same way; it reports the
# time of read_ipc + write_ndjson alone (its import, ~0.3 s, is not counted against it).
POLARS_CHILD = """
import sys, time
import polars as pl
src, out, cols = sys.argv[1], sys.argv[2], sys.argv[3]
t0 = time.perf_counter()
df = pl.read_ipc(src, columns=cols.split(",") if cols else None)
df.write_ndjson(out)
print(time.perf_counter() - t0, file=sys.stderr)
"""


def run_polars(src: Path, out: Path, cols: str) -> Run:
    _, rss, err = spawn([sys.executable, "-c", POLARS_CHILD, str(src), str(out), cols], subprocess.DEVNULL)
    return Run(float(err.strip().splitlines()[-1]), rss)


def fmt(name: str, rows: int, size: int, runs: list[Run], out: Path) -> tuple[str, float]:
    s = statistics.median(r.seconds for r in runs)
    rss = max(r.rss_mb for r in runs)
    line = (
        f"  {name:<34} {s:7.2f} s  {rows / s / 1e6:6.2f} M rows/s  {size / s / 1e6:7.1f} MB/s  "
        f"out {out.stat().st_size / 1e6:7.1f} MB  peak RSS {rss:7.1f} MB"
    )
    return line, s


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3, help="runs of each, interleaved; the median is shown")
    ap.add_argument("--big", action="store_true", help="also export a ~--big-gb GB input, for peak RSS")
    ap.add_argument("--big-gb", type=float, default=2.0)
    ap.add_argument("--big-polars", action="store_true", help="also run polars on the big input")
    ap.add_argument("--dir", type=Path, default=REPO / ".cache" / "bench")
    ap.add_argument("--keep", action="store_true", help="keep the generated files")
    args = ap.parse_args()

    exe = str(find_exporter())
    version = subprocess.run([exe, "-version"], capture_output=True, text=True, check=True).stdout.strip()
    work = args.dir / f"export-{os.getpid()}"
    work.mkdir(parents=True, exist_ok=True)
    try:
        src = work / "date=2026-02-01" / "part-00000.arrow"
        src.parent.mkdir()
        t0 = time.perf_counter()
        size = write_predictions(src, args.rows)
        print(
            f"input: {args.rows:,} rows, {size / 1e6:.1f} MB ({size / args.rows:.0f} B/row), "
            f"{-(-args.rows // WINDOW_ROWS)} batches, written in {time.perf_counter() - t0:.1f} s"
        )
        print(f"{version}, {os.cpu_count()} CPUs, median of {args.repeat}, NDJSON to a file")
        out = {k: work / f"{k}.ndjson" for k in ("go_default", "go_all", "pl_default", "pl_all")}
        runs: dict[str, list[Run]] = {k: [] for k in out}
        all_fields = "id,text,label,score,model_version,scored_at,partition,probs"
        for _ in range(args.repeat):
            runs["go_default"].append(run_child([exe, str(src)], out["go_default"]))
            runs["pl_default"].append(run_polars(src, out["pl_default"], "text,label,score"))
            runs["go_all"].append(run_child([exe, "-fields", all_fields, str(src)], out["go_all"]))
            runs["pl_all"].append(run_polars(src, out["pl_all"], ""))
        names = {
            "go_default": "go-exporter (text,label,score)",
            "pl_default": "polars (text,label,score)",
            "go_all": "go-exporter (all 8 fields)",
            "pl_all": "polars (whole file, 8 columns)",
        }
        secs = {}
        for k in ("go_default", "pl_default", "go_all", "pl_all"):
            line, secs[k] = fmt(names[k], args.rows, size, runs[k], out[k])
            print(line)
        r_default = secs["pl_default"] / secs["go_default"]
        r_all = secs["pl_all"] / secs["go_all"]
        print(
            f"speed-up of go-exporter over polars: default fields {r_default:.2f}x, "
            f"all fields {r_all:.2f}x (goal >= 1.5x)"
        )
        # -o adds an fsync and a rename (an export is complete or absent), which polars does not do
        atomic = work / "atomic.ndjson"
        r = run_child([exe, "-fields", all_fields, "-o", str(atomic), str(src)], work / "stdout")
        print(fmt("go-exporter (all 8 fields, -o: fsync)", args.rows, size, [r], atomic)[0])
        for p in [*out.values(), atomic]:
            p.unlink()

        if args.big:
            rows = int(args.big_gb * 1e9 / (size / args.rows))
            big = work / "big" / "part-00000.arrow"
            big.parent.mkdir()
            t0 = time.perf_counter()
            bsize = write_predictions(big, rows, seed=1)
            took = time.perf_counter() - t0
            print(f"big input: {rows:,} rows, {bsize / 1e9:.2f} GB, written in {took:.0f} s")
            bout = work / "big.ndjson"
            r = run_child([exe, "-fields", all_fields, str(big)], bout)
            print(fmt("go-exporter (all 8 fields)", rows, bsize, [r], bout)[0])
            print(f"go-exporter peak RSS on {bsize / 1e9:.2f} GB: {r.rss_mb:.0f} MB (goal < 200 MB)")
            bout.unlink()
            if args.big_polars:
                r = run_polars(big, bout, "")
                print(fmt("polars (whole file, 8 columns)", rows, bsize, [r], bout)[0])
                bout.unlink()
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
