"""The TF-IDF head fitted to its optimum: L2-regularised multinomial logistic regression, a convex problem,
solved to convergence by L-BFGS on its own (not stopped on the sequence head's epochs).

Its features are `NgramLinear`'s: hashed unigrams and bigrams, TF-IDF weighted, L2-normalised per text.
Only the buckets the training rows use can get a non-zero weight (the penalty keeps the rest at 0), so the
fit runs on a sparse matrix of those columns alone, in float64, with the gradient written out:

    loss(W, b) = mean_i cross_entropy(x_i W + b, y_i) + ||W||^2 / (2 C n)

the objective of scikit-learn's `LogisticRegression(C=C)` (the intercept is not penalised). The strength C
is chosen on the validation rows from `C_GRID` (each fit starts from the previous one's optimum).
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from pipeline.model import NgramLinear, batch_from_flat, hash_ngrams

log = logging.getLogger(__name__)

C_GRID = (4.0, 16.0, 64.0)  # inverse regularisation strengths tried, most regularised first


@dataclass(frozen=True)
class TfidfFit:
    c: float  # the chosen inverse regularisation strength
    val_accuracy: float
    val_loss: float
    tried: dict[float, float]  # C -> validation accuracy
    iterations: int
    seconds: float


def features(
    head: NgramLinear, enc: tuple[np.ndarray, np.ndarray], rows: np.ndarray, batch_size: int = 2048
) -> torch.Tensor:
    """The head's input for `rows` as a sparse COO matrix (len(rows), buckets), float64, coalesced:
    repeated n-grams add up, exactly as `NgramLinear.forward` weighs them."""
    r_all, c_all, v_all = [], [], []
    for s in range(0, len(rows), batch_size):
        x, lengths = batch_from_flat(*enc, rows[s : s + batch_size])
        grams = hash_ngrams(x, lengths, head.buckets)
        w = head.idf[grams].masked_fill(grams == 0, 0.0).double()
        w = w / w.norm(dim=1, keepdim=True).clamp_min(1e-12)
        nz = grams > 0
        r_all.append(torch.arange(s, s + len(x))[:, None].expand_as(grams)[nz])
        c_all.append(grams[nz])
        v_all.append(w[nz])
    index = torch.stack([torch.cat(r_all), torch.cat(c_all)])
    values = torch.cat(v_all)
    return torch.sparse_coo_tensor(index, values, (len(rows), head.buckets), check_invariants=True).coalesce()


def _restrict(x: torch.Tensor, lookup: torch.Tensor, width: int) -> torch.Tensor:
    """Columns of a COO matrix renumbered by `lookup` (-1: dropped), as CSR."""
    rows, cols = x.indices()
    new = lookup[cols]
    keep = new >= 0
    out = torch.sparse_coo_tensor(
        torch.stack([rows[keep], new[keep]]), x.values()[keep], (x.size(0), width), check_invariants=True
    )
    return _csr(out.coalesce())


def _csr(x: torch.Tensor) -> torch.Tensor:
    """COO -> CSR (sparse products several times faster), without torch's one-time "beta" warning: CSR
    matrix products on the CPU are what the fit relies on, and tests/test_tfidf.py checks their result."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Sparse CSR tensor support is in beta", UserWarning)
        return x.to_sparse_csr()


def minimise(
    x: torch.Tensor, xt: torch.Tensor, y: torch.Tensor, c: float, w: torch.Tensor, b: torch.Tensor
) -> int:
    """Fit (w, b) in place to the objective above for one C; x is (n, k) CSR, xt its transpose.
    Returns L-BFGS's iteration count."""
    n = x.size(0)
    lam = 1.0 / (c * n)
    onehot = torch.nn.functional.one_hot(y, w.size(1)).double()
    opt = torch.optim.LBFGS(
        [w, b],
        lr=1,
        max_iter=1000,
        tolerance_grad=1e-6,  # on the mean loss; scikit-learn stops at 1e-4
        tolerance_change=1e-12,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        logits = torch.sparse.mm(x, w.detach()) + b.detach()
        loss = -(torch.log_softmax(logits, 1) * onehot).sum() / n + lam / 2 * (w.detach() ** 2).sum()
        g = (torch.softmax(logits, 1) - onehot) / n
        w.grad = torch.sparse.mm(xt, g) + lam * w.detach()
        b.grad = g.sum(0)
        return loss

    opt.step(closure)
    return int(opt.state[w]["n_iter"])


@torch.no_grad()
def fit_tfidf_head(
    head: NgramLinear,
    enc: tuple[np.ndarray, np.ndarray],
    y: np.ndarray,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    grid: tuple[float, ...] = C_GRID,
) -> TfidfFit:
    """Fit `head` (its `idf` already set from the training rows) to convergence on `train_idx`, for each C
    of `grid`; keep the C with the best validation accuracy (ties: the lower validation loss)."""
    t0 = time.perf_counter()
    classes = head.weight.size(1)
    x_train, x_val = features(head, enc, train_idx), features(head, enc, val_idx)
    used = torch.unique(x_train.indices()[1])
    lookup = torch.full((head.buckets,), -1, dtype=torch.int64)
    lookup[used] = torch.arange(len(used))
    x_train, x_val = _restrict(x_train, lookup, len(used)), _restrict(x_val, lookup, len(used))
    xt = _csr(x_train.to_sparse_coo().t().coalesce())
    y_train, y_val = torch.from_numpy(y[train_idx]), torch.from_numpy(y[val_idx])
    w = torch.zeros(len(used), classes, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(classes, dtype=torch.float64, requires_grad=True)
    best: tuple[float, float, float, torch.Tensor, torch.Tensor] | None = None
    tried, iterations = {}, 0
    for c in grid:
        with torch.enable_grad():
            iterations += minimise(x_train, xt, y_train, c, w, b)
        logits = torch.sparse.mm(x_val, w.detach()) + b.detach()
        acc = float((logits.argmax(1) == y_val).double().mean())
        loss = float(torch.nn.functional.cross_entropy(logits, y_val))
        tried[c] = acc
        log.info("TF-IDF head C=%g: validation accuracy %.4f, loss %.4f", c, acc, loss)
        if best is None or (acc, -loss) > (best[0], -best[1]):
            best = (acc, loss, c, w.detach().clone(), b.detach().clone())
    assert best is not None
    acc, loss, c, w_best, b_best = best
    head.weight.zero_()
    head.weight[used] = w_best.to(head.weight)
    head.bias.copy_(b_best.to(head.bias))
    return TfidfFit(c, acc, loss, tried, iterations, time.perf_counter() - t0)
