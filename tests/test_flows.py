"""One end-to-end run of the flows under a session-scoped Prefect harness."""

import json

import jsonschema
import pytest
from conftest import REPO

from pipeline import corpus, lake
from pipeline.export import find_exporter

CONTRACT = REPO.parent / "shared" / "contracts" / "prediction_result.schema.json"


def snapshot(root) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not {".prefect", "runs"} & set(p.relative_to(root).parts)
    }


@pytest.mark.usefixtures("prefect_harness")
def test_demo_flow_end_to_end_and_rerun_is_identical(tmp_path):
    find_exporter()  # built by `make setup`; fail loudly if it is not
    from pipeline import flows

    root = tmp_path / "data"
    s = flows.demo_flow(str(root))
    assert s["rows_ingested"] == 3 * 1500 + 750
    assert s["rows_quarantined"] == 3 * 4 + 3
    assert s["val_accuracy"] > 0.9
    assert s["val_accuracy_order_slice"] > 0.9  # the sequence model solves the word-order slice
    assert s["rows_scored"] == 750
    export = root / "exports" / f"date={corpus.SCORE_DATE}" / "predictions.ndjson"
    assert s["export"] == str(export)
    lines = export.read_text().splitlines()
    assert len(lines) == 750
    if CONTRACT.is_file():
        v = jsonschema.Draft202012Validator(
            json.loads(CONTRACT.read_text()), format_checker=jsonschema.FormatChecker()
        )
        for line in lines:
            v.validate(json.loads(line))

    before = snapshot(root)
    again = flows.demo_flow(str(root))
    assert again == s
    after = snapshot(root)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert changed == []  # every file byte-identical: nothing retrained, rescored or rewritten

    # the nightly job on a date with nothing new is a no-op that says so
    night = flows.nightly_flow(str(root), corpus.SCORE_DATE)
    day = night["dates"][0]
    assert day["ingest"]["skipped"] and day["score"]["skipped"] and day["export"]["skipped"]
    assert (root / "runs").is_dir() and json.loads(open(night["path"]).read())["totals"]["rows_scored"] == 750
    assert lake.DataDir.at(root).text_dates() == [*corpus.TRAIN_DATES, corpus.SCORE_DATE]
