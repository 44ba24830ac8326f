"""Kill-and-resume kit: seed data, a traced `pipeline` subprocess, SIGKILL at a moment, strict comparison.

Shared by tests/test_orchestration.py, tests/test_faults.py and `make torture` (benchmarks/torture.py).

Run as a script, this file is `python -m pipeline` with the scoring clock frozen at `FROZEN`, so that
separate runs compare byte for byte (`scored_at` is the only value two fresh scoring jobs of the same
inputs differ in). With `$CRASHKIT_EVENTS` set it also appends one line per stage event to that file:

    <unix time> start process -
    <unix time> start score 2026-01-02
    <unix time> end score 2026-01-02 worked        (or: skipped, when it was up to date)
    <unix time> start summary -

so that a watcher can kill the run a chosen time into a chosen stage (`run_until`, `EventWatch`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa

from pipeline import corpus, lake, nightly
from pipeline import train as train_stage
from pipeline.config import load_config

REPO = Path(__file__).resolve().parents[1]
FROZEN = dt.datetime(2026, 1, 5, 2, 0, tzinfo=dt.UTC)
TINY = ["model.embed_dim=8", "model.hidden_dim=8", "train.epochs=1"]
# Files that legitimately differ between two runs: Prefect's state, run summaries, lock holders' pids.
VOLATILE = {".prefect", "runs", "locks"}
STAGES = ("ingest", "score", "export")

Moment = Callable[[Path], Callable[[], bool]]  # armed with the data root when a run starts


def build_seed(
    root: Path,
    *,
    rows_per_day: int = 60,
    extra_days: int = 0,
    extra_rows: int = 0,
    overrides: tuple[str, ...] = (),
) -> lake.DataDir:
    """A corpus, its labelled days ingested by the nightly ingest (so they carry stamps), a tiny model.

    `extra_days` more unlabelled days of `extra_rows` rows after `corpus.SCORE_DATE`, not ingested,
    give a backfill more to do. `overrides` are more `--set` settings for the model.
    """
    data = lake.DataDir.at(root)
    corpus.generate_corpus(data, rows_per_day=rows_per_day)
    for d in lake.date_range(corpus.SCORE_DATE, last_date(extra_days))[1:]:
        text = corpus.generate_day(d, rows=extra_rows, labelled=False)
        lake.write_bytes(data.raw(d) / "news.csv", text.encode())
    classes = ", ".join(json.dumps(c) for c in corpus.CLASSES)
    for d in corpus.TRAIN_DATES:
        (data.raw(d) / "_ingest.toml").write_text(f"classes = [{classes}]\n")
        nightly.ingest_date(data, d)
    train_stage.train(data, load_config(None, [*TINY, *overrides]))
    return data


def last_date(extra_days: int = 0) -> str:
    """The last date with raw files in a seed made with `extra_days`."""
    return (dt.date.fromisoformat(corpus.SCORE_DATE) + dt.timedelta(days=extra_days)).isoformat()


# ---------------------------------------------------------------------------- comparing outputs


def snapshot(root: Path) -> dict[str, str]:
    """The sha256 of every file under `root` except the volatile ones (see `VOLATILE`)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not VOLATILE & set(p.relative_to(root).parts)
    }


def changed(before: dict[str, str], after: dict[str, str]) -> list[str]:
    return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))


def leftovers(root: Path) -> list[str]:
    """Every hidden file or folder (a cut write's temporary, a partition swap, a score job, an exporter's
    staged file) anywhere in the data directory except Prefect's state: after a finished run, none."""
    return sorted(
        str(p.relative_to(root)) for p in root.rglob(".*") if p.relative_to(root).parts[0] != ".prefect"
    )


def check_counts(root: Path, dates: list[str], summary: dict | None = None) -> int:
    """Every date's manifests, files and (if given) run summary agree on the row counts.

    Returns the number of manifests checked (lake, quarantine, predictions, export for each date).
    """
    data = lake.DataDir.at(root)
    by_date = {d["date"]: d for d in summary["dates"]} if summary else {}
    for d in dates:
        lm = lake.read_json(data.texts(d) / lake.MANIFEST)
        qm = lake.read_json(data.quarantine(d) / lake.MANIFEST)
        pm = lake.read_json(data.predictions(d) / lake.MANIFEST)
        em = lake.read_json(data.exports(d) / "_manifest.ndjson.json")
        assert lm["rows_read"] == lm["rows_kept"] + lm["rows_quarantined"], d
        assert qm["rows"] == lm["rows_quarantined"] == sum(lm["quarantined_by_reason"].values()), d
        assert sum(s["rows_read"] for s in lm["sources"]) == lm["rows_read"], d
        assert pm["rows"] == sum(s["rows"] for s in pm["shards"]) == lm["rows_kept"] > 0, d
        n_pred = sum(
            pa.ipc.open_file(data.predictions(d) / s["name"]).read_all().num_rows for s in pm["shards"]
        )
        lines = (root / em["path"]).read_text().splitlines()
        assert n_pred == em["rows"] == len(lines) == pm["rows"], d
        assert len({json.loads(line)["id"] for line in lines}) == len(lines), d  # no duplicate rows
        assert em["model_version"] == pm["model_version"], d
        if d in by_date:
            day = by_date[d]
            assert day["ingest"]["rows_kept"] == lm["rows_kept"], d
            assert day["ingest"]["rows_quarantined"] == lm["rows_quarantined"], d
            assert day["score"]["rows"] == day["export"]["rows"] == pm["rows"], d
            assert day["score"]["model_version"] == pm["model_version"], d
    return 4 * len(dates)


# ---------------------------------------------------------------------------- killing a run


def pipeline_cmd(root: Path, *args: str) -> list[str]:
    """`python -m pipeline --data-dir ROOT ARGS...` with the scoring clock frozen (this file as a script)."""
    return [sys.executable, str(Path(__file__).resolve()), "--data-dir", str(root), *args]


def subprocess_env(api_url: str, events: Path | None = None) -> dict[str, str]:
    """The environment of a `pipeline` subprocess: an existing Prefect API (no temporary server each time)."""
    env = dict(os.environ, PREFECT_API_URL=api_url, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    env.pop("PREFECT_HOME", None)  # each data directory keeps its own
    env.pop("CRASHKIT_EVENTS", None)
    if events is not None:
        env["CRASHKIT_EVENTS"] = str(events)
    return env


def appeared(pattern: str) -> Moment:
    """A moment: a path matching `pattern` that was not there when the run started."""

    def arm(root: Path) -> Callable[[], bool]:
        there = set(root.glob(pattern))
        return lambda: bool(set(root.glob(pattern)) - there)

    return arm


def after(seconds: float) -> Moment:
    def arm(root: Path) -> Callable[[], bool]:
        deadline = time.monotonic() + seconds
        return lambda: time.monotonic() >= deadline

    return arm


def run_until(
    cmd: list[str], env: dict[str, str], kill_now: Callable[[], bool] | None, *, timeout: float = 600
) -> str:
    """Run `cmd`; SIGKILL it (its whole process group, the go-exporter too) as soon as `kill_now()` is true.

    Returns "killed", or "finished" when the run ended on its own first (it must then exit 0).
    Output goes to a file, never a pipe that a long run could fill and block on.
    """
    with tempfile.TemporaryFile() as out:
        p = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        try:
            while p.poll() is None:
                if kill_now is not None and kill_now():
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()
                    return "killed"
                if time.monotonic() > deadline:
                    msg = f"{' '.join(cmd)}: still running after {timeout:.0f} s"
                    raise AssertionError(msg)
                time.sleep(0.002)
            out.seek(0)
            assert p.returncode == 0, out.read().decode(errors="replace")[-5000:]
            return "finished"
        finally:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()


class EventWatch:
    """Reads the events a traced run appends to its file (see the module docstring), as they come."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset = path, 0
        self.seen: list[tuple[float, str, str, str, str]] = []  # (time, start|end, stage, date, note)

    def poll(self) -> list[tuple[float, str, str, str, str]]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                chunk = f.read()
        except FileNotFoundError:
            return []
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self.offset += len(complete)
        new = []
        for line in complete.decode().splitlines():
            t, kind, stage, date, *note = line.split()
            new.append((float(t), kind, stage, date, note[0] if note else ""))
        self.seen += new
        return new

    def first(self, kind: str, stage: str, date: str = "-") -> float | None:
        """When (unix time) the event was written, if it has been seen yet."""
        return next((t for t, k, s, d, _ in self.seen if (k, s, d) == (kind, stage, date)), None)


# ---------------------------------------------------------------------------- the traced runner


def _note(path: str, *words: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (" ".join([f"{time.time():.6f}", *words]) + "\n").encode())  # one write: one line
    finally:
        os.close(fd)


def _trace(events: str) -> None:
    """Wrap the nightly steps (looked up by `flows` at call time) to note when each starts and ends."""

    def traced(stage: str, fn: Callable) -> Callable:
        def run(data, date, *args, **kwargs):
            _note(events, "start", stage, date)
            out = fn(data, date, *args, **kwargs)
            _note(events, "end", stage, date, "skipped" if out["skipped"] else "worked")
            return out

        return run

    for stage in STAGES:
        setattr(nightly, f"{stage}_date", traced(stage, getattr(nightly, f"{stage}_date")))
    write_summary = nightly.write_run_summary

    def summary(data, s):
        _note(events, "start", "summary", "-")
        return write_summary(data, s)

    nightly.write_run_summary = summary


def _main() -> None:
    import runpy

    import pipeline.shardjob

    pipeline.shardjob.now = lambda: FROZEN
    events = os.environ.get("CRASHKIT_EVENTS")
    if events:
        _note(events, "start", "process", "-")
        _trace(events)
    sys.argv[0] = "pipeline"
    runpy.run_module("pipeline", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    _main()
