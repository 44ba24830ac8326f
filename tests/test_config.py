import json
import re
import tomllib
from pathlib import Path

import pytest

from pipeline.config import PipelineConfig, load_config
from pipeline.errors import ConfigError


def test_defaults_file_then_overrides(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('[model]\nrnn_type = "gru"\nhidden_dim = 32\n[train]\nepochs = 4\n')
    cfg = load_config(f, ["train.epochs=2", "model.bidirectional=true", "train.lr=1"])
    assert (cfg.model.rnn_type, cfg.model.hidden_dim, cfg.model.bidirectional) == ("gru", 32, True)
    assert (cfg.train.epochs, cfg.train.lr) == (2, 1.0)
    assert cfg.vocab == PipelineConfig().vocab


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.epoch=3", r"--set: unknown key `train\.epoch`; hint: did you mean `epochs`\?"),
        ("optim.lr=3", r"--set: unknown section \[optim\]; hint: known: vocab, model"),
        ("trian.lr=3", r"unknown section \[trian\]; hint: did you mean \[train\]\?"),
        (
            "model.rnn_type=cnn",
            r"`model\.rnn_type`: input should be 'rnn', 'lstm' or 'gru', got 'cnn'; hint:",
        ),
        (
            "train.epochs=many",
            r"`train\.epochs`: input should be a valid integer, got 'many'; hint: the most",
        ),
        ("train.epochs=2.5", r"`train\.epochs`: input should be a valid integer"),
        ("model.bidirectional=1", r"`model\.bidirectional`: input should be a valid boolean, got 1"),
        ("vocab.min_count=true", r"`vocab\.min_count`: input should be a valid integer, got True"),
        ("epochs=3", "expected SECTION.KEY=VALUE"),
        ("report.confidence=1.5", r"`report\.confidence`: input should be less than 1, got 1\.5"),
        ("report.psi_score=0", r"`report\.psi_score`: input should be greater than 0"),
        ("report.fail_on_drift=maybe", r"`report\.fail_on_drift`: input should be a valid boolean"),
        ("report.nights=0", r"`report\.nights`: input should be greater than or equal to 1"),
        ("pretrain.epochs=-1", r"`pretrain\.epochs`: input should be greater than or equal to 0"),
        ("pretrain.window=0", r"`pretrain\.window`: input should be greater than or equal to 1"),
        ("pretrain.subsample=0", r"`pretrain\.subsample`: input should be greater than 0"),
        ("score.batch_size=0", r"`score\.batch_size`: input should be greater than or equal to 1"),
        ("model.ngram_buckets=1", r"`model\.ngram_buckets`: value error, 0 \(off\) or at least 2"),
        ("train.wide_lr=0.01", r"unknown key `train\.wide_lr`; hint: did you mean `wide_c`\?"),
    ],
)
def test_bad_settings_are_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_a_bad_key_in_a_file_names_the_file_and_a_hint(tmp_path):
    f = tmp_path / "nightly.toml"
    f.write_text("[score]\nbatch_sise = 64\n")
    with pytest.raises(
        ConfigError, match=r"nightly\.toml: unknown key `score\.batch_sise`; hint: did you mean"
    ):
        load_config(f)
    f.write_text('[model]\nhidden_dim = "128"\n')
    with pytest.raises(
        ConfigError, match=r"nightly\.toml: `model\.hidden_dim`: input should be a valid integer"
    ):
        load_config(f)
    f.write_text("[score]\nbatch_size = 64\n")  # a good file, a bad override: the override is named
    with pytest.raises(ConfigError, match=r"^--set: `score\.workers`"):
        load_config(f, ["score.workers=0"])


def test_every_section_is_declared_with_a_meaning_and_a_schema():
    from pipeline.config import SECTIONS, config_schema
    from pipeline.settings import description, fields

    for name, cls in SECTIONS.items():
        for key in fields(cls):
            assert description(cls, key), f"{name}.{key} has no meaning"
    schema = config_schema()
    assert schema["additionalProperties"] is False
    assert set(schema["properties"]) == set(SECTIONS)
    score = schema["$defs"]["ScoreConfig"]
    assert score["properties"]["batch_size"]["minimum"] == 1
    assert score["properties"]["precision"]["enum"] == ["fp32", "bf16", "int8"]


def test_report_thresholds_are_not_part_of_a_models_settings():
    from pipeline.config import model_settings

    cfg = load_config(None, ["report.psi_class_mix=0.5", "report.fail_on_drift=true"])
    assert (cfg.report.psi_class_mix, cfg.report.fail_on_drift) == (0.5, True)
    assert model_settings(cfg) == model_settings(PipelineConfig())  # a threshold never retrains


def test_score_settings_are_not_part_of_a_models_settings():
    from pipeline.config import model_settings

    cfg = load_config(None, ["score.batch_size=32", "score.precision=bf16"])
    assert model_settings(cfg) == model_settings(PipelineConfig())  # how it scores never retrains
    assert model_settings(load_config(None, ["pretrain.epochs=3"])) != model_settings(PipelineConfig())


def test_retention_is_off_by_default_and_not_part_of_a_models_settings():
    from pipeline.config import model_settings

    assert (PipelineConfig().retention.days, PipelineConfig().retention.models) == (90, 5)
    assert PipelineConfig().retention.after_run is False  # an upgrade never starts deleting on its own
    cfg = load_config(None, ["retention.days=7", "retention.models=0", "retention.after_run=true"])
    assert (cfg.retention.days, cfg.retention.models, cfg.retention.after_run) == (7, 0, True)
    assert model_settings(cfg) == model_settings(PipelineConfig())  # how long outputs stay never retrains
    with pytest.raises(ConfigError, match=r"`retention\.days`: input should be greater than or equal to 1"):
        load_config(None, ["retention.days=0"])


def test_bad_toml_names_the_file(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("[model\n")
    with pytest.raises(ConfigError, match=r"c\.toml: not valid TOML"):
        load_config(f)


def test_export_section_takes_a_mysql_url_and_refuses_one_with_a_password():
    url = "mysql://loader@db.example:3307/reports?table=nightly"
    assert load_config(None, [f"export.mysql_url={url}"]).export.mysql_url == url
    assert PipelineConfig().export.mysql_url == ""
    with pytest.raises(ConfigError, match=r"export\.mysql_url: the mysql:// URL holds a password") as e:
        load_config(None, ["export.mysql_url=mysql://loader:hunter2@db/reports"])
    assert "hunter2" not in str(e.value)


EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "docs" / "configs").glob("*.toml"))


def test_the_schema_from_pipeline_config_validates_the_shipped_examples(capsys):
    import jsonschema

    from pipeline.__main__ import main

    assert main(["config", "--schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert len(EXAMPLES) >= 3
    for path in EXAMPLES:
        jsonschema.validate(tomllib.loads(path.read_text()), schema)  # the schema accepts it
        load_config(path)  # and so does the code the schema came from
    for bad in ({"score": {"batch_size": 0}}, {"score": {"batch_sise": 64}}, {"trian": {}}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)


def test_pipeline_config_prints_a_file_that_reads_back_the_same(tmp_path, capsys):
    from pipeline.__main__ import main

    f = tmp_path / "c.toml"
    f.write_text('[score]\nbatch_size = 64\n[model]\nrnn_type = "gru"\n')
    assert main(["config", "--config", str(f), "--set", "train.lr=0.01"]) == 0
    printed = tmp_path / "printed.toml"
    printed.write_text(capsys.readouterr().out)
    cfg = load_config(printed)
    assert cfg == load_config(f, ["train.lr=0.01"])
    assert (cfg.score.batch_size, cfg.model.rnn_type, cfg.train.lr) == (64, "gru", 0.01)

    f.write_text("[score]\nbatch_sise = 64\n")
    assert main(["config", "--config", str(f)]) == 1
    err = capsys.readouterr().err
    assert f"{f}: unknown key `score.batch_sise`; hint: did you mean `batch_size`?" in err


DEEP = 3000  # tables or arrays inside each other: past what a recursive reader can follow


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("latin1", r"not UTF-8 text \(line 2, byte 20: 0xe9\)"),
        ("folder", r"a folder, not a config file"),
        ("deep_tables", r"its tables or arrays nest too deeply to read"),
        ("deep_arrays", r"its tables or arrays nest too deeply to read"),
    ],
)
def test_an_unreadable_config_file_is_one_error_line(kind, message, tmp_path, capsys):
    from pipeline.__main__ import main

    f = tmp_path / "c.toml"
    if kind == "latin1":
        f.write_bytes('[report]\nnote = "café"\n'.encode("latin-1"))
    elif kind == "folder":
        f.mkdir()
    elif kind == "deep_tables":
        f.write_text("[train]\nlr = " + "{a = " * DEEP + "1" + "}" * DEEP + "\n")
    else:
        f.write_text("[train]\nlr = " + "[" * DEEP + "1" + "]" * DEEP + "\n")
    assert main(["config", "--config", str(f)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert re.match(rf"pipeline: error: {re.escape(str(f))}: {message}.*; hint: ", line), line
    with pytest.raises(ConfigError, match="nest too deeply"):
        load_config(None, ["train.lr=" + "[" * DEEP])
