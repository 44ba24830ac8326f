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
        ("train.epoch=3", "unknown key `epoch`"),
        ("optim.lr=3", "unknown section `optim`"),
        ("model.rnn_type=cnn", "not one of"),
        ("train.epochs=many", "expected int"),
        ("epochs=3", "expected SECTION.KEY=VALUE"),
        ("report.confidence=1.5", "report.confidence: expected a number between 0 and 1"),
        ("report.psi_score=0", "report.psi_score: expected a positive number"),
        ("report.fail_on_drift=maybe", "expected bool"),
        ("report.nights=0", "report.nights: expected an integer from 1 to 366"),
        ("pretrain.epochs=-1", "pretrain.epochs: expected an integer >= 0"),
        ("pretrain.window=0", "pretrain.window: expected a positive integer"),
        ("pretrain.subsample=0", "pretrain.subsample: expected a positive number"),
        ("train.wide_lr=0.01", "unknown key `wide_lr`"),
    ],
)
def test_bad_settings_are_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


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
