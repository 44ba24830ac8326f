"""Prefect flows: wiring only. Every task calls one stage function; tasks pass paths and manifests.

This is the only module that imports Prefect (a test keeps it so). Stages decide themselves whether
their outputs are up to date, so Prefect's own caching is off (`NO_CACHE`).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from pipeline import corpus, demo, lake
from pipeline import evaluate as evaluate_stage
from pipeline import export as export_stage
from pipeline import ingest as ingest_stage
from pipeline import score as score_stage
from pipeline import train as train_stage
from pipeline.config import PipelineConfig, load_config


def _data(root: str) -> lake.DataDir:
    return lake.DataDir.at(root)


# ---------------------------------------------------------------------------- tasks


@task(name="ingest", cache_policy=NO_CACHE)
def ingest_task(root: str, sources: list[str], date: str, cfg: ingest_stage.IngestConfig) -> dict[str, Any]:
    return ingest_stage.ingest([Path(s) for s in sources], date, _data(root), cfg)


@task(name="train", cache_policy=NO_CACHE)
def train_task(root: str, cfg: PipelineConfig, start: str | None, end: str | None) -> dict[str, Any]:
    return train_stage.train(_data(root), cfg, start=start, end=end)


@task(name="score", cache_policy=NO_CACHE)
def score_task(root: str, date: str, cfg: PipelineConfig, model: str | None) -> dict[str, Any]:
    m = score_stage.score_partition(_data(root), date, cfg.score, model_version=model)
    return {k: m[k] for k in ("date", "rows", "model_version", "skipped")}


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate_task(root: str, date: str, model: str | None) -> dict[str, Any]:
    m = evaluate_stage.evaluate_partition(_data(root), date, model_version=model)
    return {k: m[k] for k in ("date", "model_version", "rows", "accuracy", "macro_f1", "rows_unknown_label", "path")}


# The exporter is an external process: the one place a retry can help.
@task(name="export", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def export_task(root: str, date: str, fmt: str) -> dict[str, Any]:
    return export_stage.export_partition(_data(root), date, fmt=fmt)  # type: ignore[arg-type]


@task(name="generate-corpus", cache_policy=NO_CACHE)
def corpus_task(root: str) -> list[str]:
    return [str(p) for p in corpus.generate_corpus(_data(root))]


# ---------------------------------------------------------------------------- flows


@flow(name="ingest")
def ingest_flow(
    root: str, date: str, sources: list[str], cfg: ingest_stage.IngestConfig | None = None
) -> dict[str, Any]:
    return ingest_task(root, sources, date, cfg or ingest_stage.IngestConfig())


@flow(name="train")
def train_flow(
    root: str,
    start: str | None = None,
    end: str | None = None,
    config_file: str | None = None,
    overrides: list[str] | None = None,
) -> dict[str, Any]:
    cfg = load_config(Path(config_file) if config_file else None, overrides)
    return train_task(root, cfg, start, end)


@flow(name="score")
def score_flow(root: str, date: str, model: str | None = None) -> dict[str, Any]:
    return score_task(root, date, PipelineConfig(), model)


@flow(name="evaluate")
def evaluate_flow(root: str, date: str, model: str | None = None) -> dict[str, Any]:
    return evaluate_task(root, date, model)


@flow(name="export")
def export_flow(root: str, date: str, fmt: str = "ndjson") -> dict[str, Any]:
    return export_task(root, date, fmt)


@flow(name="nightly")
def nightly_flow(root: str, date: str | None = None) -> dict[str, Any]:
    """Ingest `raw/<date>/` (if it has files), score with the `latest` model, export."""
    date = lake.parse_date(date or dt.datetime.now(dt.UTC).date().isoformat())
    data = _data(root)
    sources = [str(p) for p in ingest_stage.raw_sources(data, date)]
    summary: dict[str, Any] = {"date": date}
    if sources:
        summary["ingest"] = ingest_task(root, sources, date, ingest_stage.IngestConfig())
    summary["score"] = score_task(root, date, PipelineConfig(), None)
    summary["export"] = export_task(root, date, "ndjson")
    return summary


@flow(name="backfill")
def backfill_flow(root: str, start: str, end: str) -> list[dict[str, Any]]:
    return [nightly_flow(root, d) for d in lake.date_range(start, end)]


@flow(name="demo")
def demo_flow(root: str) -> dict[str, Any]:
    """Generate the corpus, ingest the training days, train, then run the nightly job on the held-out day."""
    corpus_task(root)
    data = _data(root)
    cfg = ingest_stage.IngestConfig(classes=corpus.CLASSES)
    ingested = [
        ingest_task(root, [str(p) for p in ingest_stage.raw_sources(data, d)], d, cfg)
        for d in corpus.TRAIN_DATES
    ]
    trained = train_task(root, demo.demo_config(), corpus.TRAIN_DATES[0], corpus.TRAIN_DATES[-1])
    night = nightly_flow(root, corpus.SCORE_DATE)
    return demo.summarize(data, [*ingested, night["ingest"]], trained, night)
