import os
from pathlib import Path

import pytest

from pipeline import lake
from pipeline.errors import InputError


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
