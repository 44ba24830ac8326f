"""Headless Chromium driven over the DevTools protocol: load a page, list its errors, read it, shoot it.

Debian's `chromium` package (`apt-get install chromium`); `.ci/run` installs it. The protocol goes over
one websocket (`websockets`, installed with Prefect): a page target is attached in flat mode and every
command carries its session id.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.sync.client import connect


def find_chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@dataclass
class PageVisit:
    errors: list[str] = field(default_factory=list)  # console errors, exceptions, error log entries
    requests: list[str] = field(default_factory=list)  # every URL the page asked for
    values: Any = None  # what `expression` evaluated to
    screenshot: bytes = b""


def visit(url: str, expression: str, *, width: int = 1000, timeout: float = 60.0) -> PageVisit:
    """Open `url` in a fresh headless Chromium, wait for its load event, evaluate `expression` (its
    JSON-able value is returned) and take a full-page PNG screenshot."""
    binary = find_chromium()
    assert binary is not None, "chromium is not installed"
    # Chromium's helper processes write to the profile as they go: all of them are stopped (their process
    # group) before the folder is removed
    with tempfile.TemporaryDirectory(prefix="chromium-", ignore_cleanup_errors=True) as profile:
        proc = subprocess.Popen(
            [
                binary,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                "--no-first-run",
                "--remote-debugging-port=0",
                f"--user-data-dir={profile}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            return _drive(_devtools_url(proc, timeout), url, expression, width, timeout)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _devtools_url(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stderr is not None
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line and proc.poll() is not None:
            break
        seen.append(line)
        if m := re.search(r"DevTools listening on (ws://\S+)", line):
            # keep reading its stderr, or a full pipe would stall it
            threading.Thread(target=proc.stderr.read, daemon=True).start()
            return m.group(1)
    raise AssertionError(f"chromium did not start its DevTools endpoint: {''.join(seen)[-2000:]}")


def _drive(ws_url: str, url: str, expression: str, width: int, timeout: float) -> PageVisit:
    out = PageVisit()
    ids = itertools.count(1)
    with connect(ws_url, max_size=None, open_timeout=timeout) as ws:

        def call(method: str, params: dict[str, Any] | None = None, session: str | None = None) -> Any:
            n = next(ids)
            msg: dict[str, Any] = {"id": n, "method": method, "params": params or {}}
            if session:
                msg["sessionId"] = session
            ws.send(json.dumps(msg))
            while True:
                reply = json.loads(ws.recv(timeout=timeout))
                if reply.get("id") == n:
                    assert "error" not in reply, reply
                    return reply["result"]
                _note(reply, out)

        target = call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            call(f"{domain}.enable", session=session)
        metrics = {"width": width, "height": 800, "deviceScaleFactor": 1, "mobile": False}
        call("Emulation.setDeviceMetricsOverride", metrics, session)
        call("Page.navigate", {"url": url}, session)
        while True:
            event = json.loads(ws.recv(timeout=timeout))
            _note(event, out)
            if event.get("method") == "Page.loadEventFired":
                break
        result = call("Runtime.evaluate", {"expression": expression, "returnByValue": True}, session)
        assert "exceptionDetails" not in result, result
        out.values = result["result"].get("value")
        shot = call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}, session)
        out.screenshot = base64.b64decode(shot["data"])
        ws.send(json.dumps({"id": next(ids), "method": "Browser.close"}))  # no reply: it goes away
    return out


def _note(event: dict[str, Any], out: PageVisit) -> None:
    method, params = event.get("method"), event.get("params", {})
    if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
        out.errors.append(f"console.{params['type']}: {params.get('args')}")
    elif method == "Runtime.exceptionThrown":
        out.errors.append(f"exception: {params.get('exceptionDetails')}")
    elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
        out.errors.append(f"log: {params['entry'].get('text')} ({params['entry'].get('url')})")
    elif method == "Network.requestWillBeSent":
        out.requests.append(params["request"]["url"])


def save(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path
