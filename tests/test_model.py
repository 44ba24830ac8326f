import numpy as np
import pytest
import torch
from conftest import randomise_wide_head

from pipeline.model import (
    LESSON_CONFIGS,
    ModelConfig,
    TextClassifier,
    batch_from_flat,
    document_frequencies,
    hash_ngrams,
    lesson_config,
    pad_batch,
)

LESSON = {
    **{name: lesson_config(name) for name in LESSON_CONFIGS},
    "gru-max": ModelConfig(rnn_type="gru", pooling="max", embed_dim=16, hidden_dim=24, ngram_buckets=0),
    "default (bilstm-max + ngrams)": ModelConfig(embed_dim=16, hidden_dim=24, ngram_buckets=97),
    "default with a small tf-idf head": ModelConfig(
        embed_dim=16, hidden_dim=24, ngram_buckets=97, wide_buckets=89
    ),
}


@pytest.mark.parametrize("cfg", LESSON.values(), ids=LESSON.keys())
def test_padding_never_changes_a_prediction(cfg):
    torch.manual_seed(0)
    model = randomise_wide_head(TextClassifier(cfg, vocab_size=40, num_classes=3).eval())
    seqs = [torch.randint(2, 40, (n,)) for n in (5, 1, 9, 3)]
    with torch.no_grad():
        alone = torch.cat([model(*pad_batch([s])) for s in seqs])
        ids, lengths = pad_batch(seqs)
        together = model(ids, lengths)
        extra = model(torch.nn.functional.pad(ids, (0, 7)), lengths)  # more padding on the right
    torch.testing.assert_close(together, alone, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(extra, together, atol=1e-6, rtol=1e-6)
    assert torch.equal(extra.argmax(1), alone.argmax(1))


def test_batch_from_flat_pads_rows_in_the_order_asked():
    ids = np.array([5, 5, 5, 6, 7, 7])
    offsets = np.array([0, 3, 4, 6])
    x, lengths = batch_from_flat(ids, offsets, np.array([2, 0, 1]))
    assert x.tolist() == [[7, 7, 0], [5, 5, 5], [6, 0, 0]]
    assert lengths.tolist() == [2, 3, 1]


def test_loss_goes_down_on_a_tiny_task():
    torch.manual_seed(0)
    model = TextClassifier(
        lesson_config("lstm-last", embed_dim=8, hidden_dim=16), vocab_size=6, num_classes=2
    )
    ids, lengths = pad_batch([torch.tensor([2, 3, 4]), torch.tensor([4, 3, 2]), torch.tensor([2, 5])])
    y = torch.tensor([0, 1, 0])  # the first two differ only in order
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    losses = []
    for _ in range(60):
        loss = torch.nn.functional.cross_entropy(model(ids, lengths), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.05 < losses[0]


def test_weigh_heads_trusts_the_head_that_is_right_on_held_out_rows():
    torch.manual_seed(0)
    model = TextClassifier(
        ModelConfig(embed_dim=8, hidden_dim=8, wide_buckets=31), vocab_size=10, num_classes=4
    )
    target = torch.randint(0, 4, (400,))
    good = torch.nn.functional.one_hot(target, 4).float() * 3 + torch.randn(400, 4)  # right ~90%
    noise = torch.randn(400, 4) * 3  # right ~25%, and confident about it
    model.weigh_heads([good, noise], target)
    w_good, w_noise = model.head_weights.tolist()
    assert w_good > 0.5 and w_noise < 0.1 * w_good
    combined = model.combine([good, noise]).argmax(1)
    assert (combined == target).float().mean() >= (good.argmax(1) == target).float().mean() - 0.01
    first = model.head_weights.clone()
    model.weigh_heads([good, noise], target)
    assert torch.equal(model.head_weights, first)  # deterministic


def test_document_frequencies_count_each_ngram_once_per_text():
    ids = np.array([5, 5, 5, 6, 7, 7, 6, 5])  # texts [5 5 5] [6] [7 7 6 5]
    offsets = np.array([0, 3, 4, 8])
    buckets = 1009
    df = document_frequencies(ids, offsets, np.array([0, 1, 2]), buckets, batch_size=2)
    expected = torch.zeros(buckets, dtype=torch.int64)
    for r in range(3):
        x, lengths = batch_from_flat(ids, offsets, np.array([r]))
        for b in set(hash_ngrams(x, lengths, buckets)[0].tolist()) - {0}:
            expected[b] += 1
    assert torch.equal(df, expected)
    assert int(df.max()) == 2  # the unigram 5 (texts 0 and 2) and 6 (texts 1 and 2)
