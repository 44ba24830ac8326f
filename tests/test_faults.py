"""Faults (issue 8): a full disk, a read-only data directory, a go-exporter killed mid-write, a writer
killed inside an atomic write. (Killing whole backfills at random moments is `make torture`.)

The disk tests need a small file system of their own: a tmpfs mounted on a temporary folder, as root
(`mount`) or else in a user namespace (`unshare -rm`); they skip, saying why, where neither works. They
run in a subprocess (this file as a script: `python tests/test_faults.py SCENARIO SEED WORK`) so that
the mount can live in that namespace. Each one starts from earlier outputs of a date, then needs new
ones (its raw file gained rows) and checks, after every failure: a clear `StorageError` naming the path
with a hint; every file either the earlier one or the final one (nothing half-published, each manifest
describes the files beside it); no temporary left; then, once there is room again, the next run ends
byte-identical to a run that never failed.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from crashkit import FROZEN, REPO, TINY, build_seed, changed, check_counts, leftovers, pipeline_cmd, snapshot

from pipeline import corpus, lake, nightly, shardjob, storage
from pipeline.config import ScoreConfig, load_config
from pipeline.errors import ExportError, StorageError
from pipeline.export import find_exporter

END = corpus.SCORE_DATE


@pytest.fixture(scope="session")
def seed(tmp_path_factory) -> Path:
    find_exporter()  # built by `make setup`; fail loudly if it is not
    data = build_seed(tmp_path_factory.mktemp("faults-seed") / "data", overrides=("model.ngram_buckets=0",))
    return data.root  # (a smaller model: it is loaded again for every try on a full disk)


# ---------------------------------------------------------------------------- an atomic write cut short


def test_a_killed_atomic_write_leaves_a_temporary_that_the_next_write_removes(tmp_path):
    code = (
        "import os, signal, sys\nfrom pathlib import Path\nfrom pipeline import lake\n"
        "with lake.atomic_path(Path(sys.argv[1])) as tmp:\n"
        "    tmp.write_bytes(b'half'); os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    p = subprocess.run([sys.executable, "-c", code, str(tmp_path / "m.json")], env=_env(), check=False)
    assert p.returncode == -9
    assert [q.name.startswith(".m.json.tmp-") for q in tmp_path.iterdir()] == [True]

    with lake.atomic_path(tmp_path / "other.json") as live:  # a write in progress is never swept
        live.write_text("{}")
        lake.write_json(tmp_path / "m.json", {"a": 1})
        assert live.exists()
    assert sorted(q.name for q in tmp_path.iterdir()) == ["m.json", "other.json"]


def test_a_failed_atomic_write_leaves_the_old_file_and_no_temporary(tmp_path):
    lake.write_json(tmp_path / "m.json", {"a": 1})
    with pytest.raises(OSError), lake.atomic_path(tmp_path / "m.json") as tmp:
        tmp.write_text("half")
        raise OSError(28, "No space left on device")
    assert sorted(q.name for q in tmp_path.iterdir()) == ["m.json"]
    assert json.loads((tmp_path / "m.json").read_text()) == {"a": 1}


def test_storage_errors_name_the_path_and_give_a_hint(tmp_path):
    with pytest.raises(
        StorageError, match=r"^/x/y: No space left on device while scoring 2026-01-04; .*hint: free"
    ):
        with storage.storage_errors(tmp_path, "scoring 2026-01-04"):
            raise OSError(28, "No space left on device", "/x/y")
    with pytest.raises(
        StorageError, match=rf"^{re.escape(str(tmp_path))}: Read-only file system while .*hint: remount"
    ):
        with storage.storage_errors(tmp_path, "exporting 2026-01-04"):
            raise OSError(30, "Error writing bytes to file")  # pyarrow's: an errno, no file name
    with pytest.raises(FileNotFoundError), storage.storage_errors(tmp_path, "x"):
        raise FileNotFoundError(2, "No such file or directory")  # not a storage problem: as it was
    with pytest.raises(RuntimeError, match="a bug"), storage.storage_errors(tmp_path, "x"):
        raise RuntimeError("a bug")  # on a file system with room to spare: as it was
    storage.check_writable(tmp_path)
    assert list(tmp_path.iterdir()) == []  # its probe file is gone


# ---------------------------------------------------------------------------- go-exporter killed mid-write

# A go-exporter that dies mid-write while $FAULTS_KILLS_LEFT (a file) counts above zero: it runs the real
# one on many copies of its input, SIGKILLs it once its temporary output holds some bytes, notes how
# many in $FAULTS_KILL_LOG, and dies by SIGKILL itself. Otherwise it is the real one.
_KILLER = """#!{python}
import os, signal, subprocess, sys, time
from pathlib import Path

real, args = os.environ["FAULTS_REAL_EXPORTER"], sys.argv[1:]
left = Path(os.environ["FAULTS_KILLS_LEFT"])
if not left.exists() or int(left.read_text()) <= 0:
    os.execv(real, [real, *args])
left.write_text(str(int(left.read_text()) - 1))
out = Path(args[args.index("-o") + 1])
p = subprocess.Popen([real, *args[:-1], *[args[-1]] * 3000])
seen = 0
while p.poll() is None and seen == 0:
    for t in out.parent.glob("." + out.name + ".tmp-*"):
        try:
            seen += t.stat().st_size
        except FileNotFoundError:
            pass
    time.sleep(0.001)
p.kill()
p.wait()
with open(os.environ["FAULTS_KILL_LOG"], "a") as f:
    f.write(f"{{seen}}\\n")
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.fixture
def killer(tmp_path, monkeypatch):
    """`arm(n)`: the next `n` exporter runs die mid-write; `arm.killed()`: the bytes each had written."""
    script = tmp_path / "killing-exporter"
    script.write_text(_KILLER.format(python=sys.executable))
    script.chmod(0o755)
    left, log = tmp_path / "kills-left", tmp_path / "kills.log"
    monkeypatch.setenv("FAULTS_REAL_EXPORTER", str(find_exporter()))
    monkeypatch.setenv("FAULTS_KILLS_LEFT", str(left))
    monkeypatch.setenv("FAULTS_KILL_LOG", str(log))
    monkeypatch.setenv("PIPELINE_EXPORTER", str(script))

    def arm(n: int) -> None:
        left.write_text(str(n))

    arm.killed = lambda: [int(x) for x in log.read_text().split()] if log.exists() else []  # type: ignore[attr-defined]
    return arm


@pytest.fixture
def scored(seed, tmp_path, monkeypatch) -> tuple[lake.DataDir, bytes]:
    """A copy of the seed with the predictions of END, and the bytes of a clean export of them."""
    monkeypatch.setattr(shardjob, "now", lambda: FROZEN)
    data = lake.DataDir.at(tmp_path / "data")
    shutil.copytree(seed, data.root, symlinks=True)
    nightly.ingest_date(data, END)
    nightly.score_date(data, END, ScoreConfig())
    clean = lake.DataDir.at(tmp_path / "clean")
    shutil.copytree(data.root, clean.root, symlinks=True)
    nightly.export_date(clean, END)
    return data, (clean.exports(END) / "predictions.ndjson").read_bytes()


def test_exporter_killed_mid_write_publishes_nothing_and_the_retry_is_identical(scored, killer):
    data, want = scored
    out = data.exports(END) / "predictions.ndjson"
    manifest = data.exports(END) / "_manifest.ndjson.json"

    killer(1)  # no earlier export
    with pytest.raises(
        ExportError, match=rf"go-exporter was killed by SIGKILL for {END}; .*hint: run the export"
    ):
        nightly.export_date(data, END)
    assert killer.killed()[0] > 0  # it was cut after writing some bytes
    assert not out.exists() and not manifest.exists() and leftovers(data.root) == []
    m = nightly.export_date(data, END)
    assert not m["skipped"] and out.read_bytes() == want
    assert lake.read_json(manifest)["sha256"] == lake.sha256_file(out)

    manifest.unlink()  # the export must run again; the earlier file stays as it is while it does
    killer(1)
    with pytest.raises(ExportError, match="killed by SIGKILL"):
        nightly.export_date(data, END)
    assert len(killer.killed()) == 2 and killer.killed()[1] > 0
    assert out.read_bytes() == want and leftovers(data.root) == []
    assert not nightly.export_date(data, END)["skipped"] and out.read_bytes() == want


@pytest.mark.usefixtures("prefect_harness")
def test_export_flow_retries_a_killed_exporter(scored, killer):
    from pipeline import flows

    data, want = scored
    killer(1)
    m = flows.export_flow(str(data.root), END)
    assert len(killer.killed()) == 1  # the first try was killed mid-write, the retry succeeded
    assert not m["skipped"] and (data.exports(END) / "predictions.ndjson").read_bytes() == want
    assert leftovers(data.root) == []


# ---------------------------------------------------------------------------- a full or read-only disk


@functools.cache
def _mount_prefix() -> tuple[list[str] | None, str]:
    """How to run a command that mounts a tmpfs: as is (root) or in a user namespace; or why not."""
    if not shutil.which("mount"):
        return None, "no `mount` command"
    tried = []
    with tempfile.TemporaryDirectory() as d:
        probe = f"mount -t tmpfs -o size=1m tmpfs {d} && mount -o remount,ro {d} && umount {d}"
        for prefix in ([], ["unshare", "-rm"]):
            if prefix and not shutil.which(prefix[0]):
                continue
            p = subprocess.run([*prefix, "sh", "-c", probe], capture_output=True, text=True, check=False)
            if p.returncode == 0:
                return prefix, ""
            tried.append(f"{' '.join([*prefix, 'mount']) or 'mount'}: {p.stderr.strip() or p.returncode}")
    return None, "cannot mount a tmpfs here (" + "; ".join(tried) + ")"


def _run_scenario(name: str, seed: Path, work: Path) -> str:
    prefix, why = _mount_prefix()
    if prefix is None:
        pytest.skip(why)
    cmd = [*prefix, sys.executable, str(Path(__file__).resolve()), name, str(seed), str(work)]
    try:
        p = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600, check=False)
    finally:
        subprocess.run(["umount", "-l", str(work / "mnt")], capture_output=True, check=False)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-6000:]
    return p.stdout


def test_disk_full_fails_clearly_publishes_nothing_and_the_next_run_succeeds(seed, tmp_path):
    out = _run_scenario("disk-full", seed, tmp_path)
    failed = json.loads(out.strip().splitlines()[-1])
    assert sorted(set(failed)) == ["cli", "export", "ingest", "score", "train"], failed


def test_read_only_data_dir_fails_clearly_and_the_next_run_succeeds(seed, tmp_path):
    out = _run_scenario("read-only", seed, tmp_path)
    assert json.loads(out.strip().splitlines()[-1]) == ["ingest", "cli", "score", "export"]


# The scenarios (run in the subprocess, where the mount lives) ------------------------------------


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests")]), OMP_NUM_THREADS="1")


def _sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True)


def _nightly(data: lake.DataDir) -> None:
    nightly.ingest_date(data, END)
    nightly.score_date(data, END, ScoreConfig())
    nightly.export_date(data, END)


def _new_rows(data: lake.DataDir) -> None:
    raw = data.raw(END) / "news.csv"
    raw.write_text(raw.read_text() + "".join(f"{END}-late-{i},a late story number {i},\n" for i in range(50)))


def _fill(mnt: Path, room: int) -> None:
    """Leave `room` bytes free on the file system at `mnt`: a filler file takes the rest."""
    filler = mnt / "filler"
    filler.unlink(missing_ok=True)
    st = os.statvfs(mnt)
    size = st.f_bavail * st.f_frsize - room
    if size > 0:
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.posix_fallocate(fd, 0, size)
        finally:
            os.close(fd)


def _setup(seed: Path, work: Path) -> tuple[Path, lake.DataDir, dict[str, str]]:
    """A tmpfs at WORK/mnt holding a copy of the seed with earlier outputs of END and new rows for it;
    the files that a run which never fails ends with (made on the ordinary disk)."""
    shardjob.now = lambda: FROZEN
    mnt = work / "mnt"
    mnt.mkdir()
    _sh("mount", "-t", "tmpfs", "-o", "size=256m", "tmpfs", str(mnt))  # a training checkpoint is big
    data, ref = lake.DataDir.at(mnt / "data"), lake.DataDir.at(work / "ref")
    for d in (data, ref):
        shutil.copytree(seed, d.root, symlinks=True)
        _nightly(d)
        _new_rows(d)
    _nightly(ref)
    return mnt, data, snapshot(ref.root)


def _storage_error(step, mnt: Path, what: str, needles: tuple[str, ...], hint: str) -> None:
    """`step()` fails with a StorageError that names a path on `mnt`, says `what` and one of `needles`,
    and gives `hint`."""
    try:
        step()
    except StorageError as e:
        msg = str(e)
        assert msg.startswith(str(mnt)) and what in msg and f"hint: {hint}" in msg, msg
        assert any(n in msg for n in needles), msg
        return
    raise AssertionError(f"no StorageError {what}")


def _check_intact(data: lake.DataDir, before: dict[str, str], final: dict[str, str]) -> None:
    """Every file is the earlier one or the final one; each manifest describes its files; no temporaries
    except a score job's finished shards (kept to resume) and training and pretraining checkpoints."""
    kept = re.compile(
        rf"predictions/\.date={END}\.job-[0-9a-f]{{12}}|models/\.ckpt-[0-9a-f]{{12}}\.pt"
        r"|pretrain/\.ckpt-[0-9a-f]{16}\.pt"
    )
    assert all(kept.fullmatch(p) for p in leftovers(data.root)), leftovers(data.root)
    now = snapshot(data.root)
    for k in now.keys() | before.keys():
        assert kept.match(k) or now.get(k) in (before.get(k), final.get(k)), k
    lm = lake.read_manifest(data.texts(END))
    assert lm is not None and all(
        lake.sha256_file(data.texts(END) / f["name"]) == f["sha256"] for f in lm["files"]
    )
    pm = lake.read_manifest(data.predictions(END))
    assert pm is not None and all(
        lake.sha256_file(data.predictions(END) / s["name"]) == s["sha256"] for s in pm["shards"]
    )
    em = data.exports(END) / "_manifest.ndjson.json"
    if em.exists():
        assert lake.read_json(em)["sha256"] == lake.sha256_file(data.exports(END) / "predictions.ndjson")


def _cli_error(data: lake.DataDir, needle: str, hint: str) -> None:
    """`pipeline run` as a user runs it (Prefect's database in the data directory) fails clearly."""
    env = {k: v for k, v in _env().items() if k not in ("PREFECT_HOME", "PREFECT_API_URL")}
    cmd = pipeline_cmd(data.root, "run", "--date", END)
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    said = [line for line in p.stderr.splitlines() if line.startswith("pipeline: error: ")]
    assert p.returncode == 1 and len(said) == 1, p.stderr[-3000:]
    assert said[0].startswith(f"pipeline: error: {data.root}") and needle in said[0], said[0]
    assert f"hint: {hint}" in said[0], said[0]


def _nightly_steps(data: lake.DataDir) -> list[tuple[str, Callable[[], object]]]:
    """The steps of a nightly run of END that write to the data directory, in order."""
    return [
        ("ingest", lambda: nightly.ingest_date(data, END)),
        ("score", lambda: nightly.score_date(data, END, ScoreConfig())),
        ("export", lambda: nightly.export_date(data, END)),
    ]


def _disk_full(seed: Path, work: Path) -> list[str]:
    mnt, data, final = _setup(seed, work)
    before, failed = snapshot(data.root), []
    steps = _nightly_steps(data)
    for stage, step in steps:  # each step first with no room, then more room each time until it fits
        for room in (0, 4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20, 4 << 20):
            _fill(mnt, room)
            try:
                step()
                break
            except StorageError as e:
                msg = str(e)
                assert msg.startswith(f"{mnt}/") and "No space left on device" in msg, msg
                assert f" while {stage.replace('score', 'scor')}ing {END}" in msg, msg
                assert "hint: free space on that file system" in msg, msg
                failed.append(stage)
                _check_intact(data, before, final)
        else:
            raise AssertionError(f"{stage} does not fit in 4 MiB")
    (mnt / "filler").unlink()
    assert changed(final, snapshot(data.root)) == [] and leftovers(data.root) == []
    check_counts(data.root, [END])

    # training: the new model cannot fit; the earlier one stays `latest`, nothing half-published
    from pipeline import flows

    models = {k: v for k, v in snapshot(data.root).items() if k.startswith("models/")}
    latest = os.readlink(data.models / "latest")
    cfg = load_config(None, [*TINY, "model.ngram_buckets=0", "train.seed=14"])  # a smaller new model
    _fill(mnt, 64 << 10)
    train = lambda: flows.train_task.fn(str(data.root), cfg, None, None, "always")  # noqa: E731
    full = ("No space left on device", "file system is full")  # (torch.save raises a RuntimeError)
    _storage_error(train, mnt, "while training", full, "free space")
    failed.append("train")
    assert {k: v for k, v in snapshot(data.root).items() if k.startswith("models/")} == models
    assert os.readlink(data.models / "latest") == latest
    resumable = ("models/.ckpt-", "pretrain/.ckpt-")  # what a next run resumes from, not half a file
    assert all(p.startswith(resumable) for p in leftovers(data.root)), leftovers(data.root)

    # the command line: a clear error before it starts, or after a failure elsewhere (Prefect's database)
    _fill(mnt, 0)
    _cli_error(data, "No space left on device", "free space on that file system")
    failed.append("cli")
    said = storage.storage_problem(data.root, RuntimeError("Timed out connecting to the Prefect API"))
    assert said is not None and "file system is full (0 bytes free)" in said and "Timed out" in said, said
    (mnt / "filler").unlink()
    assert not train()["skipped"]
    assert os.readlink(data.models / "latest") != latest and leftovers(data.root) == []
    return failed


def _read_only(seed: Path, work: Path) -> list[str]:
    mnt, data, final = _setup(seed, work)
    before, failed = snapshot(data.root), []
    steps = _nightly_steps(data)
    for i, (stage, step) in enumerate(steps):
        now = snapshot(data.root)
        _sh("mount", "-o", "remount,ro", str(mnt))
        try:
            what = f"while {stage.replace('score', 'scor')}ing {END}"
            _storage_error(step, mnt, what, ("Read-only file system",), "remount it read-write")
            failed.append(stage)
            assert changed(now, snapshot(data.root)) == []
            for _, later in steps[i + 1 :]:  # up to date with the earlier outputs: they run read-only
                assert later()["skipped"]
            if i == 0:  # the command line: before it starts, or after a failure elsewhere (Prefect's)
                _cli_error(data, "Read-only file system", "remount it read-write")
                said = storage.storage_problem(data.root, RuntimeError("Timed out connecting to Prefect"))
                assert said is not None and "read-only file system" in said, said
                failed.append("cli")
        finally:
            _sh("mount", "-o", "remount,rw", str(mnt))
        _check_intact(data, before, final)
        step()  # writable again: the step succeeds
    assert changed(final, snapshot(data.root)) == [] and leftovers(data.root) == []
    check_counts(data.root, [END])
    return failed


if __name__ == "__main__":
    scenario, seed_dir, work_dir = sys.argv[1:4]
    run = {"disk-full": _disk_full, "read-only": _read_only}[scenario]
    try:
        print(json.dumps(run(Path(seed_dir), Path(work_dir))))
    finally:
        subprocess.run(["umount", "-l", str(Path(work_dir) / "mnt")], capture_output=True, check=False)
