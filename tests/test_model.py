import numpy as np
import pytest
import torch

from pipeline.model import (
    LESSON_CONFIGS,
    ModelConfig,
    TextClassifier,
    batch_from_flat,
    lesson_config,
    pad_batch,
)

LESSON = {
    **{name: lesson_config(name) for name in LESSON_CONFIGS},
    "gru-max": ModelConfig(rnn_type="gru", pooling="max", embed_dim=16, hidden_dim=24, ngram_buckets=0),
    "default (bilstm-max + ngrams)": ModelConfig(embed_dim=16, hidden_dim=24, ngram_buckets=97),
}


@pytest.mark.parametrize("cfg", LESSON.values(), ids=LESSON.keys())
def test_padding_never_changes_a_prediction(cfg):
    torch.manual_seed(0)
    model = TextClassifier(cfg, vocab_size=40, num_classes=3).eval()
    seqs = [torch.randint(2, 40, (n,)) for n in (5, 1, 9, 3)]
    with torch.no_grad():
        alone = torch.cat([model(*pad_batch([s])) for s in seqs])
        ids, lengths = pad_batch(seqs)
        together = model(ids, lengths)
        extra = model(torch.nn.functional.pad(ids, (0, 7)), lengths)  # more padding on the right
    torch.testing.assert_close(together, alone, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(extra, together, atol=0, rtol=0)


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
