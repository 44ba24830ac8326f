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
