"""Orchestration (issue 7): up-to-date skips, kill and resume, locks, run summaries, the Dask runner.

Every test starts from a copy of one seed data directory (a small synthetic corpus, three ingested
labelled days and a tiny model) and backfills 2026-01-02 .. 2026-01-04. The scoring clock
(`pipeline.shardjob.now`) is frozen so that separate runs can be compared byte for byte: `scored_at` is
the only value that differs between two fresh scoring jobs of the same inputs. The seed, the comparisons
and the kill machinery live in `crashkit.py` (shared with test_faults.py and `make torture`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from crashkit import (
    FROZEN,
    TINY,
    after,
    appeared,
    build_seed,
    changed,
    check_counts,
    leftovers,
    pipeline_cmd,
    run_until,
    snapshot,
    subprocess_env,
)

from pipeline import corpus, lake, nightly, shardjob
from pipeline import train as train_stage
from pipeline.config import ScoreConfig, load_config
from pipeline.errors import PipelineError
from pipeline.export import find_exporter

START, END = "2026-01-02", corpus.SCORE_DATE
DATES = lake.date_range(START, END)


@pytest.fixture(scope="session")
def seed(tmp_path_factory) -> Path:
    find_exporter()  # built by `make setup`; fail loudly if it is not
    return build_seed(tmp_path_factory.mktemp("seed") / "data").root


@pytest.fixture
def root(seed: Path, tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setattr(shardjob, "now", lambda: FROZEN)
    dst = tmp_path / "data"
    shutil.copytree(seed, dst, symlinks=True)
    return dst


def worked(summary: dict) -> dict[str, list[str]]:
    """For each stage, the dates on which it did work (was not up to date)."""
    return {
        s: [d["date"] for d in summary["dates"] if not d[s]["skipped"]] for s in ("ingest", "score", "export")
    }


@contextlib.contextmanager
def _records(name: str):
    """The messages logged under logger `name` in the block (Prefect's logging setup bypasses caplog)."""
    said: list[str] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda r: said.append(r.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield said
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


# ---------------------------------------------------------------------------- up to date (item 1)


@pytest.mark.usefixtures("prefect_harness")
def test_backfill_twice_then_changed_raw_then_new_model(root):
    from pipeline import flows

    first = flows.run_backfill(str(root), START, END)
    assert worked(first) == {"ingest": [END], "score": DATES, "export": DATES}
    check_counts(root, DATES, first)

    # run 2: nothing changed, every stage of every date is up to date and says so
    before = snapshot(root)
    with _records("pipeline") as said:
        second = flows.run_backfill(str(root), START, END)
    assert worked(second) == {"ingest": [], "score": [], "export": []}
    assert changed(before, snapshot(root)) == []
    for d in DATES:
        assert any(d in m and "nothing to ingest" in m for m in said), d
        assert any(d in m and "nothing to score" in m for m in said), d
        assert any(d in m and "nothing to do" in m for m in said), d
    assert nightly.summary_markdown(second).count("(up to date)") == 3 * len(DATES)

    # a changed raw file: that date, and only that date, runs again
    raw = lake.DataDir.at(root).raw("2026-01-03") / "news.csv"
    raw.write_text(raw.read_text() + "2026-01-03-topic-99999,a late story about the stock market,Business\n")
    before = snapshot(root)
    third = flows.run_backfill(str(root), START, END)
    assert worked(third) == {"ingest": ["2026-01-03"], "score": ["2026-01-03"], "export": ["2026-01-03"]}
    day = next(d for d in third["dates"] if d["date"] == "2026-01-03")
    assert (
        day["ingest"]["rows_kept"]
        == next(d for d in first["dates"] if d["date"] == "2026-01-03")["ingest"]["rows_kept"] + 1
    )
    diff = changed(before, snapshot(root))
    touched = {p.split("/")[2] if p.startswith("lake/") else p.split("/")[1] for p in diff}
    assert touched - {"date=2026-01-04"} <= {"date=2026-01-03", "ingest"}, touched  # its partitions, stamp
    # and the report pages from that night on (a page shows the nights before it)
    assert [p for p in diff if "2026-01-04" in p] == ["reports/date=2026-01-04/index.html"]
    check_counts(root, DATES, third)

    # a new model: every date is scored and exported again, nothing is ingested again
    new = train_stage.train(
        lake.DataDir.at(root), load_config(None, [*TINY, "train.seed=14"]), promote="always"
    )
    assert not new["skipped"]
    fourth = flows.run_backfill(str(root), START, END)
    assert worked(fourth) == {"ingest": [], "score": DATES, "export": DATES}
    assert {d["score"]["model_version"] for d in fourth["dates"]} == {new["version"]}
    check_counts(root, DATES, fourth)


# ---------------------------------------------------------------------------- run summary (item 5)


@pytest.mark.usefixtures("prefect_harness")
def test_run_summary_file_and_artifact_add_up(root):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from pipeline import flows

    s = flows.run_backfill(str(root), START, END)
    path = Path(s["path"])
    assert path.parent == root / "runs" and path.name == f"{s['run']}.json"
    saved = json.loads(path.read_text())
    assert saved == {k: v for k, v in s.items() if k != "path"}
    assert [d["date"] for d in saved["dates"]] == DATES
    for d in saved["dates"]:
        for stage in ("ingest", "score", "export"):
            assert d[stage]["seconds"] >= 0 and isinstance(d[stage]["skipped"], bool)
    t = saved["totals"]
    assert t["rows_read"] == t["rows_ingested"] + t["rows_quarantined"]
    assert t["rows_ingested"] == t["rows_scored"] == t["rows_exported"] > 0
    assert t["rows_quarantined"] == sum(d["ingest"]["rows_quarantined"] for d in saved["dates"]) > 0
    assert saved["seconds"]["stages"] == pytest.approx(
        sum(d[st]["seconds"] for d in saved["dates"] for st in ("ingest", "score", "export")), abs=0.01
    )
    check_counts(root, DATES, saved)

    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["backfill-summary"]))
        )
    mine = [a for a in arts if s["run"] in (a.data or "")]
    assert len(mine) == 1 and mine[0].type == "markdown"
    md = mine[0].data
    assert md == nightly.summary_markdown(s)
    for d in saved["dates"]:
        row = next(line for line in md.splitlines() if line.startswith(f"| {d['date']} |"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[1].split()[0] == str(d["ingest"]["rows_kept"])
        assert cells[2] == str(d["ingest"]["rows_quarantined"])
        assert cells[3].split()[0] == cells[4].split()[0] == str(d["score"]["rows"])
        assert cells[5] == d["score"]["model_version"]
    assert f"{t['rows_ingested']} ingested, {t['rows_quarantined']} quarantined" in md


# ---------------------------------------------------------------------------- locks (item 6)


def _hold_lock(root: Path, name: str, seconds: float) -> subprocess.Popen:
    """Another process holding the lock `name` for `seconds`; returns once it holds it."""
    code = (
        "import sys, time; from pipeline import lake\n"
        f"with lake.locked(lake.DataDir.at({str(root)!r}), {name!r}):\n"
        "    print('held', flush=True); time.sleep(float(sys.argv[1]))\n"
    )
    p = subprocess.Popen([sys.executable, "-c", code, str(seconds)], stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdout.readline().strip() == "held"
    return p


def test_lock_makes_a_second_writer_wait_or_fail_clearly(root, monkeypatch):
    data = lake.DataDir.at(root)
    nightly.ingest_date(data, END)
    holder = _hold_lock(root, f"date-{END}", 60)
    try:
        monkeypatch.setenv("PIPELINE_LOCK_TIMEOUT", "0.5")
        for step in (
            lambda: nightly.ingest_date(data, END),
            lambda: nightly.score_date(data, END, ScoreConfig()),
        ):
            with pytest.raises(
                PipelineError, match=rf"date-{END}: another run \(pid {holder.pid}\) is writing"
            ):
                step()
        assert not data.predictions(END).exists()  # the second run wrote nothing
    finally:
        holder.kill()
        holder.wait()

    # with the default timeout the second run waits for the first and then does its work
    monkeypatch.delenv("PIPELINE_LOCK_TIMEOUT")
    holder = _hold_lock(root, f"date-{END}", 1.5)
    t0 = time.monotonic()
    m = nightly.score_date(data, END, ScoreConfig())
    waited = time.monotonic() - t0
    assert holder.wait() == 0
    assert waited >= 1.0 and not m["skipped"] and m["rows"] > 0


def test_lock_is_released_when_its_holder_is_killed(root):
    holder = _hold_lock(root, f"date-{END}", 60)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with lake.locked(lake.DataDir.at(root), f"date-{END}", timeout=0.5):
        pass


def test_concurrent_runs_of_one_date_do_not_both_write(root, monkeypatch):
    """Two threads run the same nightly steps at once: one does the work, the other finds it done."""
    data = lake.DataDir.at(root)
    results: list[dict] = []
    errors: list[BaseException] = []

    def night() -> None:
        try:
            results.append(
                {
                    "ingest": nightly.ingest_date(data, END),
                    "score": nightly.score_date(data, END, ScoreConfig()),
                    "export": nightly.export_date(data, END),
                }
            )
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=night) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for stage in ("ingest", "score", "export"):
        assert sorted(r[stage]["skipped"] for r in results) == [False, True], stage


@pytest.mark.usefixtures("prefect_harness")
def test_cli_run_fails_clearly_when_the_partition_is_locked(root, monkeypatch, capsys):
    from pipeline.__main__ import main

    holder = _hold_lock(root, f"date-{END}", 60)
    try:
        monkeypatch.setenv("PIPELINE_LOCK_TIMEOUT", "0.3")
        assert main(["--data-dir", str(root), "run", "--date", END]) == 1
    finally:
        holder.kill()
        holder.wait()
    err = capsys.readouterr().err
    assert f"date-{END}: another run (pid {holder.pid}) is writing this partition" in err
    assert "PIPELINE_LOCK_TIMEOUT" in err


def test_a_job_folder_left_after_the_swap_is_removed(root):
    """A run cut between publishing predictions and removing its job folder leaves complete shards."""
    data = lake.DataDir.at(root)
    nightly.ingest_date(data, END)
    first = nightly.score_date(data, END, ScoreConfig())
    out = data.predictions(END)
    pm = lake.read_json(out / lake.MANIFEST)
    job = out.with_name(f".{out.name}.job-{lake.sha256_json(pm['inputs'])[:12]}")
    shutil.copytree(out, job)
    lake.write_json(job / shardjob.JOB, {"inputs": pm["inputs"], "shards": 1, "scored_at": "x"})
    again = nightly.score_date(data, END, ScoreConfig())
    assert again["skipped"] and again["rows"] == first["rows"]
    assert leftovers(root) == []


def test_export_never_lets_an_orphaned_exporter_write_the_output(root):
    """The exporter writes a name of this run's; stale ones (a killed run's exporter) are removed."""
    data = lake.DataDir.at(root)
    nightly.ingest_date(data, END)
    nightly.score_date(data, END, ScoreConfig())
    out_dir = data.exports(END)
    out_dir.mkdir(parents=True)
    stale = [out_dir / ".predictions.ndjson.run-0dead000", out_dir / "..predictions.ndjson.run-1.tmp-2"]
    for p in stale:
        p.write_text("half\n")
    m = nightly.export_date(data, END)
    assert not m["skipped"] and not any(p.exists() for p in stale)
    assert len((out_dir / "predictions.ndjson").read_text().splitlines()) == m["rows"]
    (out_dir / ".predictions.ndjson.run-late").write_text("an orphan finished after the rerun\n")
    assert nightly.export_date(data, END)["skipped"]
    assert leftovers(root) == []


# ---------------------------------------------------------------------------- kill and resume (item 2)


def _api_env() -> dict[str, str]:
    """The environment for a `pipeline` subprocess: this session's Prefect API (no server of its own)."""
    from prefect.settings import PREFECT_API_URL

    return subprocess_env(str(PREFECT_API_URL.value()))


# Moments to cut a backfill, in the order they happen: while starting up, mid-ingest of the new date,
# once its lake partition is published, mid-scoring (a job folder exists), once a prediction partition
# is published, once an export file exists, and after every export (before the run summary).
KILL_POINTS = [
    after(0.5),
    appeared(f"lake/texts/.date={END}.tmp-*"),
    appeared(f"lake/texts/date={END}/_manifest.json"),
    appeared("predictions/.date=*.job-*"),
    appeared("predictions/date=*/_manifest.json"),
    appeared("exports/date=*/predictions.ndjson"),
    appeared(f"exports/date={END}/_manifest.ndjson.json"),
]


def _backfill_until(root: Path, env: dict[str, str], moment) -> str:
    """Run `pipeline backfill` in a subprocess; SIGKILL it when the `moment` comes ("killed"/"finished")."""
    cmd = pipeline_cmd(root, "backfill", "--start", START, "--end", END)
    return run_until(cmd, env, moment(root) if moment is not None else None)


@pytest.mark.usefixtures("prefect_harness")
def test_backfill_killed_at_several_points_resumes_to_identical_outputs(root, tmp_path):
    from pipeline import flows

    reference = tmp_path / "reference"
    shutil.copytree(root, reference, symlinks=True)
    flows.run_backfill(str(reference), START, END)
    expected = snapshot(reference)

    env = _api_env()
    outcomes = [_backfill_until(root, env, when) for when in KILL_POINTS]
    assert outcomes.count("killed") >= len(KILL_POINTS) - 1, outcomes  # (one may be too quick to catch)
    assert _backfill_until(root, env, None) == "finished"

    got = snapshot(root)
    assert changed(expected, got) == []
    assert [k for k in got if k.startswith(("lake/", "predictions/", "exports/"))]  # not vacuous
    assert leftovers(root) == []
    runs = sorted((root / "runs").glob("*.json"))
    check_counts(root, DATES, json.loads(runs[-1].read_text()))


# ---------------------------------------------------------------------------- Dask (item 4)


@pytest.mark.usefixtures("prefect_harness")
def test_backfill_on_a_dask_cluster_matches_the_local_runner(root, tmp_path, monkeypatch):
    distributed = pytest.importorskip("distributed")
    from prefect.settings import PREFECT_API_URL

    from pipeline import flows

    local = tmp_path / "local"
    shutil.copytree(root, local, symlinks=True)
    flows.run_backfill(str(local), START, END, runner="local")

    # worker processes reach this session's Prefect API and freeze their scoring clock too
    monkeypatch.setenv("PREFECT_API_URL", str(PREFECT_API_URL.value()))
    with (
        distributed.LocalCluster(
            n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        pids = client.run(os.getpid)
        assert len(set(pids.values()) - {os.getpid()}) == 2
        client.run(lambda: setattr(__import__("pipeline.shardjob").shardjob, "now", lambda: FROZEN))
        s = flows.run_backfill(str(root), START, END, runner=f"dask={cluster.scheduler_address}")
        ran_on = client.run(lambda: "pipeline.nightly" in __import__("sys").modules)
    assert worked(s)["score"] == DATES
    assert any(ran_on.values())  # the stages ran in the workers, not here
    assert changed(snapshot(local), snapshot(root)) == []
    check_counts(root, DATES, s)


@pytest.mark.usefixtures("prefect_harness")
def test_a_failing_date_does_not_stop_the_others_and_is_listed(root):
    from pipeline import flows

    data = lake.DataDir.at(root)
    bad = DATES[1]
    (data.raw(bad) / "news.csv").write_text("id,body\n1,no text column here\n")  # wrong column: ingest fails
    with pytest.raises(PipelineError, match=rf"1 of 3 dates failed \({bad}: .*no column `text`"):
        flows.run_backfill(str(root), START, END)
    runs = sorted((root / "runs").glob("*.json"))
    summary = json.loads(runs[-1].read_text())
    assert [d["date"] for d in summary["dates"]] == [DATES[0], DATES[2]]  # the others finished
    assert [f["date"] for f in summary["failed"]] == [bad]
    for d in (DATES[0], DATES[2]):
        assert (data.exports(d) / "predictions.ndjson").is_file()
    assert not (data.exports(bad) / "predictions.ndjson").exists()
