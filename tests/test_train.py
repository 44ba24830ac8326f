import json
import os

import numpy as np
import pytest
import torch
from conftest import tiny_corpus
from safetensors.torch import load_file

from pipeline import dataset, registry, train, trainloop
from pipeline.config import load_config
from pipeline.errors import InputError

FAST = ["model.embed_dim=16", "model.hidden_dim=32", "train.epochs=3", "train.batch_size=32"]


def test_stratified_split_keeps_class_shares():
    y = np.array([0] * 80 + [1] * 20)
    tr, va = dataset.stratified_split(y, 0.1, seed=1)
    assert sorted([*tr, *va]) == list(range(100))
    assert (y[va] == 0).sum() == 8 and (y[va] == 1).sum() == 2


def test_length_batches_cover_every_row_once_with_little_padding():
    lengths = np.random.default_rng(0).integers(1, 100, size=1000)
    batches = dataset.length_batches(lengths, 32, np.random.default_rng(1))
    rows = np.concatenate(batches)
    assert sorted(rows.tolist()) == list(range(1000))
    padding = sum(lengths[b].max() * len(b) - lengths[b].sum() for b in batches)
    assert padding / lengths.sum() < 0.05


def test_train_publishes_a_complete_model_and_latest(data):
    tiny_corpus(data)
    out = train.train(data, load_config(None, [*FAST, "train.epochs=8"]))
    folder = data.model(out["version"])
    for name in [
        "model.safetensors",
        "config.json",
        "vocab.json",
        "metrics.json",
        "confusion.png",
        "curves.png",
        "card.md",
    ]:
        assert (folder / name).is_file(), name
    assert os.readlink(data.models / "latest") == out["version"]
    assert out["val_accuracy"] > 0.6
    lm = registry.load_model(data.models)
    assert lm.labels == ["Business", "Sci/Tech", "Sports", "World"]
    # the default model's two heads: the TF-IDF head got its idf, and both were weighed on validation
    history = json.loads((folder / "metrics.json").read_text())["history"]
    assert {"val_acc_sequence", "val_acc_tfidf", "weight_sequence", "weight_tfidf"} <= history[-1].keys()
    weights = load_file(str(folder / "model.safetensors"))
    assert weights["wide.idf"].min() >= 1 and weights["wide.idf"].max() > 2
    assert weights["head_weights"].tolist() != [1.0, 1.0]
    # same inputs: found, not retrained
    again = train.train(data, load_config(None, [*FAST, "train.epochs=8"]))
    assert again["skipped"] and again["version"] == out["version"]


def test_interrupted_fit_resumes_to_the_same_weights(data, tmp_path):
    tiny_corpus(data, rows_per_day=120)
    cfg = load_config(None, [*FAST, "train.epochs=4", "train.patience=10"])
    df = dataset.read_lake(dataset.lake_files(data, None, None))
    from pipeline.model import TextClassifier
    from pipeline.vocab import build_vocab, encode

    vocab = build_vocab(df.lazy(), cfg.vocab)
    labels = sorted(df["label"].unique().to_list())
    y = np.array([labels.index(x) for x in df["label"]])
    enc = encode(df["text"], vocab, max_len=64)
    tr, va = dataset.stratified_split(y, 0.1, 1)

    def run(epochs, ckpt):
        from dataclasses import replace

        torch.manual_seed(3)
        m = TextClassifier(cfg.model, len(vocab), len(labels))
        tc = replace(cfg.train, epochs=epochs)
        return trainloop.fit(m, enc, y, tr, va, tc, device="cpu", checkpoint=ckpt)

    straight, _, _ = run(4, None)
    ckpt = tmp_path / "ck.pt"
    run(2, ckpt)  # "killed" after epoch 2
    resumed, hist2, _ = run(4, ckpt)
    assert [h["epoch"] for h in hist2] == [1, 2, 3, 4]
    for k in straight:
        assert torch.equal(straight[k], resumed[k]), k


def test_training_without_labels_is_a_clear_error(data):
    with pytest.raises(InputError, match="labelled rows"):
        train.train(data, load_config(None, FAST))


def test_the_sequence_head_is_what_wide_buckets_0_trains(tmp_path):
    """Each head is fitted on its own: the default model's sequence head is the sequence model alone."""
    from pipeline import lake

    fast = [*FAST, "model.ngram_buckets=512", "pretrain.epochs=1"]
    both_d, alone_d = lake.DataDir.at(tmp_path / "both"), lake.DataDir.at(tmp_path / "alone")
    for d in (both_d, alone_d):
        tiny_corpus(d, rows_per_day=120)
    both = train.train(both_d, load_config(None, [*fast, "model.wide_buckets=4096"]))
    alone = train.train(alone_d, load_config(None, [*fast, "model.wide_buckets=0"]))
    w_both = load_file(str(both_d.model(both["version"]) / "model.safetensors"))
    w_alone = load_file(str(alone_d.model(alone["version"]) / "model.safetensors"))
    assert {k for k in w_both if not k.startswith("wide.")} - {"head_weights"} == w_alone.keys()
    for k in w_alone:
        assert torch.equal(w_both[k], w_alone[k]), k
    assert both["heads"]["val_acc_sequence"] == alone["heads"]["val_acc_sequence"]
    assert both["heads"]["tfidf"]["c"] in (4.0, 16.0, 64.0)
