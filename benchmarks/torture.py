"""Crash test (`make torture`): SIGKILL a backfill at random moments in every stage, resume, compare.

    make torture [TORTURE_KILLS=20] [TORTURE_SEED=N]
    .venv/bin/python benchmarks/torture.py [--kills 20] [--seed N] [--rows 600] [--extra-days 6] [--extra-rows 4000]

A seed data directory (tests/crashkit.py: the synthetic corpus of pipeline/corpus.py, its three
labelled days ingested, a tiny model, and `--extra-days` unlabelled days not yet ingested) is
backfilled twice, each time by `python -m pipeline backfill` in a subprocess with the scoring clock
frozen and every stage's start and end noted in an events file:

1. clean: one uninterrupted run. Its events give each stage's duration, the timeline kills are drawn from.
2. tortured: runs killed one after the other, each resuming the last. Each kill has a stage (startup,
   ingest, score, export, summary: the three working stages share most kills), a date among the next
   few whose stage has not finished yet, and a delay drawn uniformly from that stage's clean duration;
   the run is killed (SIGKILL to its process group, the go-exporter too) that long after the stage
   started. Summary kills come last, once every stage's work is done. Then one last run finishes.

Then every file of the two data directories (lake, models, predictions, exports, raw, state, vocab;
not Prefect's state, run summaries or lock files) is compared by sha256, every manifest's counts are
checked (rows read == kept + quarantined; quarantine, predictions and export rows agree), and no
temporary file or folder may be left. It prints the seed (TORTURE_SEED repeats the same kill moments)
and a table of figures, and exits 1 if anything differs.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import crashkit  # noqa: E402

from pipeline import corpus, lake  # noqa: E402

WORK = ("ingest", "score", "export")
STAGES = ("startup", *WORK, "summary")


def kill_plan(n: int, rng: random.Random) -> list[str]:
    """The planned stage of each kill, in order: ~15% in start-up, ~10% after all work, the rest shared
    by the three working stages, shuffled together; summary kills last (such a run has done all)."""
    startup, summary = round(n * 0.15), round(n * 0.10)
    rest = n - startup - summary
    stages = [WORK[i % 3] for i in range(rest)] + ["startup"] * startup
    rng.shuffle(stages)
    return stages + ["summary"] * summary


class Clean:
    """What an uninterrupted run took: each stage's seconds per date, start-up and summary seconds."""

    def __init__(self, spawned: float, exited: float, watch: crashkit.EventWatch) -> None:
        starts = {(s, d): t for t, k, s, d, _ in watch.seen if k == "start"}
        self.seconds = {
            (s, d): t - starts[s, d] for t, k, s, d, note in watch.seen if k == "end" and note == "worked"
        }
        self.order = sorted(self.seconds, key=lambda k: starts[k])  # pieces of work as they started
        first = min(t for (s, _), t in starts.items() if s in WORK)
        self.startup = first - spawned
        self.summary = exited - starts["summary", "-"]
        self.wall = exited - spawned


def choose(
    stage: str, clean: Clean, ended: set[tuple[str, str]], rng: random.Random
) -> tuple[str, str, float]:
    """(stage, date, delay) of the next kill: a piece of work among the next few, in the clean run's
    order, that has not ended yet (of the planned stage if one is that near, so that every kill leaves
    work for the next ones), and a delay drawn from that piece's clean duration."""
    if stage in WORK:
        near = [k for k in clean.order if k not in ended][:4]
        if near:
            mine = [k for k in near if k[0] == stage]
            s, d = mine[0] if mine else rng.choice(near)
            return s, d, rng.uniform(0, clean.seconds[s, d])
        stage = "summary"  # no work left
    if stage == "startup":
        return "startup", "-", rng.uniform(0, clean.startup)
    return "summary", "-", rng.uniform(0, clean.summary)


def traced_run(
    root: Path, api: str, events: Path, end: str, target: tuple[str, str, float] | None = None
) -> tuple[str, float, crashkit.EventWatch]:
    """One backfill of `root`; killed at `target` (stage, date, delay) if given. (outcome, spawn time, events)"""
    events.unlink(missing_ok=True)
    watch = crashkit.EventWatch(events)
    cmd = crashkit.pipeline_cmd(root, "backfill", "--start", corpus.TRAIN_DATES[0], "--end", end)
    spawned = time.time()
    kill_now = None
    if target is not None:
        stage, date, delay = target

        def kill_now() -> bool:
            watch.poll()
            t0 = spawned if stage == "startup" else watch.first("start", stage, date)
            return t0 is not None and time.time() >= t0 + delay

    outcome = crashkit.run_until(cmd, crashkit.subprocess_env(api, events), kill_now, timeout=300)
    watch.poll()
    return outcome, spawned, watch


def landed_mid(stage: str, date: str, watch: crashkit.EventWatch) -> bool:
    """Whether the kill came before its stage ended (start-up: before any stage started)."""
    if stage in WORK:
        return watch.first("end", stage, date) is None
    if stage == "startup":
        return not any(k == "start" and s in WORK for _, k, s, _, _ in watch.seen)
    return True


class Tally:
    """Kills per stage, how many came before their stage ended, runs, stage runs that did work."""

    def __init__(self) -> None:
        self.kills: Counter[str] = Counter()
        self.mid: Counter[str] = Counter()
        self.worked: Counter[str] = Counter()
        self.runs = self.early = 0


def kill_and_resume(
    root: Path, api: str, events: Path, end: str, clean: Clean, plan: list[str], rng: random.Random
) -> Tally:
    """Run the backfill of `root` again and again, killing each run at the next moment of `plan`,
    then once more to the end."""
    tally, ended, most = Tally(), set[tuple[str, str]](), 2 * len(plan)
    while plan and tally.runs < most:  # (a run that ends before its moment is drawn again)
        target = choose(plan[0], clean, ended, rng)
        outcome, _, watch = traced_run(root, api, events, end, target)
        tally.runs += 1
        ends = {(s, d) for _, k, s, d, _ in watch.seen if k == "end"}
        ended |= ends
        tally.worked.update(s for _, k, s, _, note in watch.seen if k == "end" and note == "worked")
        if outcome == "finished":
            tally.early += 1
            continue
        plan.pop(0)
        stage, date, delay = target
        tally.kills[stage] += 1
        tally.mid[stage] += landed_mid(stage, date, watch)
        where = f"{stage} {date}" if date != "-" else stage
        n = sum(tally.kills.values())
        print(f"  kill {n:2d}: {where:<18} +{delay:6.3f} s  ({len(ends)} stage runs ended in that run)")
    outcome, _, watch = traced_run(root, api, events, end)
    assert outcome == "finished"
    tally.runs += 1
    tally.worked.update(s for _, k, s, _, note in watch.seen if k == "end" and note == "worked")
    return tally


def area(path: str) -> str:
    top = path.split("/")[0]
    return top if top in ("lake", "models", "predictions", "exports") else "other"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # string defaults from the environment go through `type` too: a bad value is a usage error
    ap.add_argument("--kills", type=int, default=os.environ.get("TORTURE_KILLS") or "20")
    ap.add_argument(
        "--seed", type=int, default=os.environ.get("TORTURE_SEED") or str(secrets.randbelow(10**6))
    )
    ap.add_argument("--rows", type=int, default=600, help="rows of each labelled (training) day")
    ap.add_argument("--extra-days", type=int, default=6, help="unlabelled days to ingest, score and export")
    ap.add_argument("--extra-rows", type=int, default=4000, help="rows of each unlabelled day")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    print(
        f"torture: seed {args.seed} (TORTURE_SEED={args.seed} repeats these kill moments), {args.kills} kills"
    )

    work = Path(tempfile.mkdtemp(prefix="torture-"))
    os.environ.setdefault("PREFECT_HOME", str(work / ".prefect"))  # before Prefect is imported
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("MPLCONFIGDIR", str(work / "matplotlib"))
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    t_all = time.perf_counter()
    seed = crashkit.build_seed(
        work / "seed", rows_per_day=args.rows, extra_days=args.extra_days, extra_rows=args.extra_rows
    ).root
    end = crashkit.last_date(args.extra_days)
    dates = lake.date_range(corpus.TRAIN_DATES[0], end)
    t_seed = time.perf_counter() - t_all
    with prefect_test_harness(server_startup_timeout=120):
        api = str(PREFECT_API_URL.value())
        clean_root, tortured = work / "clean", work / "tortured"
        shutil.copytree(seed, clean_root, symlinks=True)
        shutil.copytree(seed, tortured, symlinks=True)
        outcome, spawned, watch = traced_run(clean_root, api, work / "clean.events", end)
        assert outcome == "finished"
        clean = Clean(spawned, time.time(), watch)
        print(
            f"clean run: {clean.wall:.1f} s for {len(dates)} dates {dates[0]}..{end} "
            f"({len(clean.seconds)} stage runs with work; start-up {clean.startup:.1f} s)"
        )

        t_tortured = time.perf_counter()
        tally = kill_and_resume(
            tortured, api, work / "tortured.events", end, clean, kill_plan(args.kills, rng), rng
        )
        t_tortured = time.perf_counter() - t_tortured

    t_cmp = time.perf_counter()
    expected, got = crashkit.snapshot(clean_root), crashkit.snapshot(tortured)
    differ = crashkit.changed(expected, got)
    left = crashkit.leftovers(tortured)
    summaries = sorted((tortured / "runs").glob("*.json"))
    manifests = crashkit.check_counts(tortured, dates, json.loads(summaries[-1].read_text()))
    crashkit.check_counts(clean_root, dates)
    t_cmp = time.perf_counter() - t_cmp

    by_area = Counter(area(k) for k in expected)
    kills, mid, worked = tally.kills, tally.mid, tally.worked
    n_kills = sum(kills.values())
    print()
    print(f"{'stage':<9} {'kills':>5} {'mid-stage':>9}")
    for s in STAGES:
        print(f"{s:<9} {kills[s]:>5} {mid[s]:>9}")
    print(f"{'total':<9} {n_kills:>5} {sum(mid.values()):>9}")
    print()
    print(
        f"runs: {tally.runs} ({n_kills} killed, then 1 to the end; {tally.early} ended before their moment)"
    )
    print(f"resumes: {n_kills} (each kill's next run started on the cut data directory)")
    print(
        f"stage runs that did work: clean {len(clean.seconds)}, tortured {sum(worked.values())} "
        "(a killed stage is redone; a finished one never is)"
    )
    print(
        f"files compared (sha256): {len(expected)} ("
        + ", ".join(f"{a} {by_area[a]}" for a in ("lake", "models", "predictions", "exports", "other"))
        + f"): {len(differ)} differ"
        + (f" ({', '.join(differ[:5])})" if differ else "")
    )
    print(
        f"manifests checked: {manifests} (lake, quarantine, predictions, export for {len(dates)} dates): "
        "rows read == kept + quarantined, and quarantine, prediction and export rows agree"
    )
    print(f"leftover temporaries: {len(left)}" + (f" ({', '.join(left[:5])})" if left else ""))
    print(
        f"seconds: {time.perf_counter() - t_all:.0f} (seed {t_seed:.0f}, clean {clean.wall:.0f}, "
        f"tortured {t_tortured:.0f}, compare {t_cmp:.0f})"
    )
    ok = not differ and not left and n_kills == args.kills
    print("torture: PASSED" if ok else "torture: FAILED")
    if ok:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"data kept in {work}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
