import pytest

from pipeline.__main__ import build_parser, main

COMMANDS = [
    "demo",
    "ingest",
    "train",
    "evaluate",
    "score",
    "export",
    "run",
    "backfill",
    "report",
    "serve",
    "models",
    "gc",
]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    assert "usage: pipeline" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [
        ["score", "--date", "2026-02-30"],
        ["score", "--date", "../../etc"],
        ["backfill", "--start", "2026-01-01", "--end", "x"],
        ["score", "--date", "2026-01-01", "--model", "../other"],
    ],
)
def test_bad_dates_and_names_are_usage_errors(argv, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["--data-dir", str(tmp_path), *argv])
    assert e.value.code == 2
    assert "error" in capsys.readouterr().err


def test_data_dir_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("PIPELINE_DATA_DIR", str(tmp_path / "d"))
    assert build_parser().parse_args(["models"]).data_dir == tmp_path / "d"


def test_models_on_an_empty_data_dir(tmp_path, capsys):
    assert main(["--data-dir", str(tmp_path), "models"]) == 0
    assert "no models yet" in capsys.readouterr().out


@pytest.mark.usefixtures("prefect_harness")
def test_pipeline_errors_exit_1_with_the_file_named(tmp_path, capsys):
    code = main(
        ["--data-dir", str(tmp_path), "ingest", str(tmp_path / "missing.csv"), "--date", "2026-01-01"]
    )
    assert code == 1
    assert "missing.csv: no such file" in capsys.readouterr().err


def test_a_bad_mysql_url_fails_run_and_backfill_before_anything_runs(tmp_path, monkeypatch, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[export]\nmysql_url = "postgres://loader@db/reports"\n')
    run = ["--data-dir", str(tmp_path / "data"), "run", "--date", "2026-01-01"]
    assert main([*run, "--config", str(cfg)]) == 1
    assert "export.mysql_url: expected a URL mysql://" in capsys.readouterr().err
    monkeypatch.setenv("PIPELINE_MYSQL_URL", "mysql://loader:hunter2@db/reports")
    assert (
        main(
            ["--data-dir", str(tmp_path / "data"), "backfill", "--start", "2026-01-01", "--end", "2026-01-02"]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert "holds a password" in err and "hunter2" not in err


def test_report_needs_a_date_or_a_range(tmp_path, capsys):
    assert main(["--data-dir", str(tmp_path), "report", "--date", "2026-01-01", "--end", "2026-01-02"]) == 1
    assert "give --date DATE, or --start DATE and --end DATE" in capsys.readouterr().err
    assert main(["--data-dir", str(tmp_path), "report", "--date", "2026-01-01"]) == 1
    assert "hint: run `pipeline run --date 2026-01-01` first" in capsys.readouterr().err
    assert main(["--data-dir", str(tmp_path), "report", "--start", "2026-01-01", "--end", "2026-01-03"]) == 1
    assert "no night between 2026-01-01 and 2026-01-03 has a summary" in capsys.readouterr().err


@pytest.mark.parametrize(
    "command", [["score"], ["run"], ["ingest", "x.csv"], ["backfill", "--start", "2026-01-01"]]
)
def test_every_runner_flag_is_checked_the_same_way(command, tmp_path, capsys):
    argv = (
        [*command, "--end", "2026-01-02"] if command[0] == "backfill" else [*command, "--date", "2026-01-01"]
    )
    for runner in ("dask=", "threads", "processes=host"):
        with pytest.raises(SystemExit) as e:
            main(["--data-dir", str(tmp_path), *argv, "--runner", runner])
        assert e.value.code == 2
        assert "--runner must be local, processes, dask or dask=ADDRESS" in capsys.readouterr().err
    args = build_parser().parse_args([*argv, "--runner", "dask=tcp://scheduler:8786", "--concurrency", "4"])
    assert (args.runner, args.concurrency) == ("dask=tcp://scheduler:8786", 4)


def last_error_line(err: str) -> str:
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith("pipeline: error: ") and "; hint: " in line, line
    return line


@pytest.mark.parametrize("below", ["", "sub"])
def test_a_data_dir_that_is_a_file_is_one_error_line(below, tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("mine")
    root = f / below if below else f
    assert main(["--data-dir", str(root), "models"]) == 1
    assert last_error_line(capsys.readouterr().err).startswith(f"pipeline: error: {root}: --data-dir is not")
    assert f.read_text() == "mine"


@pytest.mark.parametrize("value", ["abc", "nan", "-1", "inf", ""])
def test_a_bad_lock_timeout_is_one_error_line_before_anything_runs(value, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PIPELINE_LOCK_TIMEOUT", value)
    assert main(["--data-dir", str(tmp_path), "report", "--date", "2026-01-01"]) == 1
    line = last_error_line(capsys.readouterr().err)
    assert line.startswith(f"pipeline: error: PIPELINE_LOCK_TIMEOUT={value!r}: not a finite number of ")
