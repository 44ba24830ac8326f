import json

import jsonschema
import pytest
from conftest import REPO, tiny_corpus

from pipeline import corpus, ingest, train
from pipeline.config import ScoreConfig, load_config
from pipeline.export import export_partition
from pipeline.score import score_partition

CONTRACT = REPO.parent / "shared" / "contracts" / "prediction_result.schema.json"


@pytest.fixture
def scored(data, exporter):
    tiny_corpus(data, rows_per_day=60)
    train.train(data, load_config(None, ["model.embed_dim=8", "model.hidden_dim=8", "train.epochs=1"]))
    ingest.ingest(ingest.raw_sources(data, corpus.SCORE_DATE), corpus.SCORE_DATE, data, ingest.IngestConfig())
    score_partition(data, corpus.SCORE_DATE, ScoreConfig())
    return data


def validator():
    if not CONTRACT.is_file():
        pytest.skip("../shared/contracts is absent")
    schema = json.loads(CONTRACT.read_text())
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


def test_ndjson_export_validates_against_the_contract(scored):
    m = export_partition(scored, corpus.SCORE_DATE)
    lines = (scored.root / m["path"]).read_text().splitlines()
    assert len(lines) == m["rows"] == 30
    v = validator()
    for line in lines:
        obj = json.loads(line)
        v.validate(obj)
        assert list(obj) == ["id", "text", "label", "score", "model_version", "partition"]
        assert obj["partition"] == corpus.SCORE_DATE


def test_json_array_export_and_idempotence(scored):
    m = export_partition(scored, corpus.SCORE_DATE, fmt="json")
    arr = json.loads((scored.root / m["path"]).read_text())
    assert len(arr) == 30
    first = (scored.root / m["path"]).read_bytes()
    again = export_partition(scored, corpus.SCORE_DATE, fmt="json")
    assert again["skipped"] and (scored.root / m["path"]).read_bytes() == first


def test_export_without_predictions_is_a_clear_error(data, exporter):
    from pipeline.errors import PipelineError

    with pytest.raises(PipelineError, match="run `pipeline score --date 2026-03-01` first"):
        export_partition(data, "2026-03-01")


def test_an_exports_folder_that_is_a_link_is_refused_and_left_alone(scored, tmp_path):
    """`exports/date=D` as a link: the export fails naming it; nothing is written (or removed) where it
    points, the exporter's output included."""
    from pipeline.errors import PipelineError

    target = tmp_path / "outside"
    target.mkdir()
    (target / "predictions.ndjson").write_text("mine\n")
    (target / ".predictions.ndjson.run-0dead000").write_text("mine too\n")  # named like a leftover of ours
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    folder = scored.exports(corpus.SCORE_DATE)
    folder.parent.mkdir(parents=True, exist_ok=True)
    folder.symlink_to(target, target_is_directory=True)
    with pytest.raises(PipelineError, match=rf"^{folder}: a symbolic link, not a folder; .*hint: remove"):
        export_partition(scored, corpus.SCORE_DATE)
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
