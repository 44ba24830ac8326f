"""The inference kernels (pipeline/infer.py): the fused kernel equals the model row by row, for every
configuration it claims; anything else falls back to the generic kernel."""

import dataclasses
import itertools

import numpy as np
import polars as pl
import pytest
import torch
from conftest import randomise_wide_head

from pipeline.infer import build_scorer, equal_length_batches, fused_support
from pipeline.model import ModelConfig, TextClassifier, pad_batch
from pipeline.settings import setting, settings
from pipeline.vocab import VocabConfig, build_vocab, encode

# mixed lengths, unknown tokens, Chinese, a text far longer than max_len, punctuation only
TEXTS = [
    "stocks rally as the market climbs",
    "zzzunseen qqq stocks",
    "足球比赛冠军",
    " ".join(["market"] * 100),
    "!!!",
    "engineers beat bankers in the final",
    "a",
    "股市 银行 利润 market",
    "the the the",
]
MAX_LEN = 24


@pytest.fixture(scope="module")
def encoded():
    vocab = build_vocab(pl.LazyFrame({"text": TEXTS[:2] + TEXTS[5:7]}), VocabConfig())
    ids, offsets = encode(pl.Series(TEXTS * 3), vocab, max_len=MAX_LEN)
    assert np.diff(offsets).max() == MAX_LEN and (ids == 1).any()  # cut, and unknown tokens present
    return vocab, ids, offsets


def make_model(cfg: ModelConfig, vocab_size: int, seed: int = 0) -> TextClassifier:
    torch.manual_seed(seed)
    return TextClassifier(cfg, vocab_size, 3).eval()


def row_by_row(model: TextClassifier, ids: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    rows = []
    with torch.inference_mode():
        for i in range(len(offsets) - 1):
            x, lengths = pad_batch([torch.from_numpy(ids[offsets[i] : offsets[i + 1]])])
            rows.append(torch.softmax(model(x, lengths).double(), 1)[0].numpy())
    return np.stack(rows)


CONFIGS = [
    ModelConfig(
        rnn_type=r, bidirectional=b, num_layers=n, pooling=p, embed_dim=8, hidden_dim=6, max_len=MAX_LEN
    )
    for r, b, n, p in itertools.product(
        ["rnn", "lstm", "gru"], [False, True], [1, 2, 3], ["last", "mean", "max"]
    )
]


@pytest.mark.parametrize(
    "cfg", CONFIGS, ids=lambda c: f"{c.rnn_type}-bi{int(c.bidirectional)}-{c.num_layers}-{c.pooling}"
)
def test_fused_equals_row_by_row(encoded, cfg):
    vocab, ids, offsets = encoded
    model = make_model(dataclasses.replace(cfg, dropout=0.3), len(vocab))
    scorer = build_scorer(model, batch_size=4)
    assert scorer.kernel == "fused"
    np.testing.assert_allclose(scorer.predict_proba(ids, offsets), row_by_row(model, ids, offsets), atol=1e-5)


def test_default_sized_model_is_exact(encoded):
    vocab, ids, offsets = encoded
    model = make_model(ModelConfig(max_len=MAX_LEN), len(vocab), seed=3)
    with torch.no_grad():  # larger weights than at init, so the states saturate and differences would show
        for p in model.parameters():
            p.mul_(3)
    fused = build_scorer(model, batch_size=5).predict_proba(ids, offsets)
    np.testing.assert_allclose(fused, row_by_row(model, ids, offsets), atol=1e-5)


def test_unknown_models_fall_back_to_the_generic_kernel(encoded):
    vocab, ids, offsets = encoded

    @settings
    class NewConfig(ModelConfig):
        attention: bool = setting(True, "a new option the fused kernel does not know")

    class NewModel(TextClassifier):
        pass

    new_option = make_model(NewConfig(max_len=MAX_LEN, embed_dim=8, hidden_dim=6), len(vocab))
    subclass = NewModel(ModelConfig(max_len=MAX_LEN, embed_dim=8, hidden_dim=6), len(vocab), 3).eval()
    for model in (new_option, subclass):
        assert fused_support(model) is not None
        scorer = build_scorer(model, batch_size=4)
        assert scorer.kernel == "generic"
        np.testing.assert_allclose(
            scorer.predict_proba(ids, offsets), row_by_row(model, ids, offsets), atol=1e-5
        )
        with pytest.raises(ValueError, match="fused"):
            build_scorer(model, batch_size=4, kernel="fused")
        int8 = build_scorer(model, batch_size=4, precision="int8")  # the graph could not reproduce it
        assert (int8.kernel, int8.precision) == ("generic", "fp32")


HEADS = {
    "ngram bag": {"bidirectional": True, "ngram_buckets": 64, "ngram_dim": 5, "wide_buckets": 0},
    "tfidf head": {"wide_buckets": 53},
}


@pytest.mark.parametrize("pooling", ["last", "mean", "max"])
@pytest.mark.parametrize("heads", HEADS.values(), ids=HEADS.keys())
def test_fused_kernel_covers_the_ngram_bag_and_the_tfidf_head(encoded, pooling, heads):
    vocab, ids, offsets = encoded
    cfg = ModelConfig(max_len=MAX_LEN, embed_dim=8, hidden_dim=6, pooling=pooling, **heads)
    model = randomise_wide_head(make_model(cfg, len(vocab)))
    scorer = build_scorer(model, batch_size=4)
    assert scorer.kernel == "fused"
    np.testing.assert_allclose(scorer.predict_proba(ids, offsets), row_by_row(model, ids, offsets), atol=1e-5)


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_reduced_precision_stays_close(encoded, precision):
    vocab, ids, offsets = encoded
    model = make_model(ModelConfig(max_len=MAX_LEN, bidirectional=True, pooling="mean"), len(vocab))
    exact = row_by_row(model, ids, offsets)
    scorer = build_scorer(model, batch_size=8, precision=precision)
    probs = scorer.predict_proba(ids, offsets)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-9)
    assert np.abs(probs - exact).max() < 0.05
    assert next(model.parameters()).dtype == torch.float32  # the model given is not changed


def test_equal_length_batches_cover_every_row_once():
    lengths = np.array([3, 1, 3, 2, 3, 1, 3])
    batches = equal_length_batches(lengths, 2)
    assert [b.tolist() for b in batches] == [[1, 5], [3], [0, 2], [4, 6]]
    assert all(len(set(lengths[b])) == 1 for b in batches)
    empty = build_scorer(make_model(ModelConfig(embed_dim=4, hidden_dim=4), 10), batch_size=2)
    assert empty.predict_proba(np.zeros(0, np.int64), np.zeros(1, np.int64)).shape == (0, 3)
