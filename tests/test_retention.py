"""`pipeline gc`: a data directory of 30 nights and 5 models loses exactly what the retention policy names."""

import fcntl
import json
import os
import re
from pathlib import Path

import pytest
from conftest import tiny_corpus

from pipeline import lake, retention
from pipeline.__main__ import main
from pipeline.config import RetentionConfig, load_config

NIGHTS = lake.date_range("2026-03-01", "2026-03-30")  # 30 nights; the newest is 2026-03-30
M1, M2, M3, M4, M5 = (f"{k}" * 12 for k in "abcde")  # five model versions
POLICY = ["--set", "retention.days=10", "--set", "retention.models=2"]
MODEL_FILES = (
    "model.safetensors",
    "vocab.json",
    "confusion.png",
    "curves.png",
    "card.md",
    "validation_predictions.parquet",
    "config.json",
    "metrics.json",
)


def put(path: Path, data: bytes | str = b"x" * 100) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def put_json(path: Path, obj: dict) -> Path:
    return put(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")  # as lake.write_json, without fsync


def fake_model(data: lake.DataDir, version: str) -> None:
    """A model folder with the files and config keys `pipeline train` writes (the weights are not read)."""
    folder = data.model(version)
    for name in MODEL_FILES[:-2]:
        put(folder / name, b"m" * 1000)
    put_json(
        folder / "config.json",
        {
            "format_version": 1,
            "version": version,
            "labels": ["a", "b"],
            "vocab_version": "v1",
            "rnn_type": "lstm",
        },
    )
    put_json(folder / "metrics.json", {"validation": {"accuracy": 0.9, "macro_f1": 0.9}})


def fake_night(data: lake.DataDir, date: str, model: str) -> None:
    """A night as `run` leaves it: lake partition, predictions, export, summary and page, ingest stamp."""
    put(data.texts(date) / "part-00000.parquet", b"t" * 300)
    put_json(data.texts(date) / lake.MANIFEST, {"date": date, "rows_kept": 3, "files": []})
    put_json(data.stamp("ingest", date), {"inputs": {}, "output": "x"})
    put(data.raw(date) / "news.csv", "id,text\n1,a\n")
    shard = put(data.predictions(date) / "part-00000.arrow", b"p" * 2000)
    put_json(
        data.predictions(date) / lake.MANIFEST,
        {
            "schema_version": 1,
            "date": date,
            "rows": 3,
            "model_version": model,
            "vocab_version": "v1",
            "labels": ["a", "b"],
            "scored_at": "2026-01-01T00:00:00Z",
            "engine": {"kernel": "fused", "precision": "fp32"},
            "inputs": {"lake": [], "model": model},
            "shards": [{"name": shard.name, "rows": 3, "bytes": 2000, "sha256": "0"}],
        },
    )
    put(data.exports(date) / "predictions.ndjson", b"e" * 1500)
    put_json(
        data.exports(date) / "_manifest.ndjson.json",
        {"date": date, "path": "x", "rows": 3, "sha256": "0", "inputs": {}, "model_version": model},
    )
    put_json(data.report(date) / "summary.json", {"date": date, "model_version": model, "rows_scored": 3})
    put(data.report(date) / "index.html", b"<html>" * 100)


def history(data: lake.DataDir, moves: list[tuple[str | None, str]]) -> None:
    lines = [
        json.dumps(
            {"when": "2026-01-01T00:00:00Z", "who": "t", "action": "train", "from": a, "to": b, "why": ""}
        )
        for a, b in moves
    ]
    put(data.models / "history.jsonl", "\n".join(lines) + "\n")
    os.symlink(moves[-1][1], data.models / "latest")


def listing(root: Path) -> set[str]:
    """Every file, folder and link under `root`, relative, never through a symlink; not the lock files."""
    out = set()
    for here, dirs, files in os.walk(root):
        out |= {str((Path(here) / n).relative_to(root)) for n in [*dirs, *files]}
    return {p for p in out if not p.startswith("state/locks")}


@pytest.fixture
def nights(data: lake.DataDir) -> lake.DataDir:
    """30 nights (the first 20 scored with M1, then M4; 2026-03-25 with M3) and 5 models: the history
    moved `latest` M1 -> M2 -> M4; M5 was never promoted. With days=10 and models=2 the policy names the
    nights up to 2026-03-20, and M1 (too old in the history, used only by removed nights) and M5."""
    for m in (M1, M2, M3, M4, M5):
        fake_model(data, m)
    history(data, [(None, M1), (M1, M2), (M2, M4)])
    for d in NIGHTS:
        fake_night(data, d, M3 if d == "2026-03-25" else M1 if d <= "2026-03-20" else M4)
    # evaluations of a removed model and of a kept one
    for m in (M1, M4):
        put_json(data.evaluation(m, "2026-03-02") / "metrics.json", {"model_version": m})
        put(data.evaluation(m, "2026-03-02") / "confusion.png")
    put(data.root / "runs" / "20260330T000000Z-abcdef12.json", "{}")
    put(data.vocab / "v1.json", "{}")
    return data


def expected_removals() -> set[str]:
    old = [d for d in NIGHTS if d <= "2026-03-20"]
    out = set()
    for d in old:
        p = f"predictions/date={d}"
        out |= {p, f"{p}/part-00000.arrow", f"{p}/_manifest.json"}
        e = f"exports/date={d}"
        out |= {e, f"{e}/predictions.ndjson", f"{e}/_manifest.ndjson.json"}
        r = f"reports/date={d}"
        out |= {r, f"{r}/summary.json", f"{r}/index.html"}
    for m in (M1, M5):
        out |= {f"models/{m}", *(f"models/{m}/{name}" for name in MODEL_FILES)}
    out |= {f"reports/{M1}", f"reports/{M1}/date=2026-03-02"}
    out |= {f"reports/{M1}/date=2026-03-02/{n}" for n in ("metrics.json", "confusion.png")}
    return out


def gc(data: lake.DataDir, *extra: str) -> int:
    return main(["--data-dir", str(data.root), "gc", *POLICY, *extra])


def test_gc_removes_exactly_what_the_policy_names(nights, capsys):
    data = nights
    before = listing(data.root)
    assert gc(data, "--dry-run") == 0
    planned = capsys.readouterr().out
    assert listing(data.root) == before  # a dry run removes nothing

    assert gc(data) == 0
    done = capsys.readouterr().out
    assert before - listing(data.root) == expected_removals()
    assert listing(data.root) <= before
    # the same plan, said in the past tense
    assert planned.splitlines()[:-1] == done.splitlines()[:-1]
    assert re.fullmatch(
        r"would remove 20 prediction partitions \(4\d\.\d kB\), 20 export partitions \(3\d\.\d kB\), "
        r"20 night reports \(1\d\.\d kB\), 2 models \(1\d\.\d kB\), 1 model evaluation \(\d+ B\); "
        r"would free 1\d\d\.\d kB",
        planned.splitlines()[-1],
    )
    assert done.splitlines()[-1] == planned.splitlines()[-1].replace("would remove", "removed").replace(
        "would free", "freed"
    )
    assert re.search(
        r"\n  predictions/date=2026-03-20  2\.\d kB  10 days before the newest night, 2026-03-30\n", done
    )
    assert "predictions/date=2026-03-21" not in done  # 9 days before: kept
    # what `latest` and the kept nights need still loads
    assert os.readlink(data.models / "latest") == M4
    for m in (M2, M3, M4):
        assert (data.model(m) / "model.safetensors").is_file()

    assert gc(data) == 0
    assert capsys.readouterr().out.strip() == "nothing to remove"


def test_gc_leaves_what_the_pipeline_did_not_write_and_what_is_running(nights, capsys):
    data = nights
    foreign = [
        put(data.root / "predictions" / "README.txt"),  # in a stage folder
        put(data.exports("2026-03-01") / "notes.txt"),  # in an old night's folder written file by file
        put(data.models / "my-experiments" / "weights.bin"),  # not a model folder
        put(data.models / "incomplete" / "config.json", "{}"),
        put(data.report("2099-01-01") / "notes.txt"),  # no night of the pipeline's: not the newest night
    ]
    resumable = put(data.root / "predictions" / f".date=2026-03-29.job-{'1' * 12}" / "part-00000.arrow")
    stale = [
        put(data.root / "predictions" / f".date=2026-03-02.job-{'1' * 12}" / "part-00000.arrow"),
        put(data.texts("2026-03-30").parent / ".date=2026-03-30.tmp-0123abcd" / "part-00000.parquet"),
        put(data.root / "state" / "ingest" / ".2026-03-30.json.tmp-89abcdef"),
        put(data.models / f".ckpt-{'f' * 12}.pt", b"c" * 5000),
    ]
    held_ckpt = put(data.pretrain / f".ckpt-{'0' * 16}.pt")  # a pretraining that is running
    held_tmp = put(data.report("2026-03-30") / ".index.html.tmp-00112233")
    only_copy = put(data.root / "predictions" / ".date=2026-03-31.old-0123abcd" / lake.MANIFEST, "{}")
    with (
        open(held_tmp, "rb") as f,
        lake.locked(data, f"pretrain-{'0' * 16}"),
        lake.publish_dir(data.evaluation(M4, "2026-03-03")) as publishing,
    ):
        fcntl.flock(f, fcntl.LOCK_EX)  # an atomic write in progress
        assert gc(data) == 0
        assert publishing.is_dir()  # a publish in progress
    out = capsys.readouterr().out
    assert all(p.exists() for p in [*foreign, held_ckpt, held_tmp, only_copy, resumable])
    assert not any(p.exists() for p in stale)
    assert (data.exports("2026-03-01") / "notes.txt").exists()
    assert not (data.exports("2026-03-01") / "predictions.ndjson").exists()
    assert data.predictions("2026-03-21").is_dir() and not data.predictions("2026-03-20").exists()
    assert (
        "training checkpoints:\n  models/.ckpt-ffffffffffff.pt  5.0 kB  left by a training that is not" in out
    )
    assert "  models/my-experiments  not a model folder the pipeline wrote" in out
    assert f"  predictions/.date=2026-03-29.job-{'1' * 12}  a cut scoring job; `pipeline score" in out
    assert "  exports/date=2026-03-01/notes.txt  not written by the pipeline" in out
    assert "  predictions/.date=2026-03-31.old-0123abcd  the only copy of date=2026-03-31" in out
    # the lake, raw files, stamps, runs and vocabularies are never touched
    for d in NIGHTS:
        assert (data.texts(d) / lake.MANIFEST).is_file() and (data.raw(d) / "news.csv").is_file()
        assert data.stamp("ingest", d).is_file()
    assert (data.vocab / "v1.json").is_file() and any(data.runs.iterdir())


def test_a_symlinked_stage_folder_is_not_followed(nights, tmp_path, capsys):
    data = nights
    outside = tmp_path / "elsewhere"
    (data.root / "exports").rename(outside)
    os.symlink(outside, data.root / "exports")
    os.symlink(outside / "date=2026-03-02", data.root / "predictions" / "date=2026-01-01")
    before = listing(outside)
    assert gc(data) == 0
    out = capsys.readouterr().out
    assert listing(outside) == before  # 20 old nights' exports live there: none removed
    assert "  exports  a symbolic link; gc never follows one" in out
    assert "  predictions/date=2026-01-01  a symbolic link; gc never follows one" in out
    assert (data.root / "predictions" / "date=2026-01-01").is_symlink()
    assert not data.predictions("2026-03-02").exists()  # the real folders are still subject to the policy


def test_a_model_named_by_a_kept_export_is_kept_and_latest_is_checked_again(nights):
    data = nights
    manifest = data.exports("2026-03-30") / "_manifest.ndjson.json"
    put_json(manifest, {**json.loads(manifest.read_text()), "model_version": M5})
    plan = retention.plan_gc(data, RetentionConfig(days=10, models=2))
    assert {r.path.name for r in plan.removals if r.kind == "models"} == {M1}
    (data.models / "latest").unlink()
    os.symlink(M1, data.models / "latest")  # promoted between the plan and its removal
    done = retention.apply_gc(data, plan)
    assert data.model(M1).is_dir() and data.evaluation(M1, "2026-03-02").is_dir()
    assert (data.model(M1), "`latest` now") in done.left
    assert not data.predictions("2026-03-01").exists()


def test_a_night_just_run_is_kept_whatever_its_date(nights):
    plan = retention.plan_gc(nights, RetentionConfig(days=10), keep_dates=["2026-03-01"])
    removed = {p.path.name for p in plan.removals if p.kind == "predictions"}
    assert "date=2026-03-01" not in removed and "date=2026-03-02" in removed


def test_human_sizes():
    assert [retention.human_size(n) for n in (0, 999, 1000, 1_234_567, 1_500_000_000)] == [
        "0 B",
        "999 B",
        "1.0 kB",
        "1.2 MB",
        "1.5 GB",
    ]


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_run_with_after_run_applies_the_policy_after_the_night(tmp_path, exporter, capsys):
    from pipeline import corpus, train

    data = lake.DataDir.at(tmp_path / "data")
    tiny_corpus(data, rows_per_day=200)
    train.train(data, load_config(None, ["model.embed_dim=8", "model.hidden_dim=8", "train.epochs=1"]))
    for d in ("2025-12-01", "2025-12-02"):  # nights long before the one run below
        fake_night(data, d, M1)
    fake_model(data, M5)
    base = ["--data-dir", str(data.root), "run", "--date", corpus.SCORE_DATE]
    assert main(base) == 0  # off by default: nothing removed
    assert data.predictions("2025-12-01").is_dir() and data.model(M5).is_dir()
    capsys.readouterr()
    assert main([*base, "--set", "retention.after_run=true", "--set", "retention.days=30"]) == 0
    out = capsys.readouterr().out
    assert not data.predictions("2025-12-01").exists() and not data.model(M5).exists()
    assert (data.predictions(corpus.SCORE_DATE) / lake.MANIFEST).is_file()
    assert "removed 2 prediction partitions" in out and "1 model (" in out
    # a night days before the newest, run again, is kept by its own gc
    early = corpus.TRAIN_DATES[0]
    assert main([*base[:-1], early, "--set", "retention.after_run=true", "--set", "retention.days=1"]) == 0
    assert (data.predictions(early) / lake.MANIFEST).is_file()
