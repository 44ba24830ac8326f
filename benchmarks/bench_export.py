r"""go-exporter against polars `read_ipc(...).write_ndjson(...)`, side by side (`make bench-export`):

    .venv/bin/python benchmarks/bench_export.py [--rows 1000000] [--repeat 3] [--mixes ascii,cjk,...] [--big]

For each text mix it writes a predictions file as the pipeline does (schema version 1 from `pipeline.schema`,
one record batch per 65,536-row window, uncompressed) under .cache/bench/, then times, alternating sides,
`--repeat` times (medians reported):

    go-exporter, default fields (text,label,score)   vs  polars on those three columns
    go-exporter, all fields                           vs  polars on the whole file (what it writes by default)
    go-exporter with -o (temporary file, fsync, rename), default and all fields

The mixes (short texts of 20-80 words unless said; rows sample a pool of distinct texts):

    ascii    English words only: nothing to escape
    cjk      CJK-heavy: 90% Han characters and punctuation, a few ASCII words and digits
    quotes   quote- and backslash-dense: "quoted" words, AG News' `\` line breaks, `&quot;` and `<b>`
             remnants, some non-ASCII words (über, 新闻)
    control  control characters (\n, \t, \x01...) and invalid UTF-8 (written as escapes and U+FFFD); polars
             refuses invalid UTF-8, so it reads a twin file where those bytes are already U+FFFD
    long     2-10 KB texts of words with some quotes and CJK (`--rows`/20 rows, about the same input size)

Both sides write NDJSON to a file in the same folder (go-exporter to its stdout; `-o` also fsyncs and is
shown beside it) and run as child processes; peak RSS is the child's VmHWM, read by GNU time (or polled in
/proc). MB/s is input bytes per second. `--big` also writes a ~`--big-gb` GB input (ascii/CJK news) and
exports it once with go-exporter (all fields) to report its peak RSS (goal: < 200 MB); polars is not run on
it unless `--big-polars` (it reads the whole file into memory). Each output is deleted as soon as its size is
read, and the inputs are synced to disk before their runs, so that no run shares the disk with the write-back
of files it did not write. Generated inputs are deleted at the end unless `--keep`. Timings never fail anything; this prints figures and ratios (goals >= 1.5x default
fields, >= 1.2x all fields).
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
from collections.abc import Callable
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
CJK_PUNCT = "，。、“”：！？"
NON_ASCII_WORDS = ["über", "café", "naïve", "新闻", "東京", "€100", "Zürich", "résumé"]
POOL = 50_000  # distinct texts; rows sample them
LONG_POOL = 2_000
LONG_ROWS_DIVISOR = 20  # long texts are ~20x the bytes of short ones


@dataclass
class Run:
    seconds: float
    rss_mb: float
    out_bytes: int


def _words(rng: np.random.Generator, lo: int, hi: int) -> list[str]:
    words = [WORDS[i] for i in rng.integers(0, len(WORDS), int(rng.integers(lo, hi)))]
    words[0] = words[0].capitalize()
    return words


def _cjk(rng: np.random.Generator, lo: int, hi: int) -> str:
    return "".join(CJK[i] for i in rng.integers(0, len(CJK), int(rng.integers(lo, hi))))


def _news(rng: np.random.Generator) -> bytes:
    """News-like: ASCII of 20-80 words (~100-500 bytes) or CJK of 40-160 chars (~120-480 bytes)."""
    if rng.random() < 0.7:
        return (" ".join(_words(rng, 20, 80)) + ".").encode()
    return (_cjk(rng, 40, 160) + "。").encode()


def _ascii(rng: np.random.Generator) -> bytes:
    return (" ".join(_words(rng, 20, 80)) + ".").encode()


def _cjk_heavy(rng: np.random.Generator) -> bytes:
    parts = []
    for _ in range(int(rng.integers(4, 12))):
        parts.append(_cjk(rng, 5, 20))
        r = rng.random()
        if r < 0.25:
            parts.append(f" {WORDS[int(rng.integers(len(WORDS)))]} ")
        elif r < 0.4:
            parts.append(str(int(rng.integers(1, 10_000))))
        parts.append(CJK_PUNCT[int(rng.integers(len(CJK_PUNCT)))])
    return "".join(parts).encode()


def _quoted_word(rng: np.random.Generator, w: str) -> str:
    r = rng.random()
    if r < 0.25:
        return f'"{w}"'
    if r < 0.33:
        return f"{w}\\"  # AG News writes line breaks as a backslash
    if r < 0.38:
        return f"&quot;{w}&quot;"
    if r < 0.42:
        return f"<b>{w}</b>"
    if r < 0.47:
        return f"{w}'s"
    if r < 0.55:
        return NON_ASCII_WORDS[int(rng.integers(len(NON_ASCII_WORDS)))]
    return w


def _quotes(rng: np.random.Generator) -> bytes:
    return " ".join(_quoted_word(rng, w) for w in _words(rng, 20, 60)).encode()


CONTROL = [b"\n", b"\t", b"\r\n", b"\x01", b"\x1f", b"\x00", b"\x0b"]
INVALID = [b"\xff", b"\xc3", b"\xe6\x96", b"\xed\xa0\x80", b"\x80", b"\xf4\x90\x80\x80"]


def _control(rng: np.random.Generator) -> bytes:
    out = []
    for w in _words(rng, 20, 80):
        b = w.encode()
        r = rng.random()
        if r < 0.15:
            b += CONTROL[int(rng.integers(len(CONTROL)))]
        elif r < 0.25:
            b = INVALID[int(rng.integers(len(INVALID)))] + b
        elif r < 0.3:
            b = "新闻".encode() + b
        out.append(b)
    return b" ".join(out)


def _long(rng: np.random.Generator) -> bytes:
    target = int(rng.integers(2_000, 10_000))
    parts: list[bytes] = []
    size = 0
    while size < target:
        p = _quotes(rng) if rng.random() < 0.7 else _cjk_heavy(rng)
        parts.append(p)
        size += len(p) + 1
    return b"\n".join(parts)


MIXES: dict[str, Callable[[np.random.Generator], bytes]] = {
    "ascii": _ascii,
    "cjk": _cjk_heavy,
    "quotes": _quotes,
    "control": _control,
    "long": _long,
}


def make_texts(mix: str, rng: np.random.Generator) -> list[bytes]:
    """The pool of distinct texts of `mix` (bytes: the control mix holds invalid UTF-8)."""
    make = _news if mix == "news" else MIXES[mix]
    return [make(rng) for _ in range(LONG_POOL if mix == "long" else POOL)]


def _string_array(texts: list[bytes]) -> pa.Array:
    """A utf8 array of `texts` as they are, invalid UTF-8 included (pyarrow does not check here)."""
    binary = pa.array(texts, pa.binary())
    return pa.Array.from_buffers(pa.string(), len(binary), binary.buffers())


def write_predictions(
    path: Path, rows: int, *, mix: str = "news", seed: int = 0, repair: bool = False
) -> int:
    """Write `rows` predictions of the `mix` texts to `path`; return its size in bytes.

    `repair` writes invalid UTF-8 as U+FFFD (the twin file polars can read); the same seed gives the same rows.
    """
    rng = np.random.default_rng(seed)
    texts = make_texts(mix, rng)
    if repair:
        texts = [t.decode(errors="replace").encode() for t in texts]
    pool = _string_array(texts)
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
                    pool.take(pa.array(rng.integers(0, len(pool), n))),
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

    With GNU time, the seconds are its `%e` (the child's own wall time, 10 ms resolution: not this
    process's fork and exec, ~40 ms here, which polars' in-child timing does not pay either) and the peak
    RSS its `%M`; else wall time from here and VmHWM polled in /proc. Not from our own `wait4`: a forked
    child's ru_maxrss keeps the peak of this Python process from before its exec.
    """
    if TIME.is_file():
        cmd = [str(TIME), "-f", "%e %M", *cmd]
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
        elapsed, hwm = lines[-1].split()
        seconds, hwm_kb, err = float(elapsed), int(hwm), "\n".join(lines[:-1])
    return seconds, hwm_kb / 1024, err


def run_child(cmd: list[str], stdout: Path, out: Path | None = None) -> Run:
    """Run `cmd` with its stdout to `stdout`; its output (`out`, else `stdout`) is measured and deleted.

    Deleted at once, so that no later run shares the disk with its write-back: a backlog of several GB of
    earlier outputs made whichever side met it up to 25% slower, on one mix and not the next.
    """
    with open(stdout, "wb") as f:
        seconds, rss, _ = spawn(cmd, f)
    return Run(seconds, rss, _take_size(out or stdout))


def _take_size(path: Path) -> int:
    size = path.stat().st_size
    path.unlink()
    return size


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
    return Run(float(err.strip().splitlines()[-1]), rss, _take_size(out))


ALL_FIELDS = "id,text,label,score,model_version,scored_at,partition,probs"
DEFAULT_COLS = "text,label,score"


def fmt(name: str, rows: int, size: int, runs: list[Run]) -> tuple[str, float]:
    s = statistics.median(r.seconds for r in runs)
    rss = max(r.rss_mb for r in runs)
    line = (
        f"  {name:<34} {s:7.2f} s  {rows / s / 1e6:6.2f} M rows/s  {size / s / 1e6:7.1f} MB/s  "
        f"out {runs[-1].out_bytes / 1e6:7.1f} MB  peak RSS {rss:7.1f} MB"
    )
    return line, s


def bench_mix(exe: str, work: Path, mix: str, rows: int, repeat: int) -> dict[str, float]:
    """Time both sides on one mix, print the figures; return the median seconds by side."""
    src = work / "date=2026-02-01" / "part-00000.arrow"
    src.parent.mkdir(parents=True, exist_ok=True)
    size = write_predictions(src, rows, mix=mix)
    pl_src = src
    if mix == "control":  # polars refuses invalid UTF-8: give it the same rows with U+FFFD in its place
        pl_src = work / "polars" / "date=2026-02-01" / "part-00000.arrow"
        pl_src.parent.mkdir(parents=True, exist_ok=True)
        write_predictions(pl_src, rows, mix=mix, repair=True)
    os.sync()  # the inputs' write-back is not part of any run
    print(f"[{mix}] {rows:,} rows, {size / 1e6:.1f} MB ({size / rows:.0f} B/row)")
    names = {
        "go_default": "go-exporter (text,label,score)",
        "go_default_o": "go-exporter (text,label,score) -o",
        "pl_default": "polars (text,label,score)",
        "go_all": "go-exporter (all 8 fields)",
        "go_all_o": "go-exporter (all 8 fields) -o",
        "pl_all": "polars (whole file, 8 columns)",
    }
    out = {k: work / f"{k}.ndjson" for k in names}
    runs: dict[str, list[Run]] = {k: [] for k in names}
    go_cmds = {
        "go_default": [exe, str(src)],
        "go_all": [exe, "-fields", ALL_FIELDS, str(src)],
        "go_default_o": [exe, "-o", str(out["go_default_o"]), str(src)],
        "go_all_o": [exe, "-fields", ALL_FIELDS, "-o", str(out["go_all_o"]), str(src)],
    }
    for i in range(repeat):
        order = ["go_default", "pl_default", "go_all", "pl_all", "go_default_o", "go_all_o"]
        if i % 2:  # alternate which side goes first
            order = ["pl_default", "go_default", "pl_all", "go_all", "go_all_o", "go_default_o"]
        for k in order:
            if k.startswith("pl_"):
                runs[k].append(run_polars(pl_src, out[k], DEFAULT_COLS if k == "pl_default" else ""))
            elif k.endswith("_o"):
                runs[k].append(run_child(go_cmds[k], work / "stdout", out[k]))
            else:
                runs[k].append(run_child(go_cmds[k], out[k]))
    secs = {}
    for k in ("go_default", "go_default_o", "pl_default", "go_all", "go_all_o", "pl_all"):
        line, secs[k] = fmt(names[k], rows, size, runs[k])
        print(line)
    print(
        f"  [{mix}] go-exporter over polars: default fields {secs['pl_default'] / secs['go_default']:.2f}x "
        f"(-o {secs['pl_default'] / secs['go_default_o']:.2f}x), all fields {secs['pl_all'] / secs['go_all']:.2f}x "
        f"(-o {secs['pl_all'] / secs['go_all_o']:.2f}x)"
    )
    for p in [work / "stdout", src, pl_src]:
        p.unlink(missing_ok=True)
    secs["rss_go"] = max(r.rss_mb for k in go_cmds for r in runs[k])
    secs["rss_pl"] = max(r.rss_mb for k in ("pl_default", "pl_all") for r in runs[k])
    return secs


def bench_big(exe: str, work: Path, big_gb: float, *, with_polars: bool) -> None:
    """Export a ~`big_gb` GB news input once (all fields) and print go-exporter's peak RSS."""
    sample = work / "sample.arrow"
    per_row = write_predictions(sample, 100_000) / 100_000
    sample.unlink()
    rows = int(big_gb * 1e9 / per_row)
    big = work / "big" / "part-00000.arrow"
    big.parent.mkdir()
    t0 = time.perf_counter()
    bsize = write_predictions(big, rows, seed=1)
    print(
        f"big input (news): {rows:,} rows, {bsize / 1e9:.2f} GB, written in {time.perf_counter() - t0:.0f} s"
    )
    bout = work / "big.ndjson"
    r = run_child([exe, "-fields", ALL_FIELDS, str(big)], bout)
    print(fmt("go-exporter (all 8 fields)", rows, bsize, [r])[0])
    print(f"go-exporter peak RSS on {bsize / 1e9:.2f} GB: {r.rss_mb:.0f} MB (goal < 200 MB)")
    if with_polars:
        r = run_polars(big, bout, "")
        print(fmt("polars (whole file, 8 columns)", rows, bsize, [r])[0])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000, help="rows of each short-text mix")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each, alternating; the median is shown")
    ap.add_argument("--mixes", default=",".join(MIXES), help=f"comma-separated, of {', '.join(MIXES)}")
    ap.add_argument("--big", action="store_true", help="also export a ~--big-gb GB input, for peak RSS")
    ap.add_argument("--big-gb", type=float, default=2.0)
    ap.add_argument("--big-polars", action="store_true", help="also run polars on the big input")
    ap.add_argument("--dir", type=Path, default=REPO / ".cache" / "bench")
    ap.add_argument("--keep", action="store_true", help="keep the generated files")
    args = ap.parse_args()
    mixes = args.mixes.split(",")
    if unknown := sorted(set(mixes) - set(MIXES)):
        ap.error(f"unknown mix {', '.join(unknown)}; known: {', '.join(MIXES)}")

    exe = str(find_exporter())
    version = subprocess.run([exe, "-version"], capture_output=True, text=True, check=True).stdout.strip()
    work = args.dir / f"export-{os.getpid()}"
    work.mkdir(parents=True, exist_ok=True)
    try:
        print(f"{version}, {os.cpu_count()} CPUs, median of {args.repeat}, NDJSON to a file")
        results = {}
        for mix in mixes:
            rows = args.rows // LONG_ROWS_DIVISOR if mix == "long" else args.rows
            results[mix] = bench_mix(exe, work, mix, rows, args.repeat)
        print("go-exporter over polars (goals: default fields >= 1.5x, all fields >= 1.2x):")
        print(
            f"  {'mix':<8} {'default':>8} {'all':>8} {'default -o':>11} {'all -o':>8}  peak RSS go / polars"
        )
        for mix, s in results.items():
            print(
                f"  {mix:<8} {s['pl_default'] / s['go_default']:7.2f}x {s['pl_all'] / s['go_all']:7.2f}x "
                f"{s['pl_default'] / s['go_default_o']:10.2f}x {s['pl_all'] / s['go_all_o']:7.2f}x  "
                f"{s['rss_go']:5.0f} / {s['rss_pl']:.0f} MB"
            )
        if args.big:
            bench_big(exe, work, args.big_gb, with_polars=args.big_polars)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
