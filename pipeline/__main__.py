"""The `pipeline` command line (also `python -m pipeline`).

    pipeline [--data-dir DIR] demo
    pipeline [--data-dir DIR] ingest SOURCE... --date YYYY-MM-DD [--runner local|processes|dask[=ADDRESS]]
    pipeline [--data-dir DIR] train [--start DATE --end DATE] [--config FILE] [--set KEY=VALUE ...]
                                    [--promote always|if-better|never]
    pipeline [--data-dir DIR] score --date YYYY-MM-DD [--model VERSION] [--batch-size N ...] [--config FILE]
                                    [--runner local|processes|dask[=ADDRESS]] [--concurrency N]
    pipeline [--data-dir DIR] evaluate --date YYYY-MM-DD [--model VERSION]
    pipeline [--data-dir DIR] export --date YYYY-MM-DD [--format ndjson|json] [--to mysql://USER@HOST/DB]
    pipeline [--data-dir DIR] run --date YYYY-MM-DD [--runner ...] [--config FILE] [--set report.KEY=V ...]
    pipeline [--data-dir DIR] backfill --start DATE --end DATE [--runner local|processes|dask[=ADDRESS]]
                                       [--config FILE] [--set report.KEY=VALUE ...]
    pipeline [--data-dir DIR] report (--date YYYY-MM-DD | --start DATE --end DATE) [--config FILE]
    pipeline [--data-dir DIR] serve [--cron "0 2 * * *"]
    pipeline [--data-dir DIR] models [promote VERSION | rollback | history]
    pipeline [--data-dir DIR] models export [VERSION] [--format onnx|pt2] [--out DIR]
    pipeline [--data-dir DIR] gc [--dry-run] [--config FILE] [--set retention.KEY=VALUE ...]
    pipeline config [--config FILE] [--set KEY=VALUE ...] [--schema]

`--to` and `[export] mysql_url` / `$PIPELINE_MYSQL_URL` load into MySQL (pipeline/sink_mysql.py); the
password comes from `$PIPELINE_MYSQL_PASSWORD` or a MySQL option file, never from the command line.

Exit codes: 0 done, 1 a pipeline error (bad input, missing model, failed export, drift with
`report.fail_on_drift`), 2 usage.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from pipeline import __version__, ingest, lake, mysql_client, score, storage
from pipeline.config import PipelineConfig, config_schema, load_config, to_toml
from pipeline.errors import InputError, PipelineError


def _date(value: str) -> str:
    try:
        return lake.parse_date(value)
    except InputError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _runner(value: str) -> str:
    from pipeline.nightly import parse_runner

    try:
        parse_runner(value)
    except PipelineError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return value


def _model_name(value: str) -> str:
    try:
        return lake.check_name(value, "model")
    except InputError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _mysql_url(value: str) -> str:
    try:
        mysql_client.parse_url(value)  # its errors never repeat the URL: it may hold a password
    except PipelineError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pipeline", description="Nightly batch text classification.")
    p.add_argument("--version", action="version", version=f"pipeline {__version__}")
    p.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("PIPELINE_DATA_DIR", "data")),
        help="data root (default: $PIPELINE_DATA_DIR or ./data)",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("demo", help="generate a synthetic corpus and run every stage on it")

    s = sub.add_parser(
        "ingest",
        help="raw files (CSV, TSV, JSON Lines, text, labelled lines, Parquet) -> a date's lake partition",
    )
    s.add_argument("sources", nargs="+", type=Path, metavar="SOURCE")
    s.add_argument("--date", type=_date, required=True)
    _add_runner_arguments(s)
    ingest.add_ingest_arguments(s)

    s = sub.add_parser("train", help="train on labelled lake rows; publish, and make it `latest` if better")
    s.add_argument("--start", type=_date)
    s.add_argument("--end", type=_date)
    _add_config_arguments(s, "model.rnn_type=gru")
    s.add_argument(
        "--promote",
        choices=["always", "if-better", "never"],
        default="if-better",
        help="move `latest` to the new model: always, never, or if-better (default): when it is at least "
        "as accurate as `latest` on its validation rows",
    )

    s = sub.add_parser("score", help="score the lake partition of a date into Arrow prediction files")
    s.add_argument("--date", type=_date, required=True)
    s.add_argument("--model", type=_model_name, help="model version (default: latest)")
    _add_runner_arguments(s)
    score.add_score_arguments(s)
    _add_config_arguments(s, "score.precision=bf16")

    s = sub.add_parser("evaluate", help="score a labelled partition; write metrics and a confusion matrix")
    s.add_argument("--date", type=_date, required=True)
    s.add_argument("--model", type=_model_name, help="model version (default: latest)")

    s = sub.add_parser("export", help="prediction files of a date -> PredictionResult JSON (go-exporter)")
    s.add_argument("--date", type=_date, required=True)
    s.add_argument("--format", choices=["ndjson", "json"], default="ndjson")
    s.add_argument(
        "--to",
        type=_mysql_url,
        metavar="mysql://USER@HOST[:PORT]/DATABASE[?table=NAME&unix_socket=PATH]",
        help="load into this MySQL/MariaDB table instead; password: $PIPELINE_MYSQL_PASSWORD or option file",
    )

    s = sub.add_parser("run", help="the nightly job: ingest, score, export, report [, load MySQL]")
    s.add_argument("--date", type=_date, required=True)
    _add_runner_arguments(s)
    _add_config_arguments(s, "report.fail_on_drift=true")

    s = sub.add_parser("backfill", help="run the nightly job for each date in a range")
    s.add_argument("--start", type=_date, required=True)
    s.add_argument("--end", type=_date, required=True)
    _add_runner_arguments(s, "dates in flight at once (default 2)")
    _add_config_arguments(s, "report.fail_on_drift=true")

    s = sub.add_parser("report", help="a night's report page (--date), or the trend over a range of nights")
    s.add_argument("--date", type=_date)
    s.add_argument("--start", type=_date)
    s.add_argument("--end", type=_date)
    _add_config_arguments(s, "report.psi_score=0.1")

    s = sub.add_parser("serve", help="serve the nightly deployment on a schedule (needs a Prefect server)")
    s.add_argument("--cron", default="0 2 * * *", help="schedule, cron syntax (default: 02:00 every day)")
    s.add_argument("--name", default="nightly", help="deployment name (default: nightly)")

    s = sub.add_parser(
        "config", help="print the resolved configuration (TOML), or with --schema its JSON Schema"
    )
    s.add_argument("--schema", action="store_true", help="the JSON Schema every --config file must match")
    _add_config_arguments(s, "train.epochs=5")

    s = sub.add_parser("models", help="list trained models; export one; move `latest` (promote, rollback)")
    moves = s.add_subparsers(dest="models_command", metavar="ACTION")
    m = moves.add_parser("export", help="write a model version as a standalone ONNX or torch.export folder")
    m.add_argument("version", nargs="?", type=_model_name, default="latest", help="(default: latest)")
    m.add_argument("--format", choices=["onnx", "pt2"], default="onnx")
    m.add_argument(
        "--out",
        type=Path,
        help="folder to write, outside the data directory: new, empty or a previous export of this format "
        "(default: models/VERSION/exports/FORMAT)",
    )
    m = moves.add_parser("promote", help="make VERSION `latest`")
    m.add_argument("version", type=_model_name, metavar="VERSION")
    m.add_argument("--why", help="recorded in models/history.jsonl")
    m = moves.add_parser("rollback", help="`latest` back to the version it was before its last move")
    m.add_argument("--why", help="recorded in models/history.jsonl")
    moves.add_parser("history", help="every move of `latest`: when, who, from, to, why")

    s = sub.add_parser(
        "gc", help="remove what [retention] names: old nights' outputs, unused models, leftovers"
    )
    s.add_argument("--dry-run", action="store_true", help="say what would be removed; remove nothing")
    _add_config_arguments(s, "retention.days=30")
    return p


def _add_config_arguments(parser: argparse.ArgumentParser, example: str) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        help="TOML file with [vocab] [model] [train] [pretrain] [score] [export] [report] [retention] tables",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override one setting, e.g. --set {example}",
    )


def configure_environment(root: Path) -> None:
    """Keep Prefect's state and every cache inside the data directory; no telemetry."""
    os.environ.setdefault("PREFECT_HOME", str(root / ".prefect"))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "pipeline")
    os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
    os.environ.setdefault("MPLCONFIGDIR", str(root / ".prefect" / "matplotlib"))
    logging.getLogger("pipeline").setLevel(logging.INFO)  # stage progress, surfaced by Prefect


def make_data_dir(root: Path) -> None:
    """Create the data directory if it is not there; a file (or a file on the way to it) is an error."""
    try:
        root.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        msg = (
            f"{root}: --data-dir is not a folder (a file is in the way); "
            "hint: pass a folder, or a path where one can be made (default: $PIPELINE_DATA_DIR or ./data)"
        )
        raise PipelineError(msg) from None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    root = args.data_dir.resolve()
    try:
        if args.command == "config":  # reads no data directory
            print(_config(args))
            return 0
        make_data_dir(root)
        configure_environment(root)
        listing = args.command == "models" and args.models_command not in ("export", "promote", "rollback")
        if not listing and args.command != "gc":  # gc is how a full data directory gets room
            storage.check_writable(root)  # a full or read-only data directory: say so before Prefect starts
            lake.lock_timeout()  # $PIPELINE_LOCK_TIMEOUT is checked here too: before Prefect starts
        result = _dispatch(args, str(root))
    except PipelineError as e:
        print(f"pipeline: error: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # e.g. Prefect's own database in a full or read-only data directory
        problem = storage.storage_problem(root, e)
        if problem is None:
            raise
        print(f"pipeline: error: {problem}", file=sys.stderr)
        return 1
    if result is not None:
        print(result)
    return 0


def _add_runner_arguments(
    s: argparse.ArgumentParser,
    concurrency: str = "workers of a local cluster or processes runner (default 2)",
) -> None:
    s.add_argument(
        "--runner",
        type=_runner,
        default="local",
        help="local (threads), processes, dask (a local cluster) or dask=ADDRESS (an existing cluster)",
    )
    s.add_argument("--concurrency", type=int, default=2, help=concurrency)


def _dispatch(args: argparse.Namespace, root: str) -> str | None:
    if args.command == "models":
        return _models(args, lake.DataDir.at(root))
    if args.command == "report":
        return _report(args, lake.DataDir.at(root))
    if args.command == "gc":  # plain functions, no Prefect
        from pipeline import retention

        policy = load_config(args.config, args.overrides).retention
        return retention.collect_garbage(lake.DataDir.at(root), policy, dry_run=args.dry_run)

    # the configuration and $PIPELINE_MYSQL_URL are checked before Prefect starts: errors come fast
    cfg = load_config(args.config, args.overrides) if hasattr(args, "overrides") else PipelineConfig()
    mysql_url = cfg.export.mysql_url or None
    if args.command in ("run", "backfill"):
        url = mysql_client.resolve_url(mysql_url)
        if url:
            mysql_client.parse_url(url)
    if args.command == "ingest":  # options and files checked before Prefect starts: errors come fast
        ingest_cfg = ingest.ingest_config_from_args(args)
        ingest.check_sources(args.sources, ingest_cfg)

    from pipeline import demo, flows  # imports Prefect: after configure_environment

    for name in ("prefect.flow_runs", "prefect.task_runs"):
        logging.getLogger(name).addFilter(_quiet_pipeline_errors)

    if args.command == "demo":
        return demo.format_summary(flows.demo_flow(root))
    if args.command == "ingest":
        sources = [str(s) for s in args.sources]
        m = flows.run_ingest(
            root, args.date, sources, ingest_cfg, runner=args.runner, concurrency=args.concurrency
        )
        return _brief(m, ["date", "rows_read", "rows_kept", "rows_quarantined", "quarantined_by_reason"])
    if args.command == "train":
        m = flows.train_flow(
            root,
            args.start,
            args.end,
            str(args.config) if args.config else None,
            args.overrides,
            args.promote,
        )
        return _brief(m, ["version", "skipped", "val_accuracy", "val_macro_f1", "path", "promotion"])
    if args.command == "score":
        score_cfg = score.score_config_from_args(args, cfg.score)
        m = flows.run_score(
            root, args.date, args.model, score_cfg, runner=args.runner, concurrency=args.concurrency
        )
        return _brief(m, ["date", "rows", "model_version", "skipped"])
    if args.command == "evaluate":
        m = flows.evaluate_flow(root, args.date, args.model)
        return _brief(
            m, ["date", "model_version", "rows", "accuracy", "macro_f1", "rows_unknown_label", "path"]
        )
    if args.command == "export":
        m = flows.export_flow(root, args.date, args.format, args.to)
        return _brief(m, ["date", "rows", "table" if args.to else "path", "skipped"])
    if args.command == "run":
        night = flows.run_nightly(
            root,
            args.date,
            mysql_url,
            cfg.report,
            cfg.score,
            runner=args.runner,
            concurrency=args.concurrency,
            retention=cfg.retention,
        )
        return _table(night)
    if args.command == "backfill":
        m = flows.run_backfill(
            root,
            args.start,
            args.end,
            runner=args.runner,
            concurrency=args.concurrency,
            mysql_url=mysql_url,
            report=cfg.report,
            score=cfg.score,
        )
        return _table(m)
    if args.command == "serve":
        flows.serve_nightly(root, cron=args.cron, name=args.name)
        return None
    raise AssertionError(args.command)


def _config(args: argparse.Namespace) -> str:
    if args.schema:
        return json.dumps(config_schema(), indent=2)
    return to_toml(load_config(args.config, args.overrides))


def _models(args: argparse.Namespace, data: lake.DataDir) -> str:
    from pipeline import portable, promotion, registry

    if args.models_command == "export":
        m = portable.export_model(data.models, args.version, fmt=args.format, out=args.out)
        return _brief(m, ["model_version", "format", "path", "files"])
    if args.models_command in ("promote", "rollback"):
        if args.models_command == "promote":
            entry = promotion.promote(data, args.version, why=args.why)
        else:
            entry = promotion.rollback(data, why=args.why)
        said = f"{entry['action']} by {entry['who']}: {entry['why']}"
        return f"latest: {entry['from']} -> {entry['to']} ({said})"
    if args.models_command == "history":
        moves = promotion.history(data)
        return (
            "\n".join(
                f"{m['when']}  {m['who']}  {m['action']:<8} {m['from']} -> {m['to']}  {m['why']}"
                for m in moves
            )
            or "no moves of `latest` recorded yet"
        )
    rows = registry.list_models(data.models)
    if not rows:
        return "no models yet; run `pipeline train`"
    return "\n".join(
        f"{'*' if r['latest'] else ' '} {r['version']}  {r['created']}  {r['rnn_type']:<5} "
        f"accuracy {r['accuracy']:.4f}  macro-F1 {r['macro_f1']:.4f}"
        f"  exports: {', '.join(portable.list_exports(data.models, r['version'])) or '-'}"
        for r in rows
    )


def _report(args: argparse.Namespace, data: lake.DataDir) -> str:
    """`pipeline report`: plain functions, no Prefect (it reads summaries and writes one page)."""
    from pipeline import drift, nightreport

    cfg = load_config(args.config, args.overrides).report
    if args.date and not (args.start or args.end):
        drift.summarize_night(data, args.date, cfg)  # up to date: the predictions are not read again
        return str(nightreport.write_night_report(data, args.date, cfg))
    if args.start and args.end and not args.date:
        if args.start > args.end:
            msg = f"report: --start {args.start} is after --end {args.end}"
            raise PipelineError(msg)
        return str(nightreport.write_trend_report(data, args.start, args.end, cfg))
    msg = "report: give --date DATE, or --start DATE and --end DATE"
    raise PipelineError(msg)


def _quiet_pipeline_errors(record: logging.LogRecord) -> bool:
    """Prefect logs a failed run with its traceback; a `PipelineError`'s message (file, row, hint) is all
    there is to say, and `main` prints it, so its traceback is left out. Other errors keep theirs."""
    if record.exc_info and isinstance(record.exc_info[1], PipelineError):
        record.exc_info, record.exc_text = None, None
    return True


def _brief(m: dict[str, Any], keys: list[str]) -> str:
    return json.dumps({k: m.get(k) for k in keys}, indent=2, ensure_ascii=False)


def _table(summary: dict[str, Any]) -> str:
    from pipeline.nightly import summary_markdown

    gc = f"\n{summary['gc']}" if summary.get("gc") else ""  # `run` with retention.after_run
    return f"{summary_markdown(summary)}\nsummary: {summary['path']}{gc}"


if __name__ == "__main__":
    sys.exit(main())
