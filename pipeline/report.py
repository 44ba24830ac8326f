"""Evaluation reports: metrics, a confusion matrix and training curves as pictures, a model card.

Labels are data, never markup: the pictures draw every string as plain text (`plain_text`: no maths, no
TeX), and the card writes them through `markdown_text`, so a label like `cost $x$`, `a|b` or `<script>`
shows as itself wherever the card is rendered.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt
import numpy as np


def compute_metrics(y_true: np.ndarray, y_pred: np.ndarray, labels: list[str]) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class precision/recall/F1/support and the confusion matrix.

    `confusion[i][j]` counts rows whose true class is `labels[i]` and predicted class `labels[j]`.
    """
    k = len(labels)
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    tp = np.diag(cm).astype(float)
    support = cm.sum(1)
    predicted = cm.sum(0)
    precision = np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros(k), where=support > 0)
    f1 = np.divide(
        2 * precision * recall, precision + recall, out=np.zeros(k), where=(precision + recall) > 0
    )
    n = int(cm.sum())
    return {
        "rows": n,
        "accuracy": float(tp.sum() / n) if n else 0.0,
        "macro_f1": float(f1.mean()) if k else 0.0,
        "per_class": {
            lab: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, lab in enumerate(labels)
        },
        "labels": labels,
        "confusion": cm.tolist(),
    }


@contextmanager
def plain_text() -> Iterator[None]:
    """Matplotlib draws every string in the block as it is: `$...$` is never maths and nothing goes to
    TeX (a label such as `cost $\\nosuchcmd$` would otherwise fail the whole picture). A character the
    font lacks (CJK, say) is drawn as a box without a warning per picture. Wrap the whole figure, from
    `subplots` to `savefig`: tick labels are made late, when the figure is drawn."""
    with plt.rc_context({"text.parse_math": False, "text.usetex": False}), warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"Glyph \d+ .* missing from font", UserWarning)
        yield


# Markdown (CommonMark, GitHub's tables and maths) reads these anywhere in a line: a backslash escape
# makes each a plain character. `&`, `<` and `>` become entities, so no HTML in a label is ever live,
# and a line break in a label becomes `<br>` (a table row is one line).
_MARKDOWN = {c: "\\" + c for c in "\\`*_[]|~$"} | {
    "&": "&amp;",
    "<": "&lt;",
    ">": "&gt;",
    "\r": "<br>",
    "\n": "<br>",
}


def markdown_text(text: str) -> str:
    """`text` as Markdown that renders as exactly that text, in a paragraph or a table cell."""
    return text.replace("\r\n", "\n").translate(str.maketrans(_MARKDOWN))


@plain_text()
def plot_confusion(metrics: dict[str, Any], path: Path, title: str = "Confusion matrix") -> None:
    labels = metrics["labels"]
    cm = np.array(metrics["confusion"])
    size = max(4.0, 0.6 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(
                j, i, str(cm[i, j]), ha="center", va="center", color="white" if norm[i, j] > 0.5 else "black"
            )
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{title} (accuracy {metrics['accuracy']:.3f})")
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)


@plain_text()
def plot_curves(history: list[dict[str, float]], path: Path) -> None:
    epochs = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(epochs, [h["train_loss"] for h in history], marker="o", label="train")
    a.plot(epochs, [h["val_loss"] for h in history], marker="o", label="validation")
    a.set_xlabel("epoch")
    a.set_ylabel("cross-entropy loss")
    a.legend()
    b.plot(epochs, [h["train_acc"] for h in history], marker="o", label="train")
    b.plot(epochs, [h["val_acc"] for h in history], marker="o", label="validation")
    for head in ("sequence", "tfidf"):  # each head alone, when the model has two (train.fit)
        if all(f"val_acc_{head}" in h for h in history):
            b.plot(epochs, [h[f"val_acc_{head}"] for h in history], ls="--", label=f"validation, {head} head")
    b.set_xlabel("epoch")
    b.set_ylabel("accuracy")
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)


def write_card(path: Path, info: dict[str, Any]) -> None:
    m = info["metrics"]
    lines = [
        f"# Model {info['version']}",
        "",
        "## Data",
        f"- lake partitions: {', '.join(info['dates'])}",
        f"- labelled rows: {info['rows_train']} train, {info['rows_val']} validation",
        f"- classes: {', '.join(markdown_text(x) for x in m['labels'])}",
        f"- vocabulary: {info['vocab_version']} ({info['vocab_size']} tokens)",
        "",
        "## Config",
        "```json",
        info["config_json"],
        "```",
        "",
        "## Validation metrics",
        f"- accuracy: {m['accuracy']:.4f}",
        f"- macro-F1: {m['macro_f1']:.4f}",
        "",
        "| class | precision | recall | F1 | support |",
        "|---|---|---|---|---|",
        *[
            f"| {markdown_text(k)} | {v['precision']:.3f} | {v['recall']:.3f} | {v['f1']:.3f} | "
            f"{v['support']} |"
            for k, v in m["per_class"].items()
        ],
        "",
        "![confusion](confusion.png)",
        "![curves](curves.png)",
        "",
        "## Timings",
        f"- best epoch: {info['best_epoch']} of {info['epochs_run']}",
        f"- training seconds: {info['train_seconds']:.1f} on {info['device']}",
        "",
    ]
    path.write_text("\n".join(lines), encoding="utf-8")
