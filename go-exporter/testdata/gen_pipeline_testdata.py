"""Writes testdata/pipeline/date=2026-02-01/part-0000N.arrow with the pipeline itself (`make testdata`):

    .venv/bin/python go-exporter/testdata/gen_pipeline_testdata.py

A tiny model is trained on a tiny lake and `pipeline.score.score_partition` scores a day of texts with
the JSON encoder's edge cases into two shards. Ingest turns backslashes, control characters and
U+2028/2029 into spaces, so of those only quotes, HTML, CJK and emoji reach the files; the other escapes
are covered by the Go tests and tests/test_exporter_crosslang.py. The clock is pinned and torch runs on
one thread, so the files come out byte-identical on every run on the same platform. TestPipelineGolden
(pipeline_test.go) compares go-exporter's output on them with testdata/golden/pipeline_*.golden; if the
files change on purpose (a new model or schema), run `go test -run TestPipelineGolden -update` and
review the golden diff.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import shutil
import sys
import tempfile
from pathlib import Path

import torch

from pipeline import ingest, lake, score, train
from pipeline.config import ScoreConfig, load_config

OUT = Path(__file__).resolve().parent / "pipeline"
DAY = "2026-02-01"
CLOCK = dt.datetime(2026, 2, 2, 3, 4, 5, tzinfo=dt.UTC)  # the job's scored_at
TEXTS = [
    "stocks rally as the market opens",
    'he said "goal!" \\ then left',
    "tab\there, newline\nthere, bell\x07, escape\x1b",
    "line\u2028separator and paragraph\u2029separator",
    "<b>html</b> & stays & raw",
    "足球比赛冠军 日本語 한국어",
    "emoji 🙂⚽📈 and a family 👨‍👩‍👧",
    "engineers beat bankers in the final " * 12,
    "zzzunseen qqq",
    "a",
]


def write_jsonl(path: Path, rows: list[dict[str, str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def generate(out: Path) -> list[Path]:
    """Train, score and copy the prediction shards to `out/date=DAY/`; return the files written."""
    torch.set_num_threads(1)  # the same reduction order on every run
    score._now = lambda: CLOCK  # one scored_at per job; pinned so the bytes do not depend on the day
    with tempfile.TemporaryDirectory(prefix="gen-pipeline-testdata-") as tmp:
        # sources inside the data root are recorded by relative path, so the lake files and hence
        # the model version do not depend on the temporary folder's name
        data = lake.DataDir.at(Path(tmp) / "data")
        train_rows = [
            {"id": f"t{i}-{k}", "text": text, "label": label}
            for i in range(30)
            for k, (text, label) in enumerate(
                [(f"stocks market {i}", "business"), (f"football match {i}", "sport"), (f"足球 {i}", "sport")]
            )
        ]
        train_src = write_jsonl(data.raw("2026-01-01") / "train.jsonl", train_rows)
        ingest.ingest([train_src], "2026-01-01", data, ingest.IngestConfig())
        overrides = ["model.embed_dim=8", "model.hidden_dim=8", "train.epochs=1", "model.max_len=16"]
        # the architecture these files were made with (the LSTM on its last state, no n-gram bag)
        overrides += ["model.bidirectional=false", "model.pooling=last", "model.dropout=0.0"]
        overrides += ["model.ngram_buckets=0", "model.ngram_dim=64", "model.wide_buckets=0"]
        cfg = load_config(None, overrides)
        train.train(data, cfg)
        day_rows = [{"id": f"x{i:02d}", "text": t} for i, t in enumerate(TEXTS)]
        day_src = write_jsonl(data.raw(DAY) / "day.jsonl", day_rows)
        ingest.ingest([day_src], DAY, data, ingest.IngestConfig())
        score.score_partition(data, DAY, ScoreConfig(shard_rows=6))  # two shards: 6 rows and 4

        dest = out / f"date={DAY}"
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        written = []
        for p in score.prediction_files(data.predictions(DAY)):
            shutil.copyfile(p, dest / p.name)
            written.append(dest / p.name)
        return written


def main() -> int:
    logging.basicConfig(level=logging.WARNING)
    for p in generate(OUT):
        print(f"wrote {p} ({p.stat().st_size} bytes, sha256 {lake.sha256_file(p)[:16]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
