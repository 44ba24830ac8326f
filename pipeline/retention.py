"""Retention: `pipeline gc`, the one command that deletes data, and only what its policy names.

The policy (`[retention]` in pipeline/config.py) names three things:

- nights: `predictions/`, `exports/` and `reports/` `date=D` folders of nights `days` or more days before
  the newest night in those folders. Partition dates, never the clock: the same data directory gives the
  same plan on any day, and a backfill of old dates is measured against the newest night there is;
- models: a folder the pipeline wrote (complete, its `config.json` naming it) that is not `latest`, not
  one of the last `models` distinct versions in `models/history.jsonl`, and not named by a kept night
  (its predictions' or exports' manifest, its summary). Its evaluations, `reports/<version>/`, go too;
- leftovers of work that is not running: training checkpoints (`models/.ckpt-V.pt`, `pretrain/.ckpt-K.pt`;
  a training holds the lock `train-V`, a pretraining `pretrain-K`), atomic temporary files and
  half-published folders whose `flock` nobody holds (`lake.atomic_path`, `lake.publish_dir`), an
  export's staged files while nobody holds the date's lock, and a cut scoring job's folder when its night
  goes (a newer one is what a failed night resumes from).

Never: `raw/`, the lake, vocabularies, pretrained vectors, `state/`, `runs/`; a file the pipeline did not
write (a folder written file by file, `exports/date=D` or `reports/date=D`, loses only the pipeline's
files and goes only when that leaves it empty; a folder published whole goes whole, as a re-run would
replace it); anything through a symbolic link. `plan_gc` only looks; `apply_gc` removes what a plan
lists, each thing under the lock that guards it (a night's `date-D`, `models`), checking again first.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import os
import re
import shutil
from collections.abc import Iterable
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path
from typing import Any, Literal

from pipeline import drift, export, lake, nightreport, promotion, registry
from pipeline.config import RetentionConfig
from pipeline.errors import DamagedFileError, InputError, PipelineError

Kind = Literal["predictions", "exports", "reports", "models", "evaluations", "checkpoints", "temporaries"]
KINDS: dict[Kind, tuple[str, str]] = {  # singular, plural; the order of the output
    "predictions": ("prediction partition", "prediction partitions"),
    "exports": ("export partition", "export partitions"),
    "reports": ("night report", "night reports"),
    "models": ("model", "models"),
    "evaluations": ("model evaluation", "model evaluations"),
    "checkpoints": ("training checkpoint", "training checkpoints"),
    "temporaries": ("temporary", "temporaries"),
}
NIGHT_STAGES: tuple[Kind, ...] = ("predictions", "exports", "reports")
# what the pipeline writes into the night folders it writes file by file (export.py, drift.py, nightreport.py)
_EXPORT_FORMATS = ("ndjson", "json")
_NIGHT_FILES = {
    "exports": {f"predictions.{f}" for f in _EXPORT_FORMATS}
    | {f"_manifest.{f}.json" for f in _EXPORT_FORMATS},
    "reports": {drift.SUMMARY, nightreport.PAGE},
}
_WRITTEN = ("lake", "vocab", "pretrain", "models", "predictions", "exports", "reports", "runs", "state")
_DATE_DIR = re.compile(r"date=([0-9]{4}-[0-9]{2}-[0-9]{2})")
_PUBLISHING = re.compile(r"\.(.+)\.(tmp|old)-[0-9a-f]{8}")  # lake.publish_dir's new folder and backup
_JOB = re.compile(r"\.date=([0-9]{4}-[0-9]{2}-[0-9]{2})\.job-[0-9a-f]{12}")  # shardjob.py
_CHECKPOINT = re.compile(r"\.ckpt-([0-9a-f]+)\.pt")  # train.py (models/), pretrain.py (pretrain/)
_SYMLINK = "a symbolic link; gc never follows one"


@dataclass(frozen=True)
class Removal:
    """One thing to remove: a file, a folder removed whole, or a folder's `members` (then the folder, if
    that empties it)."""

    kind: Kind
    path: Path
    reason: str
    size: int  # bytes; a file linked twice counts once in a plan
    members: tuple[Path, ...] | None = None
    lock: str | None = None  # held while it is removed: `date-D`, `models`, `train-V`, `pretrain-K`
    unheld: Path | None = None  # removed only while no process holds this path's flock


@dataclass(frozen=True)
class GcPlan:
    """What gc removes (or removed), and what it left alone and why."""

    root: Path
    removals: tuple[Removal, ...]
    left: tuple[tuple[Path, str], ...] = field(default=())


def plan_gc(data: lake.DataDir, policy: RetentionConfig, *, keep_dates: Iterable[str] = ()) -> GcPlan:
    """What `policy` removes from `data` now (nights in `keep_dates` are kept whatever their age).

    Reads only: nothing is created, locked for longer than a glance, or removed."""
    left: list[tuple[Path, str]] = []
    seen: set[tuple[int, int]] = set()
    nights = _nights(data, left)
    written = [d for d, folders in nights.items() if any(p.is_file() for p in _records(folders))]
    newest = dt.date.fromisoformat(max(written, default="0001-01-01"))  # an empty `date=` folder: not a night
    age = {d: (newest - dt.date.fromisoformat(d)).days for d in nights}
    old = {d for d in nights if age[d] >= policy.days} - set(keep_dates)
    removals = _leftovers(data, old, seen, left)
    for date in sorted(old):
        why = f"{age[date]} days before the newest night, {newest}"
        removals += _night_removals(date, nights[date], why, seen, left)
    used = {v for d in nights if d not in old for v in _models_used(d, nights[d])}
    removals += _model_removals(data, policy, used, seen, left)
    return GcPlan(data.root, tuple(removals), tuple(left))


def apply_gc(data: lake.DataDir, plan: GcPlan) -> GcPlan:
    """Remove what `plan` lists, each under its lock, checking again that it is not in use; returns what
    was removed, and what was left and why (the plan's, and any found in use now)."""
    done: list[Removal] = []
    left = list(plan.left)
    for lock, group in groupby(sorted(plan.removals, key=_apply_order), key=lambda r: r.lock):
        with ExitStack() as stack:
            free = True
            if lock is not None:
                # a night or the models: wait as a run would; a checkpoint's training: only if not running
                timeout = None if lock == "models" or lock.startswith("date-") else 0
                try:
                    stack.enter_context(lake.locked(data, lock, timeout=timeout))
                except PipelineError:
                    free = False
            latest = promotion.current_latest(data) if lock == "models" else None
            for r in group:
                why = _in_use(data, r, latest) if free else f"in use (lock `{lock}` is held)"
                if why:
                    left.append((r.path, why))
                    continue
                _remove(r)
                done.append(r)
    return GcPlan(plan.root, tuple(done), tuple(left))


def collect_garbage(
    data: lake.DataDir, policy: RetentionConfig, *, dry_run: bool = False, keep_dates: Iterable[str] = ()
) -> str:
    """`pipeline gc` (and `run` with `retention.after_run`): plan, remove unless `dry_run`, say what."""
    plan = plan_gc(data, policy, keep_dates=keep_dates)
    return format_plan(plan if dry_run else apply_gc(data, plan), dry_run=dry_run)


def format_plan(plan: GcPlan, *, dry_run: bool) -> str:
    """Grouped by kind, a line a removal with its size and reason; what was left alone; the total."""
    lines, totals = [], []
    for kind, (one, many) in KINDS.items():
        rs = [r for r in plan.removals if r.kind == kind]
        if rs:
            size = human_size(sum(r.size for r in rs))
            lines.append(f"{many}:")
            lines += [f"  {_show(plan.root, r.path)}  {human_size(r.size)}  {r.reason}" for r in rs]
            totals.append(f"{len(rs)} {one if len(rs) == 1 else many} ({size})")
    if plan.left:
        lines.append("left alone:")
        lines += [f"  {_show(plan.root, p)}  {why}" for p, why in plan.left]
    if not totals:
        return "\n".join([*lines, "nothing to remove"])
    freed = human_size(sum(r.size for r in plan.removals))
    said = f"would remove {', '.join(totals)}; would free {freed}"
    return "\n".join([*lines, said if dry_run else f"removed {', '.join(totals)}; freed {freed}"])


def human_size(n: int) -> str:
    """Bytes in decimal units, as `df -H` shows them: 512 B, 1.2 MB, 3.4 GB."""
    if n < 1000:
        return f"{n} B"
    x = float(n)
    for unit in ("kB", "MB", "GB", "TB"):
        x /= 1000
        if x < 999.95 or unit == "TB":
            return f"{x:.1f} {unit}"
    raise AssertionError(n)


# ---------------------------------------------------------------------------- nights


def _nights(data: lake.DataDir, left: list[tuple[Path, str]]) -> dict[str, dict[Kind, Path]]:
    """date -> stage -> its `date=D` folder, over `predictions/`, `exports/` and `reports/`."""
    nights: dict[str, dict[Kind, Path]] = {}
    for stage in NIGHT_STAGES:
        for p in _entries(data.root / stage, left):
            m = _DATE_DIR.fullmatch(p.name)
            if m is None or not _is_date(m[1]) or not (p.is_dir() or p.is_symlink()):
                continue
            nights.setdefault(m[1], {})[stage] = p
    return nights


def _night_removals(
    date: str, folders: dict[Kind, Path], why: str, seen: set[tuple[int, int]], left: list[tuple[Path, str]]
) -> list[Removal]:
    out = []
    for stage, folder in folders.items():
        if folder.is_symlink():
            left.append((folder, _SYMLINK))
            continue
        if stage == "predictions":  # published whole (shardjob.py): it goes whole
            size = _size(folder, seen)
            out.append(Removal("predictions", folder, why, size, lock=f"date-{date}"))
            continue
        members = []
        for p in sorted(folder.iterdir()):
            if p.name in _NIGHT_FILES[stage] and p.is_file() and not p.is_symlink():
                members.append(p)
            elif not _is_temporary(p.name):  # a temporary is planned with the leftovers
                left.append((p, "not written by the pipeline"))
        size = sum(_size(p, seen) for p in members)
        out.append(Removal(stage, folder, why, size, members=tuple(members), lock=f"date-{date}"))
    return out


def _records(folders: dict[Kind, Path]) -> list[Path]:
    """Where a night's files name its model: its predictions' manifest (and a backup's, that a cut publish
    left), its exports' manifests, its summary (whose page links the model's card)."""
    paths = []
    if "predictions" in folders:
        p = folders["predictions"]
        paths += [p / lake.MANIFEST, *(b / lake.MANIFEST for b in p.parent.glob(f".{p.name}.old-*"))]
    if "exports" in folders:
        paths += [folders["exports"] / f"_manifest.{fmt}.json" for fmt in _EXPORT_FORMATS]
    if "reports" in folders:
        paths.append(folders["reports"] / drift.SUMMARY)
    return paths


def _models_used(date: str, folders: dict[Kind, Path]) -> set[str]:
    """The model versions a kept night's records name (`_records`)."""
    used = set()
    for path in _records(folders):
        if not path.is_file():
            continue
        try:
            m = lake.read_json(path)
            version = m["model_version"] if isinstance(m, dict) else None
        except (DamagedFileError, UnicodeDecodeError, KeyError) as e:
            msg = (
                f"{path}: cannot tell which model this kept night needs ({e}); nothing was removed; "
                f"hint: run that night again (`pipeline run --date {date}`), or move the file away"
            )
            raise PipelineError(msg) from None
        if isinstance(version, str):
            used.add(version)
    return used


# ---------------------------------------------------------------------------- models


def _model_removals(
    data: lake.DataDir,
    policy: RetentionConfig,
    used: set[str],
    seen: set[tuple[int, int]],
    left: list[tuple[Path, str]],
) -> list[Removal]:
    if data.models.is_symlink() or not data.models.is_dir():
        _entries(data.models, left)  # says so once for a symlink
        return []
    keep = used | _recent_versions(promotion.history(data), policy.models)
    latest = promotion.current_latest(data)
    if latest is not None:
        keep.add(latest)
    out = []
    for p in _entries(data.models, left):
        if p.name.startswith(".") or p.name in ("latest", promotion.HISTORY):
            continue  # hidden: checkpoints and leftovers (`_leftovers`)
        if p.is_symlink():
            left.append((p, _SYMLINK))
        elif not _is_model(p):
            left.append((p, "not a model folder the pipeline wrote"))
        elif p.name not in keep:
            why = f"not latest, not in the last {policy.models} of the history, no kept night uses it"
            out.append(Removal("models", p, why, _size(p, seen), lock="models"))
            evaluations = data.reports / p.name
            if evaluations.is_dir() and not evaluations.is_symlink():
                out.append(_evaluations(evaluations, seen, left))
    return out


def _recent_versions(moves: list[Any], k: int) -> set[str]:
    """The last `k` distinct versions of the history, newest first: each move's `to`, then its `from`
    (so with k >= 2 a rollback always finds its model)."""
    versions: list[str] = []
    for move in reversed(moves):
        for v in (move.get("to"), move.get("from")) if isinstance(move, dict) else ():
            if isinstance(v, str) and v not in versions:
                versions.append(v)
    return set(versions[:k])


def _is_model(folder: Path) -> bool:
    """A complete model folder as `pipeline train` writes it: its files, and a config.json naming it."""
    if not registry.is_complete(folder):
        return False
    try:
        meta = lake.read_json(folder / "config.json")
    except (DamagedFileError, UnicodeDecodeError):
        return False
    return (
        isinstance(meta, dict)
        and meta.get("format_version") == registry.MODEL_FORMAT_VERSION
        and meta.get("version") == folder.name
    )


def _evaluations(folder: Path, seen: set[tuple[int, int]], left: list[tuple[Path, str]]) -> Removal:
    """`reports/<version>/`: its `date=D` folders (each published whole), then itself if that empties it."""
    members = []
    for p in sorted(folder.iterdir()):
        if _DATE_DIR.fullmatch(p.name) and p.is_dir() and not p.is_symlink():
            members.append(p)
        elif not _PUBLISHING.fullmatch(p.name):
            left.append((p, "not written by the pipeline"))
    size = sum(_size(p, seen) for p in members)
    return Removal("evaluations", folder, "its model is removed", size, members=tuple(members), lock="models")


# ---------------------------------------------------------------------------- leftovers


def _leftovers(
    data: lake.DataDir, old: set[str], seen: set[tuple[int, int]], left: list[tuple[Path, str]]
) -> list[Removal]:
    """Checkpoints and temporaries of work that is not running, in every folder the pipeline writes
    (not `raw/`); never into a symlinked folder, nor into a partition that goes whole."""
    out = []
    whole = {data.root / "predictions" / f"date={d}" for d in old}
    for stage in _WRITTEN:
        top = data.root / stage
        if top.is_symlink():
            _entries(top, left)
            continue
        for here, dirs, files in os.walk(top):  # does not descend into a symlinked folder
            folder = Path(here)
            for name in list(dirs):
                p = folder / name
                r = None if p.is_symlink() else _leftover_folder(data, p, old, seen, left)
                if r is not None:
                    out.append(r)
                if r is not None or p in whole or p.is_symlink():
                    dirs.remove(name)
            for name in files:
                r = _leftover_file(data, folder / name, seen)
                if r is not None:
                    out.append(r)
    return out


def _leftover_folder(
    data: lake.DataDir, p: Path, old: set[str], seen: set[tuple[int, int]], left: list[tuple[Path, str]]
) -> Removal | None:
    job = _JOB.fullmatch(p.name)
    if job and p.parent == data.root / "predictions":
        if job[1] not in old:  # what a failed night resumes from: it goes only with its night
            left.append((p, f"a cut scoring job; `pipeline score --date {job[1]}` resumes it"))
            return None
        if not _lock_free(data, f"date-{job[1]}"):
            return None  # that night is being scored
        why = "a cut scoring job (nothing is scoring that night)"
        return Removal("temporaries", p, why, _size(p, seen), lock=f"date-{job[1]}")
    publishing = _PUBLISHING.fullmatch(p.name)
    if publishing is None:
        return None
    if publishing[2] == "tmp":
        if not _unheld(p):
            return None  # being published
        return Removal("temporaries", p, "a half-published folder", _size(p, seen), unheld=p)
    final = p.parent / publishing[1]
    if not final.is_dir() or final.is_symlink():
        left.append(
            (p, f"the only copy of {final.name} (a publish cut between its renames; reading it restores it)")
        )
        return None
    if not _unheld(final):
        return None  # its publish is finishing
    return Removal("temporaries", p, "the copy a finished publish replaced", _size(p, seen), unheld=final)


def _leftover_file(data: lake.DataDir, p: Path, seen: set[tuple[int, int]]) -> Removal | None:
    if p.is_symlink() or not p.is_file():
        return None
    night = _DATE_DIR.fullmatch(p.parent.name)
    if night and p.parent.parent == data.root / "exports" and export.is_export_temporary(p.name):
        if not _lock_free(data, f"date-{night[1]}"):
            return None  # that night is being exported
        why = "an export's staged file (nothing is exporting that night)"
        return Removal("temporaries", p, why, _size(p, seen), lock=f"date-{night[1]}")
    if lake.ATOMIC_TMP.fullmatch(p.name):
        if not _unheld(p):
            return None  # being written
        return Removal("temporaries", p, "an atomic write a crash cut", _size(p, seen), unheld=p)
    checkpoint = _CHECKPOINT.fullmatch(p.name)
    if checkpoint and p.parent in (data.models, data.pretrain):
        lock = f"{'train' if p.parent == data.models else 'pretrain'}-{checkpoint[1]}"
        if not _lock_free(data, lock):
            return None  # that training is running
        why = f"left by a {lock.split('-')[0]}ing that is not running"
        return Removal("checkpoints", p, why, _size(p, seen), lock=lock)
    return None


def _is_temporary(name: str) -> bool:
    return bool(lake.ATOMIC_TMP.fullmatch(name)) or export.is_export_temporary(name)


# ---------------------------------------------------------------------------- removing


def _apply_order(r: Removal) -> tuple[int, str, str]:
    """Leftovers first (so the folders they were in can empty), then nights by date, then models; each
    lock's removals together."""
    phase = 0 if r.kind in ("temporaries", "checkpoints") else 2 if r.lock == "models" else 1
    return phase, r.lock or "", str(r.path)


def _in_use(data: lake.DataDir, r: Removal, latest: str | None) -> str | None:
    """Why `r` must stay after all, checked under its lock: a holder now, a model `latest` now."""
    if r.unheld is not None and not _unheld(r.unheld):
        return "in use (its flock is held)"
    if r.kind == "models" and r.path.name == latest:
        return "`latest` now"
    if r.kind == "evaluations" and (data.models / r.path.name).exists():
        return "its model is kept"
    return None


def _remove(r: Removal) -> None:
    if r.members is None:
        if r.path.is_dir() and not r.path.is_symlink():
            shutil.rmtree(r.path)
        else:
            r.path.unlink(missing_ok=True)
        return
    for p in r.members:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink(missing_ok=True)
    with suppress(OSError):  # not empty: what the pipeline did not write stays, and its folder with it
        r.path.rmdir()


# ---------------------------------------------------------------------------- looking


def _entries(folder: Path, left: list[tuple[Path, str]]) -> list[Path]:
    """A stage folder's entries, sorted; none for a symlinked one (said once in `left`)."""
    if folder.is_symlink():
        if (folder, _SYMLINK) not in left:
            left.append((folder, _SYMLINK))
        return []
    return sorted(folder.iterdir()) if folder.is_dir() else []


def _is_date(text: str) -> bool:
    try:
        lake.parse_date(text)
    except InputError:
        return False
    return True


def _size(path: Path, seen: set[tuple[int, int]]) -> int:
    """Bytes of a file, or of every file under a folder, never through a symlink; each inode once."""
    total = 0
    for p in [path, *(path.rglob("*") if path.is_dir() and not path.is_symlink() else ())]:
        st = p.lstat()
        key = (st.st_dev, st.st_ino)
        if key not in seen and not p.is_symlink() and p.is_file():
            seen.add(key)
            total += st.st_size
    return total


def _unheld(path: Path) -> bool:
    """No process holds an `flock` on `path` (a file or a folder; never through a symlink)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:  # gone, or a symlink: leave it
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # releases it
    return True


def _lock_free(data: lake.DataDir, name: str) -> bool:
    """Nobody holds the lock `name` (`lake.locked`); looked at without creating its file."""
    path = data.lock_file(name)
    return not path.exists() or _unheld(path)


def _show(root: Path, path: Path) -> str:
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
