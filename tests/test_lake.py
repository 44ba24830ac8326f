import fcntl
import logging
import os
from pathlib import Path

import pytest

from pipeline import lake
from pipeline.errors import ConfigError, InputError, PipelineError


@pytest.mark.parametrize("value", ["2026-01-01", "2024-02-29"])
def test_parse_date_accepts_calendar_dates(value):
    assert lake.parse_date(value) == value


@pytest.mark.parametrize("value", ["2026-13-01", "2023-02-29", "../etc", "2026-01-01/../x", "", "20260101"])
def test_parse_date_refuses_anything_else(value):
    with pytest.raises(InputError, match="date"):
        lake.parse_date(value)


def test_date_range_is_inclusive_and_ordered():
    assert lake.date_range("2025-12-31", "2026-01-02") == ["2025-12-31", "2026-01-01", "2026-01-02"]
    with pytest.raises(InputError, match="before"):
        lake.date_range("2026-01-02", "2026-01-01")


@pytest.mark.parametrize("name", ["..", "../x", "/abs", "a/b", "", ".hidden"])
def test_check_name_refuses_paths(name):
    with pytest.raises(InputError):
        lake.check_name(name, "model")


def test_write_json_is_atomic_and_canonical(tmp_path: Path):
    p = tmp_path / "x" / "m.json"
    lake.write_json(p, {"b": 1, "a": [1, 2]})
    first = p.read_bytes()
    lake.write_json(p, {"a": [1, 2], "b": 1})
    assert p.read_bytes() == first
    assert [f.name for f in p.parent.iterdir()] == ["m.json"]  # no temporary left behind


def test_publish_dir_replaces_whole_folder(tmp_path: Path):
    final = tmp_path / "date=2026-01-01"
    with lake.publish_dir(final) as tmp:
        (tmp / "a").write_text("1")
    with lake.publish_dir(final) as tmp:
        (tmp / "b").write_text("2")
    assert sorted(p.name for p in final.iterdir()) == ["b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["date=2026-01-01"]


def test_failed_publish_leaves_previous_folder_intact(tmp_path: Path):
    final = tmp_path / "date=2026-01-01"
    with lake.publish_dir(final) as tmp:
        (tmp / "a").write_text("old")
    with pytest.raises(RuntimeError), lake.publish_dir(final) as tmp:
        (tmp / "a").write_text("half")
        raise RuntimeError("crash while writing")
    assert (final / "a").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["date=2026-01-01"]


def test_recover_dir_restores_a_publish_cut_between_renames(tmp_path: Path):
    final = tmp_path / "date=2026-01-01"
    with lake.publish_dir(final) as tmp:
        (tmp / lake.MANIFEST).write_text("{}")
    # simulate a crash after `final -> backup` and before `tmp -> final`
    os.rename(final, tmp_path / ".date=2026-01-01.old-deadbeef")
    (tmp_path / ".date=2026-01-01.tmp-deadbeef").mkdir()
    assert lake.read_manifest(final) == {}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["date=2026-01-01"]


def test_read_manifest_of_incomplete_partition_is_none(tmp_path: Path):
    (tmp_path / "date=2026-01-01").mkdir()
    assert lake.read_manifest(tmp_path / "date=2026-01-01") is None


# ---------------------------------------------------------------------------- locks


def test_a_held_lock_says_at_once_and_then_now_and_again_who_holds_it(data, monkeypatch, caplog):
    path = data.lock_file("date-2026-01-01")
    path.parent.mkdir(parents=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # another holder: flock is per open file
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, b"4242")
        monkeypatch.setattr(lake, "LOCK_NOTE_SECONDS", 0.5)
        with (
            caplog.at_level(logging.WARNING, logger="pipeline.lake"),
            pytest.raises(PipelineError, match=r"date-2026-01-01: another run \(pid 4242\) is writing"),
            lake.locked(data, "date-2026-01-01", timeout=1.3),
        ):
            pass
    finally:
        os.close(fd)
    said = [r.getMessage() for r in caplog.records if r.name == "pipeline.lake"]
    assert said[0] == (
        "date-2026-01-01: held by another run (pid 4242); waiting for it up to 1 s (PIPELINE_LOCK_TIMEOUT)"
    )
    assert said[1:] and all(m.startswith("date-2026-01-01: still held, after ") for m in said[1:]), said
    with lake.locked(data, "date-2026-01-01", timeout=0):  # released: taken at once
        pass


@pytest.mark.parametrize("value", ["abc", "nan", "-1", "-inf", "inf", "1e999"])
def test_a_lock_timeout_must_be_a_finite_number_of_seconds(data, value, monkeypatch):
    monkeypatch.setenv("PIPELINE_LOCK_TIMEOUT", value)
    bad = r"PIPELINE_LOCK_TIMEOUT=.*: not a finite number of seconds >= 0; hint"
    with pytest.raises(ConfigError, match=bad), lake.locked(data, "date-2026-01-01"):
        pass
    monkeypatch.setenv("PIPELINE_LOCK_TIMEOUT", "0.5")
    assert lake.lock_timeout() == 0.5


# ---------------------------------------------------------------------------- links: never written through


def outside_folder(path: Path) -> dict[str, bytes]:
    path.mkdir(parents=True)
    (path / lake.MANIFEST).write_text('{"mine": true}')
    (path / ".date=2026-01-01.old-0badf00d").write_text("looks like a leftover, is someone's")
    return {p.name: p.read_bytes() for p in path.iterdir()}


def test_a_published_partition_that_is_a_link_is_replaced_never_followed(data, tmp_path):
    """A lake and a predictions partition that are links: re-published as folders in their place, the
    folders they pointed at untouched, no `.date=D.old-*` link left behind."""
    from pipeline import ingest

    d = "2026-01-01"
    src = tmp_path / "news.csv"
    src.write_text("id,text\n1,hello there\n2,bye now\n")
    for final in (data.texts(d), data.predictions(d)):
        target = tmp_path / "outside" / final.parent.name
        before = outside_folder(target)
        final.parent.mkdir(parents=True)
        final.symlink_to(target, target_is_directory=True)
        if final == data.texts(d):
            assert ingest.ingest([src], d, data, ingest.IngestConfig())["rows_kept"] == 2
        else:
            with lake.publish_dir(final) as tmp:
                (tmp / lake.MANIFEST).write_text("{}")
            assert lake.read_manifest(final) == {}
        assert {p.name: p.read_bytes() for p in target.iterdir()} == before
        assert final.is_dir() and not final.is_symlink()
        assert [p.name for p in final.parent.iterdir()] == [final.name]


def test_a_folder_written_in_place_that_is_a_link_is_refused(data, tmp_path):
    """`reports/date=D` (written file by file) as a link: refused, naming it; what it points at untouched."""
    target = tmp_path / "outside"
    before = outside_folder(target)
    folder = data.report("2026-01-01")
    folder.parent.mkdir(parents=True)
    folder.symlink_to(target, target_is_directory=True)
    with pytest.raises(PipelineError, match=rf"^{folder}: a symbolic link, not a folder; .*; hint: remove"):
        lake.write_json(folder / "summary.json", {"rows": 1})
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
