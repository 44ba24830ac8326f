"""Export: prediction shards -> PredictionResult JSON, by running the go-exporter program.

go-exporter writes its output atomically itself (a temporary file, then rename) to a name of this
run's; this process, holding the date's lock (`nightly.export_date`), renames it into place. So an
export file is either complete or absent, and only the lock holder ever replaces it. The manifest
beside it records what it was made from.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import signal
import subprocess
import uuid
from pathlib import Path
from typing import Any, Literal

from pipeline import lake, storage
from pipeline.errors import ExportError, PipelineError, StorageError

log = logging.getLogger(__name__)

DEFAULT_FIELDS = ("id", "text", "label", "score", "model_version", "partition")
_REPO_BINARY = Path(__file__).resolve().parents[1] / "go-exporter" / "bin" / "go-exporter"


def find_exporter() -> Path:
    """`$PIPELINE_EXPORTER`, else the checkout's `go-exporter/bin/go-exporter`, else `go-exporter` on PATH."""
    env = os.environ.get("PIPELINE_EXPORTER")
    candidates = [Path(env)] if env else []
    candidates.append(_REPO_BINARY)
    found = shutil.which("go-exporter")
    if found:
        candidates.append(Path(found))
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return c
    msg = (
        f"go-exporter not found (looked at {', '.join(map(str, candidates))}); "
        "hint: `make setup` builds it, or set PIPELINE_EXPORTER"
    )
    raise ExportError(msg)


def is_export_temporary(name: str) -> bool:
    """The exporter's `.NAME.tmp-*` or our `.NAME.run-*`: stale unless an export holds the date's lock."""
    return name.startswith(".") and (".tmp-" in name or ".run-" in name)


def _drop_stale_outputs(out_dir: Path) -> None:
    """Temporary files of exports cut by a crash (`is_export_temporary`)."""
    if not out_dir.is_dir():
        return
    for p in out_dir.iterdir():
        if is_export_temporary(p.name) and p.is_file():
            p.unlink(missing_ok=True)


def _exporter_error(date: str, out: Path, proc: subprocess.CompletedProcess[str]) -> PipelineError:
    """The error for a failed exporter run: a full or read-only disk, a killed process, or its message."""
    said = proc.stderr.strip()
    for code, text in ((errno.ENOSPC, "no space left on device"), (errno.EROFS, "read-only file system")):
        if text in said.lower():
            msg = (
                f"{out.parent}: {os.strerror(code)} while exporting {date} (go-exporter: {said}); "
                f"{out.name} was left as it was; hint: {storage.storage_hint(code)}"
            )
            return StorageError(msg)
    if proc.returncode < 0:
        try:
            how = f"was killed by {signal.Signals(-proc.returncode).name}"
        except ValueError:
            how = f"was killed by signal {-proc.returncode}"
    else:
        how = f"failed (exit {proc.returncode}): {said}"
    msg = f"go-exporter {how} for {date}; {out} was left as it was; hint: run the export again"
    return ExportError(msg)


def export_partition(
    data: lake.DataDir,
    date: str,
    *,
    fmt: Literal["ndjson", "json"] = "ndjson",
    fields: tuple[str, ...] = DEFAULT_FIELDS,
) -> dict[str, Any]:
    """Export the predictions of `date` to `exports/date=D/predictions.<fmt>`; skip if up to date.

    Call it holding the date's lock (`nightly.export_date` does): it removes stale temporary files.
    """
    pred_dir = data.predictions(date)
    pm = lake.require_manifest(pred_dir, hint=f"run `pipeline score --date {date}` first")
    out_dir = data.exports(date)
    out = out_dir / f"predictions.{fmt}"
    inputs = {"shards": [s["sha256"] for s in pm["shards"]], "format": fmt, "fields": list(fields)}
    manifest_path = out_dir / f"_manifest.{fmt}.json"
    lake.make_dir(out_dir)  # a real folder: the exporter writes into it, and stale files are removed from it
    _drop_stale_outputs(out_dir)
    if out.is_file() and manifest_path.is_file():
        m = lake.read_json(manifest_path)
        if m.get("inputs") == inputs and m.get("sha256") == lake.sha256_file(out):
            log.info("export for %s is up to date; nothing to do", date)
            return {**m, "skipped": True}
    exporter = find_exporter()
    # The exporter writes a name of its own; only this process (holding the date's lock) renames it
    # onto `out`. An exporter orphaned by a killed run can then never overwrite a newer export.
    staged = out_dir / f".{out.name}.run-{uuid.uuid4().hex[:8]}"
    cmd = [str(exporter), "-format", fmt, "-fields", ",".join(fields), "-o", str(staged), str(pred_dir)]
    log.info("running %s", " ".join(cmd))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise _exporter_error(date, out, proc)
        manifest_path.unlink(missing_ok=True)  # a manifest only ever describes the file beside it
        os.replace(staged, out)
        lake.fsync_dir(out_dir)
    finally:
        # what a failed or killed exporter left: our staged name and its own temporary beside it
        for p in [staged, *out_dir.glob(f".{staged.name}.tmp-*")]:
            p.unlink(missing_ok=True)
    manifest = {
        "date": date,
        "path": str(out.relative_to(data.root)),
        "rows": pm["rows"],
        "sha256": lake.sha256_file(out),
        "inputs": inputs,
        "model_version": pm["model_version"],
    }
    lake.write_json(manifest_path, manifest)
    log.info("%s: %d rows exported to %s", date, pm["rows"], out)
    return {**manifest, "skipped": False}
