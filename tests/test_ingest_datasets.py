"""The three shared data sets, each with its README command line (skipped where ../shared/data is absent)."""

import argparse
from pathlib import Path

import polars as pl
import pytest
from conftest import SHARED_DATA

from pipeline import ingest as ing

pytestmark = pytest.mark.shared_data
DATE = "2026-03-01"

# The option lines of README's "Ingest the shared data sets" (SOURCE first, --date omitted).
COMMANDS = {
    "ag_news": "ag_news/train.csv --no-header --label-column 1 --text-column 2 --text-column 3 "
    "--label-index 1 --classes ag_news/classes.txt --backslash-breaks",
    "thucnews": "thucnews/train.txt --format tsv --no-header --text-column 1 --label-column 2 "
    "--label-index 0 --classes thucnews/class.txt",
    "trec": "trec/train_5500.label --format labelled --encoding iso-8859-1 --label-coarse-sep :",
}


def ingest_dataset(name: str, data) -> tuple[dict, pl.DataFrame]:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is absent")
    p = argparse.ArgumentParser()
    p.add_argument("sources", nargs="+", type=Path)
    ing.add_ingest_arguments(p)
    argv = [str(SHARED_DATA / a) if "/" in a else a for a in COMMANDS[name].split()]
    args = p.parse_args(argv)
    m = ing.ingest(args.sources, DATE, data, ing.ingest_config_from_args(args))
    return m, pl.read_parquet(data.texts(DATE) / "part-00000.parquet")


def test_ag_news(data):
    m, df = ingest_dataset("ag_news", data)
    assert m["rows_read"] == m["rows_kept"] == df.height == 30_034
    assert df["label"].unique().sort().to_list() == ["Business", "Sci/Tech", "Sports", "World"]
    assert df.row(0, named=True) | {"id": None, "source": None} == {
        "id": None,
        "text": "Southwest Airlines Nears $117 Million Deal for ATA Southwest Airlines was the apparent "
        "winner today in the bidding war for ATA Airlines, a low-fare carrier that sought Chapter 11 "
        "protection this fall.",
        "label": "Business",
        "source": None,
        "line": 1,
    }
    assert df["text"][1].endswith("in the women 's 3000 metre individual pursuit at the Athens Olympics.")
    assert df["text"][2].startswith("Storage Services Market Heading To $30 Billion (TechWeb)")
    assert not df["text"].str.contains(r"#39;|\\").any()
    assert df["id"].n_unique() == df.height


def test_thucnews(data):
    m, df = ingest_dataset("thucnews", data)
    assert m["rows_read"] == m["rows_kept"] == df.height == 10_000
    assert df["label"].value_counts()["count"].to_list() == [1_000] * 10
    assert df.select("text", "label").head(3).rows() == [
        ("体验2D巅峰 倚天屠龙记十大创新概览", "game"),
        ("60年铁树开花形状似玉米芯(组图)", "society"),
        ("同步A股首秀:港股缩量回调", "stocks"),  # NFKC: the full-width colon
    ]


def test_trec(data):
    m, df = ingest_dataset("trec", data)
    assert m["rows_read"] == m["rows_kept"] == df.height == 5_452
    assert sorted(df["label"].unique()) == ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"]
    assert df.select("text", "label").head(2).rows() == [
        ("How did serfdom develop in and then leave Russia ?", "DESC"),
        ("What films featured the character Popeye Doyle ?", "ENTY"),
    ]
    # the one non-ASCII byte, 0xF0, is ð in ISO-8859-1
    assert df.filter(pl.col("text").str.contains("sisterðcity with Los Angeles"))["label"].to_list() == [
        "LOC"
    ]
