"""The nightly job for one date, as plain functions: ingest `raw/<date>/`, score, export (then the
night's summary and report: `drift.py`, `nightreport.py`).

Each step runs under the date's lock (two runs can never write the same partition) and does no work
when its outputs are up to date: ingest compares the raw files' hashes and its options with what it
recorded last time (`state/ingest/<date>.json`); scoring and export compare the hashes of their
inputs and the model version with their manifests. Change a raw file and only that date is ingested
again; train a new model and every date is scored and exported again, nothing else.

Run summaries (`runs/<run>.json` and a Markdown table) count rows per date and seconds per stage, and
list the nights whose drift is above the `[report]` thresholds.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any

from pipeline import export, ingest, lake, score, sink_mysql, storage
from pipeline.config import ScoreConfig
from pipeline.errors import ConfigError

log = logging.getLogger(__name__)
STAGES = ("ingest", "score", "export")


RUNNERS = ("local", "processes", "dask")


def parse_runner(spec: str) -> tuple[str, str]:
    """(kind, address) of a `--runner`: local (threads), processes, dask (a local cluster) or dask=ADDRESS."""
    kind, _, address = spec.partition("=")
    if (
        kind not in RUNNERS
        or (address and kind != "dask")
        or (kind == "dask" and "=" in spec and not address)
    ):
        msg = f"--runner must be local, processes, dask or dask=ADDRESS, got {spec!r}"
        raise ConfigError(msg)
    return kind, address


def ingest_date(
    data: lake.DataDir, date: str, stage_sources: ingest.StageSources | None = None
) -> dict[str, Any]:
    """Ingest every file in `raw/<date>/` (options from its `_ingest.toml`, if any); with `stage_sources`,
    its files are read and cleaned in parallel elsewhere (`ingest.ingest`).

    Like every step here, a full or read-only data directory fails with a `StorageError`.
    """
    with storage.storage_errors(data.root, f"ingesting {date}"):
        return _ingest_date(data, date, stage_sources)


def _ingest_date(data: lake.DataDir, date: str, stage_sources: ingest.StageSources | None) -> dict[str, Any]:
    t0 = time.perf_counter()
    sources = ingest.raw_sources(data, date)
    if not sources:
        existing = lake.read_manifest(data.texts(date))
        log.info(
            "%s: no raw files; %s", date, "keeping the lake partition" if existing else "nothing to ingest"
        )
        return _ingest_result(date, existing, skipped=True, seconds=time.perf_counter() - t0)
    cfg = ingest.load_folder_config(data.raw(date))
    inputs = {
        "sources": [[str(p.relative_to(data.root)), lake.sha256_file(p)] for p in sources],
        "config": lake.sha256_json(dataclasses.asdict(cfg)),
    }
    with lake.locked(data, f"date-{date}"):
        current = lake.read_manifest(data.texts(date))
        stamp_path = data.stamp("ingest", date)
        stamp = lake.read_json(stamp_path) if stamp_path.is_file() else None
        if current is not None and stamp == {"inputs": inputs, "output": lake.sha256_json(current)}:
            log.info("%s: lake partition is up to date with raw/%s; nothing to ingest", date, date)
            return _ingest_result(date, current, skipped=True, seconds=time.perf_counter() - t0)
        m = ingest.ingest(sources, date, data, cfg, stage_sources=stage_sources)
        lake.write_json(stamp_path, {"inputs": inputs, "output": lake.sha256_json(m)})
    return _ingest_result(date, m, skipped=False, seconds=time.perf_counter() - t0)


def _ingest_result(date: str, m: dict[str, Any] | None, *, skipped: bool, seconds: float) -> dict[str, Any]:
    m = m or {}
    return {
        "date": date,
        "rows_read": m.get("rows_read", 0),
        "rows_kept": m.get("rows_kept", 0),
        "rows_quarantined": m.get("rows_quarantined", 0),
        "skipped": skipped,
        "seconds": round(seconds, 3),
    }


def score_date(
    data: lake.DataDir,
    date: str,
    cfg: ScoreConfig,
    model: str | None = None,
    run_units: score.RunUnits | None = None,
    *,
    workers: int = 1,
) -> dict[str, Any]:
    """Score `date` (`score.score_partition`; with `run_units`, in units spread over `workers`)."""

    def work() -> dict[str, Any]:
        return score.score_partition(
            data, date, cfg, model_version=model, run_units=run_units, workers=workers
        )

    return _step(data, date, f"scoring {date}", work, ("rows", "model_version"))


def export_date(data: lake.DataDir, date: str, fmt: str = "ndjson") -> dict[str, Any]:
    def work() -> dict[str, Any]:
        return export.export_partition(data, date, fmt=fmt)  # type: ignore[arg-type]

    return _step(data, date, f"exporting {date}", work, ("rows", "path"))


def load_date(data: lake.DataDir, date: str, url: str) -> dict[str, Any]:
    """Load the date's predictions into the MySQL table of `url` (`sink_mysql`); skip if it holds them."""

    def work() -> dict[str, Any]:
        return sink_mysql.load_partition(data, date, url)

    return _step(data, date, f"loading {date} into MySQL", work, ("rows", "table"))


def _step(
    data: lake.DataDir, date: str, doing: str, work: Callable[[], dict[str, Any]], keys: tuple[str, ...]
) -> dict[str, Any]:
    """`work` under the date's lock, storage errors said as such; its `keys`, whether it skipped, seconds."""
    t0 = time.perf_counter()
    with storage.storage_errors(data.root, doing), lake.locked(data, f"date-{date}"):
        m = work()
    return {
        "date": date,
        **{k: m[k] for k in keys},
        "skipped": m["skipped"],
        "seconds": round(time.perf_counter() - t0, 3),
    }


# ---------------------------------------------------------------------------- run summaries


def summarize_run(
    run_id: str,
    flow: str,
    days: list[dict[str, Any]],
    seconds: float,
    *,
    failed: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    """One record per date with the rows in and out of each stage; failed dates; totals; wall time.

    A date loaded into MySQL has a `mysql` stage too; `rows_loaded` counts its rows (0 without one).
    """
    for d in days:
        kept, scored, exported = d["ingest"]["rows_kept"], d["score"]["rows"], d["export"]["rows"]
        loaded = d["mysql"]["rows"] if "mysql" in d else exported
        if not (kept == scored == exported == loaded):
            msg = (
                f"{d['date']}: counts do not add up: kept {kept}, scored {scored}, exported {exported}, "
                f"loaded {loaded}"
            )
            raise AssertionError(msg)
    stage_seconds = sum(d[s]["seconds"] for d in days for s in (*STAGES, "mysql") if s in d)
    return {
        "run": run_id,
        "flow": flow,
        "dates": days,
        "failed": failed or [],
        "drifted": [d["date"] for d in days if d.get("report", {}).get("drift")],
        "totals": {
            k: sum(d[s][f] for d in days)
            for k, (s, f) in {
                "rows_read": ("ingest", "rows_read"),
                "rows_ingested": ("ingest", "rows_kept"),
                "rows_quarantined": ("ingest", "rows_quarantined"),
                "rows_scored": ("score", "rows"),
                "rows_exported": ("export", "rows"),
            }.items()
        }
        | {"rows_loaded": sum(d["mysql"]["rows"] for d in days if "mysql" in d)},
        "seconds": {"wall": round(seconds, 3), "stages": round(stage_seconds, 3)},
    }


def write_run_summary(data: lake.DataDir, summary: dict[str, Any]) -> str:
    path = data.runs / f"{lake.check_name(summary['run'], 'run')}.json"
    with storage.storage_errors(data.root, "writing the run summary"):
        lake.write_json(path, summary)
    return str(path)


def summary_markdown(summary: dict[str, Any]) -> str:
    def mark(step: dict[str, Any]) -> str:
        return " (up to date)" if step["skipped"] else ""

    mysql = any("mysql" in d for d in summary["dates"])  # the MySQL columns only when a date was loaded
    lines = [
        f"# {summary['flow']} run {summary['run']}",
        "",
        "| date | ingested | quarantined | scored | exported | model | ingest s | score s | export s "
        "| drift |" + (" loaded | load s |" if mysql else ""),
        "|---|---:|---:|---:|---:|---|---:|---:|---:|---|" + ("---:|---:|" if mysql else ""),
    ]
    for d in summary["dates"]:
        i, s, e = d["ingest"], d["score"], d["export"]
        lines.append(
            f"| {d['date']} | {i['rows_kept']}{mark(i)} | {i['rows_quarantined']} | {s['rows']}{mark(s)} | "
            f"{e['rows']}{mark(e)} | {s['model_version']} | {i['seconds']:.2f} | {s['seconds']:.2f} | "
            f"{e['seconds']:.2f} | {_drift_cell(d.get('report'))} |"
        )
        if mysql:
            m = d.get("mysql")
            lines[-1] += f" {m['rows']}{mark(m)} | {m['seconds']:.2f} |" if m else " | |"
    for f in summary.get("failed", []):
        lines.append(f"| {f['date']} | FAILED: {f['error'].replace('|', '/')} | | | | | | | | |")
    t = summary["totals"]
    loaded = f", {t['rows_loaded']} loaded into MySQL" if mysql else ""
    lines += [
        "",
        f"Totals: {t['rows_ingested']} ingested, {t['rows_quarantined']} quarantined, "
        f"{t['rows_scored']} scored, {t['rows_exported']} exported{loaded}. Wall "
        f"{summary['seconds']['wall']:.1f} s, of which {summary['seconds']['stages']:.1f} s in the stages.",
    ]
    reports = [d["report"]["path"] for d in summary["dates"] if d.get("report", {}).get("path")]
    if reports:
        lines.append(f"Report: {reports[-1]}")
    if message := drift_message(summary):
        lines.append(f"DRIFT: {message}")
    return "\n".join(lines)


def _drift_cell(report: dict[str, Any] | None) -> str:
    if not report:
        return ""
    psi = f"PSI {_fmt(report['psi_class_mix'])} / {_fmt(report['psi_score'])}"
    return f"**{', '.join(report['drift'])}** ({psi})" if report["drift"] else psi


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def drift_message(summary: dict[str, Any]) -> str:
    """The nights above the `[report]` thresholds, and what drifted; empty when none did."""
    flagged = [d for d in summary["dates"] if d.get("report", {}).get("drift")]
    return "; ".join(
        f"{d['date']}: drift in {' and '.join(d['report']['drift'])} (PSI class mix "
        f"{_fmt(d['report']['psi_class_mix'])}, score {_fmt(d['report']['psi_score'])}), "
        f"see {d['report'].get('path')}"
        for d in flagged
    )


def report_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per night for the run's table artifact: counts, confidence and drift."""
    return [
        {
            "date": d["date"],
            "rows_read": d["ingest"]["rows_read"],
            "rows_kept": d["ingest"]["rows_kept"],
            "rows_quarantined": d["ingest"]["rows_quarantined"],
            "model": d["score"]["model_version"],
            "low_confidence_share": d["report"]["low_confidence_share"],
            "psi_class_mix": d["report"]["psi_class_mix"],
            "psi_score": d["report"]["psi_score"],
            "drift": ", ".join(d["report"]["drift"]) or "-",
            "report": d["report"].get("path"),
        }
        for d in summary["dates"]
        if d.get("report")
    ]
