"""Scoring speed: the engine (pipeline/infer.py, pipeline/score.py) against the classic RNN lesson loop.

    .venv/bin/python benchmarks/bench_score.py [--docs 8000] [--rounds 3] [--big-rows 0]

Trains the default model (embedding 64 -> LSTM 128 -> last state -> linear) on AG News from
../shared/data/ag_news when present (else on the generated corpus), keeps a labelled held-out split,
and measures side by side, in one run, interleaved over `--rounds` rounds (best of each):

- the lesson loop: texts in input order, batches of 16, a `padify` collate (Python tokeniser, pad to
  the longest), plain `model(x)` (embedding -> LSTM over the padding -> last state -> linear);
- the old engine: length-sorted padded batches of 256 through `model(x, lengths)` (packed sequences);
- the engine's kernels and options: fused fp32 (exact), generic, bf16 autocast, int8 (onnxruntime's
  dynamic quantisation of the exported ONNX graph), and that graph unquantised in onnxruntime, with
  each one's label agreement against fused fp32;
- the FLOP/s of a 2048 x 2048 float32 matmul, for the share of the machine's compute limit:
  tokens/s x 8 H (I + H) per direction and layer (I = E for the first layer) / matmul FLOP/s.

Then `score_partition` end to end on a lake partition with 1 and 2 workers, and, with `--big-rows N`,
one run on an N-row generated partition in a child process, reporting its peak RSS. Every file goes
under .cache/bench/ and is removed at the end.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import nn

from pipeline import lake, registry
from pipeline.config import ScoreConfig
from pipeline.corpus import CLASSES, order_row, topic_row
from pipeline.infer import Scorer, build_scorer
from pipeline.model import ModelConfig, TextClassifier, batch_from_flat, lesson_config
from pipeline.portable import onnx_bytes
from pipeline.schema import LAKE_SCHEMA_VERSION, TEXTS_SCHEMA
from pipeline.score import score_partition
from pipeline.tokenize import tokenize_py
from pipeline.vocab import Vocab, VocabConfig, build_vocab, encode, save_vocab

REPO = Path(__file__).resolve().parents[1]
AG_NEWS = REPO.parent / "shared" / "data" / "ag_news"
WORK = REPO / ".cache" / "bench" / "score"


# ---------------------------------------------------------------------------- data and model


def load_texts(seed: int = 1) -> tuple[list[str], list[str], str]:
    """(texts, labels, source): AG News (title + description, light cleaning) or the generated corpus."""
    if (AG_NEWS / "train.csv").is_file():
        classes = (AG_NEWS / "classes.txt").read_text().split()
        df = pl.read_csv(AG_NEWS / "train.csv", has_header=False, new_columns=["c", "title", "desc"])
        text = (pl.col("title") + " " + pl.col("desc")).str.replace_all(r"\\", " ", literal=True)
        df = df.select(text.str.replace_all("#39;", "'", literal=True).alias("text"), pl.col("c"))
        return df["text"].to_list(), [classes[i - 1] for i in df["c"].to_list()], "AG News"
    rng = random.Random(seed)
    texts, labels = [], []
    for _ in range(30_000):
        if rng.random() < 0.3:
            t, y = order_row(rng)
        else:
            y = rng.choice(CLASSES)
            t = topic_row(rng, y)
        texts.append(t)
        labels.append(y)
    return texts, labels, "generated corpus"


def train_model(
    vocab: Vocab, cfg: ModelConfig, texts: list[str], y: np.ndarray, epochs: int
) -> TextClassifier:
    """A plain training loop (Adam, length-bucketed batches of 64); enough for a realistic model."""
    torch.manual_seed(0)
    model = TextClassifier(cfg, len(vocab), int(y.max()) + 1)
    ids, offsets = encode(pl.Series(texts), vocab, max_len=cfg.max_len)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    rng = np.random.default_rng(0)
    lengths = np.diff(offsets)
    for epoch in range(epochs):
        order = rng.permutation(len(texts))
        pools = [order[s : s + 3200] for s in range(0, len(order), 3200)]
        batches = [p[np.argsort(lengths[p])][i : i + 64] for p in pools for i in range(0, len(p), 64)]
        t0, total = time.perf_counter(), 0.0
        for rows in (batches[i] for i in rng.permutation(len(batches))):
            x, lens = batch_from_flat(ids, offsets, rows)
            loss = nn.functional.cross_entropy(model(x, lens), torch.from_numpy(y[rows]))
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            total += loss.item() * len(rows)
        print(f"  train epoch {epoch + 1}: loss {total / len(texts):.3f} ({time.perf_counter() - t0:.0f} s)")
    return model.eval()


# ---------------------------------------------------------------------------- the loops compared


def lesson_loop(model: TextClassifier, vocab: Vocab, texts: list[str], max_len: int) -> np.ndarray:
    """The classic lesson: batches of 16 in input order, `padify` collate, plain `model(x)`."""
    stoi = {t: i for i, t in enumerate(vocab.tokens)}

    def padify(batch: list[str]) -> torch.Tensor:
        seqs = [[stoi.get(t, 1) for t in tokenize_py(s)[:max_len]] or [1] for s in batch]
        width = max(map(len, seqs))
        return torch.tensor([s + [0] * (width - len(s)) for s in seqs], dtype=torch.int64)

    out = []
    with torch.inference_mode():
        for s in range(0, len(texts), 16):
            x = padify(texts[s : s + 16])
            _, (h, _) = model.rnn(model.embedding(x))  # over the padding, as the lesson does
            out.append(torch.softmax(model.head(h[-1]), 1).double().numpy())
    return np.concatenate(out)


def old_engine(model: TextClassifier, ids: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Length-sorted padded batches of 256 through `model(x, lengths)` (packed sequences)."""
    order = np.argsort(np.diff(offsets), kind="stable")
    out = np.empty((len(offsets) - 1, model.head.out_features))
    with torch.inference_mode():
        for s in range(0, len(order), 256):
            rows = order[s : s + 256]
            x, lengths = batch_from_flat(ids, offsets, rows)
            out[rows] = torch.softmax(model(x, lengths).double(), 1).numpy()
    return out


def matmul_flops(n: int = 2048) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(3))
    return 2 * n**3 / best


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def flops_per_token(cfg: ModelConfig) -> float:
    dirs = 2 if cfg.bidirectional else 1
    h = cfg.hidden_dim
    return sum(
        8 * h * ((cfg.embed_dim if layer == 0 else h * dirs) + h) * dirs for layer in range(cfg.num_layers)
    )


# ---------------------------------------------------------------------------- partitions


def write_partition(data: lake.DataDir, date: str, texts: pa.Array, *, row_group: int = 1_000_000) -> None:
    """A lake partition laid out as ingest does (one Parquet file + manifest), from a text column."""
    with lake.publish_dir(data.texts(date)) as tmp:
        path = tmp / "part-00000.parquet"
        with pq.ParquetWriter(path, TEXTS_SCHEMA) as w:
            for s in range(0, len(texts), row_group):
                t = texts[s : s + row_group]
                n = len(t)
                w.write_table(
                    pa.table(
                        {
                            "id": pa.array([f"r{i}" for i in range(s, s + n)]),
                            "text": t,
                            "label": pa.nulls(n, pa.string()),
                            "source": pa.array(["bench"] * n),
                            "line": pa.array(np.arange(s, s + n), pa.int64()),
                        },
                        schema=TEXTS_SCHEMA,
                    )
                )
        files = [{"name": path.name, "sha256": lake.sha256_file(path), "rows": len(texts)}]
        lake.write_json(
            tmp / lake.MANIFEST,
            {"date": date, "files": files, "rows_kept": len(texts), "schema_version": LAKE_SCHEMA_VERSION},
        )


def publish_model(data: lake.DataDir, model: TextClassifier, vocab: Vocab, labels: list[str]) -> str:
    version = "bench0000000"
    with lake.publish_dir(data.model(version)) as tmp:
        registry.write_model_files(
            tmp, model, {"version": version, "labels": labels, "vocab_version": vocab.version}
        )
        save_vocab(vocab, tmp).rename(tmp / "vocab.json")
        lake.write_json(tmp / "metrics.json", {"validation": {"accuracy": 0.0, "macro_f1": 0.0}})
    registry.set_latest(data.models, version)
    return version


BIG_CHILD = """
import sys, time
from pipeline import lake
from pipeline.config import ScoreConfig
from pipeline.score import score_partition
data = lake.DataDir.at(sys.argv[1])
t0 = time.perf_counter()
m = score_partition(data, "2026-03-02", ScoreConfig(workers=int(sys.argv[2])))
# VmHWM belongs to this process image; ru_maxrss would carry over the forking parent's peak
status = open("/proc/self/status").read().split("VmHWM:")[1]
rss = int(status.split()[0])
print(m["rows"], len(m["shards"]), time.perf_counter() - t0, rss)
"""


def big_run(data: lake.DataDir, pool: list[str], rows: int, workers: int) -> None:
    rng = np.random.default_rng(5)
    texts = pa.array(pool)
    idx = rng.integers(0, len(pool), rows)
    t0 = time.perf_counter()
    # one Parquet file written in row groups: the generator itself stays bounded too
    date = "2026-03-02"
    with lake.publish_dir(data.texts(date)) as tmp:
        path = tmp / "part-00000.parquet"
        with pq.ParquetWriter(path, TEXTS_SCHEMA) as w:
            for s in range(0, rows, 1_000_000):
                chunk = idx[s : s + 1_000_000]
                n = len(chunk)
                w.write_table(
                    pa.table(
                        {
                            "id": pa.array(np.char.add("r", np.arange(s, s + n).astype(str)).tolist()),
                            "text": texts.take(pa.array(chunk)),
                            "label": pa.nulls(n, pa.string()),
                            "source": pa.array(["bench"] * n),
                            "line": pa.array(np.arange(s, s + n), pa.int64()),
                        },
                        schema=TEXTS_SCHEMA,
                    )
                )
        files = [{"name": path.name, "sha256": lake.sha256_file(path), "rows": rows}]
        lake.write_json(
            tmp / lake.MANIFEST,
            {"date": date, "files": files, "rows_kept": rows, "schema_version": LAKE_SCHEMA_VERSION},
        )
    print(f"  generated {rows:,} rows in {time.perf_counter() - t0:.0f} s")
    out = subprocess.run(
        [sys.executable, "-c", BIG_CHILD, str(data.root), str(workers)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    n, shards, secs, rss_kb = int(out[0]), int(out[1]), float(out[2]), int(out[3])
    print(
        f"  scored {n:,} rows into {shards} shards, {secs:.0f} s, {n / secs:,.0f} docs/s, workers={workers}"
    )
    print(f"  peak RSS of the scoring process  {rss_kb / 2**20:.2f} GiB  (goal: < 2 GiB)")


# ---------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=8000, help="texts scored per measurement")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--train-rows", type=int, default=20_000)
    ap.add_argument("--partition-rows", type=int, default=100_000, help="rows for the workers comparison")
    ap.add_argument("--big-rows", type=int, default=0, help="also score a generated partition of N rows")
    args = ap.parse_args()
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    try:
        run(args)
    finally:
        shutil.rmtree(WORK, ignore_errors=True)


def run(args: argparse.Namespace) -> None:
    texts, labels, source = load_texts()
    classes = sorted(set(labels))
    y_all = np.array([classes.index(c) for c in labels])
    perm = np.random.default_rng(0).permutation(len(texts))
    held = perm[: len(perm) // 5]
    train_idx = perm[len(perm) // 5 :][: args.train_rows]
    # The lesson's model (an LSTM read on its last hidden state), so the lesson loop can run it as written.
    cfg = lesson_config("lstm-last", embed_dim=64, hidden_dim=128)
    vocab = build_vocab(pl.LazyFrame({"text": [texts[i] for i in train_idx]}), VocabConfig())
    print(
        f"data: {source}, {len(train_idx):,} training rows, {len(held):,} held out, vocabulary {len(vocab):,}"
    )
    print(f"model: {cfg}")
    model = train_model(vocab, cfg, [texts[i] for i in train_idx], y_all[train_idx], args.epochs)

    docs = [texts[i] for i in np.resize(held, args.docs)]  # held-out texts, in input order
    y_docs = y_all[np.resize(held, args.docs)]
    cores = len(os.sched_getaffinity(0))

    def encoded() -> tuple[np.ndarray, np.ndarray]:
        return encode(pl.Series(docs), vocab, max_len=cfg.max_len)

    # (name, torch threads, fn); the engine's rows run as one worker does: cores // workers threads
    lesson = lambda: lesson_loop(model, vocab, docs, cfg.max_len)  # noqa: E731
    runs: list[tuple[str, int, Callable[[], np.ndarray]]] = [
        (f"lesson loop, {cores} threads", cores, lesson),
        ("lesson loop, 1 thread", 1, lesson),
        ("old engine (sorted, packed, 256)", 1, lambda: old_engine(model, *encoded())),
    ]
    scorers = {
        "generic kernel, fp32": build_scorer(model, batch_size=256, kernel="generic"),
        "fused kernel, fp32 (exact)": build_scorer(model, batch_size=256),
        "fused kernel, fp32, batch 64": build_scorer(model, batch_size=64),
        "fused kernel, fp32, batch 1024": build_scorer(model, batch_size=1024),
        "fused kernel, bf16 autocast": build_scorer(model, batch_size=256, precision="bf16"),
        "int8, onnxruntime dynamic": build_scorer(model, batch_size=256, precision="int8"),
    }
    # the same kernel on the graph before quantisation
    scorers["onnxruntime fp32 (exported graph)"] = Scorer(
        model, "onnxruntime", "fp32", "cpu", 256, model.head.out_features, onnx_bytes(model)
    )
    for name, sc in scorers.items():
        runs.append((name, 1, lambda sc=sc: sc.predict_proba(*encoded())))
    runs.append(
        (
            f"fused kernel, fp32, {cores} threads",
            cores,
            lambda: scorers["fused kernel, fp32 (exact)"].predict_proba(*encoded()),
        )
    )
    tokens = int(np.diff(encoded()[1]).sum())
    flop_tok = flops_per_token(cfg)

    best = {name: float("inf") for name, _, _ in runs}
    peak = {1: 0.0, cores: 0.0}
    probs: dict[str, np.ndarray] = {}
    for _ in range(args.rounds):
        for th in peak:
            torch.set_num_threads(th)
            peak[th] = max(peak[th], matmul_flops())
        for name, th, fn in runs:
            torch.set_num_threads(th)
            t0 = time.perf_counter()
            probs[name] = fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    torch.set_num_threads(cores)

    ref = probs["old engine (sorted, packed, 256)"]
    fp32_labels = probs["fused kernel, fp32 (exact)"].argmax(1)
    lesson_dps = max(args.docs / best[n] for n, _, _ in runs if n.startswith("lesson"))
    print(f"\n{args.docs:,} held-out docs, {tokens:,} tokens ({tokens / args.docs:.1f}), best/ {args.rounds}")
    print(
        f"float32 matmul 2048^2: {peak[1] / 1e9:.1f} GFLOP/s on 1 thread, {peak[cores] / 1e9:.1f} on {cores}"
    )
    print(f"model FLOPs per token, 8H(I+H) per direction and layer: {flop_tok:,.0f}")
    print("share = tokens/s x FLOPs per token / matmul FLOP/s at the same thread count")
    print(
        f"{'':36s} {'docs/s':>9s} {'x lesson':>8s} {'share':>6s} {'accuracy':>8s} {'max |dp|':>9s} {'agree':>7s}"
    )
    for name, th, _ in runs:
        dps = args.docs / best[name]
        share = tokens / best[name] * flop_tok / peak[th]
        acc = (probs[name].argmax(1) == y_docs).mean()
        dp = np.abs(probs[name] - ref).max()
        agree = (probs[name].argmax(1) == fp32_labels).mean()
        print(
            f"{name:36s} {dps:9,.0f} {dps / lesson_dps:7.2f}x {share:6.2f} {acc:8.4f} {dp:9.2e} {agree:7.2%}"
        )
    print(
        "(x lesson: against the faster lesson loop; accuracy on held-out labels; |dp| against the old engine;"
        " agree: labels equal to fused fp32's)"
    )
    print("precision side by side (1 thread):")
    for prec, name in [
        ("fp32", "fused kernel, fp32 (exact)"),
        ("bf16", "fused kernel, bf16 autocast"),
        ("int8", "int8, onnxruntime dynamic"),
    ]:
        agree = (probs[name].argmax(1) == fp32_labels).mean()
        acc = (probs[name].argmax(1) == y_docs).mean()
        print(
            f"  {prec}: {args.docs / best[name]:9,.0f} docs/s  labels agree with fp32 {agree:7.2%}  accuracy {acc:.4f}"
        )

    # end to end through score_partition: workers 1 (a thread) vs 2 (processes)
    data = lake.DataDir.at(WORK / "data")
    publish_model(data, model, vocab, classes)
    part = pa.array([texts[i] for i in np.resize(perm, args.partition_rows)])
    write_partition(data, "2026-03-01", part)
    print(f"\nscore_partition on {args.partition_rows:,} rows (end to end: read, encode, score, write):")
    secs: dict[int, float] = {}
    for _ in range(2):
        for w in (1, 2):
            shutil.rmtree(data.predictions("2026-03-01"), ignore_errors=True)
            t0 = time.perf_counter()
            score_partition(data, "2026-03-01", ScoreConfig(workers=w))
            secs[w] = min(secs.get(w, float("inf")), time.perf_counter() - t0)
    tok_part = int(np.diff(encode(pl.Series(part.to_pylist()), vocab, max_len=cfg.max_len)[1]).sum())
    for w, sec in secs.items():
        dps = args.partition_rows / sec
        share = tok_part / sec * flop_tok / peak[cores]
        print(f"  workers={w}: {dps:9,.0f} docs/s {dps / lesson_dps:.2f}x lesson, share {share:.2f}")

    if args.big_rows:
        print(f"\nbounded memory: {args.big_rows:,}-row generated partition")
        rng = random.Random(3)
        pool = [
            order_row(rng)[0] if rng.random() < 0.3 else topic_row(rng, rng.choice(CLASSES))
            for _ in range(50_000)
        ]
        big_run(data, pool, args.big_rows, workers=min(secs, key=secs.get))
    print(
        f"\nbenchmark process peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB"
    )


if __name__ == "__main__":
    main()
