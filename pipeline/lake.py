"""The data directory's layout (`DataDir`) and the primitives every stage writes it with.

Layout under the data root (`--data-dir`, `PIPELINE_DATA_DIR`, default `./data`):

    raw/<date>/                      incoming files for a date
    lake/texts/date=YYYY-MM-DD/      ingested Parquet + _manifest.json
    lake/quarantine/date=YYYY-MM-DD/ rejected rows with a reason
    vocab/                           vocabularies, named by content hash
    pretrain/                        pretrained word vectors, named by what they were learnt from
    models/<version>/                weights, config, metrics, pictures; models/latest -> <version>
    predictions/date=YYYY-MM-DD/     Arrow IPC shards + _manifest.json
    exports/date=YYYY-MM-DD/         PredictionResult JSON
    runs/                            run summaries
    state/                           ingest stamps (what a date was ingested from) and lock files
    reports/date=YYYY-MM-DD/         a night's summary.json and report page (index.html)
    reports/<version>/date=.../      a model's metrics on a labelled date (`pipeline evaluate`)

Every file is written atomically (temporary file beside it, fsync, rename) and every partition is
published as a whole folder: written under a hidden temporary name, then swapped into place, so a
reader never sees a half-written partition and a crash leaves the previous one intact. What a crash
leaves (a temporary file, a half-swapped folder) is removed by the next write there. A full or
read-only file system is reported by `storage.py`.

Writes stay inside the data directory: a folder written into in place (`make_dir`, `atomic_path`) that
is a symbolic link is refused, and a published folder that is a link is replaced as a link (its target
is never touched). Only names the pipeline writes (`.NAME.tmp-XXXXXXXX`, `.NAME.old-XXXXXXXX`) are ever
removed as leftovers.

`DataDir` names every folder; the stages name the files inside their own folders (a partition's part
files in `ingest`, a scoring job's shards and its hidden job folder in `shardjob.py`, an evaluation's
metrics in `evaluate.py`) and write them with the primitives here.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import json
import logging
import math
import os
import re
import shutil
import stat
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError, DamagedFileError, InputError, PipelineError
from pipeline.storage import STORAGE_ERRNOS

log = logging.getLogger(__name__)

MANIFEST = "_manifest.json"
_DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")  # fullmatch: `$` would let a trailing newline in
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def parse_date(value: str) -> str:
    """Return `value` if it is a real calendar date `YYYY-MM-DD`, else raise `InputError`."""
    if not isinstance(value, str) or not _DATE_RE.fullmatch(value):
        msg = f"`date` must look like YYYY-MM-DD, got {value!r}"
        raise InputError(msg)
    try:
        dt.date.fromisoformat(value)
    except ValueError:
        msg = f"`date` {value!r} is not a calendar date"
        raise InputError(msg) from None
    return value


def date_range(start: str, end: str) -> list[str]:
    """Every date from `start` to `end` inclusive."""
    a, b = dt.date.fromisoformat(parse_date(start)), dt.date.fromisoformat(parse_date(end))
    if b < a:
        msg = f"`end` {end} is before `start` {start}"
        raise InputError(msg)
    return [(a + dt.timedelta(days=i)).isoformat() for i in range((b - a).days + 1)]


def check_name(value: str, what: str) -> str:
    """A version or file name from the user: a plain name that cannot escape its folder."""
    if not isinstance(value, str) or not _NAME_RE.fullmatch(value):
        msg = f"`{what}` must be a plain name (letters, digits, '.', '_', '-'), got {value!r}"
        raise InputError(msg)
    return value


@dataclass(frozen=True)
class DataDir:
    """Paths of every stage under one data root."""

    root: Path

    @classmethod
    def at(cls, root: str | os.PathLike[str]) -> DataDir:
        return cls(Path(root).resolve())

    def raw(self, date: str) -> Path:
        return self.root / "raw" / parse_date(date)

    def texts(self, date: str) -> Path:
        return self.root / "lake" / "texts" / f"date={parse_date(date)}"

    def quarantine(self, date: str) -> Path:
        return self.root / "lake" / "quarantine" / f"date={parse_date(date)}"

    @property
    def vocab(self) -> Path:
        return self.root / "vocab"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def pretrain(self) -> Path:
        return self.root / "pretrain"

    def model(self, version: str) -> Path:
        return self.models / check_name(version, "model")

    def predictions(self, date: str) -> Path:
        return self.root / "predictions" / f"date={parse_date(date)}"

    def exports(self, date: str) -> Path:
        return self.root / "exports" / f"date={parse_date(date)}"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    def report(self, date: str) -> Path:
        return self.reports / f"date={parse_date(date)}"

    def evaluation(self, version: str, date: str) -> Path:
        """A model's metrics on a labelled date (`pipeline evaluate`)."""
        return self.reports / check_name(version, "model") / f"date={parse_date(date)}"

    def stamp(self, stage: str, date: str) -> Path:
        """What a stage consumed and produced for a date (see `nightly.py`)."""
        return self.root / "state" / stage / f"{parse_date(date)}.json"

    def lock_file(self, name: str) -> Path:
        return self.root / "state" / "locks" / f"{check_name(name, 'lock')}.lock"

    def text_dates(self) -> list[str]:
        """Dates that have a complete (manifested) lake partition, sorted."""
        base = self.root / "lake" / "texts"
        if not base.is_dir():
            return []
        out = []
        for p in base.iterdir():
            if p.name.startswith("date=") and (p / MANIFEST).is_file():
                out.append(p.name.removeprefix("date="))
        return sorted(out)


# ---------------------------------------------------------------------------- atomic files


def make_dir(folder: Path) -> Path:
    """Create `folder` (and its parents) if needed, and return it; refuse one that is a symbolic link.

    Files are written into such a folder in place (atomic files, the exporter's output), so a link there
    (`reports/date=D -> /elsewhere`) would carry the writes outside the data directory.
    """
    if folder.is_symlink():
        msg = (
            f"{folder}: a symbolic link, not a folder; the pipeline never writes through a link; "
            "hint: remove the link (what it points at is left as it is) and run again"
        )
        raise PipelineError(msg)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


ATOMIC_TMP = re.compile(r"\..+\.tmp-[0-9a-f]{8}")  # fullmatch


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is fsynced and renamed onto `path`.

    The temporary file `.NAME.tmp-XXXXXXXX` is created here and `flock`ed while it is written, so
    that a writer killed mid-way (even by SIGKILL) leaves a file nobody holds: the next atomic write
    into the same folder removes it (`sweep_temporaries`). On any error the temporary is removed.
    """
    make_dir(path.parent)
    sweep_temporaries(path.parent)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield tmp
        os.fsync(fd)  # the caller wrote through its own handle; fsync flushes the file, not the handle
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)
        os.close(fd)


def sweep_temporaries(folder: Path) -> list[Path]:
    """Remove the temporary files of atomic writes in `folder` that were cut by a crash; return them.

    A temporary is stale when no process holds its `flock` (the kernel drops it when the writer dies),
    so a write in progress in this or another process is never touched.
    """
    removed = []
    try:
        names = [n for n in os.listdir(folder) if ATOMIC_TMP.fullmatch(n)]
    except FileNotFoundError:
        return removed
    for name in names:
        p = folder / name
        try:
            fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:  # gone already, or a symlink (`models/.latest.tmp-*`, not ours)
            continue
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                continue
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # being written right now
        finally:
            os.close(fd)
        p.unlink(missing_ok=True)
        removed.append(p)
    return removed


def write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json(path: Path, obj: Any) -> None:
    """Atomically write canonical JSON (sorted keys, 2-space indent, trailing newline)."""
    write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode())


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        msg = f"{path}: not found"
        raise DamagedFileError(msg) from None
    except json.JSONDecodeError as e:
        msg = f"{path}: not valid JSON ({e}); the file is damaged, re-run the stage that writes it"
        raise DamagedFileError(msg) from None


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(chunk):
            h.update(b)
    return h.hexdigest()


def sha256_json(obj: Any) -> str:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


# ---------------------------------------------------------------------------- partitions


@contextmanager
def publish_dir(final: Path) -> Iterator[Path]:
    """Yield an empty hidden folder beside `final`; on success it replaces `final` as a whole.

    The swap is two renames (old -> hidden backup, new -> final). A crash between them leaves
    `final` missing and the backup present; `recover_dir` puts the backup back. A `final` that is a
    symbolic link is replaced as a link: renamed aside and unlinked, what it points at never touched.
    The new folder is `flock`ed until the publish is over (backup removed), so a leftover nobody holds
    was cut by a crash.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    recover_dir(final)
    token = uuid.uuid4().hex[:8]
    tmp = final.with_name(f".{final.name}.tmp-{token}")
    tmp.mkdir()
    held = os.open(tmp, os.O_RDONLY)  # see above; `pipeline gc` leaves a held folder alone
    fcntl.flock(held, fcntl.LOCK_EX)
    try:
        yield tmp
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        fsync_dir(tmp)
        backup = final.with_name(f".{final.name}.old-{token}")
        if os.path.lexists(final):
            os.rename(final, backup)
        os.rename(tmp, final)
        fsync_dir(final.parent)
        _remove_ours(backup)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        os.close(held)


def recover_dir(final: Path) -> None:
    """Undo a publish that crashed between its two renames, and drop stale temporary folders."""
    if not final.parent.is_dir():
        return
    ours = re.compile(rf"\.{re.escape(final.name)}\.(old|tmp)-[0-9a-f]{{8}}")  # fullmatch: names we write
    found = sorted((m.group(1), n) for n in os.listdir(final.parent) if (m := ours.fullmatch(n)))
    backups = [final.parent / n for kind, n in found if kind == "old"]
    if backups and not os.path.lexists(final):
        os.rename(backups[-1], final)
        backups = backups[:-1]
    for p in [*backups, *(final.parent / n for kind, n in found if kind == "tmp")]:
        _remove_ours(p)


def _remove_ours(path: Path) -> None:
    """Remove a leftover of `publish_dir`: a folder, or a link that stood in its place (the link alone)."""
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The manifest of a complete partition, or None when there is none (absent or never finished).

    It first mends what a crash mid-swap left (`recover_dir`: renames the folder back or removes it)."""
    recover_dir(folder)
    p = folder / MANIFEST
    return check_manifest_names(read_json(p), p) if p.is_file() else None


def check_manifest_names(m: Any, where: Path) -> dict[str, Any]:
    """A manifest's file names are joined to its folder: each must be a plain name, never a path."""
    if not isinstance(m, dict):
        msg = f"{where}: not a manifest (a JSON object); the file is damaged, re-run the stage that writes it"
        raise DamagedFileError(msg)
    for key in ("files", "shards"):
        for f in m.get(key) or []:
            name = f.get("name") if isinstance(f, dict) else None
            try:
                check_name(name, f"{key}[].name")  # type: ignore[arg-type]
            except InputError as e:
                msg = f"{where}: {e}; the manifest is damaged or was edited, re-run the stage that writes it"
                raise DamagedFileError(msg) from None
    return m


def require_manifest(folder: Path, hint: str) -> dict[str, Any]:
    m = read_manifest(folder)
    if m is None:
        msg = f"{folder}: no complete partition here; {hint}"
        raise PipelineError(msg)
    return m


def list_files(folder: Path, suffix: str) -> list[Path]:
    return sorted(
        p for p in folder.iterdir() if p.name.endswith(suffix) and not p.name.startswith((".", "_"))
    )


# ---------------------------------------------------------------------------- locks


LOCK_NOTE_SECONDS = 30.0  # a run waiting for a lock says so at once, then this often


def lock_timeout() -> float:
    """`$PIPELINE_LOCK_TIMEOUT`: seconds to wait for a held lock (default 600), finite and >= 0."""
    text = os.environ.get("PIPELINE_LOCK_TIMEOUT", "600")
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        msg = (
            f"PIPELINE_LOCK_TIMEOUT={text!r}: not a finite number of seconds >= 0; "
            "hint: set it to e.g. 600 (how long a run waits for another on the same date), or unset it"
        )
        raise ConfigError(msg)
    return value


@contextmanager
def locked(data: DataDir, name: str, *, timeout: float | None = None) -> Iterator[None]:
    """Hold an exclusive lock `name` (e.g. `date-2026-01-01`) for the duration of the block.

    A second run that wants the same partition waits up to `timeout` seconds (default
    `$PIPELINE_LOCK_TIMEOUT` or 600), saying so with the holder's pid at once and every
    `LOCK_NOTE_SECONDS`, then fails with an error naming the holder. The lock is an `flock` on a file
    under `state/locks/`: the kernel releases it when the holder dies, even by SIGKILL.
    """
    if timeout is None:
        timeout = lock_timeout()
    path = data.lock_file(name)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        if e.errno not in STORAGE_ERRNOS or not path.is_file():
            raise
        # a read-only data directory: an up-to-date stage still runs; one that must write fails there
        fd, holder_noted = os.open(path, os.O_RDONLY), False
    else:
        holder_noted = True
    try:
        start = time.monotonic()
        deadline, note = start + timeout, start
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                now = time.monotonic()
                if now >= deadline:
                    msg = (
                        f"{name}: another run (pid {_holder(fd)}) is writing this partition; "
                        f"waited {timeout:.0f} s; hint: let it finish, or raise PIPELINE_LOCK_TIMEOUT"
                    )
                    raise PipelineError(msg) from None
                if now >= note:
                    held = "held" if note == start else f"still held, after {now - start:.0f} s,"
                    log.warning(
                        "%s: %s by another run (pid %s); waiting for it up to %.0f s (PIPELINE_LOCK_TIMEOUT)",
                        name,
                        held,
                        _holder(fd),
                        timeout,
                    )
                    note = now + LOCK_NOTE_SECONDS
                time.sleep(0.2)
        if holder_noted:
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def _holder(fd: int) -> str:
    """The pid the lock's holder wrote into its file."""
    return os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
