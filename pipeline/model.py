"""The classifier family: embedding -> RNN/LSTM/GRU (layers, directions, dropout) -> pooling -> linear,
optionally beside a hashed bag of n-grams, and optionally a second head: a TF-IDF-weighted logistic
regression over hashed unigrams and bigrams (`NgramLinear`), weighed against the first on validation.

The four classifiers of the classic RNN lesson are configurations of it (`LESSON_CONFIGS`):

    RNN, mean pooling            rnn_type="rnn", pooling="mean"
    LSTM, last hidden state      rnn_type="lstm", pooling="last"
    bidirectional LSTM           rnn_type="lstm", pooling="last", bidirectional=True
    3-layer BiLSTM with dropout  ... bidirectional=True, num_layers=3, dropout=0.3

Sequences go through `pack_padded_sequence`, so padding never changes a prediction.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Literal

import numpy as np
import torch
from pydantic import AfterValidator
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from pipeline.settings import setting, settings


def _off_or_at_least_2(n: int) -> int:
    if n == 1:
        raise ValueError("0 (off) or at least 2 buckets")
    return n


Buckets = Annotated[int, AfterValidator(_off_or_at_least_2)]
_MAX_DIM = 1 << 24


@settings
class ModelConfig:
    """Defaults: the best configuration measured on AG News validation (README, "The model and its accuracy").

    A BiLSTM with max pooling beside a hashed bag of n-grams (0.891 validation accuracy, against 0.881
    for the BiLSTM alone), and a TF-IDF head beside it, the two weighed on validation (0.908).
    """

    rnn_type: Literal["rnn", "lstm", "gru"] = setting("lstm", "the recurrent layer")
    embed_dim: int = setting(100, "token embedding size", ge=1, le=_MAX_DIM)
    hidden_dim: int = setting(128, "recurrent state size (each direction)", ge=1, le=_MAX_DIM)
    num_layers: int = setting(1, "stacked recurrent layers", ge=1, le=64)
    bidirectional: bool = setting(True, "read the text both ways")
    pooling: Literal["last", "mean", "max"] = setting("max", "how the states become one vector")
    dropout: float = setting(0.3, "between recurrent layers and before the linear head", ge=0, lt=1)
    max_len: int = setting(256, "tokens kept per text (the first ones)", ge=1, le=_MAX_DIM)
    # A hashed bag of unigrams and bigrams beside the sequence (fastText style), trained jointly:
    # its mean embedding is concatenated to the pooled RNN state.
    ngram_buckets: Buckets = setting(
        200_000, "hashed n-gram buckets beside the sequence (fastText style); 0 = off", ge=0, le=_MAX_DIM
    )
    ngram_dim: int = setting(32, "n-gram embedding size", ge=1, le=_MAX_DIM)
    # A second head: logistic regression over hashed unigrams and bigrams weighted by TF-IDF (the
    # inverse document frequencies come from the training rows), fitted on its own (pipeline/tfidf.py);
    # the prediction is the two heads' log-probabilities, each times a weight fitted on validation
    # (`TextClassifier.weigh_heads`).
    wide_buckets: Buckets = setting(
        1 << 20, "hashed uni+bigram buckets of the TF-IDF head; 0 = off", ge=0, le=_MAX_DIM
    )


# The lesson's classifiers: everything not named is off (one direction, one layer, no dropout, no n-grams).
LESSON_CONFIGS: dict[str, dict[str, object]] = {
    "rnn-mean": {"rnn_type": "rnn", "pooling": "mean"},
    "lstm-last": {"rnn_type": "lstm", "pooling": "last"},
    "bilstm": {"rnn_type": "lstm", "pooling": "last", "bidirectional": True},
    "bilstm-3-dropout": {
        "rnn_type": "lstm",
        "pooling": "last",
        "bidirectional": True,
        "num_layers": 3,
        "dropout": 0.3,
    },
}
PLAIN = {"bidirectional": False, "num_layers": 1, "dropout": 0.0, "ngram_buckets": 0, "wide_buckets": 0}


def lesson_config(name: str, **overrides: object) -> ModelConfig:
    return ModelConfig(**{**PLAIN, **LESSON_CONFIGS[name], **overrides})  # type: ignore[arg-type]


_RNN = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


class TextClassifier(nn.Module):
    def __init__(self, cfg: ModelConfig, vocab_size: int, num_classes: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.embedding = nn.Embedding(vocab_size, cfg.embed_dim, padding_idx=0)
        self.rnn = _RNN[cfg.rnn_type](
            cfg.embed_dim,
            cfg.hidden_dim,
            num_layers=cfg.num_layers,
            bidirectional=cfg.bidirectional,
            dropout=cfg.dropout if cfg.num_layers > 1 else 0.0,
            batch_first=True,
        )
        self.dropout = nn.Dropout(cfg.dropout)
        directions = 2 if cfg.bidirectional else 1
        features = cfg.hidden_dim * directions
        if cfg.ngram_buckets:
            # bucket 0 is padding: excluded from the mean and never trained
            self.ngrams = nn.EmbeddingBag(cfg.ngram_buckets, cfg.ngram_dim, mode="mean", padding_idx=0)
            features += cfg.ngram_dim
        self.head = nn.Linear(features, num_classes)
        if cfg.wide_buckets:
            self.wide = NgramLinear(cfg.wide_buckets, num_classes)
            # how much each head's log-probabilities count in the prediction (`weigh_heads`)
            self.register_buffer("head_weights", torch.ones(2))

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """ids (B, T) padded with 0, lengths (B,) all >= 1 -> logits (B, C)."""
        return self.combine(self.heads(ids, lengths))

    def combine(self, logits: list[torch.Tensor]) -> torch.Tensor:
        """The heads' logits -> the prediction's: one head's as they are; with two, the weighted sum of
        their log-probabilities (a product of experts, each raised to its weight)."""
        if len(logits) == 1:
            return logits[0]
        logp = torch.stack([torch.log_softmax(x, dim=1) for x in logits])  # (H, B, C)
        return (self.head_weights.to(logp)[:, None, None] * logp).sum(0)  # logits may be on the CPU

    @torch.no_grad()
    def weigh_heads(self, logits: list[torch.Tensor], target: torch.Tensor) -> None:
        """Fit `head_weights` to held-out rows: the weights that minimise the combined cross-entropy.

        Two numbers fitted on the validation rows (a calibrated stack of the heads): a head that is
        weaker there counts less. Deterministic (L-BFGS in float64 from the same start).
        """
        logp = torch.stack([torch.log_softmax(x.double(), dim=1) for x in logits])  # (H, N, C)
        log_w = torch.zeros(len(logits), dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([log_w], max_iter=100, line_search_fn="strong_wolfe")

        def loss() -> torch.Tensor:
            opt.zero_grad()
            out = nn.functional.cross_entropy((log_w.exp()[:, None, None] * logp).sum(0), target)
            out.backward()
            return out

        with torch.enable_grad():
            opt.step(loss)
        self.head_weights.copy_(log_w.detach().exp())

    def heads(self, ids: torch.Tensor, lengths: torch.Tensor) -> list[torch.Tensor]:
        """Each head's logits (B, C): the sequence head, then the TF-IDF head when there is one."""
        out = [self.sequence_logits(ids, lengths)]
        if self.cfg.wide_buckets:
            out.append(self.wide(ids, lengths))
        return out

    def sequence_parameters(self) -> list[nn.Parameter]:
        """Every parameter but the TF-IDF head's."""
        return [p for name, p in self.named_parameters() if not name.startswith("wide.")]

    def sequence_logits(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        x = self.embedding(ids)  # (B, T, E)
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, h = self.rnn(packed)
        if self.cfg.pooling == "last":
            h_n = h[0] if isinstance(h, tuple) else h  # (layers * dirs, B, H), batch in input order
            if self.cfg.bidirectional:
                pooled = torch.cat([h_n[-2], h_n[-1]], dim=1)  # forward and backward of the top layer
            else:
                pooled = h_n[-1]  # (B, H)
        else:
            y, _ = pad_packed_sequence(out, batch_first=True)  # (B, T', D), T' = max(lengths)
            mask = (
                torch.arange(y.size(1), device=y.device)[None, :] < lengths.to(y.device)[:, None]
            )  # (B, T')
            if self.cfg.pooling == "mean":
                pooled = (y * mask[..., None]).sum(1) / lengths.to(y.device)[:, None].to(y.dtype)
            else:
                pooled = y.masked_fill(~mask[..., None], float("-inf")).amax(1)
        if self.cfg.ngram_buckets:
            bag = self.ngrams(hash_ngrams(ids, lengths, self.cfg.ngram_buckets))  # (B, D)
            pooled = torch.cat([pooled, bag], dim=1)
        return self.head(self.dropout(pooled))  # (B, C)


class NgramLinear(nn.Module):
    """Logistic regression over hashed unigrams and bigrams, TF-IDF weighted and L2-normalised per text.

    `idf` is a buffer (saved with the weights) that training fills from its rows (`set_idf`); until
    then every n-gram weighs the same.
    """

    def __init__(self, buckets: int, num_classes: int) -> None:
        super().__init__()
        self.buckets = buckets
        self.weight = nn.Parameter(torch.zeros(buckets, num_classes))
        self.bias = nn.Parameter(torch.zeros(num_classes))
        self.register_buffer("idf", torch.ones(buckets))

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        grams = hash_ngrams(ids, lengths, self.buckets)  # (B, N), 0 = none
        w = self.idf[grams].masked_fill(grams == 0, 0.0)  # repeated n-grams add up: term frequency
        w = w / w.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return nn.functional.embedding_bag(grams, self.weight, per_sample_weights=w, mode="sum") + self.bias

    @torch.no_grad()
    def set_idf(self, document_frequency: torch.Tensor, documents: int) -> None:
        """Smoothed inverse document frequency: log((1 + n) / (1 + df)) + 1."""
        self.idf.copy_(torch.log((1 + documents) / (1 + document_frequency.to(self.idf))) + 1)


def document_frequencies(
    ids: np.ndarray, offsets: np.ndarray, rows: np.ndarray, buckets: int, batch_size: int = 1024
) -> torch.Tensor:
    """For each n-gram bucket, the number of `rows` (texts) that hold it at least once."""
    df = torch.zeros(buckets, dtype=torch.int64)
    for s in range(0, len(rows), batch_size):
        x, lengths = batch_from_flat(ids, offsets, rows[s : s + batch_size])
        grams, _ = hash_ngrams(x, lengths, buckets).sort(dim=1)
        first = torch.ones_like(grams, dtype=torch.bool)
        first[:, 1:] = grams[:, 1:] != grams[:, :-1]
        df += torch.bincount(grams[first & (grams > 0)], minlength=buckets)
    return df


_P1, _P2 = 1_000_003, 998_244_353  # odd multipliers for hashing token ids into buckets


def hash_ngrams(ids: torch.Tensor, lengths: torch.Tensor, buckets: int) -> torch.Tensor:
    """(B, T) token ids -> (B, 2T-1) bucket ids of every unigram and bigram; 0 where past the end.

    ids  [a b c 0]  (length 3)  ->  [h(a) h(b) h(c) 0 | h(a,b) h(b,c) 0]
    """
    t = ids.size(1)
    pos = torch.arange(t, device=ids.device)[None, :]
    lens = lengths.to(ids.device)[:, None]
    uni = (ids * _P1) % (buckets - 1) + 1  # (B, T)
    uni = uni.masked_fill(pos >= lens, 0)
    bi = (ids[:, :-1] * _P2 + ids[:, 1:] * _P1) % (buckets - 1) + 1  # (B, T-1)
    bi = bi.masked_fill(pos[:, :-1] >= lens - 1, 0)
    return torch.cat([uni, bi], dim=1)


def pad_batch(ids: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Variable-length 1-D id tensors -> (B, T) right-padded with 0, and their lengths (B,)."""
    lengths = torch.tensor([len(t) for t in ids], dtype=torch.int64)
    return nn.utils.rnn.pad_sequence(ids, batch_first=True, padding_value=0), lengths


def batch_from_flat(
    ids: np.ndarray, offsets: np.ndarray, rows: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of a flat encoding (ids, offsets) -> (B, T) right-padded with 0, and lengths (B,), vectorised.

    ids      [a a a b c c]        offsets [0 3 4 6]
    rows [2, 0] ->  [[c c 0]      lengths [2 3]
                     [a a a]]
    """
    starts = offsets[rows]
    lengths = offsets[rows + 1] - starts  # (B,)
    t = int(lengths.max()) if len(rows) else 0
    pos = np.arange(t)[None, :]  # (1, T)
    mask = pos < lengths[:, None]  # (B, T)
    idx = np.minimum(starts[:, None] + pos, max(len(ids) - 1, 0))
    x = np.where(mask, ids[idx], 0)
    return torch.from_numpy(x), torch.from_numpy(lengths.astype(np.int64))


def nonfinite_tensors(state: Mapping[str, torch.Tensor]) -> list[str]:
    """The names of the floating-point tensors of `state` that hold a NaN or an infinity (a diverged
    training's weights): one pass over each, done once where weights are made or loaded."""
    return [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
