"""Issue 18: the promotion gate keeps a weaker model out of `latest`; promote and rollback move it.
Issue 26: it never lets a model of NaNs through."""

import json
import os
import shutil

import pytest
import torch
from conftest import tiny_corpus
from safetensors.torch import load_file, save_file

from pipeline import promotion, train
from pipeline.__main__ import main
from pipeline.config import load_config
from pipeline.errors import ModelError

FAST = ["model.embed_dim=16", "model.hidden_dim=32", "train.epochs=3", "train.batch_size=32"]
# one epoch, a tiny learning rate and no TF-IDF head: deliberately weaker on the same rows
WEAK = [*FAST, "train.epochs=1", "train.lr=0.0001", "model.wide_buckets=0", "model.ngram_buckets=0"]


def latest(data) -> str:
    return os.readlink(data.models / "latest")


def test_the_gate_keeps_a_weaker_model_out_and_promote_and_rollback_move_it(data, monkeypatch, capsys):
    monkeypatch.setenv("PIPELINE_USER", "night-shift")
    with pytest.raises(ModelError, match="no earlier `latest`"):
        promotion.rollback(data)
    tiny_corpus(data, rows_per_day=150)
    good = train.train(data, load_config(None, FAST))
    assert good["promotion"]["promoted"] and good["promotion"]["why"] == "the first model"

    weak = train.train(data, load_config(None, WEAK))
    gate = weak["promotion"]
    assert not weak["skipped"] and not gate["promoted"] and latest(data) == good["version"]
    assert gate["rows"] == good["val_rows"] == weak["val_rows"]  # the same rows, scored by both
    assert gate["accuracy_new"] == weak["val_accuracy"] < gate["accuracy_latest"]
    assert gate["accuracy_latest"] == pytest.approx(good["val_accuracy"], abs=0.03)
    assert f"{gate['accuracy_new']:.4f}" in gate["why"] and f"{gate['accuracy_latest']:.4f}" in gate["why"]
    assert (data.model(weak["version"]) / "model.safetensors").is_file()  # published all the same

    # found again (same inputs): the gate still decides; `never` and `always` say so
    again = train.train(data, load_config(None, WEAK), promote="never")
    assert again["skipped"] and not again["promotion"]["promoted"] and latest(data) == good["version"]

    base = ["--data-dir", str(data.root), "models"]
    assert main([*base, "promote", weak["version"], "--why", "testing"]) == 0
    assert latest(data) == weak["version"]
    assert main([*base, "rollback"]) == 0
    assert latest(data) == good["version"]
    assert (
        f"latest: {weak['version']} -> {good['version']} (rollback by night-shift" in capsys.readouterr().out
    )
    assert main([*base, "promote", "nonexistent"]) == 1
    assert "no complete model 'nonexistent'" in capsys.readouterr().err

    moves = [json.loads(line) for line in (data.models / "history.jsonl").read_text().splitlines()]
    assert [(m["action"], m["from"], m["to"]) for m in moves] == [
        ("train", None, good["version"]),
        ("promote", good["version"], weak["version"]),
        ("rollback", weak["version"], good["version"]),
    ]
    assert {m["who"] for m in moves} == {"night-shift"} and moves[1]["why"] == "testing"
    assert all(m["when"].endswith("Z") for m in moves)
    assert main(base) == 0 and f"* {good['version']}" in capsys.readouterr().out  # the listing still works
    assert main([*base, "history"]) == 0 and capsys.readouterr().out.count("night-shift") == 3

    forced = train.train(data, load_config(None, WEAK), promote="always")
    assert forced["promotion"]["promoted"] and latest(data) == weak["version"]


def test_the_gate_never_promotes_a_model_of_nans(data, monkeypatch):
    """Issue 26: a model folder whose weights are NaN (here a copy of `latest`, so just as accurate on its
    validation rows) is refused by `if-better` and `always` alike, and `latest` stays."""
    monkeypatch.setenv("PIPELINE_USER", "night-shift")
    tiny_corpus(data, rows_per_day=100)
    good = train.train(data, load_config(None, WEAK))["version"]
    shutil.copytree(data.model(good), data.model("nan-model"))
    weights = data.model("nan-model") / "model.safetensors"
    save_file({k: torch.full_like(v, float("nan")) for k, v in load_file(weights).items()}, weights)
    for mode in ("if-better", "always"):
        with pytest.raises(ModelError, match=r"not moving `latest` to nan-model: .*NaN or infinite weights"):
            promotion.after_training(data, "nan-model", promote=mode)
    assert latest(data) == good and [m["to"] for m in promotion.history(data)] == [good]
