"""Self-supervised pretraining on the lake: word vectors learnt from every text it holds up to the
training range, labelled or not, that initialise the classifier's embedding.

Skip-gram with negative sampling (word2vec; Mikolov et al. 2013), in torch: for each kept token, every
token within a random window of it (1..`window`, so near words count more) is a positive pair, and
`negatives` tokens drawn from the unigram distribution to the 3/4 are negative ones. Frequent tokens are
subsampled (`subsample`). Sparse embeddings and `SparseAdam` keep an epoch over a million-token corpus in
about 25 seconds on 2 cores.

The result is a versioned input of the model: `pretrain_embeddings` is deterministic (same corpus, vocabulary,
settings and seed -> same bytes); `pretrain_on_lake` keeps it in `pretrain/<key>.safetensors`, train copies
that file into the model (`embedding.safetensors`) and its SHA-256 enters the model's version. A killed
pretraining resumes from its last finished epoch (`checkpoint`, loaded with `weights_only=True`).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from pipeline import lake
from pipeline.config import PipelineConfig
from pipeline.errors import TrainingError
from pipeline.vocab import Vocab, encode

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PretrainResult:
    embedding: torch.Tensor  # (V, D) float32; row 0 (padding) is zero
    losses: list[float]  # mean loss of each epoch
    pairs: int  # positive pairs of the last epoch


def keep_probability(counts: np.ndarray, threshold: float) -> np.ndarray:
    """word2vec's subsampling: a token of corpus frequency f is kept with probability
    (sqrt(f / t) + 1) * t / f (capped at 1); tokens never seen (and padding, unknown) are dropped."""
    freq = counts / max(counts.sum(), 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = (np.sqrt(freq / threshold) + 1) * threshold / freq
    return np.where(freq > 0, np.minimum(p, 1.0), 0.0)


def skipgram_pairs(
    ids: np.ndarray, doc: np.ndarray, keep: np.ndarray, reach: np.ndarray, window: int
) -> tuple[np.ndarray, np.ndarray]:
    """(centre, context) pairs of the kept tokens, vectorised over the corpus: for each distance d up to
    `window`, the neighbours d apart in the same text, where the centre's `reach` (1..window) covers d.

    ids [a b c | d e]  doc [0 0 0 1 1]  reach 1 everywhere  ->  (a,b) (b,c) (d,e) (b,a) (c,b) (e,d)
    """
    s, d_, r = ids[keep], doc[keep], reach[keep]
    centres, contexts = [], []
    for d in range(1, window + 1):
        same = d_[:-d] == d_[d:]
        left = same & (r[:-d] >= d)  # centre on the left, context d to its right
        right = same & (r[d:] >= d)  # centre on the right
        centres += [s[:-d][left], s[d:][right]]
        contexts += [s[d:][left], s[:-d][right]]
    return np.concatenate(centres), np.concatenate(contexts)


def pretrain_embeddings(
    ids: np.ndarray,
    offsets: np.ndarray,
    vocab_size: int,
    dim: int,
    *,
    epochs: int,
    window: int,
    negatives: int,
    subsample: float,
    lr: float,
    batch_size: int,
    seed: int,
    checkpoint: Path | None = None,
) -> PretrainResult:
    """Skip-gram word vectors for a flat encoding of the corpus (ids, offsets as `vocab.encode` gives).

    With `checkpoint`, state is saved after every epoch and a run that finds one resumes from it.
    """
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    counts = np.bincount(ids, minlength=vocab_size).astype(np.float64)
    counts[:2] = 0  # padding and the unknown token teach nothing
    keep_p = keep_probability(counts, subsample)
    noise = torch.from_numpy(counts**0.75)
    if noise.sum() == 0:
        noise[1:] = 1.0  # an empty corpus: nothing to learn, but still a valid draw
    doc = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    centre_emb = nn.Embedding(vocab_size, dim, sparse=True)
    context_emb = nn.Embedding(vocab_size, dim, sparse=True)
    with torch.no_grad():
        centre_emb.weight.uniform_(-0.5 / dim, 0.5 / dim, generator=gen)
        context_emb.weight.zero_()
    opt = torch.optim.SparseAdam([centre_emb.weight, context_emb.weight], lr=lr)
    losses: list[float] = []
    pairs = 0
    if checkpoint is not None and checkpoint.is_file():
        ck = torch.load(checkpoint, weights_only=True)
        centre_emb.weight.data.copy_(ck["centre"])
        context_emb.weight.data.copy_(ck["context"])
        opt.load_state_dict(ck["optimizer"])
        losses = json.loads(ck["losses"])
        rng.bit_generator.state = json.loads(ck["rng"])
        gen.set_state(ck["gen"])
        log.info("pretraining resumes from %s after epoch %d", checkpoint, len(losses))
    for epoch in range(len(losses) + 1, epochs + 1):
        t0 = time.perf_counter()
        keep = rng.random(len(ids)) < keep_p[ids]
        reach = rng.integers(1, window + 1, size=len(ids))
        c, x = skipgram_pairs(ids, doc, keep, reach, window)
        order = rng.permutation(len(c))
        c, x = torch.from_numpy(c[order]), torch.from_numpy(x[order])
        pairs = len(c)
        total = 0.0
        for s in range(0, pairs, batch_size):
            centre = centre_emb(c[s : s + batch_size])  # (B, D)
            drawn = torch.multinomial(noise, len(centre) * negatives, replacement=True, generator=gen)
            targets = torch.cat([x[s : s + batch_size, None], drawn.view(len(centre), negatives)], 1)
            score = torch.bmm(context_emb(targets), centre[:, :, None]).squeeze(2)  # (B, 1 + K)
            score[:, 1:] = -score[:, 1:]  # the context should score high, the noise low
            loss = -nn.functional.logsigmoid(score).sum(1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(centre)
        losses.append(total / max(pairs, 1))
        if not (math.isfinite(losses[-1]) and bool(torch.isfinite(centre_emb.weight).all())):
            if checkpoint is not None:
                checkpoint.unlink(missing_ok=True)  # the same settings would only diverge again from it
            msg = (
                f"pretraining diverged at epoch {epoch} (loss {losses[-1]}, learning rate {lr:g}); "
                "nothing was published; hint: lower `pretrain.lr`, or `pretrain.epochs=0` to train without it"
            )
            raise TrainingError(msg)
        log.info(
            "pretraining epoch %d/%d: %d pairs, loss %.4f, %.1f s",
            epoch,
            epochs,
            pairs,
            losses[-1],
            time.perf_counter() - t0,
        )
        if checkpoint is not None:
            state = {
                "centre": centre_emb.weight.detach(),
                "context": context_emb.weight.detach(),
                "optimizer": opt.state_dict(),
                "losses": json.dumps(losses),
                "rng": json.dumps(rng.bit_generator.state),
                "gen": gen.get_state(),
            }
            with lake.atomic_path(checkpoint) as tmp:
                torch.save(state, tmp)
    embedding = centre_emb.weight.detach().clone()
    embedding[0] = 0.0
    return PretrainResult(embedding, losses, pairs)


def pretrain_on_lake(
    data: lake.DataDir, files: list[tuple[str, Path, str]], vocab: Vocab, cfg: PipelineConfig
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Word vectors from the texts of the lake `files` ((date, path, sha256), in date order), labelled or
    not: the `max_texts` most recent. Kept in `pretrain/<key>.safetensors`, keyed by everything that makes
    them (the files, the vocabulary, the settings and the seed): found there, they are not learnt again.
    Returns them and a record: key, path, SHA-256 of the file, losses, texts and pairs."""
    p = cfg.pretrain
    settings = {k: v for k, v in asdict(p).items() if k != "freeze_epochs"}  # that one is fine-tuning's
    key = lake.sha256_json(
        {
            "lake": [sha for _, _, sha in files],
            "vocab": vocab.version,
            "pretrain": settings,
            "dim": cfg.model.embed_dim,
            "max_len": cfg.model.max_len,
            "seed": cfg.train.seed,
        }
    )[:16]
    path = data.pretrain / f"{key}.safetensors"
    if not path.is_file():
        texts = pl.scan_parquet([f for _, f, _ in files]).select("text").tail(p.max_texts).collect()["text"]
        ids, offsets = encode(texts, vocab, max_len=cfg.model.max_len)  # the classifier sees no more
        log.info("pretraining word vectors on %d lake texts (%d tokens)", len(texts), len(ids))
        data.pretrain.mkdir(parents=True, exist_ok=True)
        checkpoint = data.pretrain / f".ckpt-{key}.pt"
        with lake.locked(data, f"pretrain-{key}"):  # `pipeline gc` leaves its checkpoint alone
            result = pretrain_embeddings(
                ids,
                offsets,
                len(vocab),
                cfg.model.embed_dim,
                epochs=p.epochs,
                window=p.window,
                negatives=p.negatives,
                subsample=p.subsample,
                lr=p.lr,
                batch_size=p.batch_size,
                seed=cfg.train.seed,
                checkpoint=checkpoint,
            )
        # one metadata key: safetensors keeps metadata in a hash map, whose order (and so the file's bytes)
        # would change from run to run with several
        meta = json.dumps({"losses": result.losses, "texts": len(texts), "pairs": result.pairs})
        with lake.atomic_path(path) as tmp:
            save_file({"embedding": result.embedding.contiguous()}, str(tmp), metadata={"pretrain": meta})
        checkpoint.unlink(missing_ok=True)
    with safe_open(str(path), framework="pt") as f:
        embedding, meta = f.get_tensor("embedding"), json.loads(f.metadata()["pretrain"])
    return embedding, {"key": key, "path": str(path), "sha256": lake.sha256_file(path), **meta}
