"""Train the default model on each shared data set and print validation accuracy and time.

    .venv/bin/python benchmarks/bench_train.py [--datasets ag_news thucnews trec] [--set KEY=VALUE ...]

Each data set is ingested with the README's command line, trained with the default configuration
(plus any --set), and its validation split (carved from the training file, stratified and seeded,
the same split training uses for early stopping) is scored. Beside it, measured in the same run on the
same split: a fastText-style reference (hashed unigrams + bigrams, dim 10, 5 epochs, no sequence model).
Printed per data set: the default model; its two heads alone (the sequence head is trained without the
TF-IDF head, so it is also what `--set model.wide_buckets=0` trains); the weights they are combined with;
seconds of pretraining (skip-gram on the lake), of the TF-IDF fit and of the sequence head's epochs.
The held-back test splits are never read here.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch
from torch import nn

from pipeline import dataset, ingest, lake, train
from pipeline.__main__ import build_parser
from pipeline.config import load_config
from pipeline.model import batch_from_flat, hash_ngrams
from pipeline.vocab import encode

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
WORK = REPO / ".cache" / "bench" / "train"

COMMANDS = {  # the README's ingest command lines
    "ag_news": "ag_news/train.csv --no-header --label-column 1 --text-column 2 --text-column 3 "
    "--label-index 1 --classes {S}/ag_news/classes.txt --backslash-breaks",
    "thucnews": "thucnews/train.txt --format tsv --no-header --text-column 1 --label-column 2 --label-index 0 "
    "--classes {S}/thucnews/class.txt",
    "trec": "trec/train_5500.label --format labelled --encoding iso-8859-1 --label-coarse-sep :",
}
PUBLISHED = {"ag_news": (90.1, 91.2), "thucnews": (82.2, 85.8), "trec": (87.8, 91.0)}  # test split, README


class FastTextLike(nn.Module):
    """Mean of hashed unigram + bigram embeddings -> linear (fastText with bigrams, dim 10)."""

    def __init__(self, buckets: int, dim: int, classes: int) -> None:
        super().__init__()
        self.buckets = buckets
        self.bag = nn.EmbeddingBag(buckets, dim, mode="mean", padding_idx=0)
        self.out = nn.Linear(dim, classes)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.out(self.bag(hash_ngrams(ids, lengths, self.buckets)))


def reference(data: lake.DataDir, seed: int) -> tuple[float, float]:
    """Accuracy and seconds of the fastText-style reference on training's own validation split."""
    from pipeline.vocab import VocabConfig, build_vocab

    t0 = time.perf_counter()
    df = dataset.read_lake(dataset.lake_files(data, None, None)).filter(pl.col("label").is_not_null())
    vocab = build_vocab(df.lazy().select("text"), VocabConfig())
    labels = sorted(df["label"].unique().to_list())
    y = df["label"].replace_strict(labels, list(range(len(labels))), return_dtype=pl.Int64).to_numpy()
    ids, offsets = encode(df["text"], vocab, max_len=256)
    tr, va = dataset.stratified_split(y, 0.1, seed)
    torch.manual_seed(seed)
    model = FastTextLike(2_000_000, 10, len(labels))
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    lengths = np.diff(offsets)
    rng = np.random.default_rng(seed)
    for _ in range(5):
        for rows in dataset.length_batches(lengths[tr], 64, rng):
            x, lens = batch_from_flat(ids, offsets, tr[rows])
            loss = nn.functional.cross_entropy(model(x, lens), torch.from_numpy(y[tr[rows]]))
            opt.zero_grad()
            loss.backward()
            opt.step()
    correct = 0
    with torch.inference_mode():
        for rows in dataset.length_batches(lengths[va], 512, None):
            x, lens = batch_from_flat(ids, offsets, va[rows])
            correct += int((model(x, lens).argmax(1).numpy() == y[va[rows]]).sum())
    return correct / len(va), time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", nargs="+", default=list(COMMANDS))
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()
    if not SHARED.is_dir():
        print(f"{SHARED} is absent: nothing to benchmark")
        return
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    rows = []
    for name in args.datasets:
        folder = WORK / name
        shutil.rmtree(folder, ignore_errors=True)
        data = lake.DataDir.at(folder)
        argv = ["ingest", *f"{SHARED}/{COMMANDS[name].format(S=SHARED)}".split(), "--date", "2026-01-01"]
        ns = build_parser().parse_args(argv)
        m = ingest.ingest(ns.sources, "2026-01-01", data, ingest.ingest_config_from_args(ns))
        cfg = load_config(None, args.overrides)
        t0 = time.perf_counter()
        out = train.train(data, cfg)
        secs = time.perf_counter() - t0
        heads = out["heads"] or {}
        ref_acc, ref_secs = reference(data, cfg.train.seed)
        rows.append(
            {
                "name": name,
                "rows": m["rows_kept"],
                "acc": out["val_accuracy"],
                "f1": out["val_macro_f1"],
                "seq": heads.get("val_acc_sequence"),
                "tfidf": heads.get("val_acc_tfidf"),
                "c": (heads.get("tfidf") or {}).get("c"),
                "w_seq": heads.get("weight_sequence"),
                "w_tfidf": heads.get("weight_tfidf"),
                "ref": ref_acc,
                "ref_s": ref_secs,
                "s": secs,
                **{f"s_{k}": v for k, v in out["seconds"].items()},
                "epochs": f"{len(lake.read_json(data.model(out['version']) / 'metrics.json')['history'])}",
            }
        )
        shutil.rmtree(folder, ignore_errors=True)
    print(
        f"overrides: {args.overrides or 'none (default configuration)'}; torch threads {torch.get_num_threads()}"
    )
    print("validation accuracy (training's own split; held-back tests never read), in one run:")
    print(
        "data set    rows   default  sequence head  TF-IDF head (C)  fastText-like | weights seq/tfidf"
        " | seconds: pretrain  TF-IDF  sequence (epochs)  whole train | published test fastText / TF-IDF+LR"
    )

    def f(x: float | None, spec: str = ".4f") -> str:
        return "   -  " if x is None else format(x, spec)

    for r in rows:
        ft, tf = PUBLISHED[r["name"]]
        print(
            f"{r['name']:<9} {r['rows']:>6}   {r['acc']:.4f}   {f(r['seq'])}         {f(r['tfidf'])} ({f(r['c'], 'g')})"
            f"      {r['ref']:.4f}     | {f(r['w_seq'], '.2f')} / {f(r['w_tfidf'], '.2f')}"
            f"        | {r['s_pretrain']:7.1f}  {r['s_tfidf']:6.1f}  {r['s_sequence']:7.1f} ({r['epochs']})"
            f"   {r['s']:9.1f}   | {ft:.1f}% / {tf:.1f}%"
        )


if __name__ == "__main__":
    main()
