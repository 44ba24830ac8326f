"""Pretraining on the lake: it learns (its loss falls, co-occurring words end up close), it is a versioned
input of the model (its corpus changes the version, the same corpus gives the same bytes), and a pretraining
that crashed resumes to the bytes of one that did not."""

import shutil

import numpy as np
import pytest
import torch
from conftest import tiny_corpus

from pipeline import corpus, ingest, lake, pretrain, train
from pipeline.config import load_config
from pipeline.errors import TrainingError

SETTINGS = {"window": 3, "negatives": 5, "subsample": 1e-3, "lr": 0.02, "batch_size": 256, "seed": 3}
FAST = ["model.embed_dim=16", "model.hidden_dim=16", "train.epochs=1", "model.wide_buckets=4096"]
FAST += ["model.ngram_buckets=0", "pretrain.epochs=2"]


def _topics(n_docs: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Texts each drawn from one of two disjoint word sets (ids 2..21 and 22..41)."""
    rng = np.random.default_rng(seed)
    docs = [rng.integers(2, 22, size=12) + 20 * (i % 2) for i in range(n_docs)]
    return np.concatenate(docs).astype(np.int64), np.arange(0, 12 * n_docs + 1, 12, dtype=np.int64)


def test_pretraining_lowers_its_loss_and_puts_co_occurring_words_together():
    ids, offsets = _topics()
    out = pretrain.pretrain_embeddings(ids, offsets, 42, 16, epochs=4, **SETTINGS)
    assert out.losses[-1] < 0.8 * out.losses[0]
    assert out.pairs > 0 and out.embedding.shape == (42, 16) and not out.embedding[0].any()
    e = out.embedding[2:42]
    e = torch.nn.functional.normalize(e - e.mean(0), dim=1)  # the direction all vectors share says nothing
    sim = e @ e.T
    same = torch.block_diag(torch.ones(20, 20), torch.ones(20, 20)).bool() & ~torch.eye(40, dtype=torch.bool)
    different = ~torch.block_diag(torch.ones(20, 20), torch.ones(20, 20)).bool()
    assert sim[same].mean() > sim[different].mean() + 0.3


def test_skipgram_pairs_stay_inside_a_text_and_within_reach():
    ids = np.array([10, 11, 12, 20, 21], dtype=np.int64)
    doc = np.array([0, 0, 0, 1, 1])
    keep = np.ones(5, dtype=bool)
    c, x = pretrain.skipgram_pairs(ids, doc, keep, np.ones(5, dtype=np.int64), window=2)
    assert sorted(zip(c.tolist(), x.tolist(), strict=True)) == [
        (10, 11), (11, 10), (11, 12), (12, 11), (20, 21), (21, 20)
    ]  # fmt: skip
    c, x = pretrain.skipgram_pairs(ids, doc, keep, np.full(5, 2, dtype=np.int64), window=2)
    assert (10, 12) in set(zip(c.tolist(), x.tolist(), strict=True))


def test_a_crashed_pretraining_resumes_to_the_same_bytes(tmp_path, monkeypatch):
    ids, offsets = _topics()
    clean = pretrain.pretrain_embeddings(ids, offsets, 42, 16, epochs=3, **SETTINGS)

    checkpoint = tmp_path / "ckpt.pt"
    real, calls = pretrain.skipgram_pairs, []

    def crash_in_epoch_two(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(pretrain, "skipgram_pairs", crash_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        pretrain.pretrain_embeddings(ids, offsets, 42, 16, epochs=3, checkpoint=checkpoint, **SETTINGS)
    assert checkpoint.is_file()  # epoch one was kept
    monkeypatch.setattr(pretrain, "skipgram_pairs", real)
    resumed = pretrain.pretrain_embeddings(ids, offsets, 42, 16, epochs=3, checkpoint=checkpoint, **SETTINGS)
    assert resumed.losses == clean.losses
    assert torch.equal(resumed.embedding, clean.embedding)


def test_the_pretraining_corpus_is_part_of_the_model_version_and_gives_the_same_bytes(tmp_path):
    a, b = lake.DataDir.at(tmp_path / "a"), lake.DataDir.at(tmp_path / "b")
    for d in (a, b):
        tiny_corpus(d, rows_per_day=120)
    cfg = load_config(None, FAST)
    start, end = corpus.TRAIN_DATES[0], corpus.TRAIN_DATES[-1]
    out_a = train.train(a, cfg, start=start, end=end)
    out_b = train.train(b, cfg, start=start, end=end)
    assert out_a["version"] == out_b["version"]
    emb_a = (a.model(out_a["version"]) / "embedding.safetensors").read_bytes()
    assert emb_a == (b.model(out_b["version"]) / "embedding.safetensors").read_bytes()
    # same lake, config and seed in two places: the same model, byte for byte
    assert (a.model(out_a["version"]) / "model.safetensors").read_bytes() == (
        b.model(out_b["version"]) / "model.safetensors"
    ).read_bytes()
    assert out_a["seconds"]["pretrain"] > 0

    # unlabelled text dated before the training range: not a training row, but pretraining reads it
    night = b.raw("2025-12-31")
    night.mkdir(parents=True)
    shutil.copy(b.raw(corpus.SCORE_DATE) / "news.csv", night / "news.csv")
    ingest.ingest(
        ingest.raw_sources(b, "2025-12-31"), "2025-12-31", b, ingest.IngestConfig(classes=corpus.CLASSES)
    )
    out_c = train.train(b, cfg, start=start, end=end)
    assert out_c["version"] != out_b["version"]
    assert (b.model(out_c["version"]) / "embedding.safetensors").read_bytes() != emb_a
    # and what was learnt is found again, not learnt twice
    again = train.train(b, cfg, start=start, end=end)
    assert again["skipped"] and again["version"] == out_c["version"]


def test_a_diverging_pretraining_stops_and_leaves_nothing_to_resume(tmp_path):
    """Issue 26: a learning rate that sends the word vectors to NaN is an error naming the epoch and the
    setting to lower, and leaves no checkpoint (resuming would only diverge again)."""
    ids, offsets = _topics()
    checkpoint = tmp_path / "ckpt.pt"
    diverging = {**SETTINGS, "lr": 1e30}
    with pytest.raises(TrainingError, match=r"pretraining diverged at epoch 1 .*hint: lower `pretrain.lr`"):
        pretrain.pretrain_embeddings(ids, offsets, 42, 16, epochs=3, checkpoint=checkpoint, **diverging)
    assert not checkpoint.exists()
