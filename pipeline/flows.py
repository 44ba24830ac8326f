"""Prefect flows: wiring only. Every task calls one stage function; tasks pass paths and manifests.

This is the only module that imports Prefect (a test keeps it so). Stages decide themselves whether
their outputs are up to date, so Prefect's own caching is off (`NO_CACHE`). Retries only where a
failure can be transient: file I/O (`OSError`) and the go-exporter process; never a full or read-only
data directory, which every task reports as a `StorageError` naming the path, with a hint.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.task_runners import ProcessPoolTaskRunner, TaskRunner, ThreadPoolTaskRunner

from pipeline import corpus, demo, drift, lake, mysql_client, nightly, nightreport, score, scoreunits, storage
from pipeline import evaluate as evaluate_stage
from pipeline import ingest as ingest_stage
from pipeline import retention as retention_stage
from pipeline import train as train_stage
from pipeline.config import PipelineConfig, ReportConfig, RetentionConfig, ScoreConfig, load_config
from pipeline.errors import DriftError, ExportError, PipelineError
from pipeline.promotion import Promote


def _data(root: str) -> lake.DataDir:
    return lake.DataDir.at(root)


def _transient(exc_types: tuple[type[BaseException], ...]):
    def retry(task, task_run, state) -> bool:
        try:
            state.result()
        except exc_types as e:  # but a full or read-only disk does not mend itself in seconds
            return not (isinstance(e, OSError) and e.errno in storage.STORAGE_ERRNOS)
        except Exception:
            return False
        return False

    return retry


_IO = dict(retries=2, retry_delay_seconds=2, retry_condition_fn=_transient((OSError,)))
_EXPORTER = dict(retries=2, retry_delay_seconds=2, retry_condition_fn=_transient((OSError, ExportError)))


# ---------------------------------------------------------------------------- tasks


@task(name="ingest", cache_policy=NO_CACHE, **_IO)
def ingest_task(root: str, sources: list[str], date: str, cfg: ingest_stage.IngestConfig) -> dict[str, Any]:
    with storage.storage_errors(Path(root), f"ingesting {date}"):
        return _ingest_brief(ingest_stage.ingest([Path(s) for s in sources], date, _data(root), cfg))


def _ingest_brief(m: dict[str, Any]) -> dict[str, Any]:
    return {k: m[k] for k in ("date", "rows_read", "rows_kept", "rows_quarantined", "quarantined_by_reason")}


@task(name="stage-source", cache_policy=NO_CACHE, **_IO)
def stage_source_task(source: str, cfg: ingest_stage.IngestConfig, folder: str) -> dict[str, Any]:
    return ingest_stage.stage_source(Path(source), cfg, Path(folder))


def _stage_sources(pairs: list[tuple[Path, Path]], cfg: ingest_stage.IngestConfig) -> list[dict[str, Any]]:
    """One task a source on the flow's task runner; returns when every source is staged."""
    futures = [stage_source_task.submit(str(src), cfg, str(folder)) for src, folder in pairs]
    return [f.result() for f in futures]


@task(name="ingest-raw", cache_policy=NO_CACHE, **_IO)
def ingest_date_task(root: str, date: str) -> dict[str, Any]:
    return nightly.ingest_date(_data(root), date)


@task(name="train", cache_policy=NO_CACHE)
def train_task(
    root: str, cfg: PipelineConfig, start: str | None, end: str | None, promote: Promote = "if-better"
) -> dict[str, Any]:
    with storage.storage_errors(Path(root), "training"):
        return train_stage.train(_data(root), cfg, start=start, end=end, promote=promote)


@task(name="score", cache_policy=NO_CACHE, **_IO)
def score_task(root: str, date: str, cfg: ScoreConfig, model: str | None) -> dict[str, Any]:
    return nightly.score_date(_data(root), date, cfg, model)


@task(name="score-unit", cache_policy=NO_CACHE, **_IO)
def score_unit_task(unit: score.ScoreUnit) -> dict[str, Any]:
    return scoreunits.score_unit(unit)


def _score_units(units: list[score.ScoreUnit]) -> list[dict[str, Any]]:
    """One task a unit on the flow's task runner; returns when every unit's shards are written."""
    futures = [score_unit_task.submit(u) for u in units]
    return [f.result() for f in futures]


def _score_date(root: str, date: str, cfg: ScoreConfig, model: str | None, workers: int) -> dict[str, Any]:
    """A date scored here (one task), or with `workers` in units over the task runner's workers."""
    if not workers:
        return score_task(root, date, cfg, model)
    return nightly.score_date(_data(root), date, cfg, model, _score_units, workers=workers)


def _ingest_raw_date(root: str, date: str, workers: int) -> dict[str, Any]:
    """`raw/<date>/` ingested here (one task), or with `workers` its sources staged on the workers."""
    if not workers:
        return ingest_date_task(root, date)
    return nightly.ingest_date(_data(root), date, _stage_sources)


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate_task(root: str, date: str, model: str | None) -> dict[str, Any]:
    with storage.storage_errors(Path(root), f"evaluating {date}"):
        m = evaluate_stage.evaluate_partition(_data(root), date, model_version=model)
    return {
        k: m[k]
        for k in ("date", "model_version", "rows", "accuracy", "macro_f1", "rows_unknown_label", "path")
    }


@task(name="export", cache_policy=NO_CACHE, **_EXPORTER)
def export_task(root: str, date: str, fmt: str) -> dict[str, Any]:
    return nightly.export_date(_data(root), date, fmt)


@task(name="load-mysql", cache_policy=NO_CACHE)  # the sink retries a lost connection itself
def mysql_task(root: str, date: str, url: str) -> dict[str, Any]:
    return nightly.load_date(_data(root), date, url)


@task(name="summarize-night", cache_policy=NO_CACHE, **_IO)
def summarize_night_task(root: str, date: str, cfg: ReportConfig) -> dict[str, Any]:
    with storage.storage_errors(Path(root), f"summarizing {date}"):
        return drift.brief(drift.summarize_night(_data(root), date, cfg))


@task(name="night-report", cache_policy=NO_CACHE, **_IO)
def night_report_task(root: str, date: str, cfg: ReportConfig) -> str:
    with storage.storage_errors(Path(root), f"writing the report of {date}"):
        return str(nightreport.write_night_report(_data(root), date, cfg).relative_to(root))


@task(name="gc", cache_policy=NO_CACHE)
def gc_task(root: str, policy: RetentionConfig, date: str) -> str:
    """What `pipeline gc` does, keeping the night just run whatever its date."""
    return retention_stage.collect_garbage(_data(root), policy, keep_dates=[date])


@task(name="generate-corpus", cache_policy=NO_CACHE)
def corpus_task(root: str) -> list[str]:
    return [str(p) for p in corpus.generate_corpus(_data(root))]


# ---------------------------------------------------------------------------- runners


def runner_workers(spec: str, *, concurrency: int = 2) -> int:
    """How many units a runner scores at once: 0 for `local` (a date is scored in one process, as ever),
    `concurrency` for processes or a local cluster, an existing cluster's worker threads."""
    kind, address = nightly.parse_runner(spec)
    if kind == "local":
        return 0
    if not address:
        return concurrency
    from distributed import Client

    with Client(address, timeout=30) as client:
        return sum(w["nthreads"] for w in client.scheduler_info()["workers"].values())


def make_task_runner(spec: str = "local", *, concurrency: int = 2) -> TaskRunner:
    """`local` (threads), `processes`, `dask` (a local cluster) or `dask=ADDRESS` (an existing one)."""
    kind, address = nightly.parse_runner(spec)
    if kind == "local":
        return ThreadPoolTaskRunner(max_workers=concurrency)
    if kind == "processes":
        return ProcessPoolTaskRunner(max_workers=concurrency)
    from prefect_dask import DaskTaskRunner  # kind == "dask"; imported only when used

    if address:
        return DaskTaskRunner(address=address)
    return DaskTaskRunner(
        cluster_kwargs={"n_workers": concurrency, "processes": True, "threads_per_worker": 1}
    )


def _on_runner(f: Any, runner: str, concurrency: int) -> tuple[Any, int]:
    """The flow `f` on `runner`'s task runner, and how many workers it spreads one date over."""
    task_runner = make_task_runner(runner, concurrency=concurrency)
    return f.with_options(task_runner=task_runner), runner_workers(runner, concurrency=concurrency)


# ---------------------------------------------------------------------------- flows


@flow(name="ingest")
def ingest_flow(
    root: str,
    date: str,
    sources: list[str],
    cfg: ingest_stage.IngestConfig | None = None,
    workers: int = 0,
) -> dict[str, Any]:
    """Ingest here (`workers` 0), or with the sources read and cleaned on the task runner's workers."""
    if not workers:
        return ingest_task(root, sources, date, cfg or ingest_stage.IngestConfig())
    with storage.storage_errors(Path(root), f"ingesting {date}"):
        m = ingest_stage.ingest(
            [Path(s) for s in sources],
            date,
            _data(root),
            cfg or ingest_stage.IngestConfig(),
            stage_sources=_stage_sources,
        )
    return _ingest_brief(m)


def run_ingest(
    root: str,
    date: str,
    sources: list[str],
    cfg: ingest_stage.IngestConfig | None = None,
    *,
    runner: str = "local",
    concurrency: int = 2,
) -> dict[str, Any]:
    """`ingest_flow` on a runner; with `local`, today's one-process ingest."""
    on_runner, workers = _on_runner(ingest_flow, runner, concurrency)
    return on_runner(root, date, sources, cfg, workers)


@flow(name="train")
def train_flow(
    root: str,
    start: str | None = None,
    end: str | None = None,
    config_file: str | None = None,
    overrides: list[str] | None = None,
    promote: Promote = "if-better",
) -> dict[str, Any]:
    cfg = load_config(Path(config_file) if config_file else None, overrides)
    return train_task(root, cfg, start, end, promote)  # builds and saves the vocabulary too


@flow(name="score")
def score_flow(
    root: str, date: str, model: str | None = None, cfg: ScoreConfig | None = None, workers: int = 0
) -> dict[str, Any]:
    """Score a date here (`workers` 0), or in units spread over the task runner's `workers` workers."""
    return _score_date(root, date, cfg or ScoreConfig(), model, workers)


def run_score(
    root: str,
    date: str,
    model: str | None = None,
    cfg: ScoreConfig | None = None,
    *,
    runner: str = "local",
    concurrency: int = 2,
) -> dict[str, Any]:
    """`score_flow` on a runner; with `local`, exactly today's one-process scoring."""
    on_runner, workers = _on_runner(score_flow, runner, concurrency)
    return on_runner(root, date, model, cfg, workers)


@flow(name="evaluate")
def evaluate_flow(root: str, date: str, model: str | None = None) -> dict[str, Any]:
    return evaluate_task(root, date, model)


@flow(name="export")
def export_flow(root: str, date: str, fmt: str = "ndjson", to: str | None = None) -> dict[str, Any]:
    """JSON files under `exports/` (go-exporter), or with `to` a `mysql://` URL, rows of that table."""
    return mysql_task(root, date, to) if to else export_task(root, date, fmt)


def _run_id() -> str:
    run = flow_run.get_id()
    return f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}-{(run or uuid.uuid4().hex)[:8]}"


def _publish_summary(
    root: str,
    flow_name: str,
    days: list[dict[str, Any]],
    t0: float,
    failed: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    summary = nightly.summarize_run(_run_id(), flow_name, days, time.perf_counter() - t0, failed=failed)
    summary["path"] = nightly.write_run_summary(_data(root), summary)
    create_markdown_artifact(
        key=f"{flow_name}-summary", markdown=nightly.summary_markdown(summary), description="rows and seconds"
    )
    if days:  # the nights' figures, and a link to the last night's report page
        create_table_artifact(
            key=f"{flow_name}-report", table=nightly.report_rows(summary), description="drift per night"
        )
        page = Path(root) / days[-1]["report"]["path"]
        create_link_artifact(key=f"{flow_name}-report-page", link=page.as_uri(), link_text=str(page))
    return summary


def _report_pages(root: str, days: list[dict[str, Any]], cfg: ReportConfig) -> None:
    """Each night's page, in date order, once every summary is written (a page shows the nights before)."""
    for d in sorted(days, key=lambda d: d["date"]):
        d["report"]["path"] = night_report_task(root, d["date"], cfg)


def _check_drift(summary: dict[str, Any], cfg: ReportConfig) -> None:
    """With `report.fail_on_drift`, a flagged night fails the run, now that every output is written."""
    message = nightly.drift_message(summary)
    if message and cfg.fail_on_drift:
        raise DriftError(f"{message}; summary: {summary['path']} (report.fail_on_drift is set)")


@flow(name="nightly")
def nightly_flow(
    root: str,
    date: str | None = None,
    mysql_url: str | None = None,
    report: ReportConfig | None = None,
    score: ScoreConfig | None = None,
    workers: int = 0,
    retention: RetentionConfig | None = None,
) -> dict[str, Any]:
    """Ingest `raw/<date>/` (default: today, UTC), score with the `latest` model, export, report; also load
    into MySQL when `$PIPELINE_MYSQL_URL` or `mysql_url` (`[export] mysql_url`) names a table. With
    `workers`, the date's sources are read and its shards scored on the task runner's workers. With
    `retention.after_run`, a night that succeeded ends with `pipeline gc`."""
    t0, cfg, score = time.perf_counter(), report or ReportConfig(), score or ScoreConfig()
    # named in the body, not only in an annotation: a served run gets this function by value (cloudpickle),
    # with only the globals its code names, and Prefect checks the parameters against the annotations
    retention = retention or RetentionConfig()
    date = lake.parse_date(date or dt.datetime.now(dt.UTC).date().isoformat())
    url = mysql_client.resolve_url(mysql_url)
    day = {
        "date": date,
        "ingest": _ingest_raw_date(root, date, workers),
        "score": _score_date(root, date, score, None, workers),
        "export": export_task(root, date, "ndjson"),
        "report": summarize_night_task(root, date, cfg),
    }
    if url:
        day["mysql"] = mysql_task(root, date, url)
    _report_pages(root, [day], cfg)
    summary = _publish_summary(root, "nightly", [day], t0)
    _check_drift(summary, cfg)
    if retention.after_run:
        summary["gc"] = gc_task(root, retention, date)
    return summary


@flow(name="backfill")
def backfill_flow(
    root: str,
    start: str,
    end: str,
    mysql_url: str | None = None,
    report: ReportConfig | None = None,
    score: ScoreConfig | None = None,
) -> dict[str, Any]:
    """The nightly job for every date in [start, end]; dates run concurrently on the flow's task runner."""
    t0, cfg, score = time.perf_counter(), report or ReportConfig(), score or ScoreConfig()
    url = mysql_client.resolve_url(mysql_url)
    chains = []
    for date in lake.date_range(start, end):
        i = ingest_date_task.submit(root, date)
        s = score_task.submit(root, date, score, None, wait_for=[i])
        e = export_task.submit(root, date, "ndjson", wait_for=[s])
        r = summarize_night_task.submit(root, date, cfg, wait_for=[e])
        m = [mysql_task.submit(root, date, url, wait_for=[s])] if url else []
        chains.append((date, [i, s, e, r, *m]))
    days, failed = [], []
    for d, futures in chains:  # a failing date does not stop the others; it is listed, then raised
        try:
            stages = zip((*nightly.STAGES, "report", "mysql"), futures, strict=False)  # mysql: with a URL
            days.append({"date": d} | {k: f.result() for k, f in stages})
        except Exception as exc:
            failed.append({"date": d, "error": _first_error(*futures, exc)})
    _report_pages(root, days, cfg)
    summary = _publish_summary(root, "backfill", days, t0, failed)
    if failed:
        listed = "; ".join(f"{f['date']}: {f['error']}" for f in failed)
        msg = f"backfill: {len(failed)} of {len(chains)} dates failed ({listed}); summary: {summary['path']}"
        raise PipelineError(msg)
    _check_drift(summary, cfg)
    return summary


def _first_error(*futures_and_fallback: Any) -> str:
    """The message of the first failed stage of a date (later stages only say it did not run)."""
    *futures, fallback = futures_and_fallback
    for f in futures:
        try:
            f.result()
        except Exception as exc:
            return str(exc)
    return str(fallback)


def run_backfill(
    root: str,
    start: str,
    end: str,
    *,
    runner: str = "local",
    concurrency: int = 2,
    mysql_url: str | None = None,
    report: ReportConfig | None = None,
    score: ScoreConfig | None = None,
) -> dict[str, Any]:
    return backfill_flow.with_options(task_runner=make_task_runner(runner, concurrency=concurrency))(
        root, start, end, mysql_url, report, score
    )


def run_nightly(
    root: str,
    date: str | None = None,
    mysql_url: str | None = None,
    report: ReportConfig | None = None,
    score: ScoreConfig | None = None,
    *,
    runner: str = "local",
    concurrency: int = 2,
    retention: RetentionConfig | None = None,
) -> dict[str, Any]:
    """`nightly_flow` on a runner; with `local`, exactly the one-process night it has always been."""
    on_runner, workers = _on_runner(nightly_flow, runner, concurrency)
    return on_runner(root, date, mysql_url, report, score, workers, retention)


def serve_nightly(root: str, *, cron: str = "0 2 * * *", name: str = "nightly") -> None:
    """Register the `nightly` deployment on the Prefect server at PREFECT_API_URL and run it on schedule."""
    nightly_flow.serve(name=name, cron=cron, parameters={"root": root}, pause_on_shutdown=False)


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
    trained = train_flow(root, corpus.TRAIN_DATES[0], corpus.TRAIN_DATES[-1], None, demo.DEMO_OVERRIDES)
    night = nightly_flow(root, corpus.SCORE_DATE)
    return demo.summarize(data, ingested, trained, night)
