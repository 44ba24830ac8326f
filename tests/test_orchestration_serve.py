"""`pipeline serve` on a real Prefect server (issue 7): register, trigger through Prefect's CLI, complete.

Starts `prefect server start` on a free loopback port with its own PREFECT_HOME, runs
`python -m pipeline serve` against it, triggers `nightly/nightly` with `prefect deployment run`,
and checks that the run completed and wrote the export. About 40 s, most of it process start-up.
(Schedules do fire on such a server; waiting for 02:00 is not part of a test, so the test checks
that the deployment carries the cron schedule and has runs scheduled.)
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from test_orchestration import END, build_seed

from pipeline import lake

BIN = Path(sys.executable).parent
CRON = "30 3 * * *"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _api(url: str, path: str, body: dict | None = None) -> object:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    req = urllib.request.Request(f"{url}{path}", data=data, headers=headers, method="POST" if data else "GET")
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def _wait_for(what: str, check, *, timeout: float, procs: list[subprocess.Popen]) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in procs:
            assert p.poll() is None, f"{p.args[:3]} exited with {p.returncode} while waiting for {what}"
        try:
            got = check()
        except (OSError, urllib.error.URLError):
            got = None
        if got:
            return got
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def _stop(p: subprocess.Popen) -> None:
    """Stop a process we started in its own session, and everything it started."""
    if p.poll() is None:
        os.killpg(p.pid, signal.SIGTERM)
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    try:
        os.killpg(p.pid, signal.SIGKILL)  # children that outlived their parent
    except ProcessLookupError:
        pass


def test_served_nightly_deployment_runs_on_a_real_prefect_server(tmp_path):
    data = build_seed(tmp_path / "data", rows_per_day=40)
    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    base = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    base["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    logs = tmp_path / "logs"
    logs.mkdir()
    procs: list[subprocess.Popen] = []
    files = contextlib.ExitStack()
    try:
        server_env = dict(base, PREFECT_HOME=str(tmp_path / "server-home"))
        server = subprocess.Popen(
            [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=server_env,
            stdout=files.enter_context(open(logs / "server.log", "wb")),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        procs.append(server)
        _wait_for("the server", lambda: _api(url, "/health") is True, timeout=120, procs=procs)

        env = dict(base, PREFECT_API_URL=url)  # PREFECT_HOME: `pipeline` keeps it in the data dir
        serve = subprocess.Popen(
            [sys.executable, "-m", "pipeline", "--data-dir", str(data.root), "serve", "--cron", CRON],
            env=env,
            stdout=files.enter_context(open(logs / "serve.log", "wb")),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        procs.append(serve)
        deployments = _wait_for(
            "the nightly deployment", lambda: _api(url, "/deployments/filter", {}), timeout=120, procs=procs
        )
        (dep,) = deployments
        assert dep["name"] == "nightly"
        assert [s["schedule"]["cron"] for s in dep["schedules"]] == [CRON]
        assert dep["parameters"] == {"root": str(data.root)}

        run = subprocess.run(
            [
                str(BIN / "prefect"),
                "deployment",
                "run",
                "nightly/nightly",
                "-p",
                f'date="{END}"',
                "--watch",
                "--watch-interval",
                "1",
                "--watch-timeout",
                "240",
            ],
            env=dict(env, PREFECT_HOME=str(tmp_path / "cli-home")),
            capture_output=True,
            text=True,
            timeout=300,
        )
        serve_log = (logs / "serve.log").read_text(errors="replace")
        assert run.returncode == 0, f"{run.stdout}\n{run.stderr}\n--- serve:\n{serve_log[-4000:]}"

        runs = _api(url, "/flow_runs/filter", {"deployments": {"id": {"any_": [dep["id"]]}}})
        done = [r for r in runs if r["parameters"].get("date") == END]
        assert [r["state"]["type"] for r in done] == ["COMPLETED"], serve_log[-4000:]
        assert any(r["state"]["type"] == "SCHEDULED" for r in runs)  # the cron schedule's next runs
    finally:
        for p in reversed(procs):
            _stop(p)
        files.close()

    export = data.exports(END) / "predictions.ndjson"
    manifest = lake.read_json(data.texts(END) / lake.MANIFEST)
    assert len(export.read_text().splitlines()) == manifest["rows_kept"] > 0
    assert list((data.root / "runs").glob("*.json"))
