"""Model exports (pipeline/portable.py): onnxruntime and the loaded .pt2 give `pipeline score`'s
probabilities for the lesson's four classifiers and the default model, padding changes nothing, the
folder stands alone (its tokenizer rules and the README's example run without `pipeline`)."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import polars as pl
import pytest
import torch
from torch import nn

from pipeline import corpus, lake, portable, registry
from pipeline.__main__ import main
from pipeline.errors import ModelError
from pipeline.infer import build_scorer
from pipeline.model import (
    LESSON_CONFIGS,
    ModelConfig,
    TextClassifier,
    batch_from_flat,
    document_frequencies,
    lesson_config,
)
from pipeline.vocab import VocabConfig, build_vocab, encode, save_vocab

REPO = Path(__file__).resolve().parents[1]
ROWS = 3000
SMALL = {"embed_dim": 16, "hidden_dim": 16, "max_len": 48}
CONFIGS = {
    **{name: lesson_config(name, **SMALL) for name in LESSON_CONFIGS},
    # the default's every head; smaller tables so the test stays quick
    "default": ModelConfig(max_len=48, ngram_buckets=20_000, wide_buckets=1 << 16),
}


@pytest.fixture(scope="module")
def texts() -> tuple[list[str], np.ndarray]:
    """Demo-corpus texts (two days) and their label ids; malformed rows left out."""
    rows = []
    for date in corpus.TRAIN_DATES[:2]:
        reader = csv.reader(io.StringIO(corpus.generate_day(date, rows=ROWS // 2 + 10, labelled=True)))
        rows += [r for r in list(reader)[1:] if len(r) == 3 and r[2] in corpus.CLASSES and r[1].strip()]
    rows = rows[:ROWS]
    return [r[1] for r in rows], np.array([corpus.CLASSES.index(r[2]) for r in rows])


def train_briefly(cfg: ModelConfig, vocab_size: int, ids: np.ndarray, offsets: np.ndarray, y: np.ndarray):
    """One epoch of Adam: a trained model, quickly (its TF-IDF statistics and head weights set too)."""
    torch.manual_seed(0)
    model = TextClassifier(cfg, vocab_size, len(corpus.CLASSES))
    rows = np.arange(len(y))
    if cfg.wide_buckets:
        model.wide.set_idf(document_frequencies(ids, offsets, rows, cfg.wide_buckets), len(rows))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for s in range(0, len(rows), 64):
        x, lengths = batch_from_flat(ids, offsets, rows[s : s + 64])
        loss = nn.functional.cross_entropy(model(x, lengths), torch.from_numpy(y[s : s + 64]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    if cfg.wide_buckets:
        model.head_weights.copy_(torch.tensor([0.7, 1.6]))  # as `weigh_heads` leaves them: unequal
    return model.eval()


@pytest.fixture(scope="module", params=list(CONFIGS), ids=list(CONFIGS))
def exported(request, texts, tmp_path_factory):
    """A trained model in a registry, exported as onnx and pt2, and the engine's probabilities."""
    cfg = CONFIGS[request.param]
    docs, y = texts
    vocab = build_vocab(pl.LazyFrame({"text": docs[: ROWS // 2]}), VocabConfig(max_size=2000))
    ids, offsets = encode(pl.Series(docs), vocab, max_len=cfg.max_len)
    model = train_briefly(cfg, len(vocab), ids, offsets, y)
    data = lake.DataDir.at(tmp_path_factory.mktemp("portable") / "data")
    version = f"test{request.param.replace('-', '')}"
    with lake.publish_dir(data.model(version)) as tmp:
        meta = {"version": version, "labels": list(corpus.CLASSES), "vocab_version": vocab.version}
        registry.write_model_files(tmp, model, meta)
        save_vocab(vocab, tmp).rename(tmp / "vocab.json")
        lake.write_json(tmp / "metrics.json", {"validation": {"accuracy": 0.5, "macro_f1": 0.5}})
    registry.set_latest(data.models, version)
    folders = {fmt: Path(portable.export_model(data.models, fmt=fmt)["path"]) for fmt in portable.FORMATS}
    engine = build_scorer(model, batch_size=256).predict_proba(ids, offsets)  # what `pipeline score` runs
    return {
        "data": data,
        "version": version,
        "folders": folders,
        "ids": ids,
        "offsets": offsets,
        "engine": engine,
    }


def padded(ids: np.ndarray, offsets: np.ndarray, rows: np.ndarray, width: int, seed: int):
    """Rows right-padded to `width` with random token ids (not zeros: padding must not matter at all)."""
    lengths = offsets[rows + 1] - offsets[rows]
    x = np.random.default_rng(seed).integers(0, 50, (len(rows), width))
    for i, r in enumerate(rows):
        x[i, : lengths[i]] = ids[offsets[r] : offsets[r + 1]]
    return x.astype(np.int64), lengths.astype(np.int64)


def run_in_batches(fn, ids, offsets, *, width=None, extra=0, seed=0) -> np.ndarray:
    """Probabilities of every row, in batches of mixed lengths in input order."""
    out = []
    for s in range(0, len(offsets) - 1, 500):
        rows = np.arange(s, min(s + 500, len(offsets) - 1))
        w = width or int((offsets[rows + 1] - offsets[rows]).max()) + extra
        out.append(fn(*padded(ids, offsets, rows, w, seed)))
    return np.concatenate(out).astype(np.float64)


def test_onnxruntime_and_pt2_give_the_engines_probabilities(exported):
    ids, offsets, engine = exported["ids"], exported["offsets"], exported["engine"]
    session = ort.InferenceSession(str(exported["folders"]["onnx"] / "model.onnx"))
    onnx = lambda x, n: session.run(None, {"ids": x, "lengths": n})[0]  # noqa: E731
    probs = run_in_batches(onnx, ids, offsets)
    np.testing.assert_allclose(probs, engine, atol=1e-5)
    assert (probs.argmax(1) == engine.argmax(1)).all()
    # padded to another length, with junk: the same output
    np.testing.assert_allclose(run_in_batches(onnx, ids, offsets, extra=13, seed=1), probs, atol=1e-6)
    one = run_in_batches(onnx, ids[: offsets[3]], offsets[:4])  # other batch sizes
    np.testing.assert_allclose(one, engine[:3], atol=1e-5)

    program = torch.export.load(str(exported["folders"]["pt2"] / "model.pt2")).module()
    max_len = json.loads((exported["folders"]["pt2"] / "export.json").read_text())["max_len"]

    def pt2(x: np.ndarray, n: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return program(torch.from_numpy(x), torch.from_numpy(n)).numpy()

    probs = run_in_batches(pt2, ids, offsets, width=max_len, seed=2)
    np.testing.assert_allclose(probs, engine, atol=1e-5)
    assert (probs.argmax(1) == engine.argmax(1)).all()


def test_the_folder_stands_alone_and_exports_the_same_bytes(exported, capsys, tmp_path):
    data, version = exported["data"], exported["version"]
    folder = exported["folders"]["onnx"]
    manifest = json.loads((folder / "export.json").read_text())
    assert manifest["model_version"] == version and manifest["labels"] == list(corpus.CLASSES)
    assert set(manifest["files"]) == {
        "model.onnx",
        "vocab.json",
        "labels.json",
        "tokenizer.json",
        "golden.json",
        "card.md",
    }
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert main(["--data-dir", str(data.root), "models", "export", version, "--format", "onnx"]) == 0
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # re-exported: the same bytes
    assert main(["--data-dir", str(data.root), "models", "export", "--out", str(tmp_path / "x")]) == 0
    assert {p.name: p.read_bytes() for p in (tmp_path / "x").iterdir()} == before
    assert portable.list_exports(data.models, version) == ["onnx", "pt2"]
    assert main(["--data-dir", str(data.root), "models"]) == 0
    assert "exports: onnx, pt2" in capsys.readouterr().out


def test_readme_example_runs_on_the_folder_alone_and_tokenises_the_golden_cases(exported):
    """The README's onnxruntime example, run in the export folder by a Python that has no `pipeline`."""
    readme = (REPO / "README.md").read_text()
    example = re.search(r"<!-- onnx-example -->\n```python\n(.*?)```", readme, re.S).group(1)
    check = """
golden = json.load(open("golden.json", encoding="utf-8"))
assert golden and all(encode(g["text"]) == g["ids"] for g in golden), "golden cases differ"
import sys
assert not any(m == "pipeline" or m.startswith("pipeline.") for m in sys.modules)
print("golden ok", len(golden))
"""
    folder = exported["folders"]["onnx"]
    out = subprocess.run(
        [sys.executable, "-I", "-c", example + check], cwd=folder, capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[-1].startswith("golden ok") and len(lines) == 4
    assert all(line.split()[0] in corpus.CLASSES for line in lines[:3])


def test_a_model_the_graph_cannot_reproduce_is_refused_by_name():
    class WithAttention(TextClassifier):
        pass

    model = WithAttention(ModelConfig(embed_dim=4, hidden_dim=4, ngram_buckets=0, wide_buckets=0), 10, 3)
    with pytest.raises(ModelError, match="cannot export this model: model class WithAttention"):
        portable.onnx_bytes(model)


def test_cli_exports_and_lists(tmp_path, capsys):
    assert main(["--data-dir", str(tmp_path), "models", "export", "--format", "pt2"]) == 1
    assert "no `latest` model" in capsys.readouterr().err


@pytest.fixture
def tiny(tmp_path) -> lake.DataDir:
    """An untrained model of a few weights as `latest` (it exports in about a second)."""
    data = lake.DataDir.at(tmp_path / "data")
    vocab = build_vocab(pl.LazyFrame({"text": ["a b c", "b c d"]}), VocabConfig())
    cfg = ModelConfig(embed_dim=4, hidden_dim=4, max_len=8, ngram_buckets=0, wide_buckets=0)
    with lake.publish_dir(data.model("m1")) as tmp:
        meta = {"version": "m1", "labels": ["x", "y"], "vocab_version": vocab.version}
        registry.write_model_files(tmp, TextClassifier(cfg, len(vocab), 2), meta)
        save_vocab(vocab, tmp).rename(tmp / "vocab.json")
        lake.write_json(tmp / "metrics.json", {"validation": {"accuracy": 0.5, "macro_f1": 0.5}})
    registry.set_latest(data.models, "m1")
    return data


def snapshot(folder: Path) -> dict[str, bytes | str]:
    """Every file (its bytes) and link (its target) under `folder`, by relative path."""
    return {
        str(p.relative_to(folder)): os.readlink(p) if p.is_symlink() else p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_symlink() or p.is_file()
    }


def test_export_replaces_only_an_export_and_never_the_data_directory(tiny, tmp_path, capsys):
    """`--out` at the data directory, inside or above it, at a file or at a folder of others' files is
    refused (exit 1, the folder named, nothing changed); a previous export of the format is replaced."""
    data = tiny
    mine = tmp_path / "mine"
    (mine / "notes.txt").parent.mkdir()
    (mine / "notes.txt").write_text("keep me")
    (tmp_path / "model.onnx").write_bytes(b"not ours")
    (tmp_path / ".fresh.old-mine").mkdir()  # looks like a publish's leftover, is not one
    done = tmp_path / "done"
    assert main(["--data-dir", str(data.root), "models", "export", "--out", str(done)]) == 0
    exported = snapshot(done)
    added = tmp_path / "added"
    assert main(["--data-dir", str(data.root), "models", "export", "--out", str(added)]) == 0
    (added / "extra.txt").write_text("someone's")  # an export plus a file of someone's
    capsys.readouterr()
    before = snapshot(tmp_path)
    for out, fmt in [
        (data.root, "onnx"),
        (data.models, "onnx"),
        (data.model("m1"), "onnx"),
        (data.model("m1") / "exports" / "pt2", "onnx"),  # another format's default folder
        (data.root / "lake", "onnx"),
        (tmp_path, "onnx"),  # holds the data directory
        (Path("/"), "onnx"),
        (mine, "onnx"),
        (tmp_path / "model.onnx", "onnx"),
        (done, "pt2"),  # an export of another format
        (added, "onnx"),
    ]:
        argv = ["--data-dir", str(data.root), "models", "export", "--format", fmt, "--out", str(out)]
        assert main(argv) == 1, out
        line = capsys.readouterr().err.strip().splitlines()[-1]
        assert line.startswith(f"pipeline: error: {out}: ") and "nothing was written; hint: " in line, line
    assert snapshot(tmp_path) == before
    assert [r["version"] for r in registry.list_models(data.models)] == ["m1"]

    (added / "extra.txt").unlink()
    for out in (done, added, tmp_path / "fresh", None):  # a previous export, a new folder, the default: again
        again = [] if out is None else ["--out", str(out)]
        assert main(["--data-dir", str(data.root), "models", "export", *again]) == 0
        assert main(["--data-dir", str(data.root), "models", "export", *again]) == 0
    assert snapshot(done) == snapshot(added) == snapshot(tmp_path / "fresh") == exported
    assert (tmp_path / ".fresh.old-mine").is_dir()
    assert (mine / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize("out", [".", ".."])
def test_export_out_dot_is_one_error_line(tiny, out, monkeypatch, capsys):
    monkeypatch.chdir(tiny.root)
    before = snapshot(tiny.root.parent)
    assert main(["--data-dir", str(tiny.root), "models", "export", "--out", out]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith(f"pipeline: error: {out}: the data directory or a folder")
    assert snapshot(tiny.root.parent) == before
