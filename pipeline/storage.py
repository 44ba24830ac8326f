"""A full, read-only or unwritable data directory, told apart from other failures and reported as a
`StorageError` that names the path, says what was being done and gives a hint.

Every write in the pipeline is atomic (`lake.atomic_path`, `lake.publish_dir`), so such a failure
publishes nothing; these helpers only say clearly what happened.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.errors import PipelineError, StorageError

STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES})
_LOW_SPACE = 16 << 20  # bytes; with less than this free in the data directory, no model or partition fits


def storage_hint(code: int) -> str:
    """What to do about a full (`ENOSPC`, `EDQUOT`), read-only (`EROFS`) or forbidden (`EACCES`) path."""
    if code == errno.EROFS:
        return "remount it read-write (or pass another --data-dir), then run again"
    if code == errno.EACCES:
        return "give this user write access to it (or pass another --data-dir), then run again"
    return "free space on that file system (or pass another --data-dir), then run again"


def _storage_cause(root: Path, exc: BaseException) -> tuple[int, str, str] | None:
    """(errno, path, what is wrong) when `exc` comes from a full, read-only or unwritable data directory.

    A storage `OSError` in the exception's chain says so itself, and so does another error that quotes
    the system's message (safetensors: "No space left on device (os error 28)"). Otherwise the file
    system is looked at: some writers lose the cause (torch.save raises "unexpected pos" when the disk
    fills), and so does a failure far from our code (Prefect's database in `<root>/.prefect`).
    """
    chain: list[BaseException] = []
    e: BaseException | None = exc
    while e is not None and e not in chain:
        chain.append(e)
        if isinstance(e, OSError) and e.errno in STORAGE_ERRNOS:
            return e.errno, str(e.filename or root), os.strerror(e.errno)
        for code in STORAGE_ERRNOS - {errno.EACCES}:  # wrapped by Rust or C++ (safetensors), named
            if os.strerror(code).lower() in str(e).lower():
                return code, str(root), os.strerror(code)
        e = e.__cause__ or e.__context__
    try:
        st = os.statvfs(root)
    except OSError:
        return None
    free = st.f_bavail * st.f_frsize
    if st.f_flag & os.ST_RDONLY:
        return errno.EROFS, str(root), "the data directory is on a read-only file system"
    if not os.access(root, os.W_OK):
        return errno.EACCES, str(root), "the data directory is not writable"
    if free < _LOW_SPACE:
        return errno.ENOSPC, str(root), f"the data directory's file system is full ({free} bytes free)"
    return None


@contextmanager
def storage_errors(root: Path, what: str) -> Iterator[None]:
    """Turn an error of a full, read-only or unwritable data directory into a `StorageError`.

    The message names the path (the data root when the OS does not say), what was being done, and a
    hint. Every write is atomic, so such a failure publishes nothing and leaves earlier outputs intact;
    the same run, started again once there is room, carries on.
    """
    try:
        yield
    except PipelineError:
        raise
    except Exception as e:
        cause = _storage_cause(root, e)
        if cause is None:
            raise
        code, where, wrong = cause
        seen = "" if isinstance(e, OSError) else f" ({type(e).__name__}: {_first_line(e)})"
        msg = (
            f"{where}: {wrong} while {what}{seen}; what was published before is intact and nothing "
            f"half-written was kept; hint: {storage_hint(code)}"
        )
        raise StorageError(msg) from None


def check_writable(root: Path) -> None:
    """Fail at once with a `StorageError` when nothing can be written in `root` (full, read-only, forbidden),
    rather than midway or, worse, in Prefect's database there."""
    try:
        fd, name = tempfile.mkstemp(prefix=".write-check-", dir=root)
        try:
            os.write(fd, bytes(4096))
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(name)
    except OSError as e:
        if e.errno not in STORAGE_ERRNOS:
            raise
        msg = f"{root}: {os.strerror(e.errno)}: nothing can be written there; hint: {storage_hint(e.errno)}"
        raise StorageError(msg) from None


def storage_problem(root: Path, exc: BaseException) -> str | None:
    """A clear message if `exc` comes from a full, read-only or unwritable data directory, else None."""
    cause = _storage_cause(root, exc)
    if cause is None:
        return None
    code, where, wrong = cause
    said = "" if isinstance(exc, OSError) else f"; the run failed ({type(exc).__name__}: {_first_line(exc)})"
    return f"{where}: {wrong}{said}; hint: {storage_hint(code)}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""
