"""Shared fixtures: tiny synthetic inputs, a temporary data root, and one Prefect harness per session."""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from pathlib import Path

import pytest
import torch

# Prefect must never touch ~/.prefect: point it at a throwaway home before anything imports it.
_PREFECT_HOME = tempfile.mkdtemp(prefix="pipeline-tests-prefect-")
os.environ["PREFECT_HOME"] = _PREFECT_HOME
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
# stage functions log outside flow runs in most tests; that is fine, not a warning
os.environ["PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW"] = "ignore"
os.environ.setdefault("MPLCONFIGDIR", os.path.join(_PREFECT_HOME, "matplotlib"))

from pipeline import lake  # noqa: E402
from pipeline.model import TextClassifier  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture
def data(tmp_path: Path) -> lake.DataDir:
    return lake.DataDir.at(tmp_path / "data")


@pytest.fixture(scope="session")
def exporter() -> Path:
    """The go-exporter binary; skipped when it is not built, except in CI where it must be."""
    from pipeline.errors import ExportError
    from pipeline.export import find_exporter

    try:
        return find_exporter()
    except ExportError:
        if os.environ.get("CI"):
            raise
        pytest.skip("go-exporter is not built; `make setup` builds it")


@pytest.fixture(autouse=True)
def _prefect_console_outlives_capture():
    """Prefect's console handler (on the root logger) writes to the stderr of the moment Prefect was first
    imported. Imported in a test that captures output, that stream is closed when the test ends, and every
    later log line then printed a `--- Logging error --- Traceback` into whichever test was running (which
    failed the tests that check a command prints no traceback). After each test, a handler left holding a
    closed stream writes to the real stderr again."""
    yield
    for h in logging.getLogger().handlers:
        if isinstance(h, logging.StreamHandler) and getattr(h.stream, "closed", False):
            h.stream = sys.__stderr__  # not setStream: it would flush the closed one
            if hasattr(h, "console"):  # PrefectConsoleHandler prints through a rich Console on that stream
                h.console.file = sys.__stderr__


@pytest.fixture(scope="session")
def prefect_harness():
    """A temporary Prefect API for the whole session (it takes ~10 s to start)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path


def tiny_corpus(data: lake.DataDir, rows_per_day: int = 300) -> None:
    """The demo corpus, smaller: three labelled days and one to score."""
    from pipeline import corpus, ingest

    corpus.generate_corpus(data, rows_per_day=rows_per_day)
    cfg = ingest.IngestConfig(classes=corpus.CLASSES)
    for d in corpus.TRAIN_DATES:
        ingest.ingest(ingest.raw_sources(data, d), d, data, cfg)


def randomise_wide_head(model: TextClassifier) -> TextClassifier:
    """A TF-IDF head as training leaves it (it starts at zero, which would hide it from a test)."""
    if model.cfg.wide_buckets:
        with torch.no_grad():
            model.wide.weight.normal_()
            model.wide.idf.uniform_(1.0, 3.0)
            model.head_weights.copy_(torch.tensor([0.7, 1.6]))
    return model
