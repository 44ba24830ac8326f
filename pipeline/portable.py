"""A trained model as a graph for other runtimes: ONNX (onnxruntime, any language) or a `torch.export` .pt2.

    pipeline models export [VERSION] --format onnx|pt2 [--out DIR]

`PortableClassifier` is `TextClassifier.forward` + softmax written with plain tensor ops, so that one
graph takes any batch size and length and padding never changes a row's output:

    ids      (B, T) int64, right-padded with anything    ->  probs (B, C) float32, label order
    lengths  (B,)   int64, 1 <= length <= T

Every head is in the graph: the RNN (each layer and direction its own one-layer RNN, so no packed
sequence), the hashed n-gram bag (`hash_ngrams` is integer arithmetic) and the TF-IDF head. Padding:

- a forward RNN is causal: outputs at t < length never see the padding; pooling masks the rest and
  `last` gathers each row's output at length - 1;
- the backward direction reads each row reversed *within its length* (an index gather), so it starts
  at the row's own last token, as the packed sequence does:

      ids  [a b c 0 0]  length 3  ->  reversed [c b a 0 0]  ->  RNN  ->  reversed back (same gather)

The export folder stands alone (see `CARD`): the graph, vocab.json, labels.json, tokenizer.json (the
tokenizer's rules as data), golden.json (texts -> ids), card.md and export.json (what was exported,
with each file's sha256). It is written atomically, and the same version exports to the same bytes.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import warnings
from pathlib import Path
from typing import Any, Literal

import polars as pl
import torch
from torch import nn

from pipeline import lake, registry, tokenize
from pipeline.errors import ModelError, PipelineError
from pipeline.infer import fused_support
from pipeline.model import TextClassifier, hash_ngrams
from pipeline.vocab import PAD_ID, UNK_ID, encode

log = logging.getLogger(__name__)

Format = Literal["onnx", "pt2"]
FORMATS: tuple[Format, ...] = ("onnx", "pt2")
GRAPH = {"onnx": "model.onnx", "pt2": "model.pt2"}
EXPORT_FORMAT_VERSION = 1
OPSET = 17
MANIFEST = "export.json"


def export_support(model: nn.Module) -> str | None:
    """None when `PortableClassifier` reproduces `model`, else what cannot be exported."""
    reason = fused_support(model)  # the same set of modules and options, written out by hand there too
    return None if reason is None else f"{reason}; only TextClassifier's known options are exported"


class PortableClassifier(nn.Module):
    """`softmax(TextClassifier(ids, lengths))` without packed sequences, holding the model's weights."""

    def __init__(self, model: TextClassifier) -> None:
        super().__init__()
        reason = export_support(model)
        if reason is not None:
            msg = f"cannot export this model: {reason}"
            raise ModelError(msg)
        cfg = model.cfg
        self.cfg = cfg
        self.embedding = model.embedding
        self.head = model.head
        self.ngrams = model.ngrams if cfg.ngram_buckets else None
        self.wide = model.wide if cfg.wide_buckets else None
        if cfg.wide_buckets:
            self.register_buffer("head_weights", model.head_weights.detach().clone())
        # one single-layer, one-direction RNN per (layer, direction), holding the model's weights; run
        # through the functional op (`torch.lstm`...) as a module's weight list trips torch.export
        rnn = model.rnn
        self.rnn_op = _RNN_OPS[cfg.rnn_type if cfg.rnn_type != "rnn" else f"rnn_{rnn.nonlinearity}"]
        self.rnn_weights = nn.ParameterList()
        for layer in range(cfg.num_layers):
            for sfx in ["", "_reverse"][: 2 if cfg.bidirectional else 1]:
                for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                    p = getattr(rnn, f"{name}_l{layer}{sfx}")
                    self.rnn_weights.append(nn.Parameter(p.detach().clone(), requires_grad=False))
        self.eval()

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        t = ids.size(1)
        pos = torch.arange(t, device=ids.device)[None, :]  # (1, T)
        lens = lengths[:, None]  # (B, 1)
        mask = pos < lens  # (B, T)
        rev = torch.where(mask, lens - 1 - pos, pos)  # (B, T): each row reversed within its length
        x = self.embedding(ids)  # (B, T, E)
        dirs = 2 if cfg.bidirectional else 1
        for layer in range(cfg.num_layers):
            outs = [self._rnn(x, layer * dirs)]  # (B, T, H)
            if cfg.bidirectional:
                back = self._rnn(_gather_time(x, rev), layer * dirs + 1)
                outs.append(_gather_time(back, rev))
            x = torch.cat(outs, dim=2)  # (B, T, H * dirs)
        h = cfg.hidden_dim
        if cfg.pooling == "last":
            at_end = x.gather(1, (lens - 1)[:, :, None].expand(-1, 1, x.size(2)))[:, 0]  # (B, D)
            # forward: its state at the row's last token; backward: its state back at the first token
            pooled = torch.cat([at_end[:, :h], x[:, 0, h:]], dim=1) if cfg.bidirectional else at_end
        elif cfg.pooling == "mean":
            pooled = (x * mask[..., None]).sum(1) / lens.to(x.dtype)
        else:
            pooled = x.masked_fill(~mask[..., None], float("-inf")).amax(1)
        if self.ngrams is not None:
            grams = hash_ngrams(ids, lengths, cfg.ngram_buckets)  # (B, N), 0 = none
            keep = (grams != 0).to(x.dtype)[..., None]  # EmbeddingBag's mean leaves bucket 0 out
            bag = (self.ngrams.weight[grams] * keep).sum(1) / keep.sum(1).clamp_min(1.0)
            pooled = torch.cat([pooled, bag], dim=1)
        logits = self.head(pooled)  # (B, C)
        if self.wide is None:
            return torch.softmax(logits, dim=1)
        grams = hash_ngrams(ids, lengths, cfg.wide_buckets)
        w = self.wide.idf[grams].masked_fill(grams == 0, 0.0)  # (B, N), repeats add up
        w = w / w.norm(dim=1, keepdim=True).clamp_min(1e-12)
        wide = (self.wide.weight[grams] * w[..., None]).sum(1) + self.wide.bias  # (B, C)
        logp = torch.stack([torch.log_softmax(logits, 1), torch.log_softmax(wide, 1)])  # (2, B, C)
        return torch.softmax((self.head_weights[:, None, None] * logp).sum(0), dim=1)

    def _rnn(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """The k-th (layer, direction) RNN over x (B, T, I) from a zero state -> outputs (B, T, H)."""
        h0 = x.new_zeros(1, x.size(0), self.cfg.hidden_dim)
        hx = (h0, h0) if self.cfg.rnn_type == "lstm" else h0
        weights = list(self.rnn_weights[4 * k : 4 * k + 4])
        # (input, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first)
        return self.rnn_op(x, hx, weights, True, 1, 0.0, False, False, True)[0]


_RNN_OPS = {"lstm": torch.lstm, "gru": torch.gru, "rnn_tanh": torch.rnn_tanh, "rnn_relu": torch.rnn_relu}


def _gather_time(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x (B, T, D), index (B, T) -> x[b, index[b, t]] (B, T, D)."""
    return x.gather(1, index[:, :, None].expand(-1, -1, x.size(2)))


def _example(model: TextClassifier) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs to trace with: two rows of different lengths (so no size is specialised to 1)."""
    ids = torch.tensor([[2, 3, 4, 5, 1], [3, 4, 1, 0, 0]], dtype=torch.int64) % len_vocab(model)
    return ids, torch.tensor([5, 3], dtype=torch.int64)


def len_vocab(model: TextClassifier) -> int:
    return model.embedding.num_embeddings


def onnx_bytes(model: TextClassifier) -> bytes:
    """The model as an ONNX graph (legacy TorchScript exporter: it handles RNNs with dynamic axes)."""
    wrapper = PortableClassifier(model)
    buf = io.BytesIO()
    # The torch.export-based exporter (the new default) turns an RNN into one step per position, so
    # the length could not stay dynamic; the TorchScript-based one emits ONNX's own LSTM/GRU/RNN ops.
    # It is deprecated (no replacement yet for a dynamic-length RNN): its notices are expected here and
    # only here, filtered narrowly (its own message, and warnings raised inside torch.onnx).
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "You are using the legacy TorchScript-based ONNX export")
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx\.")
        # said of every RNN; here the zero initial state is built from the input's own batch size, and
        # tests/test_portable.py runs the graph on other batch sizes
        warnings.filterwarnings("ignore", "Exporting a model to ONNX with a batch_size other than 1")
        _export_onnx(wrapper, _example(model), buf)
    return buf.getvalue()


def _export_onnx(wrapper: nn.Module, example: tuple[torch.Tensor, ...], buf: io.BytesIO) -> None:
    torch.onnx.export(
        wrapper,
        example,
        buf,
        dynamo=False,
        input_names=["ids", "lengths"],
        output_names=["probs"],
        dynamic_axes={"ids": {0: "batch", 1: "time"}, "lengths": {0: "batch"}, "probs": {0: "batch"}},
        opset_version=OPSET,
        do_constant_folding=True,
    )


def pt2_bytes(model: TextClassifier) -> bytes:
    """The model as a `torch.export` program (`torch.export.load` reads it): batch dynamic, time fixed.

    torch.export decomposes an RNN into one step per time position, so the length cannot stay dynamic
    (upstream); the program takes rows padded to `max_len`, which padding invariance makes exact.
    """
    wrapper = PortableClassifier(model)
    t = model.cfg.max_len
    ids = torch.full((2, t), UNK_ID, dtype=torch.int64)
    lengths = torch.tensor([t, max(1, t // 2)], dtype=torch.int64)
    batch = torch.export.Dim("batch", min=1)
    try:
        program = torch.export.export(
            wrapper, (ids, lengths), dynamic_shapes={"ids": {0: batch}, "lengths": {0: batch}}
        )
    except Exception as e:  # torch.export fails in many types; say what and why
        msg = f"torch.export cannot export this model ({type(e).__name__}: {str(e)[:300]})"
        raise ModelError(f"{msg}; hint: use --format onnx") from None
    buf = io.BytesIO()
    torch.export.save(program, buf)
    return buf.getvalue()


# ---------------------------------------------------------------------------- the folder

# Golden cases: one per tokenizer rule (case, <br />, quotes, separators, punctuation, Chinese, the
# specials as words, whitespace kinds, an empty text, a text longer than max_len), then vocabulary words.
GOLDEN_TEXTS = [
    "Stocks RALLY as the market climbs",
    "first line<br />second line<BR />third",
    'he said "no" ; then: yes',
    "rate of\\their \\N C:\\temp",
    "Wait... what?! (really) it's 3.5%, ok",
    "股市 银行利润 market 足球比赛",
    "<pad> and <unk> are words here",
    "tabs\tand\u00a0no-break\u3000ideographic spaces",
    "",
    "   ",
    "zzzunseen qqq",
]


def export_model(
    models: Path, version: str | None = None, *, fmt: Format = "onnx", out: Path | None = None
) -> dict[str, Any]:
    """Write a model version's export folder (default `models/VERSION/exports/FORMAT`); its manifest.

    `models` is the data directory's `models/`. An `out` of the user's must be outside the data directory
    and either new, empty or a previous export of the same format (`check_export_folder`): an export
    replaces only what an export wrote.
    """
    if fmt not in FORMATS:
        msg = f"`format` must be one of {', '.join(FORMATS)}, got {fmt!r}"
        raise ModelError(msg)
    version = registry.resolve_version(models, version)
    default = models / version / "exports" / fmt
    out = default if out is None else check_export_folder(out, fmt, data_root=models.parent, default=default)
    lm = registry.load_model(models, version, device="cpu")
    graph = onnx_bytes(lm.model) if fmt == "onnx" else pt2_bytes(lm.model)
    cfg = lm.config
    words = lm.vocab.tokens[2:22]
    texts = [*GOLDEN_TEXTS, " ".join(["word"] * (cfg.max_len + 5)), " ".join(words)]
    ids, offsets = encode(pl.Series(texts, dtype=pl.String), lm.vocab, max_len=cfg.max_len)
    golden = [{"text": t, "ids": ids[offsets[i] : offsets[i + 1]].tolist()} for i, t in enumerate(texts)]
    tokenizer = {**tokenize.tokenizer_rules(), "max_len": cfg.max_len, "pad_id": PAD_ID, "unk_id": UNK_ID}
    files: dict[str, bytes] = {
        GRAPH[fmt]: graph,
        "vocab.json": _json({"version": lm.vocab.version, "tokens": lm.vocab.tokens}),
        "labels.json": _json(lm.labels),
        "tokenizer.json": _json(tokenizer),
        "golden.json": _json(golden),
        "card.md": card(version, fmt, lm.labels, cfg.max_len).encode(),
    }
    manifest = {
        "format_version": EXPORT_FORMAT_VERSION,
        "format": fmt,
        "model_version": version,
        "vocab_version": lm.vocab.version,
        "labels": lm.labels,
        "max_len": cfg.max_len,
        "inputs": {"ids": ["batch", "time" if fmt == "onnx" else cfg.max_len], "lengths": ["batch"]},
        "outputs": {"probs": ["batch", len(lm.labels)]},
        "opset": OPSET if fmt == "onnx" else None,
        "torch": torch.__version__.split("+")[0],
        "files": {name: hashlib.sha256(data).hexdigest() for name, data in sorted(files.items())},
    }
    with lake.publish_dir(out) as tmp:
        for name, data in files.items():
            (tmp / name).write_bytes(data)
        (tmp / MANIFEST).write_bytes(_json(manifest))
    log.info("model %s exported as %s into %s", version, fmt, out)
    return {**manifest, "path": str(out)}


def check_export_folder(out: Path, fmt: Format, *, data_root: Path, default: Path) -> Path:
    """`out`, resolved, if an export may replace it, else a `PipelineError` naming it.

    It may not be the data directory, inside it (but for `default`) or above it, nor a file; a folder
    there must be empty or a previous export of `fmt` (`is_export_folder`).
    """
    where = out.resolve()
    root = data_root.resolve()
    hint = f"hint: give --out a new or empty folder, or a previous {fmt} export to replace"
    if where == default.resolve():
        return where
    if root.is_relative_to(where):
        msg = f"{out}: the data directory or a folder that holds it ({root}); nothing was written; {hint}"
        raise PipelineError(msg)
    if where.is_relative_to(root):
        msg = (
            f"{out}: inside the data directory {root}; nothing was written; hint: leave --out out (the "
            f"export goes to {default}), or give it a folder outside the data directory"
        )
        raise PipelineError(msg)
    if where.exists() and not where.is_dir():
        msg = f"{out}: a file, not a folder; nothing was written; {hint}"
        raise PipelineError(msg)
    if where.is_dir() and any(where.iterdir()) and not is_export_folder(where, fmt):
        msg = f"{out}: holds files that no {fmt} export wrote; nothing was written; {hint}"
        raise PipelineError(msg)
    return where


def is_export_folder(folder: Path, fmt: Format) -> bool:
    """Whether `folder` holds a complete export of `fmt` and nothing else: its manifest (this format
    version, this format) names every other file in it, each a plain file with the sha256 recorded."""
    try:
        m = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        names = {p.name for p in folder.iterdir()}
    except (OSError, ValueError):
        return False
    if not (isinstance(m, dict) and isinstance(m.get("files"), dict)):
        return False
    files: dict[str, Any] = m["files"]
    if (m.get("format_version"), m.get("format")) != (EXPORT_FORMAT_VERSION, fmt) or GRAPH[fmt] not in files:
        return False
    if names != {*files, MANIFEST}:
        return False
    for name, sha in files.items():
        p = folder / name
        if p.is_symlink() or not p.is_file() or lake.sha256_file(p) != sha:
            return False
    return not (folder / MANIFEST).is_symlink()


def list_exports(models: Path, version: str) -> list[str]:
    """The formats `models/VERSION/exports/` holds, complete ones only (their manifest is written last)."""
    folder = models / version / "exports"
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.name in FORMATS and (p / MANIFEST).is_file())


def _json(obj: object) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def card(version: str, fmt: Format, labels: list[str], max_len: int) -> str:
    time = "time" if fmt == "onnx" else str(max_len)
    load = (
        'onnxruntime: `InferenceSession("model.onnx")`, inputs `ids` and `lengths`, output `probs`'
        if fmt == "onnx"
        else 'PyTorch: `torch.export.load("model.pt2").module()(ids, lengths)`'
    )
    return f"""# Model {version}, exported as {fmt}

Load with {load}.

## Input
1. Tokenise each text with `tokenizer.json`: lower-case, apply each `replace` pair in order, take the
   matches of `pattern` (RE2 / Rust / Java syntax; `han_ranges`, `whitespace_ranges`, `punctuation`
   and `separators` spell the same classes out). Keep the first {max_len} tokens (`max_len`).
2. Map each token to its index in `vocab.json`'s `tokens`; a token not there, and the literal strings
   `<pad>` and `<unk>`, are `unk_id` (1). A text with no token is one `unk_id`.
3. `ids`: int64 `[batch, {time}]`, each row its ids then any padding (use `pad_id`, 0);
   `lengths`: int64 `[batch]`, each row's number of ids, 1 <= length <= {time}.
   Padding never changes a row's output.

`golden.json` holds texts and the ids they must give: check a tokenizer against it.

## Output
`probs`: float32 `[batch, {len(labels)}]`, each row's class probabilities in the order of `labels.json`
({", ".join(labels)}); the prediction is the largest.
"""
