"""The TF-IDF head's own fit reaches the optimum scikit-learn's logistic regression reaches on the same
features (the same objective: mean cross-entropy + ||W||^2 / (2 C n), intercept free)."""

import numpy as np
import pytest
import torch
from scipy import sparse

from pipeline.model import NgramLinear, document_frequencies
from pipeline.tfidf import features, fit_tfidf_head

sklearn_linear = pytest.importorskip("sklearn.linear_model")


def _corpus(n: int, classes: int, vocab: int, seed: int) -> tuple[tuple[np.ndarray, np.ndarray], np.ndarray]:
    """Texts whose words lean to their class (with noise), as a flat encoding (ids, offsets)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, size=n)
    lengths = rng.integers(3, 15, size=n)
    docs = []
    for label, length in zip(y, lengths, strict=True):
        topical = 2 + label * (vocab // classes) + rng.integers(0, vocab // classes, size=length)
        noise = rng.integers(2, 2 + vocab, size=length)
        docs.append(np.where(rng.random(length) < 0.4, topical, noise))
    return (
        np.concatenate(docs).astype(np.int64),
        np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
    ), y


def _scipy(x: torch.Tensor) -> sparse.csr_matrix:
    i = x.indices().numpy()
    return sparse.csr_matrix((x.values().numpy(), (i[0], i[1])), shape=tuple(x.shape))


@pytest.mark.parametrize("classes", [2, 4])
def test_the_fit_reaches_scikit_learns_optimum(classes):
    enc, y = _corpus(600, classes, 60, seed=classes)
    rows = np.arange(len(y))
    train, val = rows[:500], rows[500:]
    head = NgramLinear(4099, classes)
    head.set_idf(document_frequencies(*enc, train, head.buckets), len(train))
    fit = fit_tfidf_head(head, enc, y, train, val, grid=(4.0,))
    assert fit.c == 4.0 and fit.iterations > 5

    x_train = _scipy(features(head, enc, train))
    # With two classes scikit-learn fits one weight vector v; ours holds two, w1 = -w0 = v/2 at the optimum,
    # so our penalty on them is scikit-learn's on v with C doubled. With more classes the objectives are one.
    c_ref = 8.0 if classes == 2 else 4.0
    ref = sklearn_linear.LogisticRegression(C=c_ref, tol=1e-10, max_iter=10_000).fit(x_train, y[train])
    x_val = _scipy(features(head, enc, val))
    with torch.no_grad():
        ours = torch.softmax(torch.sparse.mm(features(head, enc, val).float(), head.weight) + head.bias, 1)
    theirs = ref.predict_proba(x_val)
    assert np.abs(ours.numpy() - theirs).max() < 1e-4  # the same optimum (float32 weights in the head)
    assert (ours.argmax(1).numpy() == theirs.argmax(1)).all()
    # and the head's own forward pass on token ids gives those probabilities
    from pipeline.model import batch_from_flat

    x, lengths = batch_from_flat(*enc, val)
    with torch.no_grad():
        forward = torch.softmax(head(x, lengths), 1)
    assert torch.allclose(forward, ours, atol=1e-5)


def test_c_is_chosen_on_validation_and_every_c_tried():
    enc, y = _corpus(400, 3, 40, seed=7)
    rows = np.random.default_rng(0).permutation(len(y))
    train, val = rows[:320], rows[320:]
    head = NgramLinear(2053, 3)
    head.set_idf(document_frequencies(*enc, train, head.buckets), len(train))
    fit = fit_tfidf_head(head, enc, y, train, val, grid=(0.01, 1.0, 16.0))
    assert set(fit.tried) == {0.01, 1.0, 16.0}
    assert fit.val_accuracy == max(fit.tried.values()) == fit.tried[fit.c]
    assert fit.tried[0.01] < fit.val_accuracy  # a heavily penalised head is worse here
