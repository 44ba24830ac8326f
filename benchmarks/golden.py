"""Golden outputs (`make golden`): the bytes of every file the demo and a backfill over the shared data
sets write, recorded once and compared after a change that must not change behaviour (a refactor).

    make golden                                     # compare with benchmarks/golden.json
    .venv/bin/python benchmarks/golden.py record    # write benchmarks/golden.json anew (review the diff!)
    .venv/bin/python benchmarks/golden.py check [--keep DIR]

The commands run as a user runs them (`python -m pipeline ...` in a subprocess, each data directory
fresh), with the scoring clock frozen (tests/crashkit.py as the launcher) so `scored_at` is fixed:

1. `pipeline demo`.
2. For each shared data set present (AG News, THUCNews titles, TREC): its first 2,000 rows ingested as
   one labelled date with the README's options, a small model trained on it (2 epochs, 1 pretraining
   epoch), `evaluate` on that date, a two-night `backfill` over `raw/<date>/` folders holding the next
   rows (their options in `_ingest.toml`), and the trend report.

Every file of each data directory is hashed (sha256), but for what two runs of the same code differ in:
Prefect's state, run summaries and lock files are left out; in JSON and JSON Lines files the keys
`created`, `seconds`, `when` and `who` are dropped before hashing, and in a model card its
`training seconds` line. A missing shared data set is named, and its files are not compared.
A difference prints each file that differs, is missing or is new, and exits 1.

Float results depend on the CPU's kernels: record and check on the same machine.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
GOLDEN = REPO / "benchmarks" / "golden.json"
LAUNCHER = REPO / "tests" / "crashkit.py"  # `python -m pipeline` with the scoring clock frozen

SKIP_DIRS = {".prefect", "runs", "locks"}
VOLATILE_KEYS = {"created", "seconds", "when", "who"}

TRAIN_DATE, NIGHTS = "2026-03-01", ("2026-03-02", "2026-03-03")
TRAIN_ROWS, NIGHT_ROWS = 2000, 700
SMALL = ["train.epochs=2", "pretrain.epochs=1", "model.embed_dim=32", "model.hidden_dim=32"]

# Per data set: its file, its encoding, and its ingest options as `_ingest.toml` keys.
DATASETS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "ag_news": (
        "ag_news/train.csv",
        "utf-8",
        {
            "format": "csv",
            "header": False,
            "label_column": "1",
            "text_columns": ["2", "3"],
            "label_index": 1,
            "classes": "_classes.txt",
            "backslash_breaks": True,
        },
    ),
    "thucnews": (
        "thucnews/train.txt",
        "utf-8",
        {
            "format": "tsv",
            "header": False,
            "text_columns": ["1"],
            "label_column": "2",
            "label_index": 0,
            "classes": "_classes.txt",
        },
    ),
    "trec": (
        "trec/train_5500.label",
        "iso-8859-1",
        {"format": "labelled", "encoding": "iso-8859-1", "label_coarse_sep": ":"},
    ),
}
CLASSES = {"ag_news": "ag_news/classes.txt", "thucnews": "thucnews/class.txt"}


def pipeline(root: Path, *args: str) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    for k in ("PREFECT_API_URL", "PREFECT_HOME", "CRASHKIT_EVENTS", "PIPELINE_MYSQL_URL"):
        env.pop(k, None)
    cmd = [sys.executable, str(LAUNCHER), "--data-dir", str(root), *args]
    print("  $ pipeline", *args, flush=True)
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"golden: `pipeline {' '.join(args)}` failed ({done.returncode}):\n{done.stderr[-4000:]}")


def toml_value(v: Any) -> str:
    return json.dumps(v).lower() if isinstance(v, bool) else json.dumps(v)


def write_folder(folder: Path, name: str, lines: list[bytes], options: dict[str, Any], classes: Path | None):
    folder.mkdir(parents=True)
    (folder / Path(name).name).write_bytes(b"".join(lines))
    (folder / "_ingest.toml").write_text("".join(f"{k} = {toml_value(v)}\n" for k, v in options.items()))
    if classes is not None:
        shutil.copyfile(classes, folder / "_classes.txt")


def run_dataset(root: Path, name: str) -> None:
    path, _, options = DATASETS[name]
    lines = (SHARED / path).read_bytes().splitlines(keepends=True)
    classes = SHARED / CLASSES[name] if name in CLASSES else None
    chunks = [lines[:TRAIN_ROWS]] + [
        lines[TRAIN_ROWS + i * NIGHT_ROWS : TRAIN_ROWS + (i + 1) * NIGHT_ROWS] for i in range(len(NIGHTS))
    ]
    for date, chunk in zip((TRAIN_DATE, *NIGHTS), chunks, strict=True):
        write_folder(root / "raw" / date, path, chunk, options, classes)
    src = root / "raw" / TRAIN_DATE
    pipeline(root, "ingest", str(src / Path(path).name), "--date", TRAIN_DATE, *ingest_flags(options, src))
    pipeline(root, "train", *[a for kv in SMALL for a in ("--set", kv)])
    pipeline(root, "evaluate", "--date", TRAIN_DATE)
    pipeline(root, "backfill", "--start", NIGHTS[0], "--end", NIGHTS[-1])
    pipeline(root, "report", "--start", NIGHTS[0], "--end", NIGHTS[-1])


def ingest_flags(options: dict[str, Any], folder: Path) -> list[str]:
    """The command-line form of `_ingest.toml`'s options (as the README writes them)."""
    flags: list[str] = []
    for k, v in options.items():
        flag = "--" + k.replace("_", "-")
        if isinstance(v, bool):
            flags += [flag if v else "--no-" + flag[2:]]
        elif k == "text_columns":
            for c in v:
                flags += ["--text-column", c]
        elif k == "classes":
            flags += [flag, str(folder / v)]
        else:
            flags += [flag, str(v)]
    return flags


def normalise(path: Path) -> bytes:
    data = path.read_bytes()
    if path.suffix == ".json":
        return json.dumps(strip(json.loads(data)), sort_keys=True).encode()
    if path.suffix == ".jsonl":
        return b"\n".join(
            json.dumps(strip(json.loads(x)), sort_keys=True).encode() for x in data.splitlines()
        )
    if path.name == "card.md":
        return b"\n".join(x for x in data.splitlines() if b"training seconds" not in x)
    return data


def strip(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: strip(x) for k, x in v.items() if k not in VOLATILE_KEYS}
    if isinstance(v, list):
        return [strip(x) for x in v]
    return v


def digests(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if p.is_file() and not SKIP_DIRS.intersection(rel.parts):
            out[str(rel)] = hashlib.sha256(normalise(p)).hexdigest()
    return out


def run_all(work: Path) -> dict[str, dict[str, str]]:
    results: dict[str, dict[str, str]] = {}
    print("demo", flush=True)
    pipeline(work / "demo", "demo")
    results["demo"] = digests(work / "demo")
    for name in DATASETS:
        if not (SHARED / DATASETS[name][0]).is_file():
            print(f"{name}: {SHARED / DATASETS[name][0]} is absent; not compared", flush=True)
            continue
        print(name, flush=True)
        run_dataset(work / name, name)
        results[name] = digests(work / name)
    return results


def compare(want: dict[str, dict[str, str]], got: dict[str, dict[str, str]]) -> list[str]:
    problems = []
    for run, files in got.items():
        if run not in want:
            problems.append(f"{run}: not in the golden record")
            continue
        for f in sorted(want[run].keys() | files.keys()):
            a, b = want[run].get(f), files.get(f)
            if a != b:
                what = "missing" if b is None else "new" if a is None else "differs"
                problems.append(f"{run}/{f}: {what}")
    return problems


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("action", choices=["record", "check"])
    ap.add_argument("--golden", type=Path, default=GOLDEN)
    ap.add_argument("--keep", type=Path, help="run in this folder and keep it (default: a temporary one)")
    args = ap.parse_args()
    if args.keep:
        shutil.rmtree(args.keep, ignore_errors=True)
        args.keep.mkdir(parents=True)
        got = run_all(args.keep)
    else:
        with tempfile.TemporaryDirectory(prefix="golden-") as tmp:
            got = run_all(Path(tmp))
    if args.action == "record":
        args.golden.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
        print(f"recorded {sum(map(len, got.values()))} files in {args.golden}")
        return 0
    problems = compare(json.loads(args.golden.read_text()), got)
    for p in problems:
        print(p)
    n = sum(map(len, got.values()))
    print(
        f"golden: {n} files compared, {len(problems)} differ" if problems else f"golden: {n} files identical"
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
