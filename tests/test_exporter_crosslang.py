"""Cross-language check of go-exporter: Python producers write predictions, go-exporter turns them into JSON.

pyarrow (`string`; uncompressed, LZ4 and ZSTD files; a stream), polars (`string_view`, via `write_ipc`) and
pandas (`large_string`, a categorical label as a dictionary, via `to_feather`) each write the same rows;
the parsed JSON must equal the source values. Float text differs by producer, so numbers are compared as
parsed values (float32 scores after rounding back to float32). Every line is also validated against
../shared/contracts/prediction_result.schema.json when that file is present.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.ipc as ipc
import pytest
from conftest import REPO

from pipeline.schema import predictions_schema

CONTRACT = REPO.parent / "shared" / "contracts" / "prediction_result.schema.json"
DATE = "2026-01-04"
CLASSES = ["negative", "neutral", "positive"]
SCORED_AT = dt.datetime(2026, 1, 4, 2, 0, 0, 123456, tzinfo=dt.UTC)

# one row per edge case of the JSON encoder
TEXTS = [
    "plain ascii",
    "",
    'quotes "double" and \'single\', backslash \\ and \\\\ and \\"',
    "controls: nul\x00 soh\x01 bs\b tab\t nl\n vt\x0b ff\f cr\r esc\x1b us\x1f del\x7f",
    "separators: line\u2028para\u2029end",
    "html stays raw: <script>alert('x')</script> & &amp; </",
    "CJK: 足球比赛冠军 日本語のテキスト 한국어",
    "emoji: 🙂👍🏽👨‍👩‍👧 and a flag 🇯🇵",
    "accents: é è ñ ü, combining e\u0301, BOM \ufeff, NBSP\u00a0, U+FFFD \ufffd",
    "long " + "mixed ascii and 中文 " * 200,
]
# floats whose shortest text differs between Go, Python and polars, and the edges of [0, 1]
PROBS = [
    [0.1, 0.2, 0.7],
    [3.1675885324711217e-06, 0.9999968324114675, 0.0],
    [1.0, 0.0, 0.0],
    [1e-7, 1 / 3, 2 / 3 - 1e-7],
    [0.625, 0.25, 0.125],
]
FIELDS = ("id", "text", "label", "score", "model_version", "scored_at", "partition", "probs")


def source_rows() -> list[dict[str, Any]]:
    rows = []
    for i, text in enumerate(TEXTS):
        p = PROBS[i % len(PROBS)]
        best = int(np.argmax(p))
        rows.append(
            {
                "id": f"r{i:03d}",
                "text": text,
                "label": CLASSES[best],
                "label_id": best,
                "score": p[best],
                "probs": p,
                "model_version": "m-2026.01",
                "scored_at": SCORED_AT + dt.timedelta(seconds=i, microseconds=i * 7),
            }
        )
    return rows


def pipeline_table(rows: list[dict[str, Any]]) -> pa.Table:
    schema = predictions_schema(CLASSES, model_version="m-2026.01", vocab_version="v-1", partition=DATE)
    return pa.Table.from_pylist(rows, schema=schema)


# ---------------------------------------------------------------------------- producers
# Each writes `rows` to `path` and returns the fields the file can give (polars and pandas keep no
# schema metadata, so no `probs` object; `partition` then comes from the date=... folder).


def write_pyarrow_file(path: Path, rows: list[dict[str, Any]], compression: str | None) -> tuple[str, ...]:
    t = pipeline_table(rows)
    opts = ipc.IpcWriteOptions(compression=compression)
    with ipc.new_file(path, t.schema, options=opts) as w:
        for b in t.to_batches(max_chunksize=3):  # several batches
            w.write_batch(b)
    return FIELDS


def write_pyarrow_stream(path: Path, rows: list[dict[str, Any]]) -> tuple[str, ...]:
    t = pipeline_table(rows)
    with ipc.new_stream(path, t.schema, options=ipc.IpcWriteOptions(compression="zstd")) as w:
        for b in t.to_batches(max_chunksize=4):
            w.write_batch(b)
    return FIELDS


def write_pyarrow_float32_dict(path: Path, rows: list[dict[str, Any]]) -> tuple[str, ...]:
    """float32 score and probs, dictionary labels with int16 indices, large_utf8 ids."""
    t = pipeline_table(rows)
    f32 = pa.list_(pa.float32(), len(CLASSES))
    t = t.set_column(t.schema.get_field_index("score"), "score", t.column("score").cast(pa.float32()))
    t = t.set_column(t.schema.get_field_index("probs"), "probs", t.column("probs").cast(f32))
    label = t.column("label").dictionary_encode().cast(pa.dictionary(pa.int16(), pa.string()))
    t = t.set_column(t.schema.get_field_index("label"), "label", label)
    t = t.set_column(t.schema.get_field_index("id"), "id", t.column("id").cast(pa.large_string()))
    with ipc.new_file(path, t.schema) as w:
        for b in t.to_batches(max_chunksize=3):
            w.write_batch(b)
    return FIELDS


def write_polars(path: Path, rows: list[dict[str, Any]], compression: str) -> tuple[str, ...]:
    df = pl.DataFrame(
        {k: [r[k] for r in rows] for k in ("id", "text", "label", "score", "model_version", "scored_at")}
    )
    df.write_ipc(path, compression=compression, record_batch_size=4)  # type: ignore[arg-type]
    return tuple(f for f in FIELDS if f != "probs")


def write_pandas(path: Path, rows: list[dict[str, Any]]) -> tuple[str, ...]:
    df = pd.DataFrame(
        {k: [r[k] for r in rows] for k in ("id", "text", "label", "score", "model_version", "scored_at")}
    )
    df["label"] = df["label"].astype(pd.CategoricalDtype(CLASSES))
    df.to_feather(path)  # an Arrow IPC file, LZ4 by default
    return tuple(f for f in FIELDS if f != "probs")


PRODUCERS: dict[str, Callable[[Path, list[dict[str, Any]]], tuple[str, ...]]] = {
    "pyarrow_file": lambda p, r: write_pyarrow_file(p, r, None),
    "pyarrow_lz4": lambda p, r: write_pyarrow_file(p, r, "lz4"),
    "pyarrow_zstd": lambda p, r: write_pyarrow_file(p, r, "zstd"),
    "pyarrow_stream_zstd": write_pyarrow_stream,
    "pyarrow_float32_dict": write_pyarrow_float32_dict,
    "polars": lambda p, r: write_polars(p, r, "uncompressed"),
    "polars_lz4": lambda p, r: write_polars(p, r, "lz4"),
    "pandas_feather": write_pandas,
}

# what the file must hold, so that each case tests the layout it claims
EXPECTED_TYPES = {
    "pyarrow_file": {"text": pa.string(), "label": pa.string()},
    "pyarrow_lz4": {"text": pa.string()},
    "pyarrow_zstd": {"text": pa.string()},
    "pyarrow_stream_zstd": {"text": pa.string()},
    "pyarrow_float32_dict": {"score": pa.float32(), "label": pa.dictionary(pa.int16(), pa.string())},
    "polars": {"text": pa.string_view(), "label": pa.string_view()},
    "polars_lz4": {"text": pa.string_view()},
    "pandas_feather": {"text": pa.large_string(), "label": pa.dictionary(pa.int8(), pa.large_string())},
}


# ---------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def validate() -> Callable[[dict[str, Any]], None]:
    if not CONTRACT.is_file():
        return lambda obj: None
    import jsonschema

    schema = json.loads(CONTRACT.read_text())
    v = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
    return v.validate


def run_exporter(exe: Path, *args: str | Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, check=False, timeout=60)


def read_schema(path: Path) -> pa.Schema:
    with open(path, "rb") as f:
        magic = f.read(6)
    return (ipc.open_file(path) if magic == b"ARROW1" else ipc.open_stream(path)).schema


def expected_object(r: dict[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
    values = {**r, "partition": DATE, "probs": dict(zip(CLASSES, r["probs"], strict=True))}
    return {f: values[f] for f in fields}


def same_float(got: Any, want: float, *, float32: bool) -> bool:
    """Parsed JSON number == source value (float32 sources: after rounding back to float32)."""
    if not isinstance(got, int | float) or isinstance(got, bool):
        return False
    return bool(np.float32(got) == np.float32(want)) if float32 else float(got) == want


def assert_same(got: dict[str, Any], want: dict[str, Any], *, float32: bool, where: str) -> None:
    assert list(got) == list(want), f"{where}: keys in -fields order"
    for k, w in want.items():
        g = got[k]
        if k == "score":
            assert same_float(g, w, float32=float32), f"{where}: {k} {g} != {w}"
        elif k == "probs":
            assert list(g) == list(w), f"{where}: class order"
            for c in w:
                assert same_float(g[c], w[c], float32=float32), f"{where}: probs[{c}] {g[c]} != {w[c]}"
        elif k == "scored_at":
            assert g.endswith("Z"), where
            assert dt.datetime.fromisoformat(g) == w, f"{where}: {g} != {w}"
        else:
            assert g == w, f"{where}: {k} {g!r} != {w!r}"


# ---------------------------------------------------------------------------- tests


@pytest.mark.parametrize("fmt", ["ndjson", "json"])
@pytest.mark.parametrize("producer", list(PRODUCERS))
def test_python_producers_round_trip(exporter, validate, tmp_path, producer, fmt):
    rows = source_rows()
    suffix = ".arrows" if "stream" in producer else ".arrow"
    path = tmp_path / f"date={DATE}" / f"{producer}{suffix}"
    path.parent.mkdir()
    fields = PRODUCERS[producer](path, rows)
    schema = read_schema(path)
    for name, typ in EXPECTED_TYPES[producer].items():
        assert schema.field(name).type == typ, f"{producer} wrote {name} as {schema.field(name).type}"

    proc = run_exporter(exporter, "-format", fmt, "-fields", ",".join(fields), path)
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stderr == b""
    out = proc.stdout.decode("utf-8")  # strict: the output is valid UTF-8
    if fmt == "json":
        objs = json.loads(out)
    else:
        assert out.endswith("\n")
        objs = [json.loads(line) for line in out.splitlines()]
        # U+2028/2029 are escaped, so they cannot split a line for readers that treat them as breaks
        assert "\u2028" not in out and "\u2029" not in out and "\\u2028" in out
    assert len(objs) == len(rows)
    float32 = schema.field("score").type == pa.float32()
    for i, (got, r) in enumerate(zip(objs, rows, strict=True)):
        validate(got)
        assert_same(got, expected_object(r, fields), float32=float32, where=f"{producer} row {i}")


def test_default_fields_and_folder_of_producers(exporter, validate, tmp_path):
    """A folder with a file and a stream from different producers: name order, default fields."""
    rows = source_rows()
    folder = tmp_path / f"date={DATE}"
    folder.mkdir()
    write_polars(folder / "b.arrow", rows[5:], "zstd")
    write_pyarrow_stream(folder / "a.arrows", rows[:5])
    proc = run_exporter(exporter, folder)
    assert proc.returncode == 0, proc.stderr.decode()
    objs = [json.loads(line) for line in proc.stdout.decode().splitlines()]
    assert len(objs) == len(rows)
    for i, (got, r) in enumerate(zip(objs, rows, strict=True)):
        validate(got)
        assert_same(got, expected_object(r, ("text", "label", "score")), float32=False, where=f"row {i}")


def test_empty_file_gives_no_rows(exporter, tmp_path):
    path = tmp_path / "empty.arrow"
    t = pipeline_table([])
    with ipc.new_file(path, t.schema):
        pass
    assert run_exporter(exporter, path).stdout == b""
    assert run_exporter(exporter, "-format", "json", path).stdout == b"[]\n"


@pytest.mark.parametrize(
    ("change", "where", "expected"),
    [
        ({"score": float("nan")}, 'batch 1, row 0, column "score"', "NaN, expected a number in [0, 1]"),
        ({"score": 1.5}, 'batch 1, row 0, column "score"', "1.5, expected a number in [0, 1]"),
        ({"label": None}, 'batch 1, row 0, column "label"', "null, expected a string"),
    ],
)
def test_bad_values_from_pyarrow_fail_with_file_batch_row_and_column(
    exporter, tmp_path, change, where, expected
):
    rows = source_rows()[:4]
    rows[3].update(change)
    t = pa.Table.from_pylist(rows)  # nullable, unlike the pipeline's schema
    path = tmp_path / "bad.arrow"
    with ipc.new_file(path, t.schema) as w:
        for b in t.to_batches(max_chunksize=3):
            w.write_batch(b)
    out = tmp_path / "out.ndjson"
    proc = run_exporter(exporter, "-o", out, path)
    assert proc.returncode == 1
    assert proc.stderr.decode() == f"go-exporter: {path}: {where}: {expected}\n"
    assert not out.exists()


def test_missing_column_is_named(exporter, tmp_path):
    t = pipeline_table(source_rows()).drop_columns(["score"])
    path = tmp_path / "noscore.arrow"
    with ipc.new_file(path, t.schema) as w:
        w.write_table(t)
    proc = run_exporter(exporter, path)
    assert proc.returncode == 1
    assert proc.stderr.decode() == (
        f'go-exporter: {path}: column "score": missing, expected a column of float32 or float64\n'
    )
