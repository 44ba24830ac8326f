"""Security: nothing is unpickled, model files are checked against each other, nothing escapes the data
directory, and no text can break the exported JSON.

- A pickle (whose unpickling would write a marker file) in place of the weights, the vocabulary or the
  config is refused with a `ModelError`, and the marker never appears.
- config.json, vocab.json and the weights must agree (sizes, shapes, names, dtypes); checked from the
  safetensors header before anything is allocated.
- Dates, model versions and names from the command line, the Makefile and file contents (manifests,
  `models/latest`, `_ingest.toml`) cannot point outside the data directory.
- go-exporter's JSON parses back with Python's `json` for any text, invalid UTF-8 included.
"""

from __future__ import annotations

import codecs
import datetime as dt
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.ipc as ipc
import pytest
import torch
from conftest import REPO
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from pipeline import ingest, lake, registry
from pipeline.__main__ import main
from pipeline.errors import ConfigError, InputError, ModelError, PipelineError
from pipeline.model import TextClassifier, lesson_config
from pipeline.schema import predictions_schema
from pipeline.vocab import VocabConfig, build_vocab, save_vocab

LABELS = ["World", "Sports"]


class Payload:
    """Unpickling this creates `marker`: proof that a file was unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


def write_model(
    data: lake.DataDir, version: str = "m1", *, texts: tuple[str, ...] = ("a b c", "a b")
) -> Path:
    """A small, complete model folder, made as training makes one, and `latest`."""
    vocab = build_vocab(pl.LazyFrame({"text": list(texts)}), VocabConfig())
    cfg = lesson_config("lstm-last", embed_dim=4, hidden_dim=3)
    torch.manual_seed(0)
    folder = data.models / version
    folder.mkdir(parents=True)
    model = TextClassifier(cfg, len(vocab), len(LABELS))
    registry.write_model_files(folder, model, {"labels": LABELS, "vocab_version": vocab.version})
    save_vocab(vocab, folder).rename(folder / "vocab.json")
    lake.write_json(folder / "metrics.json", {"validation": {"accuracy": 0.5, "macro_f1": 0.5}})
    registry.set_latest(data.models, version)
    return folder


@pytest.fixture
def model_dir(data: lake.DataDir) -> Path:
    folder = write_model(data)
    assert registry.load_model(data.models).labels == LABELS  # loads before it is tampered with
    return folder


def edit_config(folder: Path, **changes: Any) -> None:
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(changes)
    (folder / "config.json").write_text(json.dumps(cfg))


# ---------------------------------------------------------------------------- nothing is unpickled


def test_the_payload_is_live(tmp_path):
    """The check below means something: unpickling the payload does write its marker."""
    path, marker = tmp_path / "p.pt", tmp_path / "marker"
    torch.save(Payload(marker), path)
    torch.load(path, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("model.safetensors", r"model\.safetensors: not a safetensors weights file .*will not be unpickled"),
        ("vocab.json", r"vocab\.json: not a vocabulary JSON file .*will not be unpickled"),
        ("config.json", r"config\.json: not a model config"),
    ],
)
def test_a_pickle_in_place_of_a_model_file_is_refused(data, model_dir, tmp_path, name, message):
    marker = tmp_path / "marker"
    torch.save(Payload(marker), model_dir / name)
    with pytest.raises(ModelError, match=message):
        registry.load_model(data.models)
    assert not marker.exists()


# ---------------------------------------------------------------------------- the files must agree


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"embed_dim": 5}, r"`embedding\.weight` is \[\d+, 4\], the config implies \[\d+, 5\]"),
        ({"hidden_dim": 6}, r"`head\.weight` is \[2, 3\], the config implies \[2, 6\]"),
        (
            {"labels": [*LABELS, "Business"]},
            r"\(\d+ tokens in vocab\.json, 3 labels\).*`head\.bias` is \[2\]",
        ),
        ({"rnn_type": "gru"}, r"`rnn\.weight_hh_l0` is \[12, 3\], the config implies \[9, 3\]"),
        ({"bidirectional": True}, r"`rnn\.weight_hh_l0_reverse` is missing"),
        ({"num_layers": 2}, r"`rnn\.weight_hh_l1` is missing"),
    ],
)
def test_config_that_does_not_match_the_weights_is_refused(data, model_dir, changes, message):
    edit_config(model_dir, **changes)
    with pytest.raises(ModelError, match=r"model\.safetensors: the weights do not match config\.json"):
        registry.load_model(data.models)
    with pytest.raises(ModelError, match=message):
        registry.load_model(data.models)


def test_vocabulary_of_another_size_is_refused(data, model_dir):
    bigger = build_vocab(pl.LazyFrame({"text": ["a b c d e f g"]}), VocabConfig())
    save_vocab(bigger, model_dir).replace(model_dir / "vocab.json")
    with pytest.raises(ModelError, match=r"vocabulary \w+ does not match the model's"):
        registry.load_model(data.models)
    edit_config(model_dir, vocab_version=bigger.version)
    with pytest.raises(
        ModelError, match=r"\(9 tokens in vocab\.json, 2 labels\): `embedding\.weight` is \[5, 4\]"
    ):
        registry.load_model(data.models)


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (lambda s: s.pop("head.bias"), r"`head\.bias` is missing"),
        (lambda s: s.update(extra=torch.zeros(2)), r"`extra` is not part of this architecture"),
        (lambda s: s.update({"head.bias": torch.zeros(2, dtype=torch.int64)}), r"`head\.bias` holds I64"),
    ],
)
def test_weights_with_other_tensors_are_refused(data, model_dir, tamper, message):
    state = registry.load_model(data.models).model.state_dict()
    state = {k: v.clone() for k, v in state.items()}
    tamper(state)
    save_file(state, str(model_dir / "model.safetensors"))
    with pytest.raises(ModelError, match=message):
        registry.load_model(data.models)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"embed_dim": 10**12}, r"config\.json: `embed_dim`: input should be less than or equal to 16777216"),
        ({"hidden_dim": -3}, r"`hidden_dim`: input should be greater than or equal to 1, got -3"),
        ({"num_layers": "2"}, r"`num_layers`: input should be a valid integer, got '2'"),
        ({"num_layers": 65}, r"`num_layers`: input should be less than or equal to 64"),
        ({"rnn_type": "transformer"}, r"`rnn_type`: input should be 'rnn', 'lstm' or 'gru'"),
        ({"dropout": 1.5}, r"`dropout`: input should be less than 1.*retrain the model"),
        ({"bidirectional": "yes"}, r"`bidirectional`: input should be a valid boolean"),
        ({"ngram_buckets": 1}, r"`ngram_buckets`: value error, 0 \(off\) or at least 2"),
        ({"pooling": None}, r"`pooling`: input should be 'last', 'mean' or 'max', got None"),
        ({"labels": ["a", "a"]}, r"`labels` must be a non-empty list of distinct names"),
        ({"labels": []}, r"`labels` must be a non-empty list"),
        ({"vocab_version": ["x"]}, r"`vocab_version` must be a string"),
        ({"format_version": 99}, r"model format 99, this code reads 1"),
    ],
)
def test_config_values_are_checked_before_anything_is_built(data, model_dir, changes, message):
    edit_config(model_dir, **changes)
    with pytest.raises(ModelError, match=message):
        registry.load_model(data.models)


def test_config_and_vocabulary_that_are_not_objects_are_refused(data, model_dir):
    vocab = (model_dir / "vocab.json").read_text()
    (model_dir / "vocab.json").write_text("[1, 2]")
    with pytest.raises(ModelError, match=r"vocab\.json: not a vocabulary JSON file"):
        registry.load_model(data.models)
    (model_dir / "vocab.json").write_text(vocab)
    (model_dir / "config.json").write_text('"a string"')
    with pytest.raises(ModelError, match=r"config\.json: not a model config \(a JSON object\)"):
        registry.load_model(data.models)


def test_damaged_models_are_listed_without_them(data, model_dir):
    write_model(data, "m2")
    (data.model("m2") / "metrics.json").write_text("{}")
    assert [r["version"] for r in registry.list_models(data.models)] == ["m1"]


# ---------------------------------------------------------------------------- nothing escapes the data dir


@pytest.mark.parametrize("target", ["../../etc", "/etc", "m1/../../x", ".hidden", "m1\n"])
def test_latest_pointing_outside_is_refused(data, model_dir, target):
    (data.models / "latest").unlink()
    (data.models / "latest").symlink_to(target)
    with pytest.raises(ModelError, match=r"latest: points at .*, not a model folder beside it"):
        registry.load_model(data.models)


def test_a_model_folder_that_is_a_link_outside_is_refused(data, model_dir, tmp_path):
    outside = tmp_path / "outside"
    shutil.copytree(model_dir, outside)
    (data.models / "m2").symlink_to(outside)
    with pytest.raises(ModelError, match=r"m2: a symbolic link, not a model folder"):
        registry.load_model(data.models, "m2")
    with pytest.raises(InputError, match=r"`model` must be a plain name"):
        registry.load_model(data.models, str(outside))


@pytest.mark.parametrize(
    "value", ["..", ".", "../x", "/abs", "a/b", "a\\b", "m1\n", "", " m1", "-rf", "x" * 200, "é"]
)
def test_names_that_could_be_a_path_are_refused(value):
    with pytest.raises(InputError, match=r"must be a plain name"):
        lake.check_name(value, "model")


@pytest.mark.parametrize(
    "value", ["../x", "/abs", "2026-01-01\n", "2026-01-01/..", "٢٠٢٦-٠١-٠١", "2026-1-1", "2026-02-30", ""]
)
def test_dates_that_are_not_dates_are_refused(data, value):
    with pytest.raises(InputError, match=r"`date`"):
        data.texts(value)


SOURCE = "in.csv"
ARGVS = [
    ["ingest", SOURCE, "--date", "../x"],
    ["ingest", SOURCE, "--date", "/tmp/x"],
    ["score", "--date", "2026-01-01\n"],
    ["score", "--date", "../../etc"],
    ["score", "--date", "2026-01-01", "--model", "../../etc"],
    ["score", "--date", "2026-01-01", "--model", "/abs"],
    ["score", "--date", "2026-01-01", "--model", "m1\n"],
    ["evaluate", "--date", "2026-01-01", "--model", "latest/../../x"],
    ["export", "--date", "/abs"],
    ["run", "--date", "../../../tmp"],
    ["backfill", "--start", "../a", "--end", "2026-01-01"],
    ["train", "--start", "/abs"],
]


@pytest.mark.parametrize("argv", ARGVS, ids=[" ".join(a).replace("\n", "\\n") for a in ARGVS])
def test_command_line_dates_and_models_that_are_paths_are_usage_errors(tmp_path, capsys, monkeypatch, argv):
    root = tmp_path / "root"
    (root / "sentinel").mkdir(parents=True)
    (root / "sentinel" / "keep.txt").write_text("untouched")
    (root / SOURCE).write_text("id,text\n1,a\n")
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    monkeypatch.chdir(root)  # a relative write would land here, and be seen
    with pytest.raises(SystemExit) as e:
        main(["--data-dir", str(root / "data"), *[str(root / a) if a == SOURCE else a for a in argv]])
    assert e.value.code == 2
    assert re.search(r"error: argument --\w+: `(date|model)` must", capsys.readouterr().err)
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before  # nothing written, anywhere


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
@pytest.mark.parametrize(
    "args",
    [["nightly", "DATE=../x"], ["nightly", "DATE=/abs"], ["backfill", "START=2026-01-01", "END=../../x"]],
)
def test_makefile_refuses_dates_that_are_paths(args):
    proc = subprocess.run(["make", "-s", *args], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "must be a date YYYY-MM-DD" in proc.stderr


@pytest.mark.parametrize("name", ["../../../../etc/passwd.parquet", "/etc/passwd", "a/b.parquet", ".."])
def test_manifest_file_names_that_are_paths_are_refused(data, name):
    folder = data.texts("2026-01-01")
    folder.mkdir(parents=True)
    lake.write_json(folder / lake.MANIFEST, {"files": [{"name": name, "rows": 1}]})
    with pytest.raises(PipelineError, match=r"_manifest\.json: `files\[\]\.name` must be a plain name"):
        lake.read_manifest(folder)
    preds = data.predictions("2026-01-01")
    preds.mkdir(parents=True)
    lake.write_json(preds / lake.MANIFEST, {"shards": [{"name": name}]})
    with pytest.raises(PipelineError, match=r"`shards\[\]\.name` must be a plain name.*re-run the stage"):
        lake.require_manifest(preds, hint="")


@pytest.mark.parametrize("classes", ["../../secret.txt", "/etc/hostname", "link.txt"])
def test_folder_config_cannot_name_a_classes_file_outside_its_folder(data, tmp_path, classes):
    folder = data.raw("2026-01-01")
    folder.mkdir(parents=True)
    (tmp_path / "secret.txt").write_text("A\n")
    (folder / "link.txt").symlink_to(tmp_path / "secret.txt")
    (folder / "_ingest.toml").write_text(f"classes = {json.dumps(classes)}\n")
    with pytest.raises(ConfigError, match=r"_ingest\.toml: `classes` .* is outside .*hint:"):
        ingest.load_folder_config(folder)


def test_folder_config_values_of_the_wrong_type_are_refused(data):
    folder = data.raw("2026-01-01")
    folder.mkdir(parents=True)
    for text, message in [
        ('header = "no"', r"_ingest\.toml: `header`: input should be a valid boolean, got 'no'; hint:"),
        ("max_text_chars = true", r"`max_text_chars`: input should be a valid integer, got True"),
        ('delimiter = ";;"', r"`delimiter` must be one ASCII character"),
        ('quote = ","', r"`quote` and `delimiter` are both ','"),
    ]:
        (folder / "_ingest.toml").write_text(text + ("\ndelimiter = ','\n" if "quote" in text else "\n"))
        with pytest.raises(ConfigError, match=message):
            ingest.load_folder_config(folder)


# ---------------------------------------------------------------------------- exported JSON


def go_text(raw: bytes) -> str:
    """What the exporter writes for `raw`: its text, each byte that is not valid UTF-8 as U+FFFD."""
    return raw.decode("utf-8", "go_replace")


def _go_replace(e: UnicodeError) -> tuple[str, int]:
    assert isinstance(e, UnicodeDecodeError)
    return "\ufffd" * (e.end - e.start), e.end


codecs.register_error("go_replace", _go_replace)

RAW_TEXT = st.one_of(
    st.text().map(str.encode),  # any Unicode scalar value (no surrogates: not UTF-8)
    st.binary(max_size=30),  # any bytes, mostly invalid UTF-8
    st.text(alphabet=st.characters(categories=["Cs"]), max_size=3).map(
        lambda s: s.encode("utf-8", "surrogatepass")  # surrogates spelt in UTF-8 (CESU): invalid
    ),
    st.sampled_from(["\u2028\u2029", '"\\</script>', "\x00\x1f\x7f", "\ufeff", "\U0010ffff", "é\u0301"]).map(
        str.encode
    ),
)
TEXTS = st.lists(st.lists(RAW_TEXT, max_size=4).map(b"".join), min_size=1, max_size=80)


def string_array(values: list[bytes]) -> pa.Array:
    """A utf8 Arrow array holding exactly these bytes, valid UTF-8 or not (as a foreign producer may)."""
    offsets = np.cumsum([0, *map(len, values)]).astype(np.int32)
    return pa.Array.from_buffers(
        pa.string(), len(values), [None, pa.py_buffer(offsets.tobytes()), pa.py_buffer(b"".join(values))]
    )


def write_predictions(path: Path, ids: list[bytes], texts: list[bytes]) -> None:
    n = len(texts)
    schema = predictions_schema(LABELS, model_version="m1", vocab_version="v1", partition="2026-01-01")
    columns = {
        "id": string_array(ids),
        "text": string_array(texts),
        "label": pa.array(["World"] * n),
        "label_id": pa.array([0] * n, pa.int32()),
        "score": pa.array([0.75] * n),
        "probs": pa.array([[0.75, 0.25]] * n, schema.field("probs").type),
        "model_version": pa.array(["m1"] * n),
        "scored_at": pa.array([dt.datetime(2026, 1, 1, tzinfo=dt.UTC)] * n, schema.field("scored_at").type),
    }
    table = pa.Table.from_arrays(list(columns.values()), schema=schema)
    with ipc.new_file(path, schema) as w:
        w.write_table(table, max_chunksize=17)


@settings(max_examples=100, deadline=None)
@given(texts=TEXTS, ids=st.lists(RAW_TEXT, min_size=80, max_size=80))
def test_exported_json_parses_back_for_any_text(exporter, texts, ids):
    ids = [b"%d:" % i + x for i, x in enumerate(ids[: len(texts)])]  # the contract: ids are not empty
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "date=2026-01-01" / "part-00000.arrow"
        path.parent.mkdir()
        write_predictions(path, ids, texts)
        for fmt in ("ndjson", "json"):
            proc = subprocess.run(
                [str(exporter), "-format", fmt, "-fields", "id,text,label,score,partition,probs", str(path)],
                capture_output=True,
                timeout=60,
                check=False,
            )
            assert proc.returncode == 0, proc.stderr
            out = proc.stdout.decode("utf-8")  # strict: the output is valid UTF-8
            assert "\u2028" not in out and "\u2029" not in out  # escaped: no line break inside a line
            if fmt == "ndjson":
                assert out.endswith("\n")
                objs = [json.loads(line) for line in out.split("\n")[:-1]]
            else:
                objs = json.loads(out)
            assert [o["text"] for o in objs] == [go_text(t) for t in texts]
            assert [o["id"] for o in objs] == [go_text(i) for i in ids]
            assert all(o["probs"] == {"World": 0.75, "Sports": 0.25} for o in objs)


def test_go_text_replaces_each_invalid_byte():
    assert go_text(b"a\xffb\xe2\x82") == "a\ufffdb\ufffd\ufffd"
    assert go_text(b"\xed\xa0\x80") == "\ufffd" * 3
