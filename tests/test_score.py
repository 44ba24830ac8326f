import argparse
import datetime as dt
import json
import shutil

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
import torch
from conftest import write
from safetensors.torch import load_file, save_file

from pipeline import ingest, lake, registry, score, scorepool, shardjob, train
from pipeline.config import ScoreConfig, load_config
from pipeline.errors import ConfigError, ModelError, PipelineError
from pipeline.infer import build_scorer
from pipeline.model import batch_from_flat, pad_batch
from pipeline.schema import predictions_schema
from pipeline.score import prediction_files, score_partition
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


CLOCK = dt.datetime(2026, 2, 2, 3, 4, 5, tzinfo=dt.UTC)


@pytest.fixture(autouse=True)
def fixed_clock(monkeypatch):
    """`scored_at` comes from the clock when a job starts; pin it so runs can be compared byte for byte."""
    monkeypatch.setattr(shardjob, "now", lambda: CLOCK)


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
    scorer = build_scorer(lm.model, batch_size=4)
    assert scorer.kernel == "fused"
    batched = scorer.predict_proba(ids, offsets)
    with torch.inference_mode():
        # padded, packed batches of mixed lengths through the model itself
        x, lengths = batch_from_flat(ids, offsets, np.arange(len(texts)))
        padded = torch.softmax(lm.model(x, lengths).double(), 1).numpy()
        np.testing.assert_allclose(batched, padded, atol=1e-5)
        for i in range(len(texts)):
            x, lengths = pad_batch([torch.from_numpy(ids[offsets[i] : offsets[i + 1]])])
            one = torch.softmax(lm.model(x, lengths).double(), 1)[0].numpy()
            np.testing.assert_allclose(batched[i], one, atol=1e-5)
    # the long text is cut to max_len tokens, exactly as in training
    assert offsets[4] - offsets[3] == lm.config.max_len


def test_scored_file_equals_row_by_row(scored):
    score_partition(scored, DAY, ScoreConfig(batch_size=2))
    t = read_predictions(scored)
    lm = registry.load_model(scored.models)
    with torch.inference_mode():
        for i, text in enumerate(TEXTS):
            ids, _ = encode(pl.Series([text]), lm.vocab, max_len=lm.config.max_len)
            x, lengths = pad_batch([torch.from_numpy(ids)])
            one = torch.softmax(lm.model(x, lengths).double(), 1)[0].numpy()
            np.testing.assert_allclose(t.column("probs")[i].as_py(), one, atol=1e-5)


def test_shards_are_bounded_and_rescoring_is_skipped(scored):
    m = score_partition(scored, DAY, ScoreConfig(shard_rows=3))
    assert [s["rows"] for s in m["shards"]] == [3, 3, 1]
    files = prediction_files(scored.predictions(DAY))
    assert [p.name for p in files] == [s["name"] for s in m["shards"]]
    assert [lake.sha256_file(p) for p in files] == [s["sha256"] for s in m["shards"]]
    assert [p.stat().st_size for p in files] == [s["bytes"] for s in m["shards"]]
    on_disk = lake.read_json(scored.predictions(DAY) / "_manifest.json")
    lm = registry.load_model(scored.models)
    assert on_disk["model_version"] == lm.version and on_disk["vocab_version"] == lm.vocab.version
    assert on_disk["scored_at"] == "2026-02-02T03:04:05Z" and on_disk["rows"] == len(TEXTS)
    again = score_partition(scored, DAY, ScoreConfig(shard_rows=3))
    assert again["skipped"]
    assert not list(scored.predictions(DAY).parent.glob(".*")), "no job folder is left behind"


def snapshot(data) -> dict[str, bytes]:
    folder = data.predictions(DAY)
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


class Killed(Exception):
    pass


def test_killed_run_resumes_without_rescoring_and_gives_identical_files(scored, monkeypatch):
    cfg = ScoreConfig(shard_rows=3, batch_size=2)
    monkeypatch.setattr(score, "WINDOW_ROWS", 2)  # several windows per shard, cut at shard ends
    score_partition(scored, DAY, cfg)
    uninterrupted = snapshot(scored)
    assert len(uninterrupted) == 4  # three shards and the manifest
    real_close = shardjob.ShardWriter.finish_shard
    closed: list[int] = []

    def close_then_die(self):
        real_close(self)
        closed.append(self.shard)
        raise Killed

    # a new job (the output removed, a later clock); it dies right after its first shard is complete
    for p in scored.predictions(DAY).iterdir():
        p.unlink()
    scored.predictions(DAY).rmdir()
    monkeypatch.setattr(shardjob, "now", lambda: CLOCK + dt.timedelta(hours=1))
    monkeypatch.setattr(shardjob.ShardWriter, "finish_shard", close_then_die)
    with pytest.raises(Killed):
        score_partition(scored, DAY, cfg)
    assert closed == [0] and not scored.predictions(DAY).exists()

    # the resumed run scores only the rows of the missing shards, and keeps the job's scored_at
    monkeypatch.setattr(shardjob.ShardWriter, "finish_shard", real_close)
    monkeypatch.setattr(shardjob, "now", lambda: CLOCK + dt.timedelta(hours=2))
    seen: list[int] = []
    real_predict = score.Scorer.predict_proba
    monkeypatch.setattr(
        score.Scorer,
        "predict_proba",
        lambda self, ids, offsets: seen.append(len(offsets) - 1) or real_predict(self, ids, offsets),
    )
    m = score_partition(scored, DAY, cfg)
    assert sum(seen) == len(TEXTS) - 3
    assert m["scored_at"] == "2026-02-02T04:04:05Z"
    resumed = snapshot(scored)
    assert not list(scored.predictions(DAY).parent.glob(".*")), "the job folder is removed when done"

    # identical to the uninterrupted run once scored_at is the same (it is the only difference)
    t = read_predictions(scored)
    assert set(t.column("scored_at").to_pylist()) == {CLOCK + dt.timedelta(hours=1)}
    for p in scored.predictions(DAY).iterdir():
        p.unlink()
    scored.predictions(DAY).rmdir()
    monkeypatch.setattr(shardjob, "now", lambda: CLOCK + dt.timedelta(hours=1))
    score_partition(scored, DAY, cfg)
    assert snapshot(scored) == resumed
    assert set(resumed) == set(uninterrupted)


def test_rescoring_and_workers_give_byte_identical_files(scored, monkeypatch):
    monkeypatch.setattr(score, "WINDOW_ROWS", 2)  # enough windows for worker processes to start
    score_partition(scored, DAY, ScoreConfig(shard_rows=4, workers=1))
    first = snapshot(scored)
    for p in scored.predictions(DAY).iterdir():
        p.unlink()
    started = []
    real_init = scorepool.ScoringPool.__enter__

    def spy(self):
        started.append(self.many_windows)
        return real_init(self)

    monkeypatch.setattr(scorepool.ScoringPool, "__enter__", spy)
    score_partition(scored, DAY, ScoreConfig(shard_rows=4, workers=2))  # two spawned processes
    assert started == [True]
    assert snapshot(scored) == first


def test_options_change_the_inputs_and_are_checked(scored):
    m = score_partition(scored, DAY, ScoreConfig())
    m8 = score_partition(scored, DAY, ScoreConfig(precision="int8"))
    assert not m8["skipped"] and m8["engine"] == {"kernel": "onnxruntime", "precision": "int8"}
    p8 = np.array(read_predictions(scored).column("probs").to_pylist())
    assert np.abs(p8.sum(1) - 1).max() < 1e-9 and m["inputs"] != m8["inputs"]
    with pytest.raises(ConfigError, match=r"`score\.batch_size`: input should be greater than or equal to 1"):
        load_config(None, ["score.batch_size=0"])
    assert load_config(None, ["score.workers=2", "score.precision=bf16"]).score == ScoreConfig(
        workers=2, precision="bf16"
    )
    with pytest.raises(ConfigError, match="precision"):
        load_config(None, ["score.precision=fp16"])


def test_command_line_options():
    parser = argparse.ArgumentParser()
    score.add_score_arguments(parser)
    base = ScoreConfig(shard_rows=7)
    args = parser.parse_args(["--batch-size", "64", "--workers", "2", "--precision", "bf16"])
    assert score.score_config_from_args(args, base) == ScoreConfig(
        shard_rows=7, batch_size=64, workers=2, precision="bf16"
    )
    assert score.score_config_from_args(parser.parse_args([]), base) == base
    with pytest.raises(
        ConfigError, match=r"pipeline score: `workers`: input should be greater than or equal to 1"
    ):
        score.score_config_from_args(parser.parse_args(["--workers", "0"]), base)
    with pytest.raises(SystemExit):  # not a number: argparse's usage error
        parser.parse_args(["--workers", "two"])


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


def test_a_job_record_naming_another_file_is_refused(scored, monkeypatch):
    """A job's shard records are files on disk: one naming a path outside its job is refused, not linked."""
    cfg = ScoreConfig(shard_rows=3, batch_size=2)
    real_close = shardjob.ShardWriter.finish_shard

    def close_then_die(self):
        real_close(self)
        raise Killed

    monkeypatch.setattr(shardjob.ShardWriter, "finish_shard", close_then_die)
    with pytest.raises(Killed):
        score_partition(scored, DAY, cfg)
    monkeypatch.setattr(shardjob.ShardWriter, "finish_shard", real_close)
    (record,) = scored.predictions(DAY).parent.glob(".*/_shard-00000.json")
    outside = scored.root.parent / "outside.arrow"
    shutil.copy(record.parent / "part-00000.arrow", outside)
    meta = json.loads(record.read_text())
    record.write_text(json.dumps({**meta, "name": "../../../outside.arrow"}))
    with pytest.raises(PipelineError, match=r"_shard-00000\.json: names '\.\./\.\./\.\./outside.*hint"):
        score_partition(scored, DAY, cfg)
    assert not scored.predictions(DAY).exists()


def test_non_finite_scores_are_refused_at_the_shard(scored):
    """Issue 26: finite weights whose products overflow (a model file the registry accepts) give NaN
    probabilities; scoring stops at the shard, naming it, the row and the model, and publishes nothing
    for the night's report and sinks to read."""
    lm = registry.load_model(scored.models)
    weights = scored.model(lm.version) / "model.safetensors"
    state = load_file(str(weights))
    state["ngrams.weight"] = torch.ones_like(state["ngrams.weight"])  # every row's n-gram mean: all ones
    state["head.weight"][:, -lm.config.ngram_dim :] = 3e38  # each logit sums 32 of them: inf, every class
    save_file(state, str(weights))
    registry.load_model(scored.models)  # finite: the registry lets it through
    expected = f"predictions {DAY}, shard part-00000.arrow, row id 'x0': model {lm.version} gave non-finite"
    with pytest.raises(ModelError, match=expected):
        score_partition(scored, DAY, ScoreConfig())
    assert not scored.predictions(DAY).exists()


def test_a_model_of_cleaning_2_scores_cleaning_3_text_and_no_other(scored):
    """Cleaning 3 keeps the backslashes that 2 turned into spaces, and the tokenizer splits at them as at
    a space (tests/test_tokenize.py): a model trained before scores tonight's partition. Other versions
    are refused."""
    lm = registry.load_model(scored.models)
    manifest = lake.read_manifest(scored.texts(DAY))
    assert manifest["cleaning"]["version"] == 3
    for trained_on, ok in ((2, True), (3, True), (1, False)):
        lm.meta["cleaning_version"] = trained_on
        if ok:
            registry.check_compatible(lm, manifest, where=scored.texts(DAY))
        else:
            with pytest.raises(ModelError, match="cleaned with cleaning version 3, but model"):
                registry.check_compatible(lm, manifest, where=scored.texts(DAY))
