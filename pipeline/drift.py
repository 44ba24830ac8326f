"""A night's summary and its drift: the small JSON that reports are drawn from.

`summarize_night` reads a date's lake and prediction manifests and the predictions' `label_id` and
`score` columns once, and writes `reports/date=D/summary.json`: rows read, kept and quarantined by
reason, the predicted class mix, a histogram of `score`, the share below `report.confidence`, what the
page must warn of (`warnings`: a night that scored no rows), and two population stability indices against
the scoring model's own validation predictions (its `validation_predictions.parquet`, written by
`train`):

    PSI = sum over bins of (a - e) * ln(a / e)      a, e: tonight's and the reference's shares

one over the classes, one over `SCORE_BINS` equal bins of `score` in [0, 1]. A share of 0 counts as
`EPSILON`, so an empty bin is finite. Common reading: below 0.1 stable, 0.1 to 0.25 a shift worth a
look, above 0.25 a different population. A night above `report.psi_class_mix` or `report.psi_score`
is flagged.

The summary records its inputs (the manifests' hashes, the model, the thresholds); a summary with the
same inputs is up to date and the predictions are not read again. Reports over many nights read only
these summaries (`pipeline/nightreport.py`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from pipeline import lake, score
from pipeline.config import ReportConfig

log = logging.getLogger(__name__)

SUMMARY = "summary.json"
SCORE_BINS = 10  # equal-width bins of `score` over [0, 1]
EPSILON = 1e-4  # the share an empty bin counts as in the PSI
SUMMARY_VERSION = 2  # 2: `warnings`


def psi(expected: np.ndarray | list[float], actual: np.ndarray | list[float]) -> float:
    """Population stability index of two histograms (counts or shares over the same bins)."""
    e = np.asarray(expected, dtype=np.float64)
    a = np.asarray(actual, dtype=np.float64)
    if e.shape != a.shape or e.sum() <= 0 or a.sum() <= 0:
        msg = f"psi: histograms must have the same bins and rows, got {e.tolist()} and {a.tolist()}"
        raise ValueError(msg)
    e = np.clip(e / e.sum(), EPSILON, None)
    a = np.clip(a / a.sum(), EPSILON, None)
    return float(((a - e) * np.log(a / e)).sum())


def score_histogram(scores: np.ndarray) -> list[int]:
    counts, _ = np.histogram(scores, bins=SCORE_BINS, range=(0.0, 1.0))
    return [int(c) for c in counts]


def model_reference(model_folder: Path, labels: list[str]) -> dict[str, Any]:
    """The scoring model's validation predictions as histograms: class counts (in `labels` order) and
    `score` counts (None for a model trained before `train` recorded scores)."""
    path = model_folder / "validation_predictions.parquet"
    if not path.is_file():
        return {"rows": 0, "classes": None, "score_hist": None}
    val = pl.read_parquet(path)
    counts = val["predicted"].value_counts()
    by_label = dict(zip(counts["predicted"].to_list(), counts["count"].to_list(), strict=True))
    return {
        "rows": val.height,
        "classes": [int(by_label.get(lab, 0)) for lab in labels],
        "score_hist": score_histogram(val["score"].to_numpy()) if "score" in val.columns else None,
    }


def flags(summary: dict[str, Any], cfg: ReportConfig) -> dict[str, bool]:
    """Which of a night's PSIs are above their thresholds (a PSI that could not be computed: never)."""
    d = summary["drift"]
    return {
        "class_mix": d["psi_class_mix"] is not None and d["psi_class_mix"] > cfg.psi_class_mix,
        "score": d["psi_score"] is not None and d["psi_score"] > cfg.psi_score,
    }


def warnings(summary: dict[str, Any]) -> dict[str, str]:
    """What a night's page must warn of before anything else, by code (none: an ordinary night).

    A night that scored no rows has no class mix, no confidence and no drift to show: without a
    warning its page would read as a quiet night.
    """
    if summary["rows_scored"]:
        return {}
    read, kept = summary["rows_read"], summary["rows_kept"]
    why = (
        "no rows were read"
        if not read
        else f"all {read:,} rows read were quarantined"
        if not kept
        else f"{kept:,} rows were kept but none scored"
    )
    return {"no_rows": f"No rows were scored this night: {why}. There is no class mix, confidence or drift."}


def summary_path(data: lake.DataDir, date: str) -> Path:
    return data.report(date) / SUMMARY


def read_summary(data: lake.DataDir, date: str) -> dict[str, Any] | None:
    path = summary_path(data, date)
    return lake.read_json(path) if path.is_file() else None


def summarize_night(data: lake.DataDir, date: str, cfg: ReportConfig) -> dict[str, Any]:
    """Write (or find up to date) the summary of a scored date; returns it, with `skipped`.

    Under the date's lock, like every nightly step: a run scoring the date again waits, or is waited for.
    """
    with lake.locked(data, f"date-{date}"):
        return _summarize_night(data, date, cfg)


def _summarize_night(data: lake.DataDir, date: str, cfg: ReportConfig) -> dict[str, Any]:
    texts = lake.require_manifest(data.texts(date), hint=f"hint: run `pipeline run --date {date}` first")
    preds = lake.require_manifest(
        data.predictions(date), hint=f"hint: score it first, `pipeline score --date {date}` or `pipeline run`"
    )
    inputs = {
        "lake": lake.sha256_json(texts),
        "predictions": lake.sha256_json(preds["shards"]),
        "model": preds["model_version"],
        "thresholds": {"confidence": cfg.confidence},
        "version": SUMMARY_VERSION,
    }
    existing = read_summary(data, date)
    if existing is not None and existing.get("inputs") == inputs:  # flags: the thresholds in force
        return {**existing, "flags": flags(existing, cfg), "skipped": True}

    labels = list(preds["labels"])
    label_ids, scores = _read_predictions(data.predictions(date))
    classes = np.bincount(label_ids, minlength=len(labels))
    hist = score_histogram(scores)
    ref = model_reference(data.model(preds["model_version"]), labels)
    rows = len(scores)
    summary = {
        "date": date,
        "inputs": inputs,
        "rows_read": int(texts.get("rows_read", 0)),
        "rows_kept": int(texts.get("rows_kept", 0)),
        "rows_quarantined": int(texts.get("rows_quarantined", 0)),
        "quarantined_by_reason": dict(sorted((texts.get("quarantined_by_reason") or {}).items())),
        "rows_scored": rows,
        "model_version": preds["model_version"],
        "scored_at": preds.get("scored_at"),
        "labels": labels,
        "class_counts": [int(c) for c in classes],
        "score_hist": hist,
        "score_mean": round(float(scores.mean()), 6) if rows else None,
        "confidence": cfg.confidence,
        "low_confidence_rows": int((scores < cfg.confidence).sum()),
        "low_confidence_share": round(float((scores < cfg.confidence).mean()), 6) if rows else None,
        "reference": ref,
        "drift": {
            "psi_class_mix": _psi_or_none(ref["classes"], classes),
            "psi_score": _psi_or_none(ref["score_hist"], hist),
        },
    }
    summary["warnings"] = warnings(summary)
    lake.write_json(summary_path(data, date), summary)
    summary["flags"] = flags(summary, cfg)
    for message in summary["warnings"].values():
        log.warning("%s: %s", date, message)
    log.info(
        "%s: %d rows, PSI class mix %s, PSI score %s%s",
        date,
        rows,
        summary["drift"]["psi_class_mix"],
        summary["drift"]["psi_score"],
        " (drift: above the thresholds)" if any(summary["flags"].values()) else "",
    )
    return {**summary, "skipped": False}


def brief(summary: dict[str, Any]) -> dict[str, Any]:
    """What a run summary keeps of a night's summary."""
    return {
        "psi_class_mix": summary["drift"]["psi_class_mix"],
        "psi_score": summary["drift"]["psi_score"],
        "low_confidence_share": summary["low_confidence_share"],
        "drift": sorted(k for k, v in summary["flags"].items() if v),
        "skipped": summary["skipped"],
    }


def _psi_or_none(reference: list[int] | None, tonight: np.ndarray | list[int]) -> float | None:
    if reference is None or sum(reference) == 0 or int(np.sum(tonight)) == 0:
        return None
    return round(psi(reference, tonight), 6)


def _read_predictions(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """`label_id` and `score` of every shard (memory-mapped; the text columns are never touched)."""
    ids, scores = [], []
    for path in score.prediction_files(folder):
        with pa.memory_map(str(path)) as source:
            table = pa.ipc.open_file(source).read_all().select(["label_id", "score"])
            ids.append(table.column("label_id").to_numpy())
            scores.append(table.column("score").to_numpy())
    if not ids:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    return np.concatenate(ids).astype(np.int64), np.concatenate(scores)
