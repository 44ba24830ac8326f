"""Writes the Python-made sample inputs in testdata/python/ (run from go-exporter/):

    ../.venv/bin/python testdata/gen_testdata.py

The Go tests read the files committed here and do not need Python. After
re-running this, run `go test -run TestPythonSamples -update` and review the
golden diffs.
"""

import datetime as dt
import json
import os

import polars as pl
import pyarrow as pa
import pyarrow.ipc as ipc

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "python")
CLASSES = ["negative", "neutral", "positive"]
TEXTS = [
    "great product, would buy again",
    'said "meh" \\ then left',
    "line one\nline two\ttabbed",
    "unicode: é 日本 🙂 \u2028 <b>&</b>",
    "",
]


def rows(n, start=0):
    out = []
    for i in range(start, start + n):
        p = [[0.1, 0.2, 0.7], [0.625, 0.25, 0.125], [0.2, 0.5, 0.3]][i % 3]
        best = max(range(3), key=lambda k: p[k])
        out.append(
            dict(
                id=f"py{i:04d}",
                text=TEXTS[i % len(TEXTS)],
                label=CLASSES[best],
                label_id=best,
                score=p[best],
                probs=p,
                model_version="m-2026.01",
                scored_at=dt.datetime(2026, 1, 4, 2, 0, 0, 123456, tzinfo=dt.timezone.utc)
                + dt.timedelta(seconds=i),
            )
        )
    return out


def pipeline_schema():
    return pa.schema(
        [
            ("id", pa.utf8()),
            ("text", pa.utf8()),
            ("label", pa.utf8()),
            ("label_id", pa.int32()),
            ("score", pa.float64()),
            ("probs", pa.list_(pa.float64(), 3)),
            ("model_version", pa.utf8()),
            ("scored_at", pa.timestamp("us", tz="UTC")),
        ],
        metadata={
            "pipeline.schema_version": "1",
            "pipeline.classes": json.dumps(CLASSES),
            "pipeline.vocab_version": "vocab-3",
            "pipeline.model_version": "m-2026.01",
            "pipeline.partition": "2026-01-04",
        },
    )


def main():
    os.makedirs(os.path.join(OUT, "date=2026-01-04"), exist_ok=True)

    # 1. The pipeline's own format: an IPC file, ZSTD, two batches.
    schema = pipeline_schema()
    path = os.path.join(OUT, "date=2026-01-04", "part-00000.arrow")
    opts = ipc.IpcWriteOptions(compression="zstd")
    with ipc.new_file(path, schema, options=opts) as w:
        for start, n in [(0, 4), (4, 3)]:
            w.write_batch(pa.RecordBatch.from_pylist(rows(n, start), schema=schema))

    # 2. A stream with dictionary labels, float32 score, list<float32> probs, LZ4.
    schema2 = pa.schema(
        [
            ("text", pa.large_utf8()),
            ("label", pa.dictionary(pa.int8(), pa.utf8())),
            ("score", pa.float32()),
            ("probs", pa.list_(pa.float32())),
        ],
        metadata={"pipeline.classes": json.dumps(CLASSES)},
    )
    path = os.path.join(OUT, "date=2026-01-04", "part-00001.arrows")
    opts = ipc.IpcWriteOptions(compression="lz4")
    with ipc.new_stream(path, schema2, options=opts) as w:
        for start in (0, 3):
            r = rows(3, start)
            w.write_batch(
                pa.RecordBatch.from_arrays(
                    [
                        pa.array([x["text"] for x in r], pa.large_utf8()),
                        pa.array([x["label"] for x in r]).dictionary_encode().cast(pa.dictionary(pa.int8(), pa.utf8())),
                        pa.array([x["score"] for x in r], pa.float32()),
                        pa.array([x["probs"] for x in r], pa.list_(pa.float32())),
                    ],
                    schema=schema2,
                )
            )

    # 3. polars' own writer (string_view columns, large lists).
    df = pl.DataFrame(rows(4)).select("id", "text", "label", "score", "probs", "scored_at")
    df.write_ipc(os.path.join(OUT, "polars.arrow"), compression="lz4")
    print(pl.read_ipc_schema(os.path.join(OUT, "polars.arrow")))


if __name__ == "__main__":
    main()
