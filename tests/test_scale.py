"""One date over a cluster (issue 17): score and ingest on a 2-worker LocalCluster give the local bytes.

One seed (a tiny model, and a date of 3,000 rows in two raw files, 2,144 kept: the files repeat each
other's ids) and one LocalCluster serve every test. Shards of 250 rows and units of at least 500 rows
(`score.UNIT_ROWS`, patched here, in the driver that plans them) make 9 shards in 5 units; `scored_at`
is the job's, passed to every unit, so only the driver's clock is frozen.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from crashkit import FROZEN, build_seed, changed, snapshot

from pipeline import corpus, lake, nightly, score, shardjob
from pipeline.config import ScoreConfig

DAY = "2026-01-10"
CFG = ScoreConfig(shard_rows=250)
distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def seed(tmp_path_factory) -> Path:
    data = build_seed(tmp_path_factory.mktemp("scale") / "data")
    for i, part in enumerate(("a", "b")):
        text = corpus.generate_day(DAY, rows=1500, labelled=False, seed=i)
        lake.write_bytes(data.raw(DAY) / f"{part}.csv", text.encode())
    nightly.ingest_date(data, DAY)
    return data.root


@pytest.fixture(scope="module")
def cluster(prefect_harness):
    from prefect.settings import PREFECT_API_URL

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PREFECT_API_URL", str(PREFECT_API_URL.value()))  # the workers reach this API
        with (
            distributed.LocalCluster(
                n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None
            ) as c,
            distributed.Client(c) as client,
        ):
            yield c, client


@pytest.fixture
def root(seed: Path, tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setattr(shardjob, "now", lambda: FROZEN)
    monkeypatch.setattr(score, "UNIT_ROWS", 500)
    dst = tmp_path / "data"
    shutil.copytree(seed, dst, symlinks=True)
    return dst


@pytest.fixture(scope="module")
def local(seed: Path, tmp_path_factory, prefect_harness) -> dict[str, str]:
    """The predictions of the date scored by the local runner (a copy of the seed), file by file."""
    from pipeline import flows

    dst = tmp_path_factory.mktemp("local") / "data"
    shutil.copytree(seed, dst, symlinks=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(shardjob, "now", lambda: FROZEN)
        flows.run_score(str(dst), DAY, cfg=CFG)
    return predictions(dst)


def predictions(root: Path) -> dict[str, str]:
    return {k: v for k, v in snapshot(root).items() if k.startswith("predictions/")}


# ---------------------------------------------------------------------------- plain functions


def test_units_are_runs_of_whole_shards_sized_from_rows_and_workers():
    plan = score.plan_units
    assert plan(list(range(12)), shard_rows=250, workers=2, rows=3000, unit_rows=500) == [
        (0, 3),
        (3, 6),
        (6, 9),
        (9, 12),
    ]  # 2 units a worker: 750 rows each, over the 500 asked
    assert plan([0, 1, 4, 5, 6], shard_rows=250, workers=2, rows=3000, unit_rows=500) == [
        (0, 2),
        (4, 7),
    ]  # a resumed job: the shards already written are not in any unit
    assert plan(list(range(10_000)), shard_rows=100_000, workers=1_000, rows=10**9, unit_rows=10**6) == [
        (k, k + 10) for k in range(0, 10_000, 10)
    ]  # 1e9 rows, 1,000 workers: 500 units a worker would be wanted, 1,000 units of 1M rows are made


def test_a_unit_reads_the_same_windows_as_a_whole_run(tmp_path, monkeypatch):
    monkeypatch.setattr(score, "WINDOW_ROWS", 8)
    files = []
    for i, (n, group) in enumerate([(37, 16), (50, 12), (0, 8), (41, 16)]):  # 12: not a multiple of 8
        t = pa.table({"id": [f"{i}-{j}" for j in range(n)], "text": ["t"] * n})
        files.append(tmp_path / f"{i}.parquet")
        pq.write_table(t, files[-1], row_group_size=group)
    whole = [(k, w.to_pydict()) for k, w in score.read_windows(files, 10)]
    parts = [
        (k, w.to_pydict()) for a in range(0, 13, 3) for k, w in score.read_windows(files, 10, range(a, a + 3))
    ]
    assert parts == whole


# ---------------------------------------------------------------------------- on the cluster


def test_score_on_a_dask_cluster_matches_the_local_runner_and_loads_the_model_once_per_worker(
    root, local, cluster, monkeypatch
):
    from pipeline import flows

    c, _ = cluster
    results: list[list[dict]] = []
    units = flows._score_units
    monkeypatch.setattr(flows, "_score_units", lambda us: results.append(units(us)) or results[-1])
    s = flows.run_score(str(root), DAY, cfg=CFG, runner=f"dask={c.scheduler_address}")
    assert s["rows"] == lake.read_manifest(lake.DataDir.at(root).texts(DAY))["rows_kept"] > 2000
    assert not s["skipped"]
    assert changed(local, predictions(root)) == []
    assert predictions(root).keys() == local.keys()
    (ran,) = results
    assert [r["shards"] for r in ran] == [[0, 2], [2, 4], [4, 6], [6, 8], [8, 9]]  # 2,144 rows / 4
    pids = {r["pid"] for r in ran}
    assert os.getpid() not in pids
    assert all(r["model_loads"] == 1 for r in ran)  # the model reached each worker once, for all its units


def test_a_worker_killed_in_a_unit_is_retried_and_the_output_is_the_same(root, local, cluster):
    from pipeline import flows

    c, client = cluster
    marker = root.parent / "killed-once"

    def die_after_first_shard(marker: str = str(marker)) -> None:
        from pipeline import shardjob as sj

        finish = sj.ShardWriter.finish_shard

        def finish_then_die(self) -> None:
            finish(self)
            try:  # the first shard finished anywhere kills its worker, mid-unit
                fd = os.open(marker, os.O_CREAT | os.O_EXCL)
            except FileExistsError:
                return
            os.close(fd)
            os._exit(1)

        sj.ShardWriter.finish_shard = finish_then_die

    client.run(die_after_first_shard)
    s = flows.run_score(str(root), DAY, cfg=CFG, runner=f"dask={c.scheduler_address}")
    assert marker.exists()
    assert s["rows"] > 2000
    assert changed(local, predictions(root)) == []
    assert not list((root / "predictions").glob(".date=*"))  # no job folder left


def test_ingest_on_a_dask_cluster_gives_the_local_lake_partition(root, cluster):
    from pipeline import flows, ingest

    c, _ = cluster
    data = lake.DataDir.at(root)
    local = {k: v for k, v in snapshot(root).items() if k.startswith("lake/")}
    shutil.rmtree(data.texts(DAY))
    shutil.rmtree(data.quarantine(DAY))
    sources = [str(p) for p in ingest.raw_sources(data, DAY)]
    m = flows.run_ingest(str(root), DAY, sources, runner=f"dask={c.scheduler_address}")
    assert m["quarantined_by_reason"][ingest.DUPLICATE_ID] > 0  # ids repeated across the two files
    again = {k: v for k, v in snapshot(root).items() if k.startswith("lake/")}
    assert again == local
    assert not list(data.texts(DAY).parent.glob(".*"))  # the staged sources are gone


def test_a_night_on_a_dask_cluster_gives_the_local_outputs(root, cluster, tmp_path):
    from pipeline import flows

    c, _ = cluster
    here = tmp_path / "here"
    shutil.copytree(root, here, symlinks=True)
    for r in (root, here):
        data = lake.DataDir.at(r)
        shutil.rmtree(data.texts(DAY))
        data.stamp("ingest", DAY).unlink()
    flows.run_nightly(str(here), DAY, score=CFG)
    s = flows.run_nightly(str(root), DAY, score=CFG, runner=f"dask={c.scheduler_address}")
    assert not s["dates"][0]["ingest"]["skipped"] and not s["dates"][0]["score"]["skipped"]
    assert changed(snapshot(here), snapshot(root)) == []
