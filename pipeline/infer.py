"""Inference kernels for bulk scoring: a flat encoding (ids, offsets) -> probabilities (N, C), input order.

Rows are grouped by length and each group is cut into batches of `batch_size` rows, so every batch
holds sequences of one length and carries no padding at all:

    lengths  [3 1 3 2 3 1]  ->  batches  [rows 1 5: T=1] [row 3: T=2] [rows 0 2 4: T=3]

Three kernels run such a batch:

- `fused`: the model's own modules, unpacked. With no padding, `nn.LSTM/GRU/RNN` take their fused
  path (oneDNN on CPU, cuDNN on GPU) instead of the packed per-step loop, and pooling needs no mask
  (mean = sum / T, max over T, last = the final hidden state). Same maths as `TextClassifier.forward`;
  probabilities agree with it within 1e-5 (tests/test_score_infer.py). Used only for configurations
  it knows (`fused_support`); anything else (a new model option) gets `generic`.
- `generic`: `model(x, lengths)`, whatever the model is.
- `onnxruntime`: for `int8`, the model exported to ONNX (`pipeline.portable`, the same graph as
  `pipeline models export`) and dynamically quantised by onnxruntime (int8 weights of the LSTM and
  linear layers, activations quantised per call); the graph returns probabilities.

Precision options (measured in benchmarks/bench_score.py): `fp32` (exact), `bf16` (autocast; CPUs
with bf16 instructions, or CUDA), `int8` (onnxruntime dynamic quantisation; CPU).
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from pipeline.model import ModelConfig, TextClassifier, hash_ngrams

log = logging.getLogger(__name__)

Precision = Literal["fp32", "bf16", "int8"]
Kernel = Literal["auto", "fused", "generic"]

# The configurations the fused kernel was written and tested for. Deliberately not read from ModelConfig's
# declaration: a new setting or value declared there, or a model with other modules, sends scoring to
# the generic path until the kernel is extended and these lists with it.
_KNOWN_FIELDS = {
    "rnn_type",
    "embed_dim",
    "hidden_dim",
    "num_layers",
    "bidirectional",
    "pooling",
    "dropout",
    "max_len",
    "ngram_buckets",
    "ngram_dim",
    "wide_buckets",
}
_KNOWN_VALUES = {"rnn_type": {"rnn", "lstm", "gru"}, "pooling": {"last", "mean", "max"}}
_KNOWN_CHILDREN = {"embedding", "rnn", "dropout", "head"}
_NGRAM_CHILDREN = {"ngrams"}  # present when `ngram_buckets` > 0
_WIDE_CHILDREN = {"wide"}  # present when `wide_buckets` > 0


def fused_support(model: nn.Module) -> str | None:
    """None when the fused kernel supports `model`, else the reason it does not."""
    if type(model) is not TextClassifier:
        return f"model class {type(model).__name__} is not TextClassifier"
    cfg = model.cfg
    if type(cfg) is not ModelConfig:
        return f"model config class {type(cfg).__name__} is not ModelConfig"
    fields = {f.name for f in dataclasses.fields(cfg)}
    unknown = fields - _KNOWN_FIELDS
    if unknown or not _KNOWN_FIELDS <= fields:
        return f"model options {sorted(unknown)} are not known to the fused kernel"
    for key, allowed in _KNOWN_VALUES.items():
        if getattr(cfg, key) not in allowed:
            return f"model.{key}={getattr(cfg, key)!r} is not supported by the fused kernel"
    children = (
        _KNOWN_CHILDREN
        | (_NGRAM_CHILDREN if cfg.ngram_buckets else set())
        | (_WIDE_CHILDREN if cfg.wide_buckets else set())
    )
    if {name for name, _ in model.named_children()} != children:
        return "model has modules the fused kernel does not know"
    rnn = model.rnn
    if not isinstance(rnn, nn.RNNBase) or not rnn.batch_first or getattr(rnn, "proj_size", 0):
        return "recurrent layer is not a batch-first RNN/LSTM/GRU without projection"
    return None


def equal_length_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Row indices grouped by length (ascending), each group cut into batches of at most `batch_size`."""
    order = np.argsort(lengths, kind="stable")
    bounds = np.flatnonzero(np.diff(lengths[order])) + 1
    return [g[i : i + batch_size] for g in np.split(order, bounds) for i in range(0, len(g), batch_size)]


def gather_equal(ids: np.ndarray, offsets: np.ndarray, rows: np.ndarray) -> torch.Tensor:
    """Rows of one length from a flat encoding -> (B, T) int64 with no padding."""
    starts = offsets[rows]
    t = int(offsets[rows[0] + 1] - starts[0])
    return torch.from_numpy(ids[starts[:, None] + np.arange(t)[None, :]])


def _fused_forward(model: TextClassifier, x: torch.Tensor) -> torch.Tensor:
    """`TextClassifier.forward` for a batch of equal-length rows: x (B, T) -> logits (B, C)."""
    cfg = model.cfg
    y, h = model.rnn(model.embedding(x))  # y (B, T, D), D = H * directions
    if cfg.pooling == "last":
        h_n = h[0] if isinstance(h, tuple) else h  # (layers * dirs, B, H)
        pooled = torch.cat([h_n[-2], h_n[-1]], dim=1) if cfg.bidirectional else h_n[-1]
    elif cfg.pooling == "mean":
        pooled = y.sum(1) / y.size(1)  # (B, D), summed then divided as in forward
    else:
        pooled = y.amax(1)
    lengths = torch.full((x.size(0),), x.size(1), dtype=torch.int64, device=x.device)
    if cfg.ngram_buckets:
        bag = model.ngrams(hash_ngrams(x, lengths, cfg.ngram_buckets))  # (B, ngram_dim)
        pooled = torch.cat([pooled, bag], dim=1)
    heads = [model.head(pooled)]  # (B, C); dropout is the identity in eval mode
    if cfg.wide_buckets:
        heads.append(model.wide(x, lengths))
    return model.combine(heads)


@dataclass
class Scorer:
    """A model prepared for bulk inference; `predict_proba` is the only thing callers need."""

    model: nn.Module
    kernel: Literal["fused", "generic", "onnxruntime"]
    precision: Precision
    device: str
    batch_size: int
    num_classes: int
    graph: bytes | None = None  # the ONNX graph the onnxruntime kernel runs
    _sessions: dict[int, Any] = field(default_factory=dict, repr=False)  # by thread count

    def predict_proba(self, ids: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """Probabilities (N, C) float64 of a flat encoding (every row has >= 1 token), in input order."""
        n = len(offsets) - 1
        out = np.empty((n, self.num_classes), dtype=np.float64)
        if n == 0:
            return out
        lengths = np.diff(offsets)
        if self.kernel == "onnxruntime":
            return self._predict_onnx(ids, offsets, lengths, out)
        forward = self._forward()
        with torch.inference_mode(), self._autocast():
            for rows in equal_length_batches(lengths, self.batch_size):
                x = gather_equal(ids, offsets, rows).to(self.device, non_blocking=True)
                logits = forward(x)
                out[rows] = torch.softmax(logits.float().double(), dim=1).cpu().numpy()
        return out

    def _predict_onnx(
        self, ids: np.ndarray, offsets: np.ndarray, lengths: np.ndarray, out: np.ndarray
    ) -> np.ndarray:
        session = self._session()
        for rows in equal_length_batches(lengths, self.batch_size):
            x = gather_equal(ids, offsets, rows).numpy()
            (probs,) = session.run(None, {"ids": x, "lengths": lengths[rows].astype(np.int64)})
            out[rows] = probs
        return out / out.sum(1, keepdims=True)  # float32 probabilities, summed in float64

    def _session(self) -> Any:
        """An onnxruntime session with torch's current thread count (what the scoring worker set)."""
        import onnxruntime as ort

        threads = torch.get_num_threads()
        if threads not in self._sessions:
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
            opts.log_severity_level = 3  # errors only
            self._sessions[threads] = ort.InferenceSession(
                self.graph, opts, providers=["CPUExecutionProvider"]
            )
        return self._sessions[threads]

    def _forward(self) -> Callable[[torch.Tensor], torch.Tensor]:
        if self.kernel == "fused":
            return lambda x: _fused_forward(self.model, x)  # type: ignore[arg-type]
        return lambda x: self.model(x, torch.full((x.size(0),), x.size(1), dtype=torch.int64))

    def _autocast(self) -> AbstractContextManager[object]:
        if self.precision == "bf16":
            return torch.autocast(device_type=self.device.split(":")[0], dtype=torch.bfloat16)
        return nullcontext()


def build_scorer(
    model: nn.Module,
    *,
    batch_size: int,
    precision: Precision = "fp32",
    kernel: Kernel = "auto",
    device: str = "cpu",
) -> Scorer:
    """Prepare `model` (already on `device`) for bulk scoring. It is put in eval mode, its only change:
    int8 exports a quantised copy and leaves it as it is."""
    reason = fused_support(model)
    if kernel == "fused" and reason is not None:
        msg = f"`kernel` fused: {reason}; hint: use kernel='auto'"
        raise ValueError(msg)
    chosen: Literal["fused", "generic"] = "fused" if kernel != "generic" and reason is None else "generic"
    if kernel == "auto" and reason is not None:
        log.info("scoring with the generic kernel: %s", reason)
    precision = _check_precision(precision, device)
    num_classes = _num_classes(model)
    if precision == "int8":
        if reason is None:
            return Scorer(
                model, "onnxruntime", precision, device, batch_size, num_classes, quantize_int8(model)
            )
        log.warning("int8 needs a model that exports to ONNX (%s); scoring in fp32", reason)
        precision = "fp32"
    model.eval()
    return Scorer(model, chosen, precision, device, batch_size, num_classes)


# What onnxruntime's dynamic quantisation rewrites: ONNX has no integer GRU/RNN op, so those run in
# float32 while the linear layers beside them are int8.
INT8_OPS = ["LSTM", "MatMul", "Gemm"]


def quantize_int8(model: nn.Module) -> bytes:
    """`model` as an ONNX graph (ids, lengths -> probs) with int8 weights (onnxruntime dynamic
    quantisation, per tensor, signed); the model given is not changed."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from pipeline.portable import onnx_bytes

    with tempfile.TemporaryDirectory(prefix="pipeline-int8-") as tmp:
        src, pre, dst = (Path(tmp) / f"{name}.onnx" for name in ("fp32", "pre", "int8"))
        src.write_bytes(onnx_bytes(model))  # type: ignore[arg-type]
        quant_pre_process(str(src), str(pre))  # shapes inferred, graph optimised: what quantisation expects
        quantize_dynamic(pre, dst, weight_type=QuantType.QInt8, op_types_to_quantize=INT8_OPS)
        return dst.read_bytes()


def bf16_supported(device: str) -> bool:
    if device.startswith("cuda"):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def _check_precision(precision: Precision, device: str) -> Precision:
    if precision == "int8" and not device.startswith("cpu"):
        log.warning("int8 (onnxruntime) runs on the CPU only; scoring on %s in fp32", device)
        return "fp32"
    if precision == "bf16" and not bf16_supported(device):
        log.warning("no bf16 support on %s; scoring in fp32", device)
        return "fp32"
    return precision


def _num_classes(model: nn.Module) -> int:
    head = getattr(model, "head", None)
    out = getattr(head, "out_features", None)
    if isinstance(out, int):
        return out
    msg = "model has no `head` with `out_features`; cannot size the probabilities"
    raise ValueError(msg)
