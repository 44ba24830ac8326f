"""Which model is `latest`: the promotion gate after training, moves by hand, and their history.

`train` publishes every new version; `after_training` then moves `models/latest` to it only as
`--promote` says: `always`; `never`; or `if-better` (the default): when the new version is at least as
accurate as the current `latest` on the same rows, the new version's validation split, scored by both
(the current model reads the texts through its own vocabulary). Otherwise `latest` stays and the
result says why, with both figures.

Every move (`train`, `pipeline models promote VERSION`, `pipeline models rollback`) is appended to
`models/history.jsonl`: one JSON object per line with `when` (UTC), `who` ($PIPELINE_USER, else the
login name), `action`, `from`, `to` and `why`. `rollback` moves `latest` back to the `from` of the last
move, so a second rollback undoes the first (like `cd -`). No move, whatever `--promote` says, makes
`latest` a model that does not load: incomplete, inconsistent, or with a NaN or infinite weight.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import logging
import os
from typing import Any, Literal

import numpy as np
import polars as pl

from pipeline import lake, registry
from pipeline.errors import ModelError, PipelineError
from pipeline.infer import build_scorer
from pipeline.vocab import encode

log = logging.getLogger(__name__)

Promote = Literal["always", "if-better", "never"]
HISTORY = "history.jsonl"


def current_latest(data: lake.DataDir) -> str | None:
    link = data.models / "latest"
    return os.readlink(link) if link.is_symlink() else None


def after_training(data: lake.DataDir, version: str, *, promote: Promote = "if-better") -> dict[str, Any]:
    """Move `latest` to the newly trained `version` or not, as `promote` says; returns the decision."""
    current = current_latest(data)
    decision: dict[str, Any] = {"mode": promote, "previous": current, "promoted": False}
    if current == version:
        return {**decision, "promoted": True, "why": f"{version} is already latest"}
    if promote == "never":
        return {**decision, "why": "--promote never: published, `latest` left as it was"}
    if current is None or promote == "always":
        why = "the first model" if current is None else "--promote always"
        move(data, version, action="train", why=why)
        return {**decision, "promoted": True, "why": why}
    try:
        new_acc, old_acc, rows = compare(data, version, current)
    except ModelError as e:  # the current latest cannot be loaded: it cannot be the better one
        why = f"the current latest {current} cannot be scored ({e})"
        move(data, version, action="train", why=why)
        return {**decision, "promoted": True, "why": why}
    except PipelineError as e:
        why = f"not promoted, cannot compare with latest {current}: {e}"
        log.warning("model %s %s", version, why)
        return {**decision, "why": why}
    figures = {"accuracy_new": new_acc, "accuracy_latest": old_acc, "rows": rows}
    said = f"on the {rows} validation rows of {version}: {version} {new_acc:.4f}, {current} {old_acc:.4f}"
    if new_acc >= old_acc:
        why = f"at least as accurate as latest {said}"
        move(data, version, action="train", why=why)
        return {**decision, **figures, "promoted": True, "why": why}
    why = (
        f"not promoted, less accurate than latest {said}; `latest` stays {current}; "
        f"hint: `pipeline models promote {version}` moves it anyway"
    )
    log.warning("model %s %s", version, why)
    return {**decision, **figures, "why": why}


def compare(data: lake.DataDir, version: str, current: str) -> tuple[float, float, int]:
    """(accuracy of `version`, accuracy of `current`, rows) on `version`'s validation split."""
    path = data.model(version) / "validation_predictions.parquet"
    val = pl.read_parquet(path)
    if "text" not in val.columns:
        msg = f"{path}: has no `text` column (trained before the promotion gate); hint: retrain"
        raise PipelineError(msg)
    if val.height == 0:
        return 0.0, 0.0, 0
    truth = val["label"].to_numpy()
    new_acc = float((val["predicted"].to_numpy() == truth).mean())
    lm = registry.load_model(data.models, current)
    ids, offsets = encode(val["text"], lm.vocab, max_len=lm.config.max_len)
    probs = build_scorer(lm.model, batch_size=256).predict_proba(ids, offsets)
    predicted = np.asarray(lm.labels, dtype=object)[probs.argmax(1)]  # a label it lacks is never right
    return new_acc, float((predicted == truth).mean()), val.height


def move(data: lake.DataDir, version: str, *, action: str, why: str) -> dict[str, Any]:
    """Point `latest` at `version` and append the move to `models/history.jsonl`. Only a model that loads
    (complete, consistent, every weight finite: `registry.load_model`) can become `latest`."""
    try:
        registry.load_model(data.models, version)
    except ModelError as e:
        raise ModelError(f"not moving `latest` to {version}: {e}") from None
    with lake.locked(data, "models"):
        previous = current_latest(data)
        registry.set_latest(data.models, version)
        entry = {
            "when": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "who": _who(),
            "action": action,
            "from": previous,
            "to": version,
            "why": why,
        }
        path = data.models / HISTORY
        old = path.read_bytes() if path.is_file() else b""
        lake.write_bytes(path, old + (json.dumps(entry, ensure_ascii=False) + "\n").encode())
    log.info("latest: %s -> %s (%s: %s)", previous, version, action, why)
    return entry


def history(data: lake.DataDir) -> list[dict[str, Any]]:
    path = data.models / HISTORY
    if not path.is_file():
        return []
    try:
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except json.JSONDecodeError as e:
        msg = f"{path}: not JSON lines ({e}); the history is damaged; hint: restore it or remove the bad line"
        raise PipelineError(msg) from None


def promote(data: lake.DataDir, version: str, *, why: str | None = None) -> dict[str, Any]:
    """`pipeline models promote VERSION`: make a published version `latest`, by hand."""
    version = registry.resolve_version(data.models, version)  # a complete model folder, or a clear error
    return move(data, version, action="promote", why=why or "by hand")


def rollback(data: lake.DataDir, *, why: str | None = None) -> dict[str, Any]:
    """`pipeline models rollback`: `latest` back to the version it was before its last move."""
    moves = history(data)
    previous = moves[-1]["from"] if moves else None
    if previous is None:
        msg = (
            f"{data.models / HISTORY}: no earlier `latest` to roll back to; "
            "hint: `pipeline models promote VERSION` (see `pipeline models`)"
        )
        raise ModelError(msg)
    registry.resolve_version(data.models, previous)
    return move(data, previous, action="rollback", why=why or f"rollback from {moves[-1]['to']}")


def _who() -> str:
    name = os.environ.get("PIPELINE_USER")
    if name:
        return name
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name in a container: the uid says who
        return f"uid {os.getuid()}"
