"""Issue 18: a night's summary and report page, drift alerts, the page in a real browser, 30 nights fast.
Issue 26: labels are data in the pictures, the card and the page."""

import copy
import csv
import io
import json
import os
import shutil
import time
from html.parser import HTMLParser

import numpy as np
import pytest
from browser import find_chromium, save, visit
from conftest import tiny_corpus
from markdown_it import MarkdownIt

from pipeline import corpus, drift, export, ingest, lake, nightly, nightreport, train
from pipeline.__main__ import main
from pipeline.config import ReportConfig, ScoreConfig, load_config

FAST = ["model.embed_dim=16", "model.hidden_dim=32", "train.epochs=3", "train.batch_size=32"]
ORDINARY, SHIFTED = "2026-01-05", "2026-01-06"


def night_csv(date: str, *, shifted: bool) -> str:
    """A night from the demo corpus; shifted: its Sports rows and one in ten of the others."""
    rows = list(csv.reader(io.StringIO(corpus.generate_day(date, rows=600, labelled=True))))
    keep = [
        r for i, r in enumerate(rows[1:]) if len(r) == 3 and (not shifted or r[2] == "Sports" or i % 10 == 0)
    ]
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([["id", "text"], *[r[:2] for r in keep]])
    return buf.getvalue()


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """A trained model and two raw nights, an ordinary one and one whose class mix is shifted."""
    root = tmp_path_factory.mktemp("report") / "data"
    data = lake.DataDir.at(root)
    tiny_corpus(data, rows_per_day=300)
    train.train(data, load_config(None, FAST))
    for date in (ORDINARY, SHIFTED):
        lake.write_bytes(data.raw(date) / "news.csv", night_csv(date, shifted=date == SHIFTED).encode())
    return root


def summarize(data: lake.DataDir, date: str, cfg: ReportConfig) -> dict:
    nightly.ingest_date(data, date)
    nightly.score_date(data, date, ScoreConfig())
    return drift.summarize_night(data, date, cfg)


def test_psi_of_histograms():
    assert drift.psi([10, 10, 10], [1, 1, 1]) == 0.0  # counts or shares: the same
    assert drift.psi([50, 50], [90, 10]) == pytest.approx(0.4 * np.log(1.8) + 0.4 * np.log(5))
    assert 0 < drift.psi([1, 0], [0, 1]) < 20  # an empty bin counts as EPSILON: finite
    with pytest.raises(ValueError, match="same bins"):
        drift.psi([1, 2], [1, 2, 3])


def test_a_shifted_night_is_flagged_an_ordinary_one_is_not(root):
    data, cfg = lake.DataDir.at(root), ReportConfig()
    ordinary, shifted = summarize(data, ORDINARY, cfg), summarize(data, SHIFTED, cfg)
    assert ordinary["flags"] == {"class_mix": False, "score": False}, ordinary["drift"]
    assert ordinary["drift"]["psi_class_mix"] < cfg.psi_class_mix
    assert shifted["flags"]["class_mix"] and shifted["drift"]["psi_class_mix"] > 2 * cfg.psi_class_mix
    sports = shifted["labels"].index("Sports")
    assert shifted["class_counts"][sports] > 0.6 * shifted["rows_scored"]
    # the figures add up with the lake and the predictions
    assert ordinary["rows_read"] == ordinary["rows_kept"] + ordinary["rows_quarantined"]
    assert sum(ordinary["class_counts"]) == sum(ordinary["score_hist"]) == ordinary["rows_scored"]
    assert ordinary["quarantined_by_reason"] and sum(ordinary["quarantined_by_reason"].values()) == 2
    # up to date: not read again; a tighter threshold flags the same summary without re-reading it
    again = drift.summarize_night(data, ORDINARY, ReportConfig(psi_class_mix=1e-6))
    assert again["skipped"] and again["flags"]["class_mix"]
    # the page: same summaries, same bytes; the shifted night says it drifted
    page = nightreport.write_night_report(data, SHIFTED, cfg)
    first = page.read_bytes()
    assert nightreport.write_night_report(data, SHIFTED, cfg).read_bytes() == first
    assert b"Drift above the thresholds: class mix" in first and b'src="http' not in first


def test_a_report_folder_that_is_a_link_is_refused_and_left_alone(root, tmp_path, capsys):
    """`reports/date=D` as a link out of the data directory: `pipeline report` fails naming it, and
    writes nothing where it points."""
    summarize(lake.DataDir.at(root), ORDINARY, ReportConfig())
    shutil.copytree(root, tmp_path / "data", symlinks=True)
    data = lake.DataDir.at(tmp_path / "data")
    folder, target = data.report(ORDINARY), tmp_path / "outside"
    os.rename(folder, target)
    folder.symlink_to(target, target_is_directory=True)
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    assert main(["--data-dir", str(data.root), "report", "--date", ORDINARY]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith(f"pipeline: error: {folder}: a symbolic link, not a")
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before


def test_a_night_that_scored_no_rows_says_so_on_its_page(root):
    data, cfg, date = lake.DataDir.at(root), ReportConfig(), "2026-01-07"
    lake.write_bytes(data.raw(date) / "news.csv", b"id,text\n1,\n2,   \n")  # every row quarantined
    night = summarize(data, date, cfg)
    assert night["rows_scored"] == 0 and night["rows_quarantined"] == 2
    message = "No rows were scored this night: all 2 rows read were quarantined."
    assert list(night["warnings"]) == ["no_rows"] and night["warnings"]["no_rows"].startswith(message)
    assert drift.read_summary(data, date)["warnings"] == night["warnings"]  # in summary.json
    page = nightreport.write_night_report(data, date, cfg).read_text()
    assert f'<p class="alert" data-figure="warning" data-value="no_rows">{message}' in page
    assert "No drift measured." in page and "No drift above the thresholds" not in page
    # an ordinary night warns of nothing
    assert summarize(data, ORDINARY, cfg)["warnings"] == {}
    assert 'data-figure="warning"' not in nightreport.write_night_report(data, ORDINARY, cfg).read_text()


@pytest.mark.usefixtures("prefect_harness")
def test_fail_on_drift_fails_the_run_after_writing_every_output(root, exporter, capsys):
    base = ["--data-dir", str(root)]
    assert main([*base, "run", "--date", ORDINARY, "--set", "report.fail_on_drift=true"]) == 0
    capsys.readouterr()
    assert main([*base, "run", "--date", SHIFTED, "--set", "report.fail_on_drift=true"]) == 1
    err = capsys.readouterr().err
    assert f"{SHIFTED}: drift in class_mix" in err and "report.fail_on_drift is set" in err
    data = lake.DataDir.at(root)
    assert (data.exports(SHIFTED) / "predictions.ndjson").is_file()
    assert (data.report(SHIFTED) / "index.html").is_file()
    runs = [json.loads(p.read_text()) for p in sorted(data.runs.glob("*.json"))]
    last = [r for r in runs if r["dates"] and r["dates"][0]["date"] == SHIFTED][-1]
    assert last["drifted"] == [SHIFTED] and last["dates"][0]["report"]["drift"] == ["class_mix"]
    # without the setting the same night is only marked
    assert main([*base, "run", "--date", SHIFTED]) == 0
    assert "DRIFT: 2026-01-06: drift in class_mix" in capsys.readouterr().out
    # the run's artifacts: the nights' figures as a table, and a link to the page
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        keys = ArtifactFilterKey(any_=["nightly-report", "nightly-report-page"])
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(key=keys))
    tables = [a for a in arts if a.key == "nightly-report" and a.type == "table"]
    assert any(SHIFTED in str(a.data) and "class_mix" in str(a.data) for a in tables)
    links = [a.data for a in arts if a.key == "nightly-report-page"]  # Markdown: [text](file:///...)
    assert any(f"({(data.report(SHIFTED) / 'index.html').as_uri()})" in str(x) for x in links), links


@pytest.mark.usefixtures("prefect_harness")
def test_the_report_in_headless_chromium_shows_the_run_summary(root, exporter, capsys, tmp_path):
    if find_chromium() is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium; .ci/run installs it)")
    assert main(["--data-dir", str(root), "run", "--date", ORDINARY]) == 0
    run = json.loads(open(capsys.readouterr().out.rsplit("summary: ", 1)[1].strip()).read())
    day = run["dates"][0]
    page = root / day["report"]["path"]
    got = visit(
        page.as_uri(),
        "({figures: Object.fromEntries(Array.from(document.querySelectorAll('[data-figure]'))"
        ".map(e => [e.dataset.figure, e.dataset.value])),"
        " images: Array.from(document.images).map(i => i.complete && i.naturalWidth > 0)})",
    )
    assert got.errors == []
    assert all(u.startswith(("file:", "data:")) for u in got.requests), got.requests  # no network
    assert len(got.values["images"]) == 4 and all(got.values["images"])
    f = got.values["figures"]
    i, r = day["ingest"], day["report"]
    assert [int(f[k]) for k in ("rows_read", "rows_kept", "rows_quarantined", "rows_scored")] == [
        i["rows_read"],
        i["rows_kept"],
        i["rows_quarantined"],
        day["score"]["rows"],
    ]
    assert f["model_version"] == day["score"]["model_version"]
    for k in ("psi_class_mix", "psi_score", "low_confidence_share"):
        assert float(f[k]) == r[k], k
    assert f["drift"] == " ".join(r["drift"])
    shot = save(tmp_path / "report.png", got.screenshot)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000


def test_thirty_nights_of_a_million_rows_report_in_seconds(root, tmp_path, capsys):
    """The report reads only the nights' summaries: 30 of them, each of a 1M-row night, in < 10 s."""
    data = lake.DataDir.at(root)
    template = drift.summarize_night(data, ORDINARY, ReportConfig())
    big = lake.DataDir.at(tmp_path / "data")
    rng = np.random.default_rng(0)
    dates = lake.date_range("2026-02-01", "2026-03-02")
    for k, date in enumerate(dates):
        s = copy.deepcopy({k: v for k, v in template.items() if k not in ("flags", "skipped")})
        scale = 1_000_000 // s["rows_scored"]
        for key in ("rows_read", "rows_kept", "rows_quarantined", "rows_scored", "low_confidence_rows"):
            s[key] *= scale
        s["class_counts"] = [c * scale for c in s["class_counts"]]
        s["score_hist"] = [c * scale for c in s["score_hist"]]
        s["date"], s["drift"]["psi_class_mix"] = date, float(rng.uniform(0, 0.3)) + (k == 20)
        lake.write_json(drift.summary_path(big, date), s)
    t0 = time.perf_counter()
    assert main(["--data-dir", str(big.root), "report", "--start", dates[0], "--end", dates[-1]]) == 0
    trend_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    page = nightreport.write_night_report(big, dates[-1], ReportConfig())
    night_seconds = time.perf_counter() - t0
    assert trend_seconds < 10 and night_seconds < 10, (trend_seconds, night_seconds)
    trend = (big.reports / f"range={dates[0]}_{dates[-1]}" / "index.html").read_text()
    assert capsys.readouterr().out.strip().endswith("index.html")
    assert trend.count("<tr") == 31 and trend.count("class=flagged") >= 1 and "30 of 30 nights" in trend
    assert f"<td>{s['rows_read']:,}</td>" in page.read_text()  # the last night, in its trend table


# Labels a reader of the card or the page must see as text: maths for matplotlib, a Markdown table's
# pipe, live HTML, a line break with `&` and a backslash, emoji and CJK (a font without them).
HOSTILE_LABELS = [
    "cost $\\nosuchcmd$",
    "a | b",
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>\nR&D \\ lab",
    "🙂 emoji 中文",
]


class _Html(HTMLParser):
    """Table rows as cell texts (a `<br>` as a line break), list items' text, and any live markup."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.items: list[str] = []
        self.live: list[str] = []
        self._text: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "script" or any(k.startswith("on") for k, _ in attrs):
            self.live.append(tag)
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th", "li"):
            self._text = []
        elif tag == "br" and self._text is not None:
            self._text.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._text is not None:
            self.rows[-1].append("".join(self._text))
        elif tag == "li" and self._text is not None:
            self.items.append("".join(self._text))
        if tag in ("td", "th", "li"):
            self._text = None

    def handle_data(self, data: str) -> None:
        if self._text is not None:
            self._text.append(data)


def _parse(page: str) -> _Html:
    p = _Html()
    p.feed(page)
    return p


def test_labels_are_data_in_the_pictures_the_card_the_page_and_the_export(tmp_path, exporter):
    """Issue 26, case 4: hostile labels train (the pictures drew `$...$` as maths and failed), show as
    themselves in the card rendered as Markdown and in the night's page, and reach the export exactly."""
    data = lake.DataDir.at(tmp_path / "data")
    rows = [
        {"id": f"t{i}-{k}", "text": f"word{i} thing{i} sample {k}", "label": label}
        for i, label in enumerate(HOSTILE_LABELS)
        for k in range(20)
    ]
    train_src = tmp_path / "train.jsonl"
    train_src.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    ingest.ingest([train_src], "2026-01-01", data, ingest.IngestConfig())
    tiny = ["model.embed_dim=8", "model.hidden_dim=8", "train.epochs=1", "model.ngram_buckets=1024"]
    out = train.train(data, load_config(None, [*tiny, "model.wide_buckets=1024", "pretrain.epochs=0"]))
    folder = data.model(out["version"])
    labels = sorted(HOSTILE_LABELS)
    assert json.loads((folder / "config.json").read_text(encoding="utf-8"))["labels"] == labels
    assert (folder / "confusion.png").stat().st_size > 1000 and (folder / "curves.png").is_file()

    # the card, through a real CommonMark renderer with GitHub's tables: every label is its own text
    card = (folder / "card.md").read_text(encoding="utf-8")
    shown = _parse(MarkdownIt("commonmark").enable("table").render(card))
    assert shown.live == []
    assert f"classes: {', '.join(labels)}" in shown.items
    table = [r for r in shown.rows if len(r) == 5 and r[0] != "class"]
    assert [r[0] for r in table] == labels

    # the night's page: a table of the classes, escaped; nothing live
    night = "2026-01-02"
    night_src = tmp_path / "night.csv"
    night_src.write_text(
        "id,text\n" + "".join(f"n{i}-{k},word{i} thing{i}\n" for i in range(5) for k in range(4)),
        encoding="utf-8",
    )
    ingest.ingest([night_src], night, data, ingest.IngestConfig())
    nightly.score_date(data, night, ScoreConfig())
    drift.summarize_night(data, night, ReportConfig())
    page = nightreport.write_night_report(data, night, ReportConfig()).read_text(encoding="utf-8")
    shown = _parse(page)
    assert shown.live == [] and "<script>" not in page
    assert [r[0] for r in shown.rows if len(r) == 4 and r[0] != "class"] == labels

    # the export: the class names of every row's probabilities, and each predicted label, exactly
    m = export.export_partition(data, night, fields=("id", "label", "probs"))
    exported = [json.loads(line) for line in (data.root / m["path"]).read_text(encoding="utf-8").splitlines()]
    assert len(exported) == 20
    assert all(list(r["probs"]) == labels and r["label"] in labels for r in exported)
