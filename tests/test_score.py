import json

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
import torch
from conftest import write

from pipeline import ingest, registry, train
from pipeline.config import ScoreConfig, load_config
from pipeline.errors import ModelError, PipelineError
from pipeline.model import pad_batch
from pipeline.schema import predictions_schema
from pipeline.score import predict_proba, prediction_files, score_partition
from pipeline.vocab import encode

DAY = "2026-02-01"
# mixed lengths, an unseen token, Chinese, a text far longer than max_len, punctuation only
TEXTS = [
    "stocks rally",
    "zzzunseen qqq",
    "足球比赛冠军",
    " ".join(["market"] * 500),
    "!!!",
    "engineers beat bankers in the final",
    "a",
]


@pytest.fixture
def scored(data, tmp_path):
    train_src = write(
        tmp_path / "train.csv",
        "text,label\n"
        + "".join(f"stocks market {i},B\nfootball match {i},S\n足球 {i},S\n" for i in range(30)),
    )
    ingest.ingest([train_src], "2026-01-01", data, ingest.IngestConfig())
    train.train(
        data,
        load_config(None, ["model.embed_dim=8", "model.hidden_dim=8", "train.epochs=1", "model.max_len=16"]),
    )
    src = write(tmp_path / "day.csv", "id,text\n" + "".join(f"x{i},{t}\n" for i, t in enumerate(TEXTS)))
    ingest.ingest([src], DAY, data, ingest.IngestConfig())
    return data


def read_predictions(data) -> pa.Table:
    return pa.concat_tables(pa.ipc.open_file(p).read_all() for p in prediction_files(data.predictions(DAY)))


def test_output_follows_schema_v1_and_input_order(scored):
    m = score_partition(scored, DAY, ScoreConfig())
    t = read_predictions(scored)
    lm = registry.load_model(scored.models)
    expected = predictions_schema(
        lm.labels, model_version=lm.version, vocab_version=lm.vocab.version, partition=DAY
    )
    assert t.schema.equals(expected, check_metadata=True)
    assert json.loads(t.schema.metadata[b"pipeline.classes"]) == ["B", "S"]
    assert t.column("id").to_pylist() == [f"x{i}" for i in range(len(TEXTS))]
    probs = np.array(t.column("probs").to_pylist())
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-12)
    assert (t.column("score").to_numpy() == probs.max(1)).all()
    assert [lm.labels[i] for i in t.column("label_id").to_pylist()] == t.column("label").to_pylist()
    assert m["rows"] == len(TEXTS) and m["shards"][0]["rows"] == len(TEXTS)


def test_batched_equals_row_by_row(scored):
    lm = registry.load_model(scored.models)
    texts = pl.Series(TEXTS * 5)
    ids, offsets = encode(texts, lm.vocab, max_len=lm.config.max_len)
    batched = predict_proba(lm.model, ids, offsets, batch_size=4)
    with torch.inference_mode():
        for i in range(len(texts)):
            x, lengths = pad_batch([torch.from_numpy(ids[offsets[i] : offsets[i + 1]])])
            one = torch.softmax(lm.model(x, lengths).double(), 1)[0].numpy()
            np.testing.assert_allclose(batched[i], one, atol=1e-5)
    # the long text is cut to max_len tokens, exactly as in training
    assert offsets[4] - offsets[3] == lm.config.max_len


def test_shards_are_bounded_and_rescoring_is_skipped(scored):
    m = score_partition(scored, DAY, ScoreConfig(shard_rows=3))
    assert [s["rows"] for s in m["shards"]] == [3, 3, 1]
    assert [p.name for p in prediction_files(scored.predictions(DAY))] == [s["name"] for s in m["shards"]]
    again = score_partition(scored, DAY, ScoreConfig(shard_rows=3))
    assert again["skipped"]


def test_missing_partition_and_model_are_clear_errors(scored):
    with pytest.raises(PipelineError, match="no complete partition"):
        score_partition(scored, "2030-01-01", ScoreConfig())
    with pytest.raises(ModelError, match="no complete model 'nope'"):
        score_partition(scored, DAY, ScoreConfig(), model_version="nope")


def test_pickled_weights_are_refused(scored):
    lm = registry.load_model(scored.models)
    weights = scored.model(lm.version) / "model.safetensors"
    torch.save({"x": torch.zeros(1)}, weights)  # a pickle where safetensors should be
    with pytest.raises(ModelError, match="will not be unpickled"):
        registry.load_model(scored.models)
