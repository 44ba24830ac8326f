"""Issue 4 through the command line: the lesson's four classifiers, evaluation, refusals. Issue 26: non-finite
settings, a diverging training and a model of NaNs are refused."""

import json
import os
import shutil

import pytest
import torch
from conftest import tiny_corpus
from safetensors.torch import load_file, save_file

from pipeline import corpus, ingest, lake
from pipeline.__main__ import main
from pipeline.model import LESSON_CONFIGS, PLAIN
from pipeline.vocab import VocabConfig, build_vocab, save_vocab

SMALL = ["--set", "model.embed_dim=8", "--set", "model.hidden_dim=8", "--set", "train.epochs=2"]
LESSON = {
    name: [arg for k, v in {**PLAIN, **cfg}.items() for arg in ("--set", f"model.{k}={json.dumps(v)}")]
    for name, cfg in LESSON_CONFIGS.items()
}


@pytest.fixture(scope="module")
def lake_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("lesson") / "data"
    data = lake.DataDir.at(root)
    tiny_corpus(data, rows_per_day=80)
    ingest.ingest(ingest.raw_sources(data, corpus.SCORE_DATE), corpus.SCORE_DATE, data, ingest.IngestConfig())
    return root


@pytest.mark.usefixtures("prefect_harness")
@pytest.mark.parametrize("name", LESSON)
def test_lesson_configurations_train_and_score_through_the_cli(name, lake_root, capsys):
    base = ["--data-dir", str(lake_root)]
    assert (
        main([*base, "train", "--end", corpus.TRAIN_DATES[-1], *SMALL, *LESSON[name], "--promote", "always"])
        == 0
    )
    version = json.loads(capsys.readouterr().out)["version"]
    assert os.readlink(lake_root / "models" / "latest") == version
    cfg = json.loads((lake_root / "models" / version / "config.json").read_text())
    for key in (
        "rnn_type",
        "embed_dim",
        "hidden_dim",
        "num_layers",
        "bidirectional",
        "pooling",
        "labels",
        "max_len",
    ):
        assert key in cfg
    assert main([*base, "score", "--date", corpus.SCORE_DATE]) == 0
    scored = json.loads(capsys.readouterr().out)
    assert scored["model_version"] == version and scored["rows"] == 40


@pytest.mark.usefixtures("prefect_harness")
def test_evaluate_writes_metrics_and_confusion(lake_root, capsys):
    base = ["--data-dir", str(lake_root)]
    assert main([*base, "train", "--end", corpus.TRAIN_DATES[-1], *SMALL]) == 0
    capsys.readouterr()
    assert main([*base, "evaluate", "--date", corpus.TRAIN_DATES[0]]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["rows"] == 80 and 0 <= out["accuracy"] <= 1
    report = json.loads((lake_root / out["path"] / "metrics.json").read_text())
    assert sum(map(sum, report["confusion"])) == 80
    assert set(report["per_class"]) == set(corpus.CLASSES)
    assert (lake_root / out["path"] / "confusion.png").stat().st_size > 1000
    assert main([*base, "models"]) == 0
    assert "* " in capsys.readouterr().out  # the latest model is marked


@pytest.mark.usefixtures("prefect_harness")
def test_a_mismatched_vocabulary_is_refused(lake_root, capsys):
    base = ["--data-dir", str(lake_root)]
    assert main([*base, "train", "--end", corpus.TRAIN_DATES[-1], *SMALL]) == 0
    version = json.loads(capsys.readouterr().out)["version"]
    folder = lake_root / "models" / version
    original = (folder / "vocab.json").read_bytes()
    import polars as pl

    other = build_vocab(pl.LazyFrame({"text": ["some other corpus"]}), VocabConfig())
    save_vocab(other, folder / "x").replace(folder / "vocab.json")
    try:
        assert main([*base, "score", "--date", corpus.SCORE_DATE, "--model", version]) == 1
        assert "does not match the model's" in capsys.readouterr().err
    finally:
        (folder / "vocab.json").write_bytes(original)


@pytest.mark.usefixtures("prefect_harness")
def test_a_lake_with_another_schema_is_refused(lake_root, capsys):
    base = ["--data-dir", str(lake_root)]
    assert main([*base, "train", "--end", corpus.TRAIN_DATES[-1], *SMALL]) == 0
    capsys.readouterr()
    manifest = lake_root / "lake" / "texts" / f"date={corpus.SCORE_DATE}" / "_manifest.json"
    original = manifest.read_bytes()
    m = json.loads(original)
    m["schema_version"] = 99
    manifest.write_text(json.dumps(m))
    try:
        assert main([*base, "score", "--date", corpus.SCORE_DATE]) == 1
        assert "lake schema version 99" in capsys.readouterr().err
    finally:
        manifest.write_bytes(original)


@pytest.mark.usefixtures("prefect_harness")
def test_score_settings_come_from_the_config_then_flags_and_never_change_the_model(
    lake_root, tmp_path, capsys
):
    base = ["--data-dir", str(lake_root)]
    train = [*base, "train", "--end", corpus.TRAIN_DATES[-1], *SMALL, "--promote", "always"]
    assert main(train) == 0
    version = json.loads(capsys.readouterr().out)["version"]
    assert main([*train, "--set", "score.batch_size=7", "--set", "score.shard_rows=3"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert (again["version"], again["skipped"]) == (version, True)  # how it scores is no part of a model

    f = tmp_path / "nightly.toml"
    f.write_text("[score]\nshard_rows = 15\nbatch_size = 8\n")
    manifest = lake_root / "predictions" / f"date={corpus.SCORE_DATE}" / "_manifest.json"

    def score(*extra: str) -> tuple[dict, list[int]]:
        assert main([*base, "score", "--date", corpus.SCORE_DATE, "--config", str(f), *extra]) == 0
        capsys.readouterr()
        m = json.loads(manifest.read_text())
        assert m["model_version"] == version
        return m["inputs"]["score"], [s["rows"] for s in m["shards"]]

    assert score() == ({"precision": "fp32", "batch_size": 8, "shard_rows": 15}, [15, 15, 10])
    assert score("--set", "score.shard_rows=20") == (
        {"precision": "fp32", "batch_size": 8, "shard_rows": 20},
        [20, 20],
    )
    flags = ["--set", "score.shard_rows=20", "--shard-rows", "40", "--batch-size", "4"]
    assert score(*flags) == ({"precision": "fp32", "batch_size": 4, "shard_rows": 40}, [40])

    f.write_text("[score]\nshard_rows = 25\n")  # the nightly job reads the same table
    assert main([*base, "run", "--date", corpus.SCORE_DATE, "--config", str(f)]) == 0
    capsys.readouterr()
    m = json.loads(manifest.read_text())
    assert m["inputs"]["score"]["shard_rows"] == 25
    assert [s["rows"] for s in m["shards"]] == [25, m["rows"] - 25]


def test_settings_that_must_be_finite_refuse_inf_and_nan(tmp_path, capsys):
    """Issue 26: `train.lr=inf` trained a model of NaNs; every float setting now refuses inf and nan,
    from --set and from a config file alike, with the config error's exit code and a hint."""
    base = ["--data-dir", str(tmp_path / "data")]
    assert main([*base, "train", "--set", "train.lr=inf"]) == 1
    err = capsys.readouterr().err
    assert (
        err == "pipeline: error: --set: `train.lr`: input should be a finite number, got inf; hint: "
        "Adam's learning rate\n"
    )
    config = tmp_path / "nan.toml"
    config.write_text("[report]\nconfidence = nan\n")
    assert main([*base, "config", "--config", str(config)]) == 1
    assert "`report.confidence`: input should be a finite number, got nan" in capsys.readouterr().err
    assert not (tmp_path / "data" / "models").exists()


@pytest.mark.usefixtures("prefect_harness")
def test_a_diverging_training_publishes_nothing_and_exits_1(lake_root, capsys):
    """Issue 26: finite settings that diverge (a learning rate of 1e30) stop training at the first
    non-finite loss; no model folder, no checkpoint, `latest` untouched, whatever `--promote` says."""
    base = ["--data-dir", str(lake_root)]
    models = lake_root / "models"
    before = sorted(os.listdir(models)) if models.is_dir() else []
    latest = os.readlink(models / "latest") if (models / "latest").is_symlink() else None
    diverging = ["--set", "train.lr=1e30", "--set", "pretrain.epochs=0", "--promote", "always"]
    assert main([*base, "train", "--end", corpus.TRAIN_DATES[-1], *SMALL, *diverging]) == 1
    last = capsys.readouterr().err.splitlines()[-1]
    assert last.startswith("pipeline: error: training diverged at epoch 1, step ")
    assert "nothing was published; hint: lower `train.lr`" in last
    assert (sorted(os.listdir(models)) if models.is_dir() else []) == before
    assert (os.readlink(models / "latest") if (models / "latest").is_symlink() else None) == latest


@pytest.mark.usefixtures("prefect_harness")
def test_a_model_of_nans_is_refused_by_score_and_promote(lake_root, capsys):
    """Issue 26: a model folder whose weights file holds NaNs (same names, shapes and format) is never
    loaded to score, and never made `latest`."""
    base = ["--data-dir", str(lake_root)]
    assert main([*base, "train", "--end", corpus.TRAIN_DATES[-1], *SMALL]) == 0
    version = json.loads(capsys.readouterr().out)["version"]
    models = lake_root / "models"
    shutil.copytree(models / version, models / "nan-model")
    weights = models / "nan-model" / "model.safetensors"
    save_file({k: torch.full_like(v, float("nan")) for k, v in load_file(weights).items()}, weights)
    latest = os.readlink(models / "latest")
    try:
        assert main([*base, "score", "--date", corpus.SCORE_DATE, "--model", "nan-model"]) == 1
        last = capsys.readouterr().err.splitlines()[-1]
        assert last.startswith(f"pipeline: error: {weights}: `") and "holds NaN or infinite weights" in last
        manifest = lake.read_manifest(lake_root / "predictions" / f"date={corpus.SCORE_DATE}")
        assert manifest is None or manifest["model_version"] != "nan-model"
        assert main([*base, "models", "promote", "nan-model"]) == 1
        last = capsys.readouterr().err.splitlines()[-1]
        assert last.startswith("pipeline: error: not moving `latest` to nan-model: ") and "NaN or inf" in last
        assert os.readlink(models / "latest") == latest
    finally:
        shutil.rmtree(models / "nan-model")
